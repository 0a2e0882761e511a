//! Exactness checks that report instead of asserting, for `gpu-check`: each runs
//! `DataParallel` with a given host and replica devices, and the bare model on a device of the
//! same kind, and measures both against a float64 reference of the same computation on the CPU.
//!
//! A GPU's kernels may sum in another order than the CPU's, or at reduced internal precision,
//! so the bare model on a GPU is itself some way from the exact result. The criterion is
//! therefore relative to it: for every quantity (an output, a loss, a parameter's gradient or
//! weights), `DataParallel`'s error against the reference must be within [`FACTOR`] times the
//! bare model's own error, plus [`FLOOR`] for values that rounding alone moves (a sum that
//! cancels to near zero, a few ulps of float32).

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, DoublePrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use burn::train::TrainStep;
use burn_data_parallel::DataParallel;

use crate::learner::{ClassBatch, ClassBatcher, class_items};
use crate::{Mlp, bare_copy, float_params, gradients, initialised, random, worst_of};
use burn::data::dataloader::batcher::Batcher;

/// How many times the bare model's error `DataParallel`'s may be.
pub const FACTOR: f64 = 2.0;

/// The error, relative to the quantity's largest magnitude, that any result may have whatever
/// the bare model's: a few float32 rounding steps accumulated over ten optimizer steps.
pub const FLOOR: f64 = 1e-6;

/// What one check measured: the largest error against the float64 reference of the bare model
/// and of `DataParallel`, over every quantity compared, and whether every quantity met the
/// criterion (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// The bare model's largest relative error against the reference.
    pub bare: f64,
    /// `DataParallel`'s largest relative error against the reference.
    pub data_parallel: f64,
    /// Whether, quantity by quantity, `DataParallel`'s error was within
    /// `FACTOR · bare + FLOOR`.
    pub pass: bool,
}

/// What a check measured, or why it could not run.
pub type Outcome = Result<Measured, String>;

/// The largest error, NaN if any is NaN: a check that computed NaN must not pass.
pub fn worst(errors: impl IntoIterator<Item = f32>) -> f32 {
    errors.into_iter().fold(0.0, worst_of)
}

/// The largest absolute difference between `actual` and `reference`, relative to the largest
/// magnitude in `reference`, computed in float64. NaN when either holds NaN.
pub fn error_against(actual: &TensorData, reference: &TensorData) -> f64 {
    assert_eq!(actual.shape, reference.shape, "shapes differ");
    let values = |data: &TensorData| -> Vec<f64> {
        data.clone()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("float data")
    };
    let (actual, reference) = (values(actual), values(reference));
    let difference = actual
        .iter()
        .zip(&reference)
        .fold(0.0, |m, (a, r)| worst64(m, (a - r).abs()));
    let scale = reference.iter().fold(0.0, |m, r| worst64(m, r.abs()));
    difference / scale.max(f64::MIN_POSITIVE)
}

/// The larger of two errors, NaN if either is: `f64::max` would drop a NaN.
fn worst64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The criterion for one quantity: `DataParallel`'s error against the reference within
/// [`FACTOR`] times the bare model's plus [`FLOOR`]. False when either is NaN.
pub fn within_criterion(bare: f64, data_parallel: f64) -> bool {
    data_parallel <= FACTOR * bare + FLOOR
}

/// One quantity three ways: `DataParallel`'s, the bare model's and the reference's.
struct Triple {
    data_parallel: TensorData,
    bare: TensorData,
    reference: TensorData,
}

/// [`Measured`] over `quantities`.
fn measure(quantities: &[Triple]) -> Measured {
    let mut measured = Measured {
        bare: 0.0,
        data_parallel: 0.0,
        pass: true,
    };
    for Triple {
        data_parallel,
        bare,
        reference,
    } in quantities
    {
        let (bare, data_parallel) = (
            error_against(bare, reference),
            error_against(data_parallel, reference),
        );
        measured.pass &= within_criterion(bare, data_parallel);
        measured.bare = worst64(measured.bare, bare);
        measured.data_parallel = worst64(measured.data_parallel, data_parallel);
    }
    measured
}

