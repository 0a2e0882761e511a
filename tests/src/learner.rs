//! Burn-train glue for the test models: steps, a dataset, a batcher, a renderer that records
//! every metric value, and one function that runs Burn's `Learner`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::metric::{AccuracyMetric, LossMetric, MetricDefinition, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, RegressionOutput, SupervisedTraining,
    TrainOutput, TrainStep,
};
use burn_data_parallel::Scatter;

use crate::{Mlp, Normalised};

/// A classification batch, split across replicas through the derive.
#[derive(Debug, Clone, Scatter)]
pub struct ClassBatch<B: Backend> {
    /// Features `[n, inputs]`.
    pub features: Tensor<B, 2>,
    /// Class labels `[n]`.
    pub targets: Tensor<B, 1, Int>,
}

impl<B: Backend> Mlp<B> {
    /// Logits, mean cross-entropy loss and targets for a batch.
    pub fn classify(
        &self,
        ClassBatch { features, targets }: ClassBatch<B>,
    ) -> ClassificationOutput<B> {
        let logits = self.forward(features);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), targets.clone());
        ClassificationOutput::new(loss, logits, targets)
    }
}

impl<B: AutodiffBackend> TrainStep for Mlp<B> {
    type Input = ClassBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let item = self.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl<B: Backend> InferenceStep for Mlp<B> {
    type Input = ClassBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> Self::Output {
        self.classify(batch)
    }
}

/// A regression batch: features `[n, inputs]` and targets `[n, channels]`.
pub type RegressionBatch<B> = (Tensor<B, 2>, Tensor<B, 2>);

impl<B: Backend> Normalised<B> {
    /// Outputs and the mean squared error over the batch.
    pub fn regress(&self, (x, targets): RegressionBatch<B>) -> RegressionOutput<B> {
        let output = self.forward(x);
        let loss = (output.clone() - targets.clone()).powi_scalar(2).mean();
        RegressionOutput::new(loss, output, targets)
    }
}

impl<B: AutodiffBackend> TrainStep for Normalised<B> {
    type Input = RegressionBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let item = self.regress(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl<B: Backend> InferenceStep for Normalised<B> {
    type Input = RegressionBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: Self::Input) -> Self::Output {
        self.regress(batch)
    }
}

/// One classification sample: features and a label.
pub type ClassItem = (Vec<f32>, i64);

/// `count` samples of `inputs` features in `[-1, 1)` and labels in `0..classes`, from a fixed
/// linear congruential sequence (no backend RNG, so every run sees the same data).
pub fn class_items(count: usize, inputs: usize, classes: i64) -> Vec<ClassItem> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 * 2.0 - 1.0
    };
    (0..count)
        .map(|_| {
            let features: Vec<f32> = (0..inputs).map(|_| next()).collect();
            let label = ((features[0] + 1.0) * classes as f32 / 2.0).floor() as i64;
            (features, label.clamp(0, classes - 1))
        })
        .collect()
}

/// Stacks classification samples into a [`ClassBatch`].
#[derive(Debug, Clone, Default)]
pub struct ClassBatcher;

impl<B: Backend> Batcher<B, ClassItem, ClassBatch<B>> for ClassBatcher {
    fn batch(&self, items: Vec<ClassItem>, device: &B::Device) -> ClassBatch<B> {
        let inputs = items.first().map_or(0, |(features, _)| features.len());
        let features: Vec<f32> = items.iter().flat_map(|(f, _)| f.iter().copied()).collect();
        let labels: Vec<i64> = items.iter().map(|(_, label)| *label).collect();
        ClassBatch {
            features: Tensor::from_data(TensorData::new(features, [items.len(), inputs]), device),
            targets: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
        }
    }
}

