//! Models whose loss is a mean over something other than rows: a token tagger over padded
//! sequences with a masked token-mean loss, and a class-weighted classifier. Their batches
//! declare the count through `#[scatter(normaliser)]`.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::metric::ItemLazy;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use burn_data_parallel::{Gather, Scatter};

use crate::Mlp;

/// Vocabulary of the tagger (tokens and tags alike).
pub const VOCABULARY: usize = 7;
/// Positions per padded sequence.
pub const POSITIONS: usize = 5;

/// A padded batch of sequences: each row's first tokens are real, the rest padding.
#[derive(Debug, Clone, Scatter)]
pub struct PaddedBatch<B: Backend> {
    /// Token ids `[n, positions]`.
    pub tokens: Tensor<B, 2, Int>,
    /// The tag of every position `[n, positions]`.
    pub tags: Tensor<B, 2, Int>,
    /// 1 for a real token, 0 for padding `[n, positions]`: what the loss averages over.
    #[scatter(normaliser)]
    pub mask: Tensor<B, 2>,
}

/// The tagger's output: the masked token-mean loss and the per-position log-probabilities.
#[derive(Debug, Clone, Gather)]
pub struct TaggerOutput<B: Backend> {
    /// The loss: negative log-likelihood summed over real tokens, over their count.
    #[gather(loss)]
    pub loss: Tensor<B, 1>,
    /// Log-probabilities `[n, positions, vocabulary]`.
    pub log_probs: Tensor<B, 3>,
}

impl<B: Backend> ItemLazy for TaggerOutput<B> {
    type ItemSync = Self;

    fn sync(self) -> Self {
        self
    }
}

/// Embeds each token and predicts its tag: rows are independent, the loss is not a mean
/// over rows.
#[derive(Module, Debug)]
pub struct Tagger<B: Backend> {
    embedding: Embedding<B>,
    output: Linear<B>,
}

impl<B: Backend> Tagger<B> {
    /// A tagger with random weights on `device`.
    pub fn new(device: &B::Device) -> Self {
        Self {
            embedding: EmbeddingConfig::new(VOCABULARY, 6).init(device),
            output: LinearConfig::new(6, VOCABULARY).init(device),
        }
    }

    /// Log-probabilities of every tag at every position.
    pub fn log_probs(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        log_softmax(self.output.forward(self.embedding.forward(tokens)), 2)
    }

    /// The masked token-mean loss of a batch, computed on whatever rows it is given.
    pub fn tag(&self, batch: PaddedBatch<B>) -> TaggerOutput<B> {
        let log_probs = self.log_probs(batch.tokens);
        let loss = masked_token_mean(log_probs.clone(), batch.tags, batch.mask);
        TaggerOutput { loss, log_probs }
    }
}

/// `−Σ mask · log p(tag) / Σ mask`: the mean over real tokens.
pub fn masked_token_mean<B: Backend>(
    log_probs: Tensor<B, 3>,
    tags: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [rows, positions, _] = log_probs.dims();
    let picked = log_probs
        .gather(2, tags.reshape([rows, positions, 1]))
        .reshape([rows, positions]);
    (picked * mask.clone()).sum().neg() / mask.sum()
}

impl<B: AutodiffBackend> TrainStep for Tagger<B> {
    type Input = PaddedBatch<B>;
    type Output = TaggerOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let item = self.tag(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl<B: Backend> InferenceStep for Tagger<B> {
    type Input = PaddedBatch<B>;
    type Output = TaggerOutput<B>;

    fn step(&self, batch: Self::Input) -> Self::Output {
        self.tag(batch)
    }
}

/// A padded batch of `rows` sequences drawn from `seed`: random tokens and tags, and real
/// lengths from 1 to all positions (`empty_rows` of them all padding), so that shards of
/// equal rows hold unequal counts.
pub fn padded_batch<B: Backend>(
    rows: usize,
    empty_rows: usize,
    seed: u64,
    device: &B::Device,
) -> PaddedBatch<B> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % bound
    };
    let mut tokens = Vec::with_capacity(rows * POSITIONS);
    let mut tags = Vec::with_capacity(rows * POSITIONS);
    let mut mask = Vec::with_capacity(rows * POSITIONS);
    for row in 0..rows {
        let length = if row < empty_rows {
            0
        } else {
            1 + next(POSITIONS)
        };
        for position in 0..POSITIONS {
            tokens.push(next(VOCABULARY) as i64);
            tags.push(next(VOCABULARY) as i64);
            mask.push(if position < length { 1.0f32 } else { 0.0 });
        }
    }
    let shape = [rows, POSITIONS];
    PaddedBatch {
        tokens: Tensor::from_data(TensorData::new(tokens, shape), device),
        tags: Tensor::from_data(TensorData::new(tags, shape), device),
        mask: Tensor::from_data(TensorData::new(mask, shape), device),
    }
}

/// Class weights of the weighted classifier: rare classes weigh more.
pub const CLASS_WEIGHTS: [f32; 3] = [0.5, 2.0, 4.0];

/// A classification batch for a class-weighted loss: Burn's weighted cross-entropy divides
/// by the total weight of the batch's targets, which each row declares.
#[derive(Debug, Clone, Scatter)]
pub struct WeightedBatch<B: Backend> {
    /// Features `[n, inputs]`.
    pub features: Tensor<B, 2>,
    /// Class labels `[n]`.
    pub targets: Tensor<B, 1, Int>,
    /// The weight of each row's class `[n]`: what the loss averages over.
    #[scatter(normaliser)]
    pub target_weights: Tensor<B, 1>,
}

impl<B: Backend> WeightedBatch<B> {
    /// A batch of `features` and `targets`, each row weighted by its class.
    pub fn new(features: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Self {
        let device = features.device();
        let weights = Tensor::<B, 1>::from_floats(CLASS_WEIGHTS, &device);
        let target_weights = weights.gather(0, targets.clone());
        Self {
            features,
            targets,
            target_weights,
        }
    }
}

/// The [`Mlp`] as a class-weighted classifier.
#[derive(Module, Debug)]
pub struct WeightedClassifier<B: Backend> {
    /// The classifier's layers.
    pub mlp: Mlp<B>,
}

impl<B: Backend> WeightedClassifier<B> {
    /// Burn's class-weighted cross-entropy over the batch.
    pub fn classify(&self, batch: WeightedBatch<B>) -> ClassificationOutput<B> {
        let logits = self.mlp.forward(batch.features);
        let loss = CrossEntropyLossConfig::new()
            .with_weights(Some(CLASS_WEIGHTS.to_vec()))
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl<B: AutodiffBackend> TrainStep for WeightedClassifier<B> {
    type Input = WeightedBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let item = self.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}
