//! The per-replica training path through Burn's `Learner`: same weights, metrics, running
//! statistics, checkpoints and predictions as the bare model on one device.

use std::path::PathBuf;

use burn::backend::ndarray::NdArrayDevice;
use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use burn::train::{InferenceStep, RegressionOutput, TrainOutput, TrainStep};
use burn_data_parallel::{DataParallel, DataParallelError, Reduction};
use burn_data_parallel_tests::learner::{ClassBatch, ClassBatcher, class_items, fit};
use burn_data_parallel_tests::*;

use burn::data::dataloader::batcher::Batcher;

const TOLERANCE: f32 = 1e-5;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bdp-learner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn class_batch<B: Backend>(size: usize, device: &B::Device) -> ClassBatch<B> {
    ClassBatcher.batch(class_items(size, 5, 3), device)
}

/// Trains the bare model and a `DataParallel` with the `Learner` and compares weights and
/// every metric value the `Learner` reported.
fn learner_matches_bare<B: AutodiffBackend>(host: B::Device, devices: Vec<B::Device>, name: &str) {
    let replicas = devices.len();
    let model = initialised(Mlp::<B>::new(5, 3, &host));
    let bare = bare_copy(&model);
    // 30 samples in batches of 7: four full batches and one of 2, so splits are uneven.
    let items = class_items(30, 5, 3);

    let bare_dir = scratch_dir(&format!("{name}-bare-{replicas}"));
    let dp_dir = scratch_dir(&format!("{name}-dp-{replicas}"));
    let (bare, bare_metrics) = fit(bare, items.clone(), 7, 2, &bare_dir);
    let dp = DataParallel::new(model, devices).expect("valid devices");
    let (dp, dp_metrics) = fit(dp, items, 7, 2, &dp_dir);

    assert_same_params(dp.template(), &bare, TOLERANCE);
    assert_eq!(dp_metrics.len(), bare_metrics.len());
    assert!(bare_metrics.iter().any(|(_, name, _)| name == "Accuracy"));
    assert!(
        bare_metrics
            .iter()
            .any(|(split, name, _)| *split == "valid" && name == "Loss")
    );
    for ((split, name, actual), (_, expected_name, expected)) in
        dp_metrics.iter().zip(&bare_metrics)
    {
        assert_eq!(name, expected_name);
        let error = (actual - expected).abs() / expected.abs().max(1e-12);
        assert!(error <= 1e-5, "{split} {name}: {actual} against {expected}");
    }

    // The checkpoint of the last epoch is the template's record: it loads into a bare model.
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let loaded = Mlp::<B::InnerBackend>::new(5, 3, &host)
        .load_file(dp_dir.join("checkpoint").join("model-2"), &recorder, &host)
        .expect("the Learner's checkpoint loads into the bare model");
    assert_eq!(float_params(&loaded), float_params(dp.template()));

    let _ = std::fs::remove_dir_all(bare_dir);
    let _ = std::fs::remove_dir_all(dp_dir);
}

#[test]
fn the_learner_gives_the_bare_models_weights_and_metrics_on_repeated_devices() {
    for replicas in 1..=4 {
        learner_matches_bare::<NdAutodiff>(NdArrayDevice::Cpu, nd_devices(replicas), "nd");
    }
}

#[test]
fn the_learner_gives_the_bare_models_weights_and_metrics_on_distinct_devices() {
    for replicas in [2, 3] {
        learner_matches_bare::<DispatchAutodiff>(flex(), mixed_devices(replicas), "mixed");
    }
}