/// The models of a check: `DataParallel`'s, the bare model and the float64 reference.
type Models<B, R> = (Mlp<B>, Mlp<B>, Mlp<R>);

/// A model built on `host`, the bare copy of it on `bare_device`, and the same weights (with
/// the same parameter ids) on the reference backend `R`, whose floats are float64.
fn models<B: AutodiffBackend, R: AutodiffBackend>(
    host: &B::Device,
    bare_device: &B::Device,
    reference: &R::Device,
) -> Result<Models<B, R>, String> {
    let model = initialised(Mlp::<B>::new(5, 3, host));
    let bare = bare_copy(&model).fork(bare_device);
    let recorder = BinBytesRecorder::<DoublePrecisionSettings>::new();
    let bytes = recorder
        .record(model.clone().into_record(), ())
        .map_err(|e| format!("the weights could not be recorded: {e}"))?;
    let record = recorder
        .load(bytes, reference)
        .map_err(|e| format!("the weights could not be loaded as float64: {e}"))?;
    let exact = Mlp::<R>::new(5, 3, reference).load_record(record);
    Ok((model, bare, exact))
}

/// The gradient of every parameter with one, in visiting order.
fn gradient_values<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<TensorData> {
    gradients(module, grads)
        .into_iter()
        .filter_map(|(_, grad)| grad)
        .collect()
}

/// Pairs the quantities of the three runs, or says which run has a different count.
fn triples(
    data_parallel: Vec<TensorData>,
    bare: Vec<TensorData>,
    reference: Vec<TensorData>,
) -> Result<Vec<Triple>, String> {
    if data_parallel.len() != reference.len() || bare.len() != reference.len() {
        return Err(format!(
            "{} quantities from DataParallel, {} from the bare model, {} from the reference",
            data_parallel.len(),
            bare.len(),
            reference.len()
        ));
    }
    Ok(data_parallel
        .into_iter()
        .zip(bare)
        .zip(reference)
        .map(|((data_parallel, bare), reference)| Triple {
            data_parallel,
            bare,
            reference,
        })
        .collect())
}

/// Keras-style forward and one backward: outputs and gradients.
pub fn forward_and_gradients<B: AutodiffBackend, R: AutodiffBackend>(
    host: &B::Device,
    devices: Vec<B::Device>,
    bare_device: &B::Device,
    reference: &R::Device,
) -> Outcome {
    let (model, bare, exact) = models::<B, R>(host, bare_device, reference)?;
    let dp = DataParallel::new(model, devices).map_err(|e| e.to_string())?;
    let x = random::<B, 2>([11, 5], 3, host);
    let x_exact = Tensor::<R, 2>::from_data(x.to_data().convert::<f64>(), reference);
    let dp_output = dp
        .try_forward(x.clone(), |m, x| m.forward(x))
        .map_err(|e| e.to_string())?;
    let bare_output = bare.forward(x.to_device(bare_device));
    let exact_output = exact.forward(x_exact);
    Ok(measure(&triples(
        output_and_gradients(dp_output, &dp),
        output_and_gradients(bare_output, &bare),
        output_and_gradients(exact_output, &exact),
    )?))
}

/// `output`, then the gradient of every parameter of `module` for the mean of its squares.
fn output_and_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    output: Tensor<B, 2>,
    module: &M,
) -> Vec<TensorData> {
    let mut values = vec![output.to_data()];
    let grads = GradientsParams::from_grads(output.powi_scalar(2).mean().backward(), module);
    values.extend(gradient_values(module, &grads));
    values
}

