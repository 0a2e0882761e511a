//! Declared normalisers: what a loss averages over when it is not the rows of the batch
//! (valid tokens of a padded batch, pixels of a mask, the total weight of a class-weighted
//! loss), and the shard weights they give.

use core::ops::Range;

use burn::tensor::{BasicOps, Bool, ElementConversion, Int, Tensor, backend::Backend};

#[cfg(feature = "train")]
use crate::reduce::Reduction;
use crate::scatter::{Scatter, ScatterContext};
use crate::split::SplitPlan;

/// A batch part whose rows hold what the inner model's loss averages over, counted by
/// summing the rows' elements: a 0/1 mask counts valid tokens or pixels, a per-row weight
/// tensor gives the total weight of a class-weighted loss.
///
/// Mark such a field `#[scatter(normaliser)]` in a `#[derive(Scatter)]` struct, or return
/// [`total`](Self::total) from a hand-written [`Scatter::normaliser`]. `DataParallel`'s
/// per-replica step then weights shard `i`'s gradient and mean-reduced loss by `c_i / c` (its
/// count over the batch's) instead of `n_i / n` (its rows), which is what makes a masked
/// mean's gradient equal to one device's when shards hold different counts.
///
/// # Examples
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Tensor, TensorData};
/// use burn_data_parallel::Normaliser;
///
/// let device = Default::default();
/// // Two sequences: 3 valid tokens, then 1.
/// let mask = Tensor::<NdArray, 2>::from_data(TensorData::from([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), &device);
/// assert_eq!(mask.total(0..2), 4.0);
/// assert_eq!(mask.total(1..2), 1.0);
/// ```
pub trait Normaliser<B: Backend> {
    /// The sum of every element in `rows` (along dim 0).
    fn total(&self, rows: Range<usize>) -> f64;
}

impl<B: Backend, const D: usize> Normaliser<B> for Tensor<B, D> {
    fn total(&self, rows: Range<usize>) -> f64 {
        rows_of(self, rows).sum().into_scalar().elem::<f64>()
    }
}

impl<B: Backend, const D: usize> Normaliser<B> for Tensor<B, D, Int> {
    fn total(&self, rows: Range<usize>) -> f64 {
        rows_of(self, rows).sum().into_scalar().elem::<f64>()
    }
}

impl<B: Backend, const D: usize> Normaliser<B> for Tensor<B, D, Bool> {
    fn total(&self, rows: Range<usize>) -> f64 {
        rows_of(self, rows).int().sum().into_scalar().elem::<f64>()
    }
}

fn rows_of<B: Backend, const D: usize, K: BasicOps<B>>(
    tensor: &Tensor<B, D, K>,
    rows: Range<usize>,
) -> Tensor<B, D, K> {
    tensor.clone().narrow(0, rows.start, rows.len())
}

/// A batch part that is split as usual and declares itself the [`Normaliser`] of the loss:
/// for inputs that are tuples, where no field can carry `#[scatter(normaliser)]`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_data_parallel::{Normalised, Scatter};
///
/// let device = Default::default();
/// let tokens = Tensor::<NdArray, 2>::zeros([2, 3], &device);
/// let mask = Tensor::<NdArray, 2>::ones([2, 3], &device);
/// let batch = (tokens, Normalised(mask));
/// assert_eq!(batch.normaliser(0..1), Some(3.0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Normalised<T>(pub T);

impl<B: Backend, T: Scatter<B> + Normaliser<B>> Scatter<B> for Normalised<T> {
    fn batch_sizes(&self, sizes: &mut Vec<usize>) {
        self.0.batch_sizes(sizes);
    }

    fn shard(&self, rows: Range<usize>, context: &ScatterContext<'_, B>) -> Self {
        Self(self.0.shard(rows, context))
    }

    fn visit_floats(&self, visit: &mut dyn FnMut(Tensor<B, 1>)) {
        self.0.visit_floats(visit);
    }

    fn normaliser(&self, rows: Range<usize>) -> Option<f64> {
        Some(self.0.total(rows))
    }
}

/// The weight of each shard of `plan` in the step's gradient and loss: `n_i / n` for a mean
/// over rows, `c_i / c` when `input` declares a [normaliser](Scatter::normaliser), 1 for a
/// sum.
///
/// A declared count of 0 over the whole batch leaves the rows' weights: one device's loss
/// is then 0/0 too, and no weighting can match it.
#[cfg(feature = "train")]
pub(crate) fn shard_weights<B: Backend, I: Scatter<B>>(
    reduction: Reduction,
    plan: &SplitPlan,
    input: &I,
) -> Vec<f64> {
    match reduction {
        Reduction::Sum => vec![1.0; plan.len()],
        Reduction::Mean => declared_weights(plan, input).unwrap_or_else(|| plan.weights()),
    }
}

/// `c_i / c` for each shard of `plan`, when `input` declares a normaliser whose total is not
/// 0; `None` otherwise.
pub(crate) fn declared_weights<B: Backend, I: Scatter<B>>(
    plan: &SplitPlan,
    input: &I,
) -> Option<Vec<f64>> {
    let total = input
        .normaliser(0..plan.batch_size())
        .filter(|&total| total != 0.0)?;
    Some(
        plan.shards()
            .iter()
            .map(|rows| input.normaliser(rows.clone()).unwrap_or(0.0) / total)
            .collect(),
    )
}

/// The sum of the normalisers that parts of a value declare, `None` when none does: what
/// containers and derived structs return from [`Scatter::normaliser`].
pub(crate) fn add(total: Option<f64>, part: Option<f64>) -> Option<f64> {
    match (total, part) {
        (Some(total), Some(part)) => Some(total + part),
        (total, part) => total.or(part),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray;

    fn mask() -> Tensor<B, 2> {
        let rows = [
            [1.0, 1.0, 1.0],
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [1.0, 1.0, 0.0],
        ];
        Tensor::from_data(TensorData::from(rows), &Default::default())
    }

    #[test]
    fn a_declared_count_weights_shards_by_their_share_of_it() {
        let plan = SplitPlan::new(4, 2).expect("4 rows split in 2");
        let input = crate::Normalised(mask());
        let weights = shard_weights(Reduction::Mean, &plan, &input);
        assert_eq!(weights, [4.0 / 6.0, 2.0 / 6.0]);
        assert_eq!(shard_weights(Reduction::Sum, &plan, &input), [1.0, 1.0]);
    }

    #[test]
    fn without_a_declared_count_shards_weigh_their_rows() {
        let plan = SplitPlan::new(4, 3).expect("4 rows split in 3");
        assert_eq!(
            shard_weights(Reduction::Mean, &plan, &mask()),
            plan.weights()
        );
        let empty = crate::Normalised(mask().zeros_like());
        assert_eq!(
            shard_weights(Reduction::Mean, &plan, &empty),
            plan.weights()
        );
    }

    #[test]
    fn counts_sum_every_kind_of_tensor() {
        let float = mask();
        let int = float.clone().int();
        let bool = float.clone().bool();
        assert_eq!(Normaliser::total(&float, 1..4), 3.0);
        assert_eq!(Normaliser::total(&int, 1..4), 3.0);
        assert_eq!(Normaliser::total(&bool, 0..4), 6.0);
    }

    #[test]
    fn parts_add_what_they_declare() {
        assert_eq!(add(None, None), None);
        assert_eq!(add(Some(2.0), None), Some(2.0));
        assert_eq!(add(None, Some(3.0)), Some(3.0));
        assert_eq!(add(Some(2.0), Some(3.0)), Some(5.0));
    }
}
