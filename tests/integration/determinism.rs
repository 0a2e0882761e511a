//! Reductions follow device order, never completion order: two runs whose replicas finish in
//! opposite orders give bit-identical outputs, gradients, running state and weights.
//!
//! Four replicas, so that the order of the additions matters in `f32` (with two, `a + b` and
//! `b + a` are the same number). Each replica sleeps in proportion to its rank in the chosen
//! order, and the order in which they finished is recorded to prove the runs really differed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use burn::train::{RegressionOutput, TrainOutput, TrainStep};
use burn_data_parallel::DataParallel;
use burn_data_parallel_tests::learner::RegressionBatch;
use burn_data_parallel_tests::*;

const REPLICAS: usize = 4;

/// Whether the last replica finishes first (else the first does).
static REVERSED: AtomicBool = AtomicBool::new(false);
/// The replicas' indices, in the order they finished.
static FINISHED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// One run at a time: the two statics above belong to it.
static RUN: Mutex<()> = Mutex::new(());

fn one_run_at_a_time() -> MutexGuard<'static, ()> {
    RUN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The index of the replica whose worker runs this code (`dp-replica-{i}`).
fn replica_index() -> usize {
    std::thread::current()
        .name()
        .and_then(|name| name.strip_prefix("dp-replica-"))
        .and_then(|index| index.parse().ok())
        .expect("called on a replica's worker thread")
}

/// Sleeps so that replicas finish in the chosen order, then records the finish.
fn finish_in_order() {
    let index = replica_index();
    let rank = if REVERSED.load(Ordering::SeqCst) {
        REPLICAS - 1 - index
    } else {
        index
    };
    std::thread::sleep(Duration::from_millis(60 * rank as u64));
    FINISHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(index);
}