/// One per-replica training step (the `Learner` path): loss, logits and gradients.
pub fn train_step<B: AutodiffBackend, R: AutodiffBackend>(
    host: &B::Device,
    devices: Vec<B::Device>,
    bare_device: &B::Device,
    reference: &R::Device,
) -> Outcome {
    let (model, bare, exact) = models::<B, R>(host, bare_device, reference)?;
    let dp = DataParallel::new(model, devices).map_err(|e| e.to_string())?;
    let items = || class_items(11, 5, 3);
    let actual = dp
        .try_train_step(ClassBatcher.batch(items(), host))
        .map_err(|e| e.to_string())?;
    let expected = TrainStep::step(&bare, ClassBatcher.batch(items(), bare_device));
    let batch: ClassBatch<R> = ClassBatcher.batch(items(), reference);
    let exact_output = TrainStep::step(&exact, batch);
    let values = |loss: TensorData, logits: TensorData, grads: Vec<TensorData>| {
        let mut values = vec![loss, logits];
        values.extend(grads);
        values
    };
    Ok(measure(&triples(
        values(
            actual.item.loss.to_data(),
            actual.item.output.to_data(),
            gradient_values(dp.template(), &actual.grads),
        ),
        values(
            expected.item.loss.to_data(),
            expected.item.output.to_data(),
            gradient_values(&bare, &expected.grads),
        ),
        values(
            exact_output.item.loss.to_data(),
            exact_output.item.output.to_data(),
            gradient_values(&exact, &exact_output.grads),
        ),
    )?))
}

/// Ten Adam steps through the per-replica path: the weights.
pub fn ten_adam_steps<B: AutodiffBackend, R: AutodiffBackend>(
    host: &B::Device,
    devices: Vec<B::Device>,
    bare_device: &B::Device,
    reference: &R::Device,
) -> Outcome {
    let (model, mut bare, mut exact) = models::<B, R>(host, bare_device, reference)?;
    let mut dp = DataParallel::new(model, devices).map_err(|e| e.to_string())?;
    let mut optimizers = (
        AdamConfig::new().init(),
        AdamConfig::new().init(),
        AdamConfig::new().init(),
    );
    for step in 0..10 {
        let items = class_items(9 + step, 5, 3);
        let output = dp
            .try_train_step(ClassBatcher.batch(items.clone(), host))
            .map_err(|e| e.to_string())?;
        dp = optimizers.0.step(1e-2, dp, output.grads);
        let output = TrainStep::step(&bare, ClassBatcher.batch(items.clone(), bare_device));
        bare = optimizers.1.step(1e-2, bare, output.grads);
        let output = TrainStep::step(&exact, ClassBatcher.batch(items, reference));
        exact = optimizers.2.step(1e-2, exact, output.grads);
    }
    if dp.template().devices() != vec![host.clone()] {
        return Err(format!(
            "the template left its host: {:?}",
            dp.template().devices()
        ));
    }
    let weights = |params: Vec<(burn::module::ParamId, TensorData)>| {
        params.into_iter().map(|(_, data)| data).collect()
    };
    Ok(measure(&triples(
        weights(float_params(dp.template())),
        weights(float_params(&bare)),
        weights(float_params(&exact)),
    )?))
}

/// Every check above for one configuration, by name.
pub fn all<B: AutodiffBackend, R: AutodiffBackend>(
    host: &B::Device,
    devices: &[B::Device],
    bare_device: &B::Device,
    reference: &R::Device,
) -> Vec<(&'static str, Outcome)>
where
    Mlp<B>: AutodiffModule<B>,
{
    vec![
        (
            "forward and gradients",
            forward_and_gradients::<B, R>(host, devices.to_vec(), bare_device, reference),
        ),
        (
            "training step",
            train_step::<B, R>(host, devices.to_vec(), bare_device, reference),
        ),
        (
            "ten Adam steps",
            ten_adam_steps::<B, R>(host, devices.to_vec(), bare_device, reference),
        ),
    ]
}
