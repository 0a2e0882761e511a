//! Uneven splits: weighted and self-balancing. Results are the even split's (the bare model's)
//! on every path; a deliberately slow replica gets fewer rows within a few steps.

use std::time::Duration;

use burn::DispatchDevice;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ClassificationOutput, TrainOutput, TrainStep};
use burn_data_parallel::{DataParallel, DataParallelError, Split};
use burn_data_parallel_tests::learner::{ClassBatch, ClassBatcher, class_items};
use burn_data_parallel_tests::*;

use burn::data::dataloader::batcher::Batcher;

const TOLERANCE: f32 = 1e-6;

fn batch(rows: usize) -> ClassBatch<DispatchAutodiff> {
    ClassBatcher.batch(class_items(rows, 5, 3), &flex())
}

/// Ten Adam steps on each path with `split`, against the bare model.
fn ten_steps_match(split: Split) {
    let host = flex();
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host));
    let mut bare = bare_copy(&model);
    let new_dp = || {
        DataParallel::new(model.clone(), mixed_devices(3))
            .expect("valid")
            .with_split(split.clone())
            .expect("a valid split")
    };
    let (mut train_dp, mut keras_dp, mut parallel_dp) = (new_dp(), new_dp(), new_dp());
    let mut bare_optim = AdamConfig::new().init();
    let mut optims = [(); 3].map(|_| AdamConfig::new().init());
    for step in 0..10 {
        let rows = 11 + step % 4;
        let plan = train_dp.split_plan(rows).expect("a plan");
        if let Split::Weighted(_) = split {
            let sizes: Vec<usize> = plan.shards().iter().map(|r| r.len()).collect();
            assert!(sizes[0] > sizes[1], "uneven shards: {sizes:?}");
        }

        let expected = TrainStep::step(&bare, batch(rows));
        let actual = train_dp.try_train_step(batch(rows)).expect("a step");
        assert_close(
            &actual.item.loss.to_data(),
            &expected.item.loss.to_data(),
            TOLERANCE,
            "merged loss",
        );
        bare = bare_optim.step(1e-2, bare, expected.grads);
        train_dp = optims[0].step(1e-2, train_dp, actual.grads);

        let ClassBatch { features, targets } = batch(rows);
        let logits = keras_dp.forward(features.clone(), |m, x| m.forward(x));
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&host)
            .forward(logits, targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &keras_dp);
        keras_dp = optims[1].step(1e-2, keras_dp, grads);

        let (logits, pending) = parallel_dp.forward_parallel(features, |m, x| m.forward(x));
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&host)
            .forward(logits, targets);
        parallel_dp = optims[2].step(1e-2, parallel_dp, pending.backward(loss));
    }
    assert_same_params(train_dp.template(), &bare, TOLERANCE);
    assert_same_params(keras_dp.template(), &bare, TOLERANCE);
    assert_same_params(parallel_dp.template(), &bare, TOLERANCE);
}

#[test]
fn weighted_splits_train_to_the_bare_models_weights_on_every_path() {
    ten_steps_match(Split::Weighted(vec![3.0, 1.0, 2.0]));
}

#[test]
fn balanced_splits_train_to_the_bare_models_weights_on_every_path() {
    ten_steps_match(Split::Balanced);
}

#[test]
fn a_split_with_the_wrong_number_of_weights_is_an_error() {
    let dp = DataParallel::new(
        Mlp::<DispatchAutodiff>::new(5, 3, &flex()),
        mixed_devices(2),
    )
    .expect("valid");
    let error = dp
        .with_split(Split::Weighted(vec![1.0, 2.0, 3.0]))
        .map(|_| ())
        .expect_err("three weights for two devices");
    assert_eq!(
        error,
        DataParallelError::InvalidSplit {
            reason: "3 weights for 2 devices: give one weight per device".to_string()
        }
    );
}

/// [`Mlp`]'s classification step, which sleeps a few milliseconds per row on NdArray: a
/// replica made slow on purpose.
#[derive(Module, Debug)]
struct SlowOnNdArray<B: Backend> {
    inner: Mlp<B>,
}

/// How long the slow replica sleeps per row.
const DELAY_PER_ROW: Duration = Duration::from_millis(4);

impl<B: AutodiffBackend> TrainStep for SlowOnNdArray<B> {
    type Input = ClassBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let device = format!("{:?}", batch.features.device());
        if device == format!("{:?}", ndarray()) {
            std::thread::sleep(DELAY_PER_ROW * batch.features.dims()[0] as u32);
        }
        let item = self.inner.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

#[test]
fn a_balanced_split_moves_rows_off_a_slow_replica() {
    let host = flex();
    let model = SlowOnNdArray {
        inner: initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host)),
    };
    // NdArray first: the even split would give it the larger half of an odd batch.
    let devices: Vec<DispatchDevice> = vec![ndarray(), flex()];
    let dp = DataParallel::new(model, devices)
        .expect("valid")
        .with_split(Split::Balanced)
        .expect("valid");
    let rows = 40;
    assert_eq!(dp.split_plan(rows).expect("a plan").shards()[0].len(), 20);
    for _ in 0..6 {
        let _ = dp.try_train_step(batch(rows)).expect("a step");
    }
    // The slow replica takes milliseconds per row, the other microseconds: it keeps at least
    // a tenth of an even share and at most a quarter of the batch (a generous margin for a
    // noisy machine).
    let plan = dp.split_plan(rows).expect("a plan");
    let slow = plan.shards()[0].len();
    assert!(
        (2..=10).contains(&slow),
        "slow replica's rows: {:?}",
        plan.shards()
    );
    let speeds = dp.replica_seconds_per_row();
    let (slow, fast) = (speeds[0].expect("measured"), speeds[1].expect("measured"));
    assert!(slow > 3.0 * fast, "seconds per row: {speeds:?}");
    // The inference copy shares the measurements.
    assert_eq!(dp.valid().split_plan(rows).expect("a plan"), plan);
}
