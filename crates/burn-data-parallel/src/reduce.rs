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
    /// When the input declares what the loss averages over (a
    /// [normaliser](crate::Normaliser): valid tokens, mask pixels, total class weight), the
    /// weights are `c_i / c` instead.
    #[default]
    Mean,
    /// The loss is a sum over the batch: gradients and losses are summed.
    Sum,
}
