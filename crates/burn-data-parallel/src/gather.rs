//! [`Gather`]: how the replicas' outputs are merged back into one batch on the host.

use burn::tensor::{BasicOps, Tensor, backend::Backend};

use crate::cut::{CutSplit, Cuts, merge_cut};
use crate::error::{DataParallelError, Result};
use crate::reduce::Reduction;
use crate::split::SplitPlan;
use crate::traffic::Direction;
use crate::transfer::Destination;

/// A value that can be merged from the replicas' outputs into one, on the host device.
///
/// Tensors are concatenated along dim 0 (their batch dimension), in device order, after being
/// moved to the host. Containers (tuples, `Vec`, `Option`, arrays) merge element by element and
/// must have the same shape in every replica. Values without a batch dimension, such as a
/// mean-reduced loss, go in [`Mean`] (the shard-weighted mean, `Σ n_i/n · x_i`) or [`Sum`].
///
/// User structs get this trait from `#[derive(Gather)]`.
///
/// A merge of a single part, with a one-shard [`SplitPlan`], must give that part back, moved
/// to the host: on devices that can be lost (Burn servers), each replica's output of a
/// `Learner` step is first brought home that way on the replica's own thread, and the parts
/// are then merged as usual. Every implementation in this crate, and the derive's, does so.
///
/// # Examples
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_data_parallel::{Gather, GatherContext, Mean, Reduction, SplitPlan};
///
/// let device = Default::default();
/// let plan = SplitPlan::new(4, 2).unwrap(); // two shards of two rows
/// let context = GatherContext::<NdArray>::new(&device, &plan, Reduction::Mean);
///
/// let floats = |values: &[f32]| Tensor::<NdArray, 1>::from_floats(values, &device);
/// // Each replica returns its rows and its mean loss.
/// let parts = vec![
///     (floats(&[1.0, 2.0]), Mean(floats(&[1.0]))),
///     (floats(&[3.0, 4.0]), Mean(floats(&[3.0]))),
/// ];
/// let (rows, Mean(loss)) = Gather::gather(parts, &context).unwrap();
/// assert_eq!(rows.into_data().to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(loss.into_scalar(), 2.0);
/// ```
pub trait Gather<B: Backend>: Sized {
    /// Merges `parts`, one per replica in device order, into one value on the host.
    ///
    /// # Errors
    ///
    /// [`DataParallelError::Gather`] when the parts do not have the same structure.
    fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self>;
}

/// What a [`Gather`] implementation needs to know: where to merge and how the batch was split.
#[derive(Debug, Clone)]
pub struct GatherContext<'a, B: Backend> {
    host: Destination<'a, B>,
    plan: &'a SplitPlan,
    reduction: Reduction,
    /// Set by `forward_parallel`: float merges become fresh leaves, recorded here.
    cuts: Option<&'a Cuts<B>>,
    /// The weights of the shards' losses when the input declared a normaliser.
    loss_weights: Option<Vec<f64>>,
}

impl<'a, B: Backend> GatherContext<'a, B> {
    /// A context that merges on `host` the shards of `plan`, with losses reduced by `reduction`.
    pub fn new(host: &'a B::Device, plan: &'a SplitPlan, reduction: Reduction) -> Self {
        Self::to(
            Destination::uncounted(host, Direction::ToHost),
            plan,
            reduction,
        )
    }

    /// A context that merges at `host` (a `DataParallel`'s, counted in its traffic).
    pub(crate) fn to(host: Destination<'a, B>, plan: &'a SplitPlan, reduction: Reduction) -> Self {
        Self {
            host,
            plan,
            reduction,
            cuts: None,
            loss_weights: None,
        }
    }

    /// The same context, merging float tensors as fresh leaves recorded in `cuts` (see
    /// `cut.rs`).
    pub(crate) fn cutting(self, cuts: &'a Cuts<B>) -> Self {
        Self {
            cuts: Some(cuts),
            ..self
        }
    }

    /// The device the merged value lives on.
    pub fn host(&self) -> &B::Device {
        self.host.device()
    }

    /// How the batch was split.
    pub fn plan(&self) -> &SplitPlan {
        self.plan
    }

