//! State a module updates during its forward pass, such as BatchNorm's running statistics.
//!
//! Burn keeps such state in `RunningState`, whose clones share one value behind an `Arc` and
//! record each thread's update in a per-thread map that is averaged on the next sync. Those
//! rules decide what this module does:
//!
//! - replicas made with `to_device` share the template's state, and `to_device` moves the
//!   shared value to the replica's device: [`settle_shared_state`] syncs it and moves it back;
//! - replicas made from `valid()` own their state: [`collect_state`] reads each replica's, and
//!   [`write_state`] stores their shard-weighted mean in the template.

use std::any::Any;
use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::Backend};

use crate::transfer::Destination;

/// Syncs the template's shared running state and moves it back to `host`.
///
/// After replicas made by `to_device` ran forward on their threads, the shared value sits on
/// the last replica's device and each replica's update waits in the per-thread map; syncing
/// makes the value the mean of those updates (Burn's rule).
pub(crate) fn settle_shared_state<B: Backend, M: Module<B>>(
    template: &M,
    host: Destination<'_, B>,
) {
    sync_state(template);
    // Mapping a clone writes through the `Arc`s it shares with the template; the clone's own
    // parameters, already on the host, are left as they are and dropped.
    let _ = template.clone().map(&mut MoveStateTo::<B> { host });
}

/// Folds every pending per-thread update of `module`'s running state into its value.
pub(crate) fn sync_state<B: Backend, M: Module<B>>(module: &M) {
    // `RunningState::into_record` is the only public operation that syncs without needing an
    // autodiff backend.
    let _ = module.clone().into_record();
}

struct MoveStateTo<'a, B: Backend> {
    host: Destination<'a, B>,
}

impl<B: Backend> ModuleMapper<B> for MoveStateTo<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = self.host.move_to(tensor);
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The forward-updated state of one replica: every float tensor that is not trainable, by id.
pub(crate) type ReplicaState = HashMap<ParamId, Box<dyn Any + Send>>;

/// Reads the state of a replica whose running state it owns (made from `valid()`), after its
/// forward pass ran on another thread.
pub(crate) fn collect_state<B: Backend, M: Module<B>>(replica: &M) -> ReplicaState {
    collect_state_at(replica, None)
}

/// [`collect_state`], each tensor moved to `home` when given: on a replica's own thread, so
/// that the caller never reads from a replica's device (see `DeviceKind::needs_watched_threads`).
pub(crate) fn collect_state_at<B: Backend, M: Module<B>>(
    replica: &M,
    home: Option<Destination<'_, B>>,
) -> ReplicaState {
    sync_state(replica);
    let mut collector = StateCollector::<B> {
        state: HashMap::new(),
        home,
    };
    replica.visit(&mut collector);
    collector.state
}

struct StateCollector<'a, B: Backend> {
    state: ReplicaState,
    home: Option<Destination<'a, B>>,
}

impl<B: Backend> ModuleVisitor<B> for StateCollector<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        if !tensor.is_require_grad() {
            let tensor = match self.home {
                Some(home) => home.move_to(tensor),
                None => tensor,
            };
            self.state.insert(param.id, Box::new(tensor));
        }
    }
}

/// Stores in the template the shard-weighted mean `Σ w_i · s_i` of the replicas' state,
/// summed on `host` in device order.
///
/// Only state the template shares through `Arc`s (Burn's `RunningState`) can change through a
/// shared reference; other non-trainable tensors are written to a clone and dropped, leaving
/// the template as it was.
pub(crate) fn write_state<B: Backend, M: Module<B>>(
    template: &M,
    states: Vec<ReplicaState>,
    weights: &[f64],
    host: Destination<'_, B>,
) {
    if states.iter().all(HashMap::is_empty) {
        return;
    }
    let mut writer = StateWriter::<B> {
        states,
        weights,
        host,
    };
    let _ = template.clone().map(&mut writer);
}

struct StateWriter<'a, B: Backend> {
    states: Vec<ReplicaState>,
    weights: &'a [f64],
    host: Destination<'a, B>,
}

impl<B: Backend> ModuleMapper<B> for StateWriter<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let mut total: Option<Tensor<B, D>> = None;
        for (state, &weight) in self.states.iter_mut().zip(self.weights) {
            let Some(value) = state.remove(&param.id) else {
                continue;
            };
            let Ok(value) = value.downcast::<Tensor<B, D>>() else {
                continue;
            };
            let value = self.host.move_to(*value);
            let value = if weight == 1.0 {
                value
            } else {
                value.mul_scalar(weight)
            };
            total = Some(match total {
                Some(total) => total.add(value),
                None => value,
            });
        }
        match total {
            Some(total) => {
                let (id, _, mapper) = param.consume();
                Param::from_mapped_value(id, total, mapper)
            }
            None => param,
        }
    }
}
