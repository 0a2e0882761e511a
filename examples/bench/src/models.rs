//! Models the programs run: a compute-bound CNN, a parameter-heavy MLP, and a small CNN with
//! BatchNorm for the soak run.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use burn_data_parallel::Scatter;

/// Classes of every model's output.
pub const CLASSES: usize = 10;

/// An image batch with labels.
#[derive(Debug, Clone, Scatter)]
pub struct ImageBatch<B: Backend> {
    /// Images `[n, channels, side, side]`.
    pub images: Tensor<B, 4>,
    /// Labels `[n]`.
    pub targets: Tensor<B, 1, Int>,
}

impl<B: Backend> ImageBatch<B> {
    /// A batch of `n` random images of `channels × side × side` and random labels.
    pub fn random(n: usize, channels: usize, side: usize, device: &B::Device) -> Self {
        Self {
            images: Tensor::random([n, channels, side, side], Distribution::Default, device),
            targets: Tensor::<B, 1>::random(
                [n],
                Distribution::Uniform(0.0, CLASSES as f64),
                device,
            )
            .int(),
        }
    }

    /// The images flattened to `[n, channels·side·side]`, for the MLP.
    pub fn flat(&self) -> Tensor<B, 2> {
        self.images.clone().flatten(1, 3)
    }
}

/// A model that maps an image batch to class logits: what the Keras-style rows run through
/// `DataParallel::forward`.
pub trait Classifier<B: Backend> {
    /// Logits `[n, CLASSES]` for `batch`.
    fn logits(&self, batch: &ImageBatch<B>) -> Tensor<B, 2>;
}

/// The mean cross-entropy of `logits` against the labels `targets`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, targets)
}

/// Logits and mean cross-entropy of `logits` against `targets`.
fn classification<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> ClassificationOutput<B> {
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), targets.clone());
    ClassificationOutput::new(loss, logits, targets)
}

/// Implements the training and inference steps for a model with `fn logits(&self, &ImageBatch)`.
macro_rules! steps {
    ($model:ident) => {
        impl<B: Backend> Classifier<B> for $model<B> {
            fn logits(&self, batch: &ImageBatch<B>) -> Tensor<B, 2> {
                $model::logits(self, batch)
            }
        }

        impl<B: AutodiffBackend> TrainStep for $model<B> {
            type Input = ImageBatch<B>;
            type Output = ClassificationOutput<B>;

            fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
                let item = classification(self.logits(&batch), batch.targets);
                TrainOutput::new(self, item.loss.backward(), item)
            }
        }

        impl<B: Backend> InferenceStep for $model<B> {
            type Input = ImageBatch<B>;
            type Output = ClassificationOutput<B>;

            fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
                classification(self.logits(&batch), batch.targets)
            }
        }
    };
}

/// Compute-bound: three 3×3 convolutions over 16×16 images with 2×2 max-pooling between them;
/// with `width` 104, about 1M parameters and about 26M multiply-adds per image forward.
#[derive(Module, Debug)]
pub struct ConvNet<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    conv3: Conv2d<B>,
    halve: MaxPool2d,
    pool: AdaptiveAvgPool2d,
    head: Linear<B>,
    activation: Relu,
}

impl<B: Backend> ConvNet<B> {
    /// Channels 3 → `width` → `2·width` → `4·width`, then a global pool and a linear head.
    pub fn new(width: usize, device: &B::Device) -> Self {
        let conv = |from, to| {
            Conv2dConfig::new([from, to], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        Self {
            conv1: conv(3, width),
            conv2: conv(width, 2 * width),
            conv3: conv(2 * width, 4 * width),
            halve: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(4 * width, CLASSES).init(device),
            activation: Relu::new(),
        }
    }

    /// Logits `[n, 10]`.
    pub fn logits(&self, batch: &ImageBatch<B>) -> Tensor<B, 2> {
        let x = self
            .activation
            .forward(self.conv1.forward(batch.images.clone()));
        let x = self
            .activation
            .forward(self.conv2.forward(self.halve.forward(x)));
        let x = self
            .activation
            .forward(self.conv3.forward(self.halve.forward(x)));
        self.head.forward(self.pool.forward(x).flatten(1, 3))
    }
}

steps!(ConvNet);

/// Parameter-heavy: a wide two-hidden-layer perceptron.
#[derive(Module, Debug)]
pub struct WideMlp<B: Backend> {
    input: Linear<B>,
    hidden: Linear<B>,
    output: Linear<B>,
    activation: Relu,
}

impl<B: Backend> WideMlp<B> {
    /// `inputs → width → width → 10`.
    pub fn new(inputs: usize, width: usize, device: &B::Device) -> Self {
        Self {
            input: LinearConfig::new(inputs, width).init(device),
            hidden: LinearConfig::new(width, width).init(device),
            output: LinearConfig::new(width, CLASSES).init(device),
            activation: Relu::new(),
        }
    }

    /// Logits `[n, 10]`.
    pub fn logits(&self, batch: &ImageBatch<B>) -> Tensor<B, 2> {
        let x = self.activation.forward(self.input.forward(batch.flat()));
        let x = self.activation.forward(self.hidden.forward(x));
        self.output.forward(x)
    }
}

steps!(WideMlp);

/// A small CNN with BatchNorm, whose running statistics change every step.
#[derive(Module, Debug)]
pub struct NormNet<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
    pool: AdaptiveAvgPool2d,
    head: Linear<B>,
    activation: Relu,
}

impl<B: Backend> NormNet<B> {
    /// One 3×3 convolution to `width` channels, BatchNorm, a global pool, a linear head.
    pub fn new(width: usize, device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([3, width], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            norm: BatchNormConfig::new(width).init(device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(width, CLASSES).init(device),
            activation: Relu::new(),
        }
    }

    /// Logits `[n, 10]`.
    pub fn logits(&self, batch: &ImageBatch<B>) -> Tensor<B, 2> {
        let x = self.norm.forward(self.conv.forward(batch.images.clone()));
        let x = self.activation.forward(x);
        self.head.forward(self.pool.forward(x).flatten(1, 3))
    }
}

steps!(NormNet);