fn start_run(reversed: bool) {
    REVERSED.store(reversed, Ordering::SeqCst);
    FINISHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

fn finish_order() -> Vec<usize> {
    FINISHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// [`Normalised`] (a linear layer and BatchNorm), whose step finishes in the chosen order.
#[derive(Module, Debug)]
struct Ordered<B: Backend> {
    inner: Normalised<B>,
}

impl<B: AutodiffBackend> TrainStep for Ordered<B> {
    type Input = RegressionBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let item = self.inner.regress(batch);
        let grads = item.loss.backward();
        finish_in_order();
        TrainOutput::new(self, grads, item)
    }
}

/// Everything a run produced, as data.
#[derive(Debug, PartialEq)]
struct Run {
    outputs: Vec<TensorData>,
    gradients: Vec<Option<TensorData>>,
    weights: Vec<TensorData>,
}

/// Values from a formula, not the backend's random generator: that generator is global, and
/// tests running at the same time would draw from it between the two runs.
fn values<const D: usize>(shape: [usize; D], salt: u64) -> Tensor<DispatchAutodiff, D> {
    let len: usize = shape.iter().product();
    let data: Vec<f32> = (0..len)
        .map(|i| ((i as f64 * 0.7 + salt as f64 * 1.3).sin() * 0.9) as f32)
        .collect();
    Tensor::from_data(TensorData::new(data, shape), &flex())
}

fn batch(step: u64) -> RegressionBatch<DispatchAutodiff> {
    // 11 rows: shards of 3, 3, 3 and 2.
    (values([11, 4], 100 + step), values([11, 3], 200 + step))
}

/// One model for both runs of a test: each run trains its own copy (leaves and running state
/// of its own, same values).
fn model<M: burn::module::AutodiffModule<DispatchAutodiff>>(
    cell: &'static std::sync::OnceLock<M>,
    make: impl FnOnce() -> M,
) -> M {
    bare_copy(cell.get_or_init(|| initialised(make())))
}

/// Three `try_train_step`s with Adam, replicas finishing in the chosen order.
fn train_step_run(reversed: bool) -> (Run, Vec<usize>) {
    static MODEL: std::sync::OnceLock<Ordered<DispatchAutodiff>> = std::sync::OnceLock::new();
    let model = model(&MODEL, || Ordered {
        inner: Normalised::new(4, 3, &flex()),
    });
    let mut dp = DataParallel::new(model, mixed_devices(REPLICAS)).expect("valid");
    let mut optim = AdamConfig::new().init();
    let (mut outputs, mut all_gradients) = (Vec::new(), Vec::new());
    start_run(reversed);
    for step in 0..3 {
        let output = dp.try_train_step(batch(step)).expect("a step");
        outputs.push(output.item.output.to_data());
        outputs.push(output.item.loss.to_data());
        all_gradients.extend(
            gradients(dp.template(), &output.grads)
                .into_iter()
                .map(|g| g.1),
        );
        dp = optim.step(1e-2, dp, output.grads);
    }
    let weights = float_params(dp.template())
        .into_iter()
        .map(|p| p.1)
        .collect();
    let run = Run {
        outputs,
        gradients: all_gradients,
        weights,
    };
    (run, finish_order())
}

/// Three Keras-style steps (forward, one backward, Adam), replicas finishing in the chosen
/// order.
fn keras_run(reversed: bool) -> (Run, Vec<usize>) {
    static MODEL: std::sync::OnceLock<ConvNet<DispatchAutodiff>> = std::sync::OnceLock::new();
    let model = model(&MODEL, || ConvNet::new(3, &flex()));
    let mut dp = DataParallel::new(model, mixed_devices(REPLICAS)).expect("valid");
    let mut optim = AdamConfig::new().init();
    let (mut outputs, mut all_gradients) = (Vec::new(), Vec::new());
    start_run(reversed);
    for step in 0..3 {
        let images = values([11, 1, 6, 6], 300 + step);
        let output = dp.forward(images, |model, shard| {
            let output = model.forward(shard);
            finish_in_order();
            output
        });
        outputs.push(output.to_data());
        let grads = GradientsParams::from_grads(output.powi_scalar(2).mean().backward(), &dp);
        all_gradients.extend(gradients(dp.template(), &grads).into_iter().map(|g| g.1));
        dp = optim.step(1e-2, dp, grads);
    }
    let weights = float_params(dp.template())
        .into_iter()
        .map(|p| p.1)
        .collect();
    let run = Run {
        outputs,
        gradients: all_gradients,
        weights,
    };
    (run, finish_order())
}

/// Three Keras-style steps with a parallel backward (`forward_parallel`, Adam) on
/// [`Normalised`], whose running state merges too, replicas finishing their forward passes in
/// the chosen order (their backward passes run in no set order either).
fn parallel_keras_run(reversed: bool) -> (Run, Vec<usize>) {
    static MODEL: std::sync::OnceLock<Normalised<DispatchAutodiff>> = std::sync::OnceLock::new();
    let model = model(&MODEL, || Normalised::new(4, 3, &flex()));
    let mut dp = DataParallel::new(model, mixed_devices(REPLICAS)).expect("valid");
    let mut optim = AdamConfig::new().init();
    let (mut outputs, mut all_gradients) = (Vec::new(), Vec::new());
    start_run(reversed);
    for step in 0..3 {
        let (x, targets) = batch(step);
        let (output, pending) = dp.forward_parallel(x, |model, shard| {
            let output = model.forward(shard);
            finish_in_order();
            output
        });
        outputs.push(output.to_data());
        let grads = pending.backward((output - targets).powi_scalar(2).mean());
        all_gradients.extend(gradients(dp.template(), &grads).into_iter().map(|g| g.1));
        dp = optim.step(1e-2, dp, grads);
    }
    let weights = float_params(dp.template())
        .into_iter()
        .map(|p| p.1)
        .collect();
    let run = Run {
        outputs,
        gradients: all_gradients,
        weights,
    };
    (run, finish_order())
}

fn assert_same_in_opposite_orders(run: fn(bool) -> (Run, Vec<usize>)) {
    let _one = one_run_at_a_time();
    let (forwards, first_order) = run(false);
    let (backwards, second_order) = run(true);
    // Three steps of four replicas each, in opposite orders.
    assert_eq!(
        first_order,
        [0, 1, 2, 3].repeat(3),
        "the first run's finish order"
    );
    assert_eq!(
        second_order,
        [3, 2, 1, 0].repeat(3),
        "the second run's finish order"
    );
    // Four trainable tensors in each model (running statistics have no gradient), three steps.
    assert_eq!(
        forwards.gradients.iter().filter(|g| g.is_some()).count(),
        4 * 3,
        "every trainable parameter has a gradient"
    );
    assert_eq!(forwards, backwards, "results differ with the finish order");
}

#[test]
fn the_train_step_path_does_not_depend_on_the_finish_order() {
    assert_same_in_opposite_orders(train_step_run);
}

#[test]
fn the_keras_style_path_does_not_depend_on_the_finish_order() {
    assert_same_in_opposite_orders(keras_run);
}

#[test]
fn the_parallel_keras_style_path_does_not_depend_on_the_finish_order() {
    assert_same_in_opposite_orders(parallel_keras_run);
}
