//! [`Scatter`]: what can be cut along the batch dimension and sent to the replicas.

use core::any::Any;
use core::ops::Range;

use burn::tensor::{BasicOps, Tensor, backend::Backend};

use crate::error::{DataParallelError, Result};
use crate::normaliser;
use crate::traffic::Direction;
use crate::transfer::Destination;

/// A value that can be cut into shards along its batch dimension, one shard per replica.
///
/// The batch dimension of a tensor is dim 0. Containers (tuples, `Vec`, `Option`, arrays)
/// scatter each element; every tensor found must have the same dim-0 size. Values without a
/// batch dimension go in [`Broadcast`], which gives every replica a clone.
///
/// User structs get this trait from `#[derive(Scatter)]`.
///
/// # Examples
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use burn_data_parallel::{Scatter, ScatterContext};
///
/// let device = Default::default();
/// let images = Tensor::<NdArray, 2>::ones([5, 3], &device);
/// let labels = Tensor::<NdArray, 1, Int>::arange(0..5, &device);
/// let batch = (images, labels);
///
/// let mut sizes = Vec::new();
/// batch.batch_sizes(&mut sizes);
/// assert_eq!(sizes, [5, 5]);
///
/// let (images, labels) = batch.shard(3..5, &ScatterContext::new(&device));
/// assert_eq!(images.dims(), [2, 3]);
/// assert_eq!(labels.into_data().to_vec::<i64>().unwrap(), [3, 4]);
/// ```
pub trait Scatter<B: Backend>: Sized {
    /// Appends the dim-0 size of every part that is split to `sizes`.
    fn batch_sizes(&self, sizes: &mut Vec<usize>);

    /// The given `rows` of every part that is split, moved to the context's device; other
    /// parts cloned.
    fn shard(&self, rows: Range<usize>, context: &ScatterContext<'_, B>) -> Self;

    /// Calls `visit` with every float tensor of the value (split or not), flattened to one
    /// dimension.
    ///
    /// [`DataParallel::forward`](crate::DataParallel::forward) uses it to put every tensor a
    /// replica's thread reads into one autodiff graph before the threads start (see
    /// `docs/design.md`). The default visits nothing, which is right for values without float
    /// tensors.
    fn visit_floats(&self, visit: &mut dyn FnMut(Tensor<B, 1>)) {
        let _ = visit;
    }

    /// What the inner model's loss averages over in `rows` of this value, when that is not
    /// the rows themselves: the count of valid tokens or mask pixels, or the total class
    /// weight, in those rows.
    ///
    /// `None` (the default) means a mean over rows. Containers return the sum of what their
    /// parts declare; a derived struct, what its `#[scatter(normaliser)]` fields count (see
    /// [`Normaliser`](crate::Normaliser)). The per-replica step weights shard `i` by
    /// `c_i / c` when the input declares one.
    fn normaliser(&self, rows: Range<usize>) -> Option<f64> {
        let _ = rows;
        None
    }
}

/// A value without a batch dimension, given unchanged to every replica.
///
/// The value is cloned, not moved: a tensor inside stays on its device. Move it where it is
/// used, for example with `mask.clone().to_device(&shard.device())` inside the closure given to
/// [`forward`](crate::DataParallel::forward), or, in a hand-written [`Scatter`], with
/// [`ScatterContext::to_replica`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Broadcast<T>(pub T);

/// The batch size of `input`: the dim-0 size that all its split parts share.
///
/// # Errors
///
/// [`DataParallelError::NothingToSplit`] when `input` holds no split part,
/// [`DataParallelError::BatchSizeMismatch`] when the parts disagree and
/// [`DataParallelError::EmptyBatch`] when the size is 0.
pub fn batch_size<B: Backend, I: Scatter<B>>(input: &I) -> Result<usize> {
    let mut sizes = Vec::new();
    input.batch_sizes(&mut sizes);
    let first = *sizes.first().ok_or(DataParallelError::NothingToSplit)?;
    if sizes.iter().any(|&size| size != first) {
        let mut distinct = Vec::new();
        for size in sizes {
            if !distinct.contains(&size) {
                distinct.push(size);
            }
        }
        return Err(DataParallelError::BatchSizeMismatch { sizes: distinct });
    }
    if first == 0 {
        return Err(DataParallelError::EmptyBatch);
    }
    Ok(first)
}

/// What a [`Scatter`] implementation needs to know: the replica device its shard goes to,
/// and how tensors reach it. The counterpart of [`GatherContext`](crate::GatherContext).
///
/// `DataParallel` makes one per replica for every call; in a hand-written implementation,
/// pass it on to the fields' own `shard`, or move a tensor with
/// [`to_replica`](Self::to_replica).
#[derive(Debug, Clone, Copy)]
pub struct ScatterContext<'a, B: Backend> {
    to: Destination<'a, B>,
    /// Whether float shards leave the autodiff graph (see [`detaching`](Self::detaching)).
    detach: bool,
}

