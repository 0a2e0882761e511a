//! Models, devices and comparisons shared by the integration tests of `burn-data-parallel`.
//!
//! Every check compares `DataParallel` with something independent of it: the bare model on one
//! device, a hand-computed value, or a file read back.

pub mod exactness;
pub mod learner;
pub mod masked;
pub mod remote;
pub mod sync_norm;

use burn::backend::flex::FlexDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, Relu,
};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use burn::{Dispatch, DispatchDevice};

/// One backend, one kind of CPU device: repeated devices give more replicas.
pub type NdAutodiff = Autodiff<NdArray>;
/// One backend spanning two distinct CPU devices, Flex and NdArray.
pub type DispatchAutodiff = Autodiff<Dispatch>;

/// The Flex CPU device of the `Dispatch` backend.
pub fn flex() -> DispatchDevice {
    DispatchDevice::Flex(FlexDevice)
}

/// The NdArray CPU device of the `Dispatch` backend.
pub fn ndarray() -> DispatchDevice {
    DispatchDevice::NdArray(NdArrayDevice::Cpu)
}

/// `n` replicas on NdArray's one CPU device.
pub fn nd_devices(n: usize) -> Vec<NdArrayDevice> {
    vec![NdArrayDevice::Cpu; n]
}

/// `n` replicas alternating between the two distinct CPU devices of `Dispatch`, NdArray first.
pub fn mixed_devices(n: usize) -> Vec<DispatchDevice> {
    (0..n)
        .map(|i| if i % 2 == 0 { ndarray() } else { flex() })
        .collect()
}

/// Forces a module's lazy parameters to exist, so that its clones share the same weights.
pub fn initialised<B: Backend, M: Module<B>>(module: M) -> M {
    let _ = module.num_params();
    module
}

/// A copy of `model` with its own autodiff leaves and running state: same ids, same values.
/// Clones would share running state (BatchNorm) and leaves with the original.
pub fn bare_copy<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> M {
    M::from_inner(model.valid())
}

/// Seeds the backend on `device` and draws a uniform tensor in `[-1, 1)`.
pub fn random<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    B::seed(device, seed);
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), device)
}

/// A two-layer perceptron.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    hidden: Linear<B>,
    output: Linear<B>,
    activation: Relu,
}

impl<B: Backend> Mlp<B> {
    /// `inputs → 16 → outputs`.
    pub fn new(inputs: usize, outputs: usize, device: &B::Device) -> Self {
        Self {
            hidden: LinearConfig::new(inputs, 16).init(device),
            output: LinearConfig::new(16, outputs).init(device),
            activation: Relu::new(),
        }
    }

    /// `[n, inputs] → [n, outputs]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.output
            .forward(self.activation.forward(self.hidden.forward(x)))
    }
}

/// A small convolutional network over `[n, 1, 6, 6]` images.
#[derive(Module, Debug)]
pub struct ConvNet<B: Backend> {
    conv: Conv2d<B>,
    output: Linear<B>,
    activation: Relu,
}

impl<B: Backend> ConvNet<B> {
    /// Four 3×3 filters, then a linear layer to `outputs`.
    pub fn new(outputs: usize, device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([1, 4], [3, 3]).init(device),
            output: LinearConfig::new(4 * 4 * 4, outputs).init(device),
            activation: Relu::new(),
        }
    }

    /// `[n, 1, 6, 6] → [n, outputs]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let features = self.activation.forward(self.conv.forward(images));
        self.output.forward(features.flatten(1, 3))
    }
}

/// A model with two inputs: token ids into an embedding, and dense features.
#[derive(Module, Debug)]
pub struct TwoInputs<B: Backend> {
    embedding: Embedding<B>,
    output: Linear<B>,
}

impl<B: Backend> TwoInputs<B> {
    /// A vocabulary of 10 tokens embedded in 4 dimensions, plus `features` dense inputs.
    pub fn new(features: usize, device: &B::Device) -> Self {
        Self {
            embedding: EmbeddingConfig::new(10, 4).init(device),
            output: LinearConfig::new(4 + features, 3).init(device),
        }
    }

    /// `([n, seq] ids, [n, features]) → [n, 3]`: mean embedding joined to the features.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let embedded = self.embedding.forward(ids).mean_dim(1).squeeze_dim::<2>(1);
        self.output
            .forward(Tensor::cat(vec![embedded, features], 1))
    }
}

/// A model with two outputs from one shared trunk.
#[derive(Module, Debug)]
pub struct TwoOutputs<B: Backend> {
    trunk: Linear<B>,
    first: Linear<B>,
    second: Linear<B>,
}

