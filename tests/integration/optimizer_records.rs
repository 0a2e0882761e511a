//! Optimizer checkpoints: the Adam state saved while training a `DataParallel` is the bare
//! model's, and a run resumed from a file either way follows the uninterrupted bare run; the
//! same with `ParallelOptimizer`, whose records are the adaptor's.

use burn::data::dataloader::batcher::Batcher;
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Record, Recorder};
use burn::train::TrainStep;
use burn_data_parallel::{DataParallel, ParallelOptimizer};
use burn_data_parallel_tests::learner::{ClassBatch, ClassBatcher, class_items};
use burn_data_parallel_tests::*;

type B = DispatchAutodiff;
type Dp = DataParallel<B, Mlp<B>>;

const LEARNING_RATE: f64 = 1e-2;
/// Steps before the checkpoint, and again after it.
const HALF: usize = 3;
/// How close six Adam steps stay to the bare model's. As for the other comparisons with the bare model: the data-parallel gradient sums the shards'
/// gradients where the bare model sums every row at once, and the CPU kernels' own parallel
/// sums split their work by the threads free at the time, so the runs differ in rounding. Adam
/// divides by the root of the gradient's second moment, which lifts those differences for
/// parameters whose gradient is near zero: 3e-6 was seen on a busy machine.
const TOLERANCE: f32 = 1e-5;

fn batch() -> ClassBatch<B> {
    ClassBatcher.batch(class_items(9, 5, 3), &flex())
}

fn devices() -> Vec<burn::DispatchDevice> {
    vec![ndarray(), flex()]
}

/// `steps` Adam steps of the bare model with `optim`.
fn bare_steps<O: Optimizer<Mlp<B>, B>>(mut model: Mlp<B>, optim: &mut O, steps: usize) -> Mlp<B> {
    for _ in 0..steps {
        let grads = TrainStep::step(&model, batch()).grads;
        model = optim.step(LEARNING_RATE, model, grads);
    }
    model
}

/// `steps` Adam steps of `dp` with `optim`, on the per-replica path.
fn dp_steps<O: Optimizer<Dp, B>>(mut dp: Dp, optim: &mut O, steps: usize) -> Dp {
    for _ in 0..steps {
        let grads = dp.try_train_step(batch()).expect("step").grads;
        dp = optim.step(LEARNING_RATE, dp, grads);
    }
    dp
}

/// `record` written to a file named after `name` and read back from it.
fn through_file<R: Record<B>>(record: R, name: &str) -> R {
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let path = std::env::temp_dir().join(format!("bdp-optim-{}-{name}", std::process::id()));
    recorder
        .record(record, path.clone())
        .expect("the optimizer state saves");
    let record = recorder.load(path.clone(), &flex()).expect("it loads");
    let _ = std::fs::remove_file(path.with_extension("bin"));
    record
}

/// The uninterrupted bare run, and the model the resumed runs start from.
fn reference() -> (Mlp<B>, Mlp<B>) {
    let model = initialised(Mlp::<B>::new(5, 3, &flex()));
    let mut optim = AdamConfig::new().init();
    let uninterrupted = bare_steps(model.clone(), &mut optim, 2 * HALF);
    (model, uninterrupted)
}

#[test]
fn adam_state_saved_with_data_parallel_resumes_the_bare_model() {
    let (model, uninterrupted) = reference();
    let mut optim = AdamConfig::new().init::<B, Dp>();
    let dp = dp_steps(
        DataParallel::new(model, devices()).expect("valid"),
        &mut optim,
        HALF,
    );
    let record = through_file(optim.to_record(), "from-dp");
    let mut bare_optim = AdamConfig::new().init::<B, Mlp<B>>().load_record(record);
    assert_eq!(
        bare_optim.to_record().len(),
        4,
        "two weights and two biases"
    );
    let resumed = bare_steps(dp.into_inner(), &mut bare_optim, HALF);
    assert_same_params(&resumed, &uninterrupted, TOLERANCE);
}

#[test]
fn adam_state_saved_with_the_bare_model_resumes_data_parallel() {
    let (model, uninterrupted) = reference();
    let mut optim = AdamConfig::new().init::<B, Mlp<B>>();
    let bare = bare_steps(model, &mut optim, HALF);
    let record = through_file(optim.to_record(), "from-bare");
    let mut dp_optim = AdamConfig::new().init::<B, Dp>().load_record(record);
    let dp = DataParallel::new(bare, devices()).expect("valid");
    let resumed = dp_steps(dp, &mut dp_optim, HALF);
    assert_same_params(resumed.template(), &uninterrupted, TOLERANCE);
    // And on the inference copy, as `valid()` hands it to validation.
    assert_same_params(
        &resumed.valid().into_inner(),
        &uninterrupted.valid(),
        TOLERANCE,
    );
}

#[test]
fn parallel_adam_state_resumes_the_bare_model() {
    let (model, uninterrupted) = reference();
    let mut optim = ParallelOptimizer::from_adaptor(AdamConfig::new().init::<B, Dp>());
    let dp = dp_steps(
        DataParallel::new(model, devices()).expect("valid"),
        &mut optim,
        HALF,
    );
    let record = through_file(optim.to_record(), "from-parallel");
    let mut bare_optim = AdamConfig::new().init::<B, Mlp<B>>().load_record(record);
    let resumed = bare_steps(dp.into_inner(), &mut bare_optim, HALF);
    assert_same_params(&resumed, &uninterrupted, TOLERANCE);
}

#[test]
fn the_bare_models_adam_state_resumes_a_parallel_optimizer() {
    let (model, uninterrupted) = reference();
    let mut optim = AdamConfig::new().init::<B, Mlp<B>>();
    let bare = bare_steps(model, &mut optim, HALF);
    let record = through_file(optim.to_record(), "to-parallel");
    let mut dp_optim =
        ParallelOptimizer::<_, B, Mlp<B>>::new(AdamConfig::new().build()).load_record(record);
    let dp = DataParallel::new(bare, devices()).expect("valid");
    let resumed = dp_steps(dp, &mut dp_optim, HALF);
    assert_same_params(resumed.template(), &uninterrupted, TOLERANCE);
}
