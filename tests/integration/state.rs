//! BatchNorm's running statistics on both paths against a hand-computed recurrence, and a
//! trained model's file (running statistics included) read back.

use burn::module::Module;
use burn::optim::{AdamConfig, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_data_parallel::DataParallel;
use burn_data_parallel_tests::learner::RegressionBatch;
use burn_data_parallel_tests::*;

const TOLERANCE: f32 = 1e-5;
const INPUTS: usize = 4;
const CHANNELS: usize = 3;
/// Seven rows over three replicas: shards of 3, 2 and 2.
const ROWS: usize = 7;
const SHARDS: [core::ops::Range<usize>; 3] = [0..3, 3..5, 5..7];
const MOMENTUM: f64 = 0.1;

/// How the replicas' statistics are combined.
#[derive(Clone, Copy)]
enum Merge {
    /// Each shard weighted by its share of the batch, `n_i/n` (the train-step path).
    ShardWeighted,
    /// Each replica counts once, whatever its rows: Burn's mean over the threads that updated
    /// a shared `RunningState` (the Keras-style `forward`).
    Unweighted,
}

/// The running statistics after one step from `(mean, var)`:
/// `running = (1 − m)·running + m·Σ w_i · stat_i`, with `w_i` as `merge` says.
fn recurrence(
    merge: Merge,
    linear_out: &[f32],
    (mean, var): (Vec<f64>, Vec<f64>),
) -> (Vec<f64>, Vec<f64>) {
    let (mut next_mean, mut next_var): (Vec<f64>, Vec<f64>) = (
        mean.iter().map(|m| (1.0 - MOMENTUM) * m).collect(),
        var.iter().map(|v| (1.0 - MOMENTUM) * v).collect(),
    );
    for rows in SHARDS {
        let weight = match merge {
            Merge::ShardWeighted => rows.len() as f64 / ROWS as f64,
            Merge::Unweighted => 1.0 / SHARDS.len() as f64,
        };
        let (m, v) = channel_stats(linear_out, CHANNELS, rows);
        for c in 0..CHANNELS {
            next_mean[c] += MOMENTUM * weight * m[c];
            next_var[c] += MOMENTUM * weight * v[c];
        }
    }
    (next_mean, next_var)
}

fn assert_values<B: Backend>(actual: Tensor<B, 1>, expected: &[f64], what: &str) {
    let expected = burn::tensor::TensorData::new(
        expected.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        [expected.len()],
    );
    assert_close(&actual.into_data(), &expected, TOLERANCE, what);
}

/// Runs three steps through `step` on a `DataParallel` of [`Normalised`] over three replicas,
/// and checks the running statistics after each against the recurrence.
fn check_three_steps(
    path: &str,
    merge: Merge,
    step: impl Fn(
        &DataParallel<DispatchAutodiff, Normalised<DispatchAutodiff>>,
        RegressionBatch<DispatchAutodiff>,
    ),
) {
    let host = flex();
    let model = initialised(Normalised::<DispatchAutodiff>::new(INPUTS, CHANNELS, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    // BatchNorm starts from a mean of 0 and a variance of 1.
    let mut expected = (vec![0.0; CHANNELS], vec![1.0; CHANNELS]);
    for t in 0..3 {
        let x = random::<DispatchAutodiff, 2>([ROWS, INPUTS], 40 + t, &host);
        let targets = random::<DispatchAutodiff, 2>([ROWS, CHANNELS], 50 + t, &host);
        // No optimizer step: the linear layer's outputs, from the bare copy, feed BatchNorm.
        let linear_out = bare
            .linear
            .forward(x.clone())
            .into_data()
            .to_vec::<f32>()
            .expect("floats");
        step(&dp, (x, targets));
        expected = recurrence(merge, &linear_out, expected);
        let norm = &dp.template().norm;
        let what = |stat: &str| format!("{path}: running {stat} after step {}", t + 1);
        assert_values(norm.running_mean.value_sync(), &expected.0, &what("mean"));
        assert_values(
            norm.running_var.value_sync(),
            &expected.1,
            &what("variance"),
        );
        assert_eq!(
            norm.running_mean.value().device(),
            host,
            "{}",
            what("mean on the host")
        );
        assert_eq!(
            norm.running_var.value().device(),
            host,
            "{}",
            what("variance on the host")
        );
    }
}

#[test]
fn running_stats_follow_the_shard_weighted_recurrence_on_the_train_step_path() {
    check_three_steps("train step", Merge::ShardWeighted, |dp, batch| {
        let _ = dp.try_train_step(batch).expect("a step");
    });
}

#[test]
fn running_stats_follow_the_unweighted_recurrence_on_the_keras_style_path() {
    check_three_steps("Keras-style forward", Merge::Unweighted, |dp, (x, _)| {
        let _ = dp
            .try_forward(x, |model, shard| model.forward(shard))
            .expect("a forward");
    });
}

#[test]
fn running_stats_follow_the_shard_weighted_recurrence_on_the_parallel_keras_style_path() {
    check_three_steps(
        "parallel Keras-style forward",
        Merge::ShardWeighted,
        |dp, (x, _)| {
            let (y, pending) = dp
                .try_forward_parallel(x, |model, shard| model.forward(shard))
                .expect("a forward");
            let _ = pending.backward(y.powi_scalar(2).mean());
        },
    );
}

#[test]
fn a_trained_model_saved_with_its_running_stats_loads_into_the_bare_model() {
    let host = flex();
    let model = initialised(Normalised::<DispatchAutodiff>::new(INPUTS, CHANNELS, &host));
    let mut dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    let mut optim = AdamConfig::new().init();
    for t in 0..4 {
        let batch = (
            random::<DispatchAutodiff, 2>([ROWS, INPUTS], 60 + t, &host),
            random::<DispatchAutodiff, 2>([ROWS, CHANNELS], 70 + t, &host),
        );
        let output = dp.try_train_step(batch).expect("a step");
        dp = optim.step(1e-2, dp, output.grads);
    }
    // Training changed the weights and the statistics: the file holds trained values.
    let fresh = Normalised::<DispatchAutodiff>::new(INPUTS, CHANNELS, &host);
    let trained_mean = dp.template().norm.running_mean.value_sync().into_data();
    assert!(
        first_outside(
            &trained_mean,
            &fresh.norm.running_mean.value().into_data(),
            0.0,
            1e-3
        )
        .is_some(),
        "the running mean moved during training"
    );

    let dir = std::env::temp_dir().join(format!("bdp-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("trained");
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    dp.clone().save_file(&path, &recorder).expect("saved");
    let loaded = Normalised::<DispatchAutodiff>::new(INPUTS, CHANNELS, &host)
        .load_file(&path, &recorder, &host)
        .expect("loaded into the bare model");
    std::fs::remove_dir_all(&dir).expect("clean up");

    // Every tensor of the file, running statistics included, is the template's exactly. (With
    // BatchNorm, shards normalise with their own statistics, so the weights are not the
    // single-device ones: that is what `SyncBatchNorm` is for.)
    let (loaded_params, template_params) = (float_params(&loaded), float_params(dp.template()));
    assert_eq!(loaded_params.len(), template_params.len());
    for ((id_l, l), (id_t, t)) in loaded_params.iter().zip(&template_params) {
        assert_eq!(id_l, id_t);
        assert_eq!(l, t, "parameter {id_l} read back");
    }
}