impl<'a, B: Backend> ScatterContext<'a, B> {
    /// A context that sends shards to `device`.
    pub fn new(device: &'a B::Device) -> Self {
        Self {
            to: Destination::uncounted(device, Direction::ToReplica),
            detach: false,
        }
    }

    /// The context of a replica: moves go to `to`, counted there.
    pub(crate) fn replica(to: Destination<'a, B>) -> Self {
        Self { to, detach: false }
    }

    /// The same context, with float shards detached from the input's autodiff graph.
    ///
    /// `forward_parallel` runs each replica's backward pass on its own worker: a shard linked
    /// to the caller's graph would let those passes reach into it from several threads at
    /// once, where Burn 0.21 can deadlock. Its inputs are data, so they are cut off.
    pub(crate) fn detaching(self) -> Self {
        Self {
            detach: true,
            ..self
        }
    }

    /// The device the shard goes to.
    pub fn device(&self) -> &'a B::Device {
        self.to.device()
    }

    /// Moves `tensor` to the replica's device (a no-op when it is there already), counted in
    /// the [`Traffic`](crate::Traffic) of the `DataParallel` that made this context.
    pub fn to_replica<const D: usize, K: BasicOps<B> + 'static>(
        &self,
        tensor: Tensor<B, D, K>,
    ) -> Tensor<B, D, K> {
        let tensor = if self.detach {
            detached(tensor)
        } else {
            tensor
        };
        self.to.move_to(tensor)
    }
}

/// `tensor` detached from the autodiff graph, if it is a float tensor (only those are
/// tracked).
fn detached<B: Backend, const D: usize, K: BasicOps<B> + 'static>(
    tensor: Tensor<B, D, K>,
) -> Tensor<B, D, K> {
    let boxed: Box<dyn Any> = Box::new(tensor);
    match boxed.downcast::<Tensor<B, D>>() {
        Ok(float) => {
            let detached: Box<dyn Any> = Box::new(float.detach());
            *detached
                .downcast::<Tensor<B, D, K>>()
                .expect("the tensor was a Tensor<B, D, K>")
        }
        Err(other) => *other
            .downcast::<Tensor<B, D, K>>()
            .expect("the tensor was boxed as Tensor<B, D, K>"),
    }
}

impl<B, const D: usize, K> Scatter<B> for Tensor<B, D, K>
where
    B: Backend,
    K: BasicOps<B> + 'static,
{
    fn batch_sizes(&self, sizes: &mut Vec<usize>) {
        sizes.push(self.dims()[0]);
    }

    fn shard(&self, rows: Range<usize>, context: &ScatterContext<'_, B>) -> Self {
        let tensor = if rows.start == 0 && rows.end == self.dims()[0] {
            self.clone()
        } else {
            self.clone().narrow(0, rows.start, rows.len())
        };
        context.to_replica(tensor)
    }

    fn visit_floats(&self, visit: &mut dyn FnMut(Tensor<B, 1>)) {
        // Only float tensors can be tracked by autodiff; `K` is known only at run time here.
        let tensor: &dyn Any = self;
        if let Some(tensor) = tensor.downcast_ref::<Tensor<B, D>>() {
            let len = tensor.shape().num_elements();
            visit(tensor.clone().reshape([len]));
        }
    }
}

impl<B: Backend, T: Clone> Scatter<B> for Broadcast<T> {
    fn batch_sizes(&self, _sizes: &mut Vec<usize>) {}

    fn shard(&self, _rows: Range<usize>, _context: &ScatterContext<'_, B>) -> Self {
        self.clone()
    }
}

