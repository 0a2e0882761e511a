//! [`Reduction`]: how the inner model reduces its loss, which fixes how shards are weighted.

use serde::{Deserialize, Serialize};

/// How the inner model reduces its loss over a batch, which decides how replicas' gradients
/// and losses are combined.
///
/// **Note:** gradients are combined along a fixed tree over device order, never in the order
/// the replicas finish, so two runs from the same seed without dropout give bit-identical results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reduction {
    /// The loss is a mean over the batch (Burn's default, e.g. `CrossEntropyLoss`): the gradient
    /// of shard `i` is weighted by `n_i / n`, and losses are merged as the same weighted mean.
    #[default]
    Mean,
    /// The loss is a sum over the batch: gradients and losses are summed.
    Sum,
}

#[cfg(feature = "train")]
impl Reduction {
    /// The weight of each shard's gradient, given the shards' shares of the batch.
    pub(crate) fn gradient_weights(self, shares: Vec<f64>) -> Vec<f64> {
        match self {
            Reduction::Mean => shares,
            Reduction::Sum => vec![1.0; shares.len()],
        }
    }
}