#[test]
fn a_train_step_gives_the_full_batch_item_and_gradients() {
    let host = flex();
    for replicas in 1..=4 {
        for batch in [8, 7, 2] {
            let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host));
            let bare = bare_copy(&model);
            let dp = DataParallel::new(model, mixed_devices(replicas)).expect("valid");

            let expected = TrainStep::step(&bare, class_batch(batch, &host));
            let actual = dp.try_train_step(class_batch(batch, &host)).expect("step");

            let what = format!("{replicas} replicas, batch {batch}");
            assert_close(
                &actual.item.loss.to_data(),
                &expected.item.loss.to_data(),
                TOLERANCE,
                &what,
            );
            assert_close(
                &actual.item.output.to_data(),
                &expected.item.output.to_data(),
                TOLERANCE,
                &what,
            );
            assert_eq!(
                actual.item.targets.to_data(),
                expected.item.targets.to_data()
            );
            assert_eq!(
                actual.item.output.device(),
                host,
                "items are merged on the host"
            );

            let expected = gradients(&bare, &expected.grads);
            let actual_grads = gradients(dp.template(), &actual.grads);
            for ((id, a), (_, e)) in actual_grads.iter().zip(&expected) {
                let (a, e) = (a.as_ref().expect("grad"), e.as_ref().expect("grad"));
                assert_close(a, e, TOLERANCE, &format!("gradient of {id}, {what}"));
            }
            let on_host = actual
                .grads
                .get::<burn::Dispatch, 2>(float_params(dp.template())[0].0);
            assert_eq!(
                on_host.map(|g| g.device()),
                Some(host.clone()),
                "gradients are on the host"
            );
        }
    }
}

/// Trains with `try_train_step` and Adam for five steps and returns every weight.
fn five_steps(replicas: usize) -> Vec<TensorData> {
    let host = flex();
    // One model for every run, initialised once: the backend's random generator is global,
    // and tests running at the same time would draw from it between a seed and a draw.
    static MODEL: std::sync::OnceLock<Mlp<DispatchAutodiff>> = std::sync::OnceLock::new();
    let model = bare_copy(MODEL.get_or_init(|| initialised(Mlp::new(5, 3, &flex()))));
    let mut dp = DataParallel::new(model, mixed_devices(replicas)).expect("valid");
    let mut optim = AdamConfig::new().init();
    for _ in 0..5 {
        let output = dp.try_train_step(class_batch(11, &host)).expect("step");
        dp = optim.step(1e-2, dp, output.grads);
    }
    float_params(dp.template())
        .into_iter()
        .map(|(_, data)| data)
        .collect()
}

#[test]
fn two_runs_with_one_seed_give_bit_identical_weights() {
    for replicas in [3, 4] {
        assert_eq!(
            five_steps(replicas),
            five_steps(replicas),
            "{replicas} replicas"
        );
    }
}

#[test]
fn inference_on_several_devices_equals_the_bare_models_predictions() {
    let host = flex();
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host));
    let bare = model.valid();
    let dp = DataParallel::new(model, mixed_devices(3))
        .expect("valid")
        .valid();
    for batch in [9, 7, 1] {
        let expected = InferenceStep::step(&bare, class_batch(batch, &host));
        let actual = InferenceStep::step(&dp, class_batch(batch, &host));
        assert_close(
            &actual.output.to_data(),
            &expected.output.to_data(),
            TOLERANCE,
            "logits",
        );
        assert_close(
            &actual.loss.to_data(),
            &expected.loss.to_data(),
            TOLERANCE,
            "loss",
        );
        assert_eq!(actual.output.device(), host);
    }
}

fn assert_values(actual: Tensor<impl Backend, 1>, expected: &[f64], what: &str) {
    let actual = actual.into_data().to_vec::<f32>().expect("floats");
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (f64::from(*a) - e).abs() <= 1e-5 * e.abs().max(1.0),
            "{what}: {actual:?} against {expected:?}"
        );
    }
}

