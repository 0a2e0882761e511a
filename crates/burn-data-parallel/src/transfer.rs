//! Moving tensors between devices, the one way every part of the crate does it, and counting
//! the bytes that cross.

use core::any::Any;
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{BasicOps, Bool, Int, Tensor, backend::Backend};

/// Bytes moved between devices by one `DataParallel` (and its clones), in both directions.
///
/// Counted where the crate moves data: weights to replicas not on the host, input shards to
/// their devices, and outputs, gradients and running state back to the host. Moves within one
/// device cost nothing and count nothing. Read it with
/// [`DataParallel::traffic`](crate::DataParallel::traffic); take the difference of two
/// readings to measure a step (see `docs/performance.md` for the lower bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes sent to replicas: weights, and input shards not already on their device.
    pub to_replicas: u64,
    /// Bytes sent back to the host: outputs, gradients and running state.
    pub to_host: u64,
}

impl Traffic {
    /// Both directions together.
    pub fn total(&self) -> u64 {
        self.to_replicas + self.to_host
    }

    /// What was moved between an earlier reading and this one.
    pub fn since(&self, earlier: Traffic) -> Traffic {
        Traffic {
            to_replicas: self.to_replicas - earlier.to_replicas,
            to_host: self.to_host - earlier.to_host,
        }
    }
}

/// The running count behind [`Traffic`], shared by a `DataParallel` and its clones.
#[derive(Debug, Default)]
pub(crate) struct TrafficCounter {
    to_replicas: AtomicU64,
    to_host: AtomicU64,
}

impl TrafficCounter {
    pub(crate) fn read(&self) -> Traffic {
        Traffic {
            to_replicas: self.to_replicas.load(Ordering::Relaxed),
            to_host: self.to_host.load(Ordering::Relaxed),
        }
    }
}

thread_local! {
    /// The counter of the `DataParallel` call running on this thread. Moves happen deep inside
    /// `Scatter` and `Gather` impls (users' derives among them), which have no way to be handed
    /// a counter; every move of a call runs on the caller's thread.
    static CURRENT: RefCell<Option<Arc<TrafficCounter>>> = const { RefCell::new(None) };
}

/// Counts this thread's moves into `counter` until the returned guard is dropped.
pub(crate) fn counting(counter: &Arc<TrafficCounter>) -> CountingGuard {
    let previous = CURRENT.with(|current| current.replace(Some(counter.clone())));
    CountingGuard { previous }
}

/// Restores the previous counter when a `DataParallel` call ends.
pub(crate) struct CountingGuard {
    previous: Option<Arc<TrafficCounter>>,
}

impl Drop for CountingGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| current.replace(previous));
    }
}

/// Which way data crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    ToReplica,
    ToHost,
    /// The crate's own bookkeeping (one element per tensor), not counted.
    Bookkeeping,
}

/// Adds `bytes` to the count of `direction` of the call running on this thread, if any.
pub(crate) fn count(direction: Direction, bytes: u64) {
    CURRENT.with(|current| {
        if let Some(counter) = current.borrow().as_ref() {
            let total = match direction {
                Direction::ToReplica => &counter.to_replicas,
                Direction::ToHost => &counter.to_host,
                Direction::Bookkeeping => return,
            };
            total.fetch_add(bytes, Ordering::Relaxed);
        }
    });
}

/// Moves `tensor` to `device`; a no-op when it is there already.
///
/// Bool tensors cross as Int tensors: Burn 0.21's `Dispatch` copies a tensor between backends
/// through its bytes, and a Bool tensor's storage differs between backends (Flex keeps `u8`,
/// which NdArray rejects with "Unsupported dtype Bool(U8)").
pub(crate) fn move_to<B, const D: usize, K>(
    tensor: Tensor<B, D, K>,
    device: &B::Device,
    direction: Direction,
) -> Tensor<B, D, K>
where
    B: Backend,
    K: BasicOps<B> + 'static,
{
    if tensor.device() == *device {
        return tensor;
    }
    count(direction, tensor_bytes(&tensor));
    #[cfg(feature = "remote")]
    if crate::remote::is_remote(device) {
        let from = tensor.device();
        return crate::remote::transfer::one_at_a_time::<B, _>(&from, device, || {
            tensor.to_device(device)
        });
    }
    let tensor: Box<dyn Any> = Box::new(tensor);
    match tensor.downcast::<Tensor<B, D, Bool>>() {
        Ok(mask) => {
            let moved: Box<dyn Any> = Box::new(mask.int().to_device(device).bool());
            *moved
                .downcast::<Tensor<B, D, K>>()
                .expect("K is Bool: the tensor was downcast from Tensor<B, D, K>")
        }
        Err(tensor) => tensor
            .downcast::<Tensor<B, D, K>>()
            .expect("the tensor was boxed as Tensor<B, D, K>")
            .to_device(device),
    }
}

fn tensor_bytes<B: Backend, const D: usize, K: BasicOps<B>>(tensor: &Tensor<B, D, K>) -> u64 {
    (tensor.shape().num_elements() * tensor.dtype().size()) as u64
}

/// The bytes of every tensor of `module`: what a copy of it to another device moves.
pub(crate) fn module_bytes<B: Backend, M: Module<B>>(module: &M) -> u64 {
    struct Bytes(u64);
    impl<B: Backend> ModuleVisitor<B> for Bytes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 += tensor_bytes(&param.val());
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            self.0 += tensor_bytes(&param.val());
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
            self.0 += tensor_bytes(&param.val());
        }
    }
    let mut bytes = Bytes(0);
    module.visit(&mut bytes);
    bytes.0
}

/// How a module is brought to a replica's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replicate {
    /// `to_device`: linked to the original in the autodiff graph (the Keras-style path).
    Linked,
    /// `fork`: fresh leaves of its own (the per-replica training path).
    Forked,
}

/// `module` on `device`, linked or forked. On a remote device the parameters move one at a
/// time (see the `remote` module); elsewhere this is Burn's own `to_device` or `fork`.
pub(crate) fn replicate<B: Backend, M: Module<B>>(
    module: M,
    device: &B::Device,
    how: Replicate,
) -> M {
    #[cfg(feature = "remote")]
    if crate::remote::is_remote(device) {
        return module.map(&mut crate::remote::transfer::MoveParams::<B> {
            device,
            fork: how == Replicate::Forked,
        });
    }
    match how {
        Replicate::Linked => module.to_device(device),
        Replicate::Forked => module.fork(device),
    }
}
