//! Losses that average over something other than rows, trained through the per-replica step
//! over 1 to 4 replicas with odd shards, against the bare model on one device on the full
//! batch: a masked token mean over padded sequences (random lengths, some shards with no real
//! token at all) and Burn's class-weighted cross-entropy, each batch declaring its count with
//! `#[scatter(normaliser)]`. The same runs with the declaration left out weight shards by
//! rows, and must miss: the check can fail.

use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn::train::{TrainOutput, TrainStep};
use burn_data_parallel::{DataParallel, Normalised, Scatter};
use burn_data_parallel_tests::learner::{ClassBatcher, class_items};
use burn_data_parallel_tests::masked::*;
use burn_data_parallel_tests::*;
use proptest::prelude::*;

/// Rows of every batch: odd, so that shards differ in rows as well as in counts.
const ROWS: usize = 7;
const STEPS: usize = 10;
const TOLERANCE: f32 = 1e-6;

/// Rows that are all padding in step `step`: two at every third step, so that with four
/// replicas the first shard (rows 0..2) has nothing to average over.
fn empty_rows(step: usize) -> usize {
    if step.is_multiple_of(3) { 2 } else { 0 }
}

/// The tagger with its batch's count left undeclared: the same model and loss, a tuple input
/// that `DataParallel` can only weight by rows.
#[derive(Module, Debug)]
struct UndeclaredTagger<B: Backend> {
    tagger: Tagger<B>,
}

type Undeclared<B> = (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2>);

impl<B: AutodiffBackend> TrainStep for UndeclaredTagger<B> {
    type Input = Undeclared<B>;
    type Output = TaggerOutput<B>;