#[test]
fn batchnorm_running_stats_are_the_shard_weighted_mean_on_the_host() {
    let host = flex();
    let (inputs, channels, batch) = (4, 3, 7);
    let model = initialised(Normalised::<DispatchAutodiff>::new(inputs, channels, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    let x = random::<DispatchAutodiff, 2>([batch, inputs], 9, &host);
    let targets = random::<DispatchAutodiff, 2>([batch, channels], 10, &host);

    // The linear layer's outputs, computed by the bare model, feed BatchNorm.
    let linear_out = bare
        .linear
        .forward(x.clone())
        .into_data()
        .to_vec::<f32>()
        .expect("floats");
    let _ = dp
        .try_train_step((x.clone(), targets.clone()))
        .expect("step");

    // Shards of 3, 2 and 2 rows. Momentum 0.1, from a mean of 0 and a variance of 1:
    // running = 0.9 · initial + 0.1 · Σ n_i/n · (shard statistic).
    let shards = [0..3, 3..5, 5..7];
    let (mut mean, mut var) = (vec![0.0; channels], vec![0.9; channels]);
    for rows in shards {
        let weight = rows.len() as f64 / batch as f64;
        let (m, v) = channel_stats(&linear_out, channels, rows);
        for c in 0..channels {
            mean[c] += 0.1 * weight * m[c];
            var[c] += 0.1 * weight * v[c];
        }
    }
    let norm = &dp.template().norm;
    assert_values(norm.running_mean.value(), &mean, "running mean");
    assert_values(norm.running_var.value(), &var, "running variance");
    assert_eq!(
        norm.running_mean.value().device(),
        host,
        "running mean on the host"
    );
    assert_eq!(
        norm.running_var.value().device(),
        host,
        "running variance on the host"
    );

    // The running mean is exactly the single-device one; the variance misses the spread
    // between shard means.
    let _ = TrainStep::step(&bare, (x, targets));
    let (full_mean, _) = channel_stats(&linear_out, channels, 0..batch);
    let single_mean: Vec<f64> = full_mean.iter().map(|m| 0.1 * m).collect();
    assert_values(
        norm.running_mean.value(),
        &single_mean,
        "single-device running mean",
    );
    assert_values(
        bare.norm.running_mean.value_sync(),
        &single_mean,
        "bare running mean",
    );
}

#[test]
fn running_stats_keep_every_step() {
    let host = flex();
    let model = initialised(Normalised::<DispatchAutodiff>::new(4, 3, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, mixed_devices(2)).expect("valid");
    for step in 0..3 {
        // Even shards of 4: each step's mean is exactly the single-device one.
        let batch = (
            random([8, 4], 20 + step, &host),
            random([8, 3], 30 + step, &host),
        );
        let _ = dp.try_train_step(batch.clone()).expect("step");
        let _ = TrainStep::step(&bare, batch);
    }
    let expected = bare.norm.running_mean.value_sync().into_data();
    let actual = dp.template().norm.running_mean.value().into_data();
    assert_close(
        &actual,
        &expected,
        TOLERANCE,
        "running mean after three steps",
    );
}

/// A linear regressor whose loss is summed over the batch.
#[derive(Module, Debug)]
struct SummedRegressor<B: Backend> {
    linear: Linear<B>,
}

impl<B: AutodiffBackend> TrainStep for SummedRegressor<B> {
    type Input = (Tensor<B, 2>, Tensor<B, 2>);
    type Output = RegressionOutput<B>;

    fn step(&self, (x, targets): Self::Input) -> TrainOutput<Self::Output> {
        let output = self.linear.forward(x);
        let loss = (output.clone() - targets.clone()).powi_scalar(2).sum();
        let grads = loss.backward();
        TrainOutput::new(self, grads, RegressionOutput::new(loss, output, targets))
    }
}

#[test]
fn sum_reduced_losses_need_and_get_the_sum_reduction() {
    let host = NdArrayDevice::Cpu;
    let model = initialised(SummedRegressor::<NdAutodiff> {
        linear: LinearConfig::new(4, 2).init(&host),
    });
    let bare = bare_copy(&model);
    let batch = || {
        (
            random::<NdAutodiff, 2>([7, 4], 1, &host),
            random::<NdAutodiff, 2>([7, 2], 2, &host),
        )
    };
    let expected = TrainStep::step(&bare, batch());
    let expected_grads = gradients(&bare, &expected.grads);

    let summed = DataParallel::new(model.clone(), nd_devices(3))
        .expect("valid")
        .with_reduction(Reduction::Sum);
    let actual = summed.try_train_step(batch()).expect("step");
    assert_close(
        &actual.item.loss.to_data(),
        &expected.item.loss.to_data(),
        TOLERANCE,
        "summed loss",
    );
    for ((_, a), (_, e)) in gradients(summed.template(), &actual.grads)
        .iter()
        .zip(&expected_grads)
    {
        assert_close(
            a.as_ref().expect("grad"),
            e.as_ref().expect("grad"),
            TOLERANCE,
            "summed gradient",
        );
    }

    // With the default mean weighting, a sum-reduced loss gets a gradient that is too small.
    let meaned = DataParallel::new(model, nd_devices(3)).expect("valid");
    let wrong = meaned.try_train_step(batch()).expect("step");
    let (_, wrong) = &gradients(meaned.template(), &wrong.grads)[0];
    let (_, right) = &expected_grads[0];
    assert!(relative_error(wrong.as_ref().expect("grad"), right.as_ref().expect("grad")) > 0.1);
}

/// The optimizer's state as bytes per parameter id, sorted, to compare bit for bit (the record
/// is a `HashMap`, whose order changes between calls).
fn optimizer_bytes<O, S>(optim: &O) -> Vec<(String, Vec<u8>)>
where
    O: Optimizer<DataParallel<DispatchAutodiff, Normalised<DispatchAutodiff>>, DispatchAutodiff>,
    O::Record: IntoIterator<Item = (burn::module::ParamId, S)>,
    S: burn::record::Record<DispatchAutodiff>,
{
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
    let mut entries: Vec<_> = optim
        .to_record()
        .into_iter()
        .map(|(id, state)| {
            let bytes = recorder
                .record(state, ())
                .expect("the optimizer state serialises");
            (id.to_string(), bytes)
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn a_replica_that_panics_leaves_the_template_and_the_optimizer_unchanged() {
    let host = flex();
    let model = initialised(Normalised::<DispatchAutodiff>::new(4, 3, &host));
    let mut dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    let mut optim = AdamConfig::new().init();
    for step in 0..3 {
        let batch = (
            random([6, 4], step, &host),
            random([6, 3], 10 + step, &host),
        );
        let output = dp.try_train_step(batch).expect("step");
        dp = optim.step(1e-2, dp, output.grads);
    }
    let weights = float_params(dp.template());
    let state = optimizer_bytes(&optim);

    // Targets with the wrong width: every replica's loss fails to broadcast.
    let bad = || (random([6, 4], 1, &host), random([6, 5], 2, &host));
    let error = dp.try_train_step(bad()).err().expect("shape error");
    assert!(
        matches!(error, DataParallelError::ReplicaPanicked { index: 0, .. }),
        "{error}"
    );
    // Through the Learner's entry point the same failure is a panic.
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| TrainStep::step(&dp, bad())));
    assert!(panicked.is_err());

    assert_eq!(
        float_params(dp.template()),
        weights,
        "weights and running stats, bit for bit"
    );
    assert_eq!(
        optimizer_bytes(&optim),
        state,
        "the optimizer's state, bit for bit"
    );
}

#[test]
#[should_panic(
    expected = "DataParallel training step failed: replica 0 on device NdArray(Cpu) panicked"
)]
fn train_step_panics_with_the_replica_and_device() {
    let host = flex();
    let dp = DataParallel::new(Mlp::<DispatchAutodiff>::new(5, 3, &host), mixed_devices(2))
        .expect("valid");
    // Labels out of range for 3 classes make the cross-entropy fail on every replica.
    let batch = class_batch::<DispatchAutodiff>(4, &host);
    let targets = Tensor::from_data(TensorData::new(vec![7i64; 4], [4]), &host);
    let _ = TrainStep::step(&dp, ClassBatch { targets, ..batch });
}

#[test]
fn gradients_from_a_train_step_update_the_template_like_the_bare_models() {
    let host = NdArrayDevice::Cpu;
    let model = initialised(Mlp::<NdAutodiff>::new(5, 3, &host));
    let mut bare = bare_copy(&model);
    let mut dp = DataParallel::new(model, nd_devices(4)).expect("valid");
    let (mut bare_optim, mut dp_optim) = (AdamConfig::new().init(), AdamConfig::new().init());
    for step in 0..10 {
        let batch = class_batch::<NdAutodiff>(9 + step, &host);
        let output = TrainStep::step(&bare, batch.clone());
        bare = bare_optim.step(1e-2, bare, output.grads);
        let output = dp.try_train_step(batch).expect("step");
        dp = dp_optim.step(1e-2, dp, output.grads);
    }
    assert_same_params(dp.template(), &bare, TOLERANCE);
}