impl<B: Backend, T: Scatter<B>> Scatter<B> for Vec<T> {
    fn batch_sizes(&self, sizes: &mut Vec<usize>) {
        self.iter().for_each(|item| item.batch_sizes(sizes));
    }

    fn normaliser(&self, rows: Range<usize>) -> Option<f64> {
        self.iter()
            .map(|item| item.normaliser(rows.clone()))
            .fold(None, normaliser::add)
    }

    fn visit_floats(&self, visit: &mut dyn FnMut(Tensor<B, 1>)) {
        self.iter().for_each(|item| item.visit_floats(visit));
    }

    fn shard(&self, rows: Range<usize>, context: &ScatterContext<'_, B>) -> Self {
        self.iter()
            .map(|item| item.shard(rows.clone(), context))
            .collect()
    }
}

impl<B: Backend, T: Scatter<B>, const N: usize> Scatter<B> for [T; N] {
    fn batch_sizes(&self, sizes: &mut Vec<usize>) {
        self.iter().for_each(|item| item.batch_sizes(sizes));
    }

    fn normaliser(&self, rows: Range<usize>) -> Option<f64> {
        self.iter()
            .map(|item| item.normaliser(rows.clone()))
            .fold(None, normaliser::add)
    }

    fn visit_floats(&self, visit: &mut dyn FnMut(Tensor<B, 1>)) {
        self.iter().for_each(|item| item.visit_floats(visit));
    }

    fn shard(&self, rows: Range<usize>, context: &ScatterContext<'_, B>) -> Self {
        core::array::from_fn(|index| self[index].shard(rows.clone(), context))
    }
}

impl<B: Backend, T: Scatter<B>> Scatter<B> for Option<T> {
    fn batch_sizes(&self, sizes: &mut Vec<usize>) {
        if let Some(item) = self {
            item.batch_sizes(sizes);
        }
    }

    fn shard(&self, rows: Range<usize>, context: &ScatterContext<'_, B>) -> Self {
        self.as_ref().map(|item| item.shard(rows, context))
    }

    fn normaliser(&self, rows: Range<usize>) -> Option<f64> {
        self.as_ref().and_then(|item| item.normaliser(rows))
    }

    fn visit_floats(&self, visit: &mut dyn FnMut(Tensor<B, 1>)) {
        if let Some(item) = self {
            item.visit_floats(visit);
        }
    }
}

macro_rules! scatter_tuple {
    ($($name:ident $index:tt),+) => {
        impl<B: Backend, $($name: Scatter<B>),+> Scatter<B> for ($($name,)+) {
            fn batch_sizes(&self, sizes: &mut Vec<usize>) {
                $(self.$index.batch_sizes(sizes);)+
            }

            fn shard(&self, rows: Range<usize>, context: &ScatterContext<'_, B>) -> Self {
                ($(self.$index.shard(rows.clone(), context),)+)
            }

            fn visit_floats(&self, visit: &mut dyn FnMut(Tensor<B, 1>)) {
                $(self.$index.visit_floats(visit);)+
            }

            fn normaliser(&self, rows: Range<usize>) -> Option<f64> {
                let total = None;
                $(let total = normaliser::add(total, self.$index.normaliser(rows.clone()));)+
                total
            }
        }
    };
}

scatter_tuple!(A 0);
scatter_tuple!(A 0, C 1);
scatter_tuple!(A 0, C 1, E 2);
scatter_tuple!(A 0, C 1, E 2, F 3);
scatter_tuple!(A 0, C 1, E 2, F 3, G 4);
scatter_tuple!(A 0, C 1, E 2, F 3, G 4, H 5);

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray>;

    /// Whether a gradient reaches `input` through its shard of rows 1..3.
    fn shard_reaches_input(detach: bool) -> bool {
        let device = Default::default();
        let input = Tensor::<B, 2>::ones([4, 2], &device).require_grad();
        let context = ScatterContext::new(&device);
        let context = if detach { context.detaching() } else { context };
        let shard = input.shard(1..3, &context);
        let grads = shard.mul_scalar(2.0).sum().backward();
        input.grad(&grads).is_some()
    }

    #[test]
    fn shards_cut_in_a_detaching_context_leave_the_inputs_graph() {
        assert!(shard_reaches_input(false));
        assert!(!shard_reaches_input(true));
    }
}
