//! A small convolutional network for 8x8 digits.

use burn::module::Module;
use burn::nn::BatchNormConfig;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use burn_data_parallel::SyncBatchNorm;

use crate::data::{CLASSES, DigitsBatch};

/// Two 3x3 convolutions, a 2x2 max-pool and two linear layers: about 38k parameters; with
/// `--model bn`, a [`SyncBatchNorm`] after the second convolution.
#[derive(Module, Debug)]
pub struct DigitsNet<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    norm: Option<SyncBatchNorm<B>>,
    pool: MaxPool2d,
    hidden: Linear<B>,
    output: Linear<B>,
    activation: Relu,
}

impl<B: Backend> DigitsNet<B> {
    /// A network with fresh weights on `device`, with a [`SyncBatchNorm`] after the second
    /// convolution when `normalised`.
    pub fn new(device: &B::Device, normalised: bool) -> Self {
        let conv = |channels, bias| {
            Conv2dConfig::new(channels, [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .with_bias(bias)
                .init(device)
        };
        Self {
            conv1: conv([1, 16], true),
            // The normalisation's mean subtraction would cancel a bias.
            conv2: conv([16, 32], !normalised),
            norm: normalised.then(|| SyncBatchNorm::new(&BatchNormConfig::new(32), device)),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            hidden: LinearConfig::new(32 * 4 * 4, 64).init(device),
            output: LinearConfig::new(64, CLASSES).init(device),
            activation: Relu::new(),
        }
    }

    /// Whether the network has the SyncBatchNorm of `--model bn`.
    pub fn normalised(&self) -> bool {
        self.norm.is_some()
    }

    /// Logits `[n, 10]` for images `[n, 1, 8, 8]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.activation.forward(self.conv1.forward(images));
        let x = self.conv2.forward(x);
        let x = match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        let x = self.activation.forward(x);
        let x = self.pool.forward(x).flatten(1, 3);
        let x = self.activation.forward(self.hidden.forward(x));
        self.output.forward(x)
    }

    /// Logits and the mean cross-entropy loss of a batch.
    pub fn classify(&self, batch: DigitsBatch<B>) -> ClassificationOutput<B> {
        let logits = self.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl<B: AutodiffBackend> TrainStep for DigitsNet<B> {
    type Input = DigitsBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: DigitsBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let item = self.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl<B: Backend> InferenceStep for DigitsNet<B> {
    type Input = DigitsBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: DigitsBatch<B>) -> ClassificationOutput<B> {
        self.classify(batch)
    }
}