impl<B: Backend> TwoOutputs<B> {
    /// `inputs → 8`, then heads of 2 and 3 outputs.
    pub fn new(inputs: usize, device: &B::Device) -> Self {
        Self {
            trunk: LinearConfig::new(inputs, 8).init(device),
            first: LinearConfig::new(8, 2).init(device),
            second: LinearConfig::new(8, 3).init(device),
        }
    }

    /// `[n, inputs] → ([n, 2], [n, 3])`.
    pub fn forward(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let trunk = burn::tensor::activation::relu(self.trunk.forward(x));
        (
            self.first.forward(trunk.clone()),
            self.second.forward(trunk),
        )
    }
}

/// A linear layer followed by batch normalisation, whose running statistics change in forward.
#[derive(Module, Debug)]
pub struct Normalised<B: Backend> {
    /// The linear layer.
    pub linear: Linear<B>,
    /// The batch normalisation over the linear layer's outputs.
    pub norm: BatchNorm<B>,
}

impl<B: Backend> Normalised<B> {
    /// `inputs → channels`, then BatchNorm over `channels`.
    pub fn new(inputs: usize, channels: usize, device: &B::Device) -> Self {
        Self {
            linear: LinearConfig::new(inputs, channels).init(device),
            norm: BatchNormConfig::new(channels).init(device),
        }
    }

    /// `[n, inputs] → [n, channels]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.norm.forward(self.linear.forward(x))
    }
}

/// Every float tensor of a module, by parameter id, in visiting order, as `f32` data.
///
/// Running state (BatchNorm's statistics) is synced first: Burn keeps each thread's update
/// aside until a sync, and a visit alone would read the value from before the last step.
pub fn float_params<B: Backend, M: Module<B>>(module: &M) -> Vec<(ParamId, TensorData)> {
    // Making a record syncs every `RunningState`; its clones share the value with `module`.
    let _ = module.clone().into_record();
    struct Collect(Vec<(ParamId, TensorData)>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push((param.id, param.val().into_data()));
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// The gradient of every float parameter of `module` in `grads`, in visiting order.
pub fn gradients<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<(ParamId, Option<TensorData>)> {
    struct Collect<'a>(&'a GradientsParams, Vec<(ParamId, Option<TensorData>)>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let grad = self.0.get::<B::InnerBackend, D>(param.id);
            self.1.push((param.id, grad.map(Tensor::into_data)));
        }
    }
    let mut collect = Collect(grads, Vec::new());
    module.visit(&mut collect);
    collect.1
}

/// Each parameter's gradient in `actual` (for `template`) beside its gradient in `expected`
/// (for `bare`), in visiting order. Parameters with no gradient on either side (running
/// state) are left out; one with a gradient on one side only is an error.
pub fn gradient_pairs<B: AutodiffBackend, M1: Module<B>, M2: Module<B>>(
    template: &M1,
    actual: &GradientsParams,
    bare: &M2,
    expected: &GradientsParams,
) -> Result<Vec<(ParamId, TensorData, TensorData)>, String> {
    let (actual, expected) = (gradients(template, actual), gradients(bare, expected));
    if actual.len() != expected.len() {
        return Err(format!(
            "{} parameters against {}",
            actual.len(),
            expected.len()
        ));
    }
    let mut pairs = Vec::with_capacity(actual.len());
    for ((id, actual), (_, expected)) in actual.into_iter().zip(expected) {
        match (actual, expected) {
            (Some(actual), Some(expected)) => pairs.push((id, actual, expected)),
            (None, None) => {}
            _ => return Err(format!("parameter {id} has a gradient on one side only")),
        }
    }
    Ok(pairs)
}

/// The relative error of every gradient of [`gradient_pairs`].
pub fn gradient_errors<B: AutodiffBackend, M1: Module<B>, M2: Module<B>>(
    template: &M1,
    actual: &GradientsParams,
    bare: &M2,
    expected: &GradientsParams,
) -> Result<Vec<f32>, String> {
    let pairs = gradient_pairs(template, actual, bare, expected)?;
    Ok(pairs
        .iter()
        .map(|(_, actual, expected)| relative_error(actual, expected))
        .collect())
}

/// Asserts every gradient of [`gradient_pairs`] close within `tolerance`.
pub fn assert_gradients<B: AutodiffBackend, M1: Module<B>, M2: Module<B>>(
    template: &M1,
    actual: &GradientsParams,
    bare: &M2,
    expected: &GradientsParams,
    tolerance: f32,
) {
    let pairs =
        gradient_pairs(template, actual, bare, expected).unwrap_or_else(|why| panic!("{why}"));
    for (id, actual, expected) in pairs {
        assert_close(&actual, &expected, tolerance, &format!("gradient of {id}"));
    }
}

/// The `f32` values of float data, or of any other element type converted.
fn floats(data: &TensorData) -> Vec<f32> {
    data.clone()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float data")
}