    /// How the inner model's loss is reduced over the batch.
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// Moves `tensor` to the host (a no-op when it is there already).
    pub fn to_host<const D: usize, K: BasicOps<B> + 'static>(
        &self,
        tensor: Tensor<B, D, K>,
    ) -> Tensor<B, D, K> {
        self.host.move_to(tensor)
    }

    /// Concatenates `parts` along dim 0 on the host, in device order.
    ///
    /// # Errors
    ///
    /// [`DataParallelError::Gather`] when `parts` is empty.
    pub fn cat<const D: usize, K: BasicOps<B> + 'static>(
        &self,
        parts: Vec<Tensor<B, D, K>>,
    ) -> Result<Tensor<B, D, K>> {
        if let Some(cuts) = self.cuts {
            return merge_cut(cuts, &self.host, parts, CutSplit::Rows, |parts| {
                self.uncut().cat(parts)
            });
        }
        let mut parts: Vec<_> = parts.into_iter().map(|part| self.to_host(part)).collect();
        match parts.len() {
            0 => Err(no_parts()),
            1 => Ok(parts.remove(0)),
            _ => Ok(Tensor::cat(parts, 0)),
        }
    }

    /// The shard-weighted mean of `parts` on the host: `Σ n_i/n · x_i`, summed in device order.
    ///
    /// This is the full-batch value of a quantity that each replica averaged over its shard,
    /// such as a mean-reduced loss.
    ///
    /// # Errors
    ///
    /// [`DataParallelError::Gather`] when `parts` is empty.
    pub fn weighted_mean<const D: usize>(&self, parts: Vec<Tensor<B, D>>) -> Result<Tensor<B, D>> {
        self.weighted(parts, self.plan.weights())
    }

    /// `Σ w_i · x_i` on the host, summed in device order. A part of weight 0 is left out
    /// (a shard that holds none of what a loss averages over has a loss of 0/0).
    fn weighted<const D: usize>(
        &self,
        parts: Vec<Tensor<B, D>>,
        weights: Vec<f64>,
    ) -> Result<Tensor<B, D>> {
        if let Some(cuts) = self.cuts {
            let split = CutSplit::Scaled(weights.clone());
            return merge_cut(cuts, &self.host, parts, split, |parts| {
                self.uncut().weighted(parts, weights)
            });
        }
        let weighted = parts
            .into_iter()
            .zip(weights)
            .filter(|(_, weight)| *weight != 0.0)
            .map(|(part, weight)| {
                let part = self.to_host(part);
                // A single shard has weight 1: leave it bit for bit as it is.
                if weight == 1.0 {
                    part
                } else {
                    part.mul_scalar(weight)
                }
            });
        weighted.reduce(Tensor::add).ok_or_else(no_parts)
    }

    /// The sum of `parts` on the host, in device order.
    ///
    /// # Errors
    ///
    /// [`DataParallelError::Gather`] when `parts` is empty.
    pub fn sum<const D: usize>(&self, parts: Vec<Tensor<B, D>>) -> Result<Tensor<B, D>> {
        if let Some(cuts) = self.cuts {
            let split = CutSplit::Scaled(vec![1.0; parts.len()]);
            return merge_cut(cuts, &self.host, parts, split, |parts| {
                self.uncut().sum(parts)
            });
        }
        parts
            .into_iter()
            .map(|part| self.to_host(part))
            .reduce(Tensor::add)
            .ok_or_else(no_parts)
    }

    /// This context without cuts: what a cut merges its detached parts with.
    fn uncut(&self) -> Self {
        Self {
            cuts: None,
            ..self.clone()
        }
    }

    /// Merges per-shard losses as the inner model reduced them: the
    /// [weighted mean](Self::weighted_mean) for [`Reduction::Mean`] (weighted by the counts a
    /// declared [normaliser](crate::Normaliser) gives, when the input has one), the
    /// [sum](Self::sum) for [`Reduction::Sum`].
    ///
    /// # Errors
    ///
    /// [`DataParallelError::Gather`] when `parts` is empty.
    pub fn loss<const D: usize>(&self, parts: Vec<Tensor<B, D>>) -> Result<Tensor<B, D>> {
        match (self.reduction, &self.loss_weights) {
            (Reduction::Mean, Some(weights)) => self.weighted(parts, weights.clone()),
            (Reduction::Mean, None) => self.weighted_mean(parts),
            (Reduction::Sum, _) => self.sum(parts),
        }
    }

    /// The same context, with losses weighted by `weights` (one per shard) instead of the
    /// shards' rows: the weights a declared [normaliser](crate::Normaliser) gives.
    pub(crate) fn with_loss_weights(self, weights: Vec<f64>) -> Self {
        Self {
            loss_weights: Some(weights),
            ..self
        }
    }
}