    fn step(&self, (tokens, tags, mask): Self::Input) -> TrainOutput<Self::Output> {
        let item = self.tagger.tag(PaddedBatch { tokens, tags, mask });
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

/// The worst relative error of the weights after ten Adam steps, and of the step losses,
/// of `DataParallel` over `replicas` against the bare tagger; `declared` chooses the input.
fn tagger_run(replicas: usize, declared: bool) -> (f32, f32) {
    type B = NdAutodiff;
    let device = Default::default();
    let model = initialised(Tagger::<B>::new(&device));
    let mut bare = bare_copy(&model);
    let mut dp = DataParallel::new(
        UndeclaredTagger {
            tagger: bare_copy(&model),
        },
        nd_devices(replicas),
    )
    .expect("CPU devices");
    let mut declared_dp = DataParallel::new(model, nd_devices(replicas)).expect("CPU devices");
    let mut bare_optim = AdamConfig::new().init();
    let (mut optim, mut declared_optim) = (AdamConfig::new().init(), AdamConfig::new().init());
    let mut loss_error = 0f32;
    for step in 0..STEPS {
        let batch = padded_batch::<B>(ROWS, empty_rows(step), step as u64, &device);
        let expected = TrainStep::step(&bare, batch.clone());
        bare = bare_optim.step(1e-2, bare, expected.grads);
        let loss = if declared {
            let output = declared_dp.try_train_step(batch).expect("a step");
            declared_dp = declared_optim.step(1e-2, declared_dp, output.grads);
            output.item.loss
        } else {
            let output = dp
                .try_train_step((batch.tokens, batch.tags, batch.mask))
                .expect("a step");
            dp = optim.step(1e-2, dp, output.grads);
            output.item.loss
        };
        loss_error = worst_of(
            loss_error,
            relative_error(&loss.into_data(), &expected.item.loss.into_data()),
        );
    }
    let trained = if declared {
        float_params(declared_dp.template())
    } else {
        float_params(&dp.template().tagger)
    };
    let weights_error = trained
        .iter()
        .zip(&float_params(&bare))
        .map(|((_, a), (_, e))| relative_error(a, e))
        .fold(0.0, worst_of);
    (weights_error, loss_error)
}

#[test]
fn a_masked_token_mean_trains_as_on_one_device() {
    for replicas in 1..=4 {
        let (weights, loss) = tagger_run(replicas, true);
        assert!(
            weights <= TOLERANCE && loss <= TOLERANCE,
            "{replicas} replicas: weights off by {weights:e}, losses by {loss:e}"
        );
    }
}

#[test]
fn without_the_declaration_shards_are_weighted_by_rows_and_miss() {
    // One replica has nothing to weight: the declaration makes no difference there.
    let (weights, _) = tagger_run(1, false);
    assert!(weights <= TOLERANCE, "one replica: {weights:e}");
    for replicas in 2..=4 {
        let (weights, loss) = tagger_run(replicas, false);
        // NaN (a shard with no real token, weighted by rows) is a miss too.
        assert!(
            !(weights <= 1e-3 && loss <= 1e-3),
            "{replicas} replicas: rows weights should miss, got {weights:e} and {loss:e}"
        );
    }
}

#[test]
fn a_class_weighted_cross_entropy_trains_as_on_one_device() {
    type B = DispatchAutodiff;
    let (host, reference) = (flex(), ndarray());
    for replicas in 1..=4 {
        let model = initialised(WeightedClassifier {
            mlp: Mlp::<B>::new(5, 3, &host),
        });
        let mut bare = bare_copy(&model).fork(&reference);
        let mut dp = DataParallel::new(model, mixed_devices(replicas)).expect("CPU devices");
        let (mut bare_optim, mut optim) = (AdamConfig::new().init(), AdamConfig::new().init());
        for step in 0..STEPS {
            let items = class_items(ROWS + step, 5, 3);
            let batch = |device| {
                let batch = ClassBatcher.batch(items.clone(), device);
                WeightedBatch::new(batch.features, batch.targets)
            };
            let expected = TrainStep::step(&bare, batch(&reference));
            bare = bare_optim.step(1e-2, bare, expected.grads);
            let output = dp.try_train_step(batch(&host)).expect("a step");
            dp = optim.step(1e-2, dp, output.grads);
            assert_close(
                &output.item.loss.into_data(),
                &expected.item.loss.into_data(),
                TOLERANCE,
                &format!("{replicas} replicas, loss of step {step}"),
            );
        }
        assert_same_params(dp.template(), &bare, TOLERANCE);
    }
}

#[test]
fn the_keras_style_forward_needs_no_declaration() {
    // The loss is computed on the merged output, over the whole batch: exact by construction.
    type B = NdAutodiff;
    let device = Default::default();
    let model = initialised(Tagger::<B>::new(&device));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, nd_devices(3)).expect("CPU devices");
    let batch = padded_batch::<B>(ROWS, 2, 11, &device);
    let log_probs = dp.forward(batch.tokens.clone(), |model, tokens| {
        model.log_probs(tokens)
    });
    let loss = masked_token_mean(log_probs, batch.tags.clone(), batch.mask.clone());
    let grads = GradientsParams::from_grads(loss.backward(), &dp);
    let expected = bare.tag(batch);
    let expected_grads = GradientsParams::from_grads(expected.loss.backward(), &bare);
    assert_gradients(dp.template(), &grads, &bare, &expected_grads, TOLERANCE);
}

#[test]
fn a_tuple_declares_its_count_through_normalised() {
    type B = NdAutodiff;
    let device = Default::default();
    let batch = padded_batch::<B>(4, 1, 3, &device);
    let mask = batch
        .mask
        .clone()
        .into_data()
        .to_vec::<f32>()
        .expect("floats");
    let count = |rows: core::ops::Range<usize>| -> f64 {
        mask[rows.start * POSITIONS..rows.end * POSITIONS]
            .iter()
            .map(|&v| f64::from(v))
            .sum()
    };
    let tuple = (batch.tokens.clone(), Normalised(batch.mask.clone()));
    assert_eq!(tuple.normaliser(0..4), Some(count(0..4)));
    assert_eq!(tuple.normaliser(1..3), Some(count(1..3)));
    assert_eq!(batch.normaliser(1..3), Some(count(1..3)));
    assert_eq!((batch.tokens, batch.tags).normaliser(0..4), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random batch sizes, replica counts, uneven splits and masks: one step's gradients and
    /// loss against the bare model's.
    #[test]
    fn any_split_of_any_masked_batch_gives_one_devices_gradient(
        rows in 1usize..12,
        replicas in 1usize..5,
        empty in 0usize..4,
        seed in 0u64..1_000,
        shares in proptest::collection::vec(1.0f64..4.0, 4),
    ) {
        type B = NdAutodiff;
        let device = Default::default();
        let empty = empty.min(rows.saturating_sub(1));
        let model = initialised(Tagger::<B>::new(&device));
        let bare = bare_copy(&model);
        let dp = DataParallel::new(model, nd_devices(replicas))
            .expect("CPU devices")
            .with_split(burn_data_parallel::Split::Weighted(shares[..replicas].to_vec()))
            .expect("one weight per device");
        let batch = padded_batch::<B>(rows, empty, seed, &device);
        let expected = TrainStep::step(&bare, batch.clone());
        let output = dp.try_train_step(batch).expect("a step");
        let error = relative_error(&output.item.loss.into_data(), &expected.item.loss.into_data());
        prop_assert!(error <= TOLERANCE, "loss off by {:e}", error);
        let errors = gradient_errors(dp.template(), &output.grads, &bare, &expected.grads);
        for error in errors.map_err(TestCaseError::fail)? {
            prop_assert!(error <= TOLERANCE, "gradient off by {:e}", error);
        }
    }
}

#[test]
fn forward_parallel_leaves_out_a_shard_with_nothing_to_average() {
    // Four replicas over seven rows: the first shard (rows 0..2) is all padding, so its
    // replica's loss is 0/0. The merged loss and the gradients must be the bare model's.
    type B = NdAutodiff;
    let device = Default::default();
    let model = initialised(Tagger::<B>::new(&device));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, nd_devices(4)).expect("CPU devices");
    let batch = padded_batch::<B>(ROWS, 2, 5, &device);
    let (output, pending) = dp
        .try_forward_parallel(batch.clone(), |model, batch| model.tag(batch))
        .expect("a forward pass");
    let expected = bare.tag(batch);
    assert_close(
        &output.loss.clone().into_data(),
        &expected.loss.clone().into_data(),
        TOLERANCE,
        "loss",
    );
    let grads = pending.try_backward(output.loss).expect("a backward pass");
    let expected_grads = GradientsParams::from_grads(expected.loss.backward(), &bare);
    assert_gradients(dp.template(), &grads, &bare, &expected_grads, TOLERANCE);
}
