//! The cut between the replicas' autodiff graphs and the host's, for the Keras-style path whose
//! backward runs on the replicas ([`DataParallel::forward_parallel`](crate::DataParallel::forward_parallel)).
//!
//! While the replicas' outputs are merged, every float tensor that [`GatherContext`]
//! merges (`cat`, `weighted_mean`, `sum`, and so `loss`) is merged from detached copies, and the
//! merged value becomes a fresh leaf on the host. Each merge is recorded as a [`Cut`]: the leaf,
//! the parts it came from (still in their replicas' graphs), and how the leaf's gradient splits
//! into the parts' gradients. After the host's backward pass, replica `i` runs
//! `Σ_cuts (part_i · grad_i).sum()` backward on its own worker: a vector-Jacobian product whose
//! gradients are exactly those one backward through the linked graphs would give.
//!
//! [`GatherContext`]: crate::GatherContext

use core::any::{Any, TypeId};
use std::cell::RefCell;

use burn::tensor::{BasicOps, Float, Tensor, backend::Backend};

use crate::transfer::Destination;

/// How a merged value's gradient splits into its parts' gradients.
#[derive(Debug, Clone)]
pub(crate) enum CutSplit {
    /// Concatenated along dim 0: part `i` is the flat range `offsets[i]..offsets[i] + len_i` of
    /// the merged value (row-major flattening keeps each part's rows together).
    Rows,
    /// `Σ w_i · part_i`: part `i`'s gradient is `w_i` times the merged value's.
    Scaled(Vec<f64>),
}

/// One merged float tensor of the replicas' outputs.
#[derive(Debug)]
pub(crate) struct Cut<B: Backend> {
    /// The merged value, flattened: a leaf on the host that the user's loss reads.
    pub(crate) leaf: Tensor<B, 1>,
    /// Each replica's part, flattened, still in that replica's graph, in device order.
    pub(crate) parts: Vec<Tensor<B, 1>>,
    /// How `leaf`'s gradient splits into the parts'.
    pub(crate) split: CutSplit,
}

/// The cuts recorded while one call's outputs were merged.
pub(crate) type Cuts<B> = RefCell<Vec<Cut<B>>>;

/// `tensor` as a float tensor, if it is one (`K` is `Float`).
fn as_float<B: Backend, const D: usize, K: BasicOps<B> + 'static>(
    tensor: Tensor<B, D, K>,
) -> Result<Tensor<B, D>, Tensor<B, D, K>> {
    if TypeId::of::<K>() != TypeId::of::<Float>() {
        return Err(tensor);
    }
    let boxed: Box<dyn Any> = Box::new(tensor);
    Ok(*boxed
        .downcast::<Tensor<B, D>>()
        .expect("K is Float: Tensor<B, D, K> is Tensor<B, D>"))
}

/// `tensor` back as `Tensor<B, D, K>`, where `K` is `Float`.
fn from_float<B: Backend, const D: usize, K: BasicOps<B> + 'static>(
    tensor: Tensor<B, D>,
) -> Tensor<B, D, K> {
    let boxed: Box<dyn Any> = Box::new(tensor);
    *boxed
        .downcast::<Tensor<B, D, K>>()
        .expect("checked by as_float: K is Float")
}

fn flat<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Tensor<B, 1> {
    let len = tensor.shape().num_elements();
    tensor.reshape([len])
}

/// Merges `parts` with `merge` from detached copies on `host`, records the cut in `cuts`, and
/// returns the merged value as a view of a fresh leaf. Non-float tensors are merged by `merge`
/// as they are: they carry no gradient.
pub(crate) fn merge_cut<B, const D: usize, K>(
    cuts: &Cuts<B>,
    host: &Destination<'_, B>,
    parts: Vec<Tensor<B, D, K>>,
    split: CutSplit,
    merge: impl FnOnce(Vec<Tensor<B, D, K>>) -> crate::Result<Tensor<B, D, K>>,
) -> crate::Result<Tensor<B, D, K>>
where
    B: Backend,
    K: BasicOps<B> + 'static,
{
    if !B::ad_enabled(host.device()) || TypeId::of::<K>() != TypeId::of::<Float>() {
        return merge(parts);
    }
    let mut tracked = Vec::with_capacity(parts.len());
    let mut detached = Vec::with_capacity(parts.len());
    for part in parts {
        let part = as_float(part).unwrap_or_else(|_| unreachable!("K is Float"));
        detached.push(from_float::<B, D, K>(host.move_to(part.clone().detach())));
        tracked.push(flat(part));
    }
    let merged = as_float(merge(detached)?).unwrap_or_else(|_| unreachable!("K is Float"));
    let shape = merged.shape();
    let leaf = flat(merged).require_grad();
    cuts.borrow_mut().push(Cut {
        leaf: leaf.clone(),
        parts: tracked,
        split,
    });
    Ok(from_float(leaf.reshape(shape)))
}