fn no_parts() -> DataParallelError {
    DataParallelError::Gather {
        reason: "no replica produced an output".to_string(),
    }
}

/// A per-shard value merged as the shard-weighted mean `Σ n_i/n · x_i`: a mean-reduced loss or
/// metric that has no batch dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mean<T>(pub T);

/// A per-shard value merged as the plain sum `Σ x_i`: a sum-reduced loss or a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum<T>(pub T);

impl<B: Backend, const D: usize, K: BasicOps<B> + 'static> Gather<B> for Tensor<B, D, K> {
    fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self> {
        context.cat(parts)
    }
}

impl<B: Backend, const D: usize> Gather<B> for Mean<Tensor<B, D>> {
    fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self> {
        let parts = parts.into_iter().map(|Mean(part)| part).collect();
        context.weighted_mean(parts).map(Mean)
    }
}

impl<B: Backend, const D: usize> Gather<B> for Sum<Tensor<B, D>> {
    fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self> {
        let parts = parts.into_iter().map(|Sum(part)| part).collect();
        context.sum(parts).map(Sum)
    }
}

impl<B: Backend> Gather<B> for () {
    fn gather(_parts: Vec<Self>, _context: &GatherContext<'_, B>) -> Result<Self> {
        Ok(())
    }
}

/// Turns `parts`, each a sequence of `len` elements, into `len` columns: one per position.
fn transpose<T, I: IntoIterator<Item = T>>(parts: Vec<I>, len: usize) -> Vec<Vec<T>> {
    let mut columns: Vec<Vec<T>> = (0..len).map(|_| Vec::with_capacity(parts.len())).collect();
    for part in parts {
        for (column, item) in columns.iter_mut().zip(part) {
            column.push(item);
        }
    }
    columns
}

impl<B: Backend, T: Gather<B>> Gather<B> for Vec<T> {
    fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self> {
        let len = parts.first().map_or(0, Vec::len);
        if let Some((replica, part)) = parts.iter().enumerate().find(|(_, p)| p.len() != len) {
            return Err(DataParallelError::Gather {
                reason: format!(
                    "replica {replica} returned a Vec of {} elements, replica 0 one of {len}",
                    part.len()
                ),
            });
        }
        transpose(parts, len)
            .into_iter()
            .map(|column| T::gather(column, context))
            .collect()
    }
}

impl<B: Backend, T: Gather<B>, const N: usize> Gather<B> for [T; N] {
    fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self> {
        let merged = transpose(parts, N)
            .into_iter()
            .map(|column| T::gather(column, context))
            .collect::<Result<Vec<T>>>()?;
        // `transpose` made exactly N columns, so this conversion cannot fail.
        merged.try_into().map_err(|_| DataParallelError::Gather {
            reason: format!("expected {N} merged array elements"),
        })
    }
}

impl<B: Backend, T: Gather<B>> Gather<B> for Option<T> {
    fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self> {
        let somes = parts.iter().filter(|part| part.is_some()).count();
        if somes == 0 {
            return Ok(None);
        }
        if somes != parts.len() {
            return Err(DataParallelError::Gather {
                reason: format!(
                    "{somes} of {} replicas returned Some and the others None",
                    parts.len()
                ),
            });
        }
        T::gather(parts.into_iter().flatten().collect(), context).map(Some)
    }
}

macro_rules! gather_tuple {
    ($($name:ident $index:tt $column:ident),+) => {
        impl<B: Backend, $($name: Gather<B>),+> Gather<B> for ($($name,)+) {
            fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self> {
                $(let mut $column = Vec::with_capacity(parts.len());)+
                for part in parts {
                    $($column.push(part.$index);)+
                }
                Ok(($($name::gather($column, context)?,)+))
            }
        }
    };
}

gather_tuple!(A 0 a);
gather_tuple!(A 0 a, C 1 c);
gather_tuple!(A 0 a, C 1 c, E 2 e);
gather_tuple!(A 0 a, C 1 c, E 2 e, F 3 f);
gather_tuple!(A 0 a, C 1 c, E 2 e, F 3 f, G 4 g);
gather_tuple!(A 0 a, C 1 c, E 2 e, F 3 f, G 4 g, H 5 h);
