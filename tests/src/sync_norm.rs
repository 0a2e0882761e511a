//! A convolutional classifier normalised by `SyncBatchNorm`, and its twin with Burn's
//! `BatchNorm` in the same place: the same fields, so each one's file loads into the other.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, Relu};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use burn_data_parallel::{Scatter, SyncBatchNorm};

/// Filters of the convolution, normalised channels.
pub const CHANNELS: usize = 4;
/// Classes of the classifier.
pub const CLASSES: usize = 3;

/// Images `[n, 1, 6, 6]` and their labels.
#[derive(Debug, Clone, Scatter)]
pub struct ImageBatch<B: Backend> {
    /// Images `[n, 1, 6, 6]`.
    pub images: Tensor<B, 4>,
    /// Labels `[n]`.
    pub labels: Tensor<B, 1, Int>,
}

/// `rows` images drawn from `seed`, with labels that depend on them.
pub fn image_batch<B: Backend>(rows: usize, seed: u64, device: &B::Device) -> ImageBatch<B> {
    let images = crate::random::<B, 4>([rows, 1, 6, 6], seed, device);
    let means = images
        .clone()
        .into_data()
        .to_vec::<f32>()
        .expect("floats")
        .chunks(36)
        .map(|image| {
            let mean: f32 = image.iter().sum::<f32>() / 36.0;
            (((mean + 0.2) * 10.0).floor() as i64).clamp(0, CLASSES as i64 - 1)
        })
        .collect::<Vec<_>>();
    let labels = Tensor::from_data(TensorData::new(means, [rows]), device);
    ImageBatch { images, labels }
}

macro_rules! normalised_net {
    ($(#[$doc:meta])* $name:ident, $norm:ty, $init:expr) => {
        $(#[$doc])*
        #[derive(Module, Debug)]
        pub struct $name<B: Backend> {
            conv: Conv2d<B>,
            /// The normalisation after the convolution.
            pub norm: $norm,
            output: Linear<B>,
            activation: Relu,
        }

        impl<B: Backend> $name<B> {
            /// Random weights on `device`.
            pub fn new(device: &B::Device) -> Self {
                let config = BatchNormConfig::new(CHANNELS);
                Self {
                    // No bias before a normalisation: the mean it subtracts cancels it, so its
                    // gradient is rounding noise, which Adam would blow up to full steps.
                    conv: Conv2dConfig::new([1, CHANNELS], [3, 3])
                        .with_bias(false)
                        .init(device),
                    norm: $init(&config, device),
                    output: LinearConfig::new(CHANNELS * 4 * 4, CLASSES).init(device),
                    activation: Relu::new(),
                }
            }

            /// `[n, 1, 6, 6] → [n, classes]`.
            pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
                let features = self.norm.forward(self.conv.forward(images));
                let features = self.activation.forward(features);
                self.output.forward(features.flatten(1, 3))
            }

            /// Logits and the mean cross-entropy of a batch.
            pub fn classify(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
                let logits = self.forward(batch.images);
                let loss = CrossEntropyLossConfig::new()
                    .init(&logits.device())
                    .forward(logits.clone(), batch.labels.clone());
                ClassificationOutput::new(loss, logits, batch.labels)
            }
        }

        impl<B: AutodiffBackend> TrainStep for $name<B> {
            type Input = ImageBatch<B>;
            type Output = ClassificationOutput<B>;

            fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
                let item = self.classify(batch);
                TrainOutput::new(self, item.loss.backward(), item)
            }
        }

        impl<B: Backend> InferenceStep for $name<B> {
            type Input = ImageBatch<B>;
            type Output = ClassificationOutput<B>;

            fn step(&self, batch: Self::Input) -> Self::Output {
                self.classify(batch)
            }
        }
    };
}

normalised_net!(
    /// Convolution, `SyncBatchNorm`, ReLU, linear.
    SyncNormNet,
    SyncBatchNorm<B>,
    |config, device| SyncBatchNorm::new(config, device)
);

normalised_net!(
    /// Convolution, Burn's `BatchNorm`, ReLU, linear: each replica normalises its own shard.
    BatchNormNet,
    BatchNorm<B>,
    |config: &BatchNormConfig, device| config.init(device)
);
