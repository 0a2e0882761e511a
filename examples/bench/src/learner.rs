//! What the `Learner` runs of the benchmark need: an in-memory dataset of random images, a
//! batcher, and a renderer that draws nothing.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn::train::metric::MetricDefinition;
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

use crate::models::{CLASSES, ImageBatch};

/// One image and its label.
#[derive(Debug, Clone)]
pub struct ImageItem {
    /// Pixels, channel-major.
    pub pixels: Vec<f32>,
    /// The class.
    pub label: i64,
}

/// `count` images of `channels × side × side` pseudo-random pixels and labels.
#[derive(Debug, Clone)]
pub struct RandomImages {
    items: Vec<ImageItem>,
}

impl RandomImages {
    /// A fixed pseudo-random set (a linear congruential sequence, the same on every run).
    pub fn new(count: usize, channels: usize, side: usize) -> Self {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as f32 / (1u64 << 31) as f32
        };
        let items = (0..count)
            .map(|_| ImageItem {
                pixels: (0..channels * side * side).map(|_| next()).collect(),
                label: (next() * CLASSES as f32) as i64 % CLASSES as i64,
            })
            .collect();
        Self { items }
    }
}

impl Dataset<ImageItem> for RandomImages {
    fn get(&self, index: usize) -> Option<ImageItem> {
        self.items.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// Stacks [`ImageItem`]s of `channels × side × side` into an [`ImageBatch`].
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    /// Channels per image.
    pub channels: usize,
    /// Side of the square images.
    pub side: usize,
}

impl<B: Backend> Batcher<B, ImageItem, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        let n = items.len();
        let pixels: Vec<f32> = items
            .iter()
            .flat_map(|item| item.pixels.iter().copied())
            .collect();
        let labels: Vec<i64> = items.iter().map(|item| item.label).collect();
        ImageBatch {
            images: Tensor::from_data(
                TensorData::new(pixels, [n, self.channels, self.side, self.side]),
                device,
            ),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// A renderer that draws nothing: benchmarks time training, not the terminal.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl MetricsRendererTraining for Silent {
    fn update_train(&mut self, _state: MetricState) {}
    fn update_valid(&mut self, _state: MetricState) {}
    fn render_train(&mut self, _item: TrainingProgress, _progress: Vec<ProgressType>) {}
    fn render_valid(&mut self, _item: TrainingProgress, _progress: Vec<ProgressType>) {}
}

impl MetricsRendererEvaluation for Silent {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
    fn render_test(&mut self, _item: EvaluationProgress, _progress: Vec<ProgressType>) {}
}

impl MetricsRenderer for Silent {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _definition: MetricDefinition) {}
}