/// The larger of two errors, where NaN is the largest of all: `f32::max` would drop it, and an
/// all-NaN result would then score 0 and pass.
pub fn worst_of(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// The largest finite magnitude in `expected` (NaN if it holds NaN): the scale that relative
/// errors are measured against. Infinities must match exactly, so they set no scale.
fn scale(expected: &[f32]) -> f32 {
    expected
        .iter()
        .filter(|v| !v.is_infinite())
        .fold(0f32, |m, v| worst_of(m, v.abs()))
}

/// The largest absolute difference between `actual` and `expected`, relative to the largest
/// magnitude in `expected`. NaN when either holds NaN, infinity when they disagree on an
/// infinity: no comparison of it with a tolerance then passes.
pub fn relative_error(actual: &TensorData, expected: &TensorData) -> f32 {
    assert_eq!(actual.shape, expected.shape, "shapes differ");
    let (actual, expected) = (floats(actual), floats(expected));
    let diff = actual.iter().zip(&expected).fold(0f32, |m, (a, e)| {
        // Equal infinities are no difference; `inf - inf` would be NaN.
        let d = if a == e { 0.0 } else { (a - e).abs() };
        worst_of(m, d)
    });
    diff / scale(&expected).max(f32::MIN_POSITIVE)
}

/// Below this absolute difference two float tensors agree whatever their magnitude: a gradient
/// whose entries nearly cancel (a bias gradient of a few entries, say) is a few ulps of its
/// terms away from zero, where a purely relative bound would measure rounding noise.
pub const ABSOLUTE_FLOOR: f32 = 1e-7;

/// The first element of `actual` outside `|a − e| ≤ atol + rtol·|e|`, as `(index, a, e)`;
/// `None` when every element is inside. A NaN on either side is always outside, and so is an
/// infinity that the other side does not equal.
pub fn first_outside(
    actual: &TensorData,
    expected: &TensorData,
    rtol: f32,
    atol: f32,
) -> Option<(usize, f32, f32)> {
    assert_eq!(actual.shape, expected.shape, "shapes differ");
    let (actual, expected) = (floats(actual), floats(expected));
    actual
        .iter()
        .zip(&expected)
        .enumerate()
        .find(|(_, (a, e))| {
            // An infinity (or NaN) on either side passes only as the very same value.
            let finite = a.is_finite() && e.is_finite();
            let inside = a == e || (finite && (*a - *e).abs() <= atol + rtol * e.abs());
            !inside
        })
        .map(|(index, (a, e))| (index, *a, *e))
}

/// Asserts that every element of `actual` is within `|a − e| ≤ atol + rtol·|e|` of
/// `expected`, with `rtol = tolerance` and `atol = tolerance · max|e| + ABSOLUTE_FLOOR`: an
/// entry near zero is held to the rounding of the tensor's largest terms, never less than
/// [`ABSOLUTE_FLOOR`]. NaN fails, and so does an all-zero `expected` with anything but tiny
/// differences.
#[track_caller]
pub fn assert_close(actual: &TensorData, expected: &TensorData, tolerance: f32, what: &str) {
    let atol = tolerance * scale(&floats(expected)) + ABSOLUTE_FLOOR;
    if let Some((index, a, e)) = first_outside(actual, expected, tolerance, atol) {
        panic!(
            "{what}: element {index} is {a:e} where {e:e} is expected (rtol {tolerance:e}, \
             atol {atol:e}); relative error of the tensor {:e}\n actual: {actual:?}\n expected: {expected:?}",
            relative_error(actual, expected)
        );
    }
}

/// Asserts that two modules hold the same float tensors, id for id, within `tolerance`.
#[track_caller]
pub fn assert_same_params<B: Backend, M1: Module<B>, M2: Module<B>>(
    actual: &M1,
    expected: &M2,
    tolerance: f32,
) {
    let actual = float_params(actual);
    let expected = float_params(expected);
    assert_eq!(actual.len(), expected.len(), "parameter counts differ");
    for ((id_a, a), (id_e, e)) in actual.iter().zip(&expected) {
        assert_eq!(id_a, id_e, "parameter ids differ");
        assert_close(a, e, tolerance, &format!("parameter {id_a}"));
    }
}

/// Per-channel batch mean and biased variance of `rows` of `values` (`[n, channels]`).
pub fn channel_stats(
    values: &[f32],
    channels: usize,
    rows: core::ops::Range<usize>,
) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let column = |c: usize| {
        rows.clone()
            .map(move |r| f64::from(values[r * channels + c]))
    };
    let means: Vec<f64> = (0..channels).map(|c| column(c).sum::<f64>() / n).collect();
    let vars = (0..channels)
        .map(|c| column(c).map(|v| (v - means[c]).powi(2)).sum::<f64>() / n)
        .collect();
    (means, vars)
}
