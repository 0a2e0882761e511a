//! The sum over replicas for replicas that each differentiate their own graph (the
//! per-replica step, `forward_parallel`): an autodiff operation whose forward pass sums
//! every replica's part and whose backward pass sums every replica's gradient, so that each
//! replica's backward accounts for what its part did to the others' outputs.
//!
//! Replica `j`'s gradients are multiplied by `w_j` once they reach the host (its shard's
//! weight). Its backward pass therefore works in units of `1 / w_j` of the batch's loss, and
//! the operation's backward is `(Σ_i w_i · g_i) / w_j`: multiplied by `w_j` on the host, it is
//! the full loss's gradient through the shared sum.
//!
//! Burn lets a backward pass be defined for a concrete `Autodiff<X, C>` only, so
//! [`reducer`] checks at run time that the call's backend is one, and type-erases the
//! operation for the layers, which know their backend only as `B: Backend`.

use core::any::{Any, TypeId};
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use super::group::{Key, Member, SyncGroup};
use crate::same_type::same_type;

/// The sum over replicas of a part of `B`, given the part's element count: returns the total
/// count and the sum, on the part's device.
pub(crate) type Reducer<B> =
    Arc<dyn Fn(Tensor<B, 1>, f64, &mut Member, f64) -> (f64, Tensor<B, 1>) + Send + Sync>;

/// The operation for backend `B`, type-erased, or `None` when `B` is not Burn's `Autodiff`
/// over some backend.
pub(crate) fn reducer<B: AutodiffBackend>() -> Option<Arc<dyn Any + Send + Sync>> {
    fn erase<B: AutodiffBackend, C: CheckpointStrategy>() -> Arc<dyn Any + Send + Sync> {
        let reducer: Reducer<B> = Arc::new(|part, count, member, weight| {
            let part: Tensor<Autodiff<B::InnerBackend, C>, 1> = same_type(part);
            let (total, sum) = cross_replica_sum::<B::InnerBackend, C>(part, count, member, weight);
            (total, same_type(sum))
        });
        Arc::new(reducer)
    }
    let backend = TypeId::of::<B>();
    if backend == TypeId::of::<Autodiff<B::InnerBackend, NoCheckpointing>>() {
        Some(erase::<B, NoCheckpointing>())
    } else if backend == TypeId::of::<Autodiff<B::InnerBackend, BalancedCheckpointing>>() {
        Some(erase::<B, BalancedCheckpointing>())
    } else {
        None
    }
}

/// `Σ_i part_i` over the member's group, in rank order, on `part`'s device, tracked so that
/// the backward pass exchanges gradients as the module doc says.
fn cross_replica_sum<X: Backend, C: CheckpointStrategy>(
    part: Tensor<Autodiff<X, C>, 1>,
    count: f64,
    member: &mut Member,
    weight: f64,
) -> (f64, Tensor<Autodiff<X, C>, 1>) {
    let key = member.next_forward();
    let part = part.into_primitive().tensor();
    let (total, sum) = member.group.sum(
        Key::Forward(key),
        member.rank,
        count,
        inner::<X>(part.primitive.clone()),
    );
    let sum = sum.into_primitive().tensor();
    let output = match CrossReplicaSum
        .prepare::<C>([part.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            SumState {
                group: member.group.clone(),
                rank: member.rank,
                key,
                weight,
            },
            sum,
        ),
        OpsKind::UnTracked(prep) => prep.finish(sum),
    };
    (
        total,
        Tensor::from_primitive(TensorPrimitive::Float(output)),
    )
}

fn inner<X: Backend>(primitive: X::FloatTensorPrimitive) -> Tensor<X, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

#[derive(Debug)]
struct CrossReplicaSum;

#[derive(Debug, Clone)]
struct SumState {
    group: Arc<SyncGroup>,
    rank: usize,
    key: usize,
    weight: f64,
}

impl<X: Backend> Backward<X, 1> for CrossReplicaSum {
    type State = SumState;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let state = ops.state;
        let grad = inner::<X>(grads.consume::<X>(&ops.node));
        if state.weight == 0.0 {
            // Its rows shape the statistics, so the batch's gradient reaches them through the
            // other shards' losses; but the host weighs this replica's gradients by 0, so no
            // value returned here could carry that. The others are released with this reason.
            panic!(
                "SyncBatchNorm: shard {} holds none of what the loss averages over (its declared                  normaliser is 0), yet its rows shape the shared statistics: its part of the                  gradient cannot be weighted. Use batches where every shard has a count, or                  fewer replicas",
                state.rank
            );
        }
        // In units of the batch's loss.
        let (_, sum) = state.group.sum(
            Key::Backward(state.key),
            state.rank,
            0.0,
            grad.mul_scalar(state.weight),
        );
        let reduced = sum.div_scalar(state.weight);
        if let [Some(parent)] = ops.parents {
            grads.register::<X>(parent.id, reduced.into_primitive().tensor());
        }
    }
}