/// One metric value the `Learner` reported: split (`train`/`valid`), metric name, value.
pub type MetricRecord = (&'static str, String, f64);

/// A renderer that draws nothing and records every numeric metric value, in order.
#[derive(Default, Clone)]
pub struct RecordingRenderer {
    definitions: Arc<Mutex<Vec<MetricDefinition>>>,
    records: Arc<Mutex<Vec<MetricRecord>>>,
}

impl RecordingRenderer {
    /// The values recorded so far.
    pub fn records(&self) -> Vec<MetricRecord> {
        self.records.lock().expect("renderer lock").clone()
    }

    fn record(&self, split: &'static str, state: MetricState) {
        let MetricState::Numeric(entry, value) = state else {
            return;
        };
        let value = match value {
            NumericEntry::Value(value) => value,
            NumericEntry::Aggregated {
                aggregated_value, ..
            } => aggregated_value,
        };
        let name = self
            .definitions
            .lock()
            .expect("renderer lock")
            .iter()
            .find(|definition| definition.metric_id == entry.metric_id)
            .map_or_else(|| "?".to_string(), |definition| definition.name.clone());
        self.records
            .lock()
            .expect("renderer lock")
            .push((split, name, value));
    }
}

impl MetricsRendererTraining for RecordingRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record("train", state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record("valid", state);
    }

    fn render_train(&mut self, _item: TrainingProgress, _progress: Vec<ProgressType>) {}

    fn render_valid(&mut self, _item: TrainingProgress, _progress: Vec<ProgressType>) {}
}

impl MetricsRendererEvaluation for RecordingRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record("test", state);
    }

    fn render_test(&mut self, _item: EvaluationProgress, _progress: Vec<ProgressType>) {}
}

impl MetricsRenderer for RecordingRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.definitions
            .lock()
            .expect("renderer lock")
            .push(definition);
    }
}

/// Trains `model` with Burn's `Learner` (Adam, learning rate 1e-2, accuracy and loss metrics,
/// full-precision checkpoints in `dir`) on `items` in batches of `batch_size`, unshuffled,
/// validating on the same items. Returns the trained inference model and every metric value.
pub fn fit<B, M>(
    model: M,
    items: Vec<ClassItem>,
    batch_size: usize,
    epochs: usize,
    dir: &Path,
) -> (M::InnerModule, Vec<MetricRecord>)
where
    B: AutodiffBackend,
    M: TrainStep<Input = ClassBatch<B>, Output = ClassificationOutput<B>>
        + AutodiffModule<B>
        + core::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<
            Input = ClassBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    fit_from(model, items, batch_size, epochs, dir, None)
}

/// [`fit`], resumed from the checkpoint of epoch `resume` in `dir` when given: the model's,
/// the optimizer's and the scheduler's state are read back from the files the run that wrote
/// them left there, and training goes on from the next epoch up to epoch `epochs`.
pub fn fit_from<B, M>(
    model: M,
    items: Vec<ClassItem>,
    batch_size: usize,
    epochs: usize,
    dir: &Path,
    resume: Option<usize>,
) -> (M::InnerModule, Vec<MetricRecord>)
where
    B: AutodiffBackend,
    M: TrainStep<Input = ClassBatch<B>, Output = ClassificationOutput<B>>
        + AutodiffModule<B>
        + core::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<
            Input = ClassBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    let train = DataLoaderBuilder::<B, _, _>::new(ClassBatcher)
        .batch_size(batch_size)
        .build(InMemDataset::new(items.clone()));
    let valid = DataLoaderBuilder::<B::InnerBackend, _, _>::new(ClassBatcher)
        .batch_size(batch_size)
        .build(InMemDataset::new(items));
    let renderer = RecordingRenderer::default();
    let mut training = SupervisedTraining::new(dir, train, valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_file_checkpointer(NamedMpkFileRecorder::<FullPrecisionSettings>::new())
        .num_epochs(epochs)
        .renderer(renderer.clone());
    if let Some(epoch) = resume {
        training = training.checkpoint(epoch);
    }
    let result = training.launch(Learner::new(model, AdamConfig::new().init(), 1e-2));
    (result.model, renderer.records())
}
