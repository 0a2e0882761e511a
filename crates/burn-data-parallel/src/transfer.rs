//! Moving tensors between devices, the one way every part of the crate does it: through a
//! [`Destination`], which knows its device's kind and which count the bytes go to.

use core::any::Any;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::sync::Arc;
use std::task::Wake;
use std::thread::{self, Thread};

use burn::tensor::backend::{Backend, ExecutionError};
use burn::tensor::{BasicOps, Bool, Tensor, TensorData};

use crate::kind::{self, Kind};
use crate::traffic::{Direction, TrafficCounter, tensor_bytes};

/// Where the moves of one call go: a device, its kind, and the count the bytes go to (none
/// for moves that are the crate's own bookkeeping).
pub(crate) struct Destination<'a, B: Backend> {
    device: &'a B::Device,
    kind: Kind<B>,
    direction: Direction,
    traffic: Option<&'a TrafficCounter>,
    /// Whether moves through this process wait until their tensors have arrived (see
    /// [`settle`](Self::settle)).
    settled: bool,
}

impl<'a, B: Backend> Destination<'a, B> {
    /// Moves to `device`, of kind `kind`, counted nowhere.
    pub(crate) fn new(device: &'a B::Device, kind: Kind<B>, direction: Direction) -> Self {
        Self {
            device,
            kind,
            direction,
            traffic: None,
            settled: true,
        }
    }

    /// Moves to `device`, whose kind is looked up, counted nowhere: for contexts users build.
    pub(crate) fn uncounted(device: &'a B::Device, direction: Direction) -> Self {
        Self::new(device, kind::of::<B>(device), direction)
    }

    /// The same destination, counting its moves in `traffic`.
    pub(crate) fn counted(self, traffic: &'a TrafficCounter) -> Self {
        Self {
            traffic: Some(traffic),
            ..self
        }
    }

    /// The same destination, whose moves do not wait until their tensors have arrived: for a
    /// thread that uses what it moves itself, or that [`settle`](Self::settle)s once when done.
    #[cfg_attr(
        not(feature = "train"),
        expect(dead_code, reason = "asked by the training and inference steps only")
    )]
    pub(crate) fn unsettled(self) -> Self {
        Self {
            settled: false,
            ..self
        }
    }

    /// Waits after a batch of moves through this process, unless [`unsettled`](Self::unsettled).
    pub(crate) fn settle_if_settled(&self) {
        if self.settled {
            self.settle();
        }
    }

    /// The same destination, counted nowhere.
    pub(crate) fn without_count(self) -> Self {
        Self {
            traffic: None,
            ..self
        }
    }

    /// The device moves go to.
    pub(crate) fn device(&self) -> &'a B::Device {
        self.device
    }

    /// The destination device's kind.
    #[cfg_attr(
        not(feature = "train"),
        expect(dead_code, reason = "asked by the training step only")
    )]
    pub(crate) fn kind(&self) -> Kind<B> {
        self.kind
    }

    /// Moves `tensor` here; a no-op when it is here already.
    ///
    /// Bool tensors cross as Int tensors: Burn 0.21's `Dispatch` copies a tensor between
    /// backends through its bytes, and a Bool tensor's storage differs between backends (Flex
    /// keeps `u8`, which NdArray rejects with "Unsupported dtype Bool(U8)").
    pub(crate) fn move_to<const D: usize, K>(&self, tensor: Tensor<B, D, K>) -> Tensor<B, D, K>
    where
        K: BasicOps<B> + 'static,
    {
        if tensor.device() == *self.device {
            return tensor;
        }
        if self.kind.moves_through_this_process() {
            let mut reads = Reads::default();
            reads.add(tensor);
            let data = reads.wait().pop();
            let moved = self.write(data.expect("one read gives one tensor's data"));
            self.settle_if_settled();
            return moved;
        }
        if let Some(traffic) = self.traffic {
            traffic.add(self.direction, tensor_bytes(&tensor));
        }
        to_device(tensor, self.device)
    }

    /// Whether moves here go through this process (see
    /// `DeviceKind::moves_through_this_process`): many are then best made together, their
    /// data read with [`Reads`], written with [`write`](Self::write), then [`settle`]d once.
    ///
    /// [`settle`]: Self::settle
    pub(crate) fn moves_through_this_process(&self) -> bool {
        self.kind.moves_through_this_process()
    }

    /// A tensor made here from `data` (read from another device with [`Reads`]), of the
    /// data's own dtype: a new tensor, outside any autodiff graph.
    ///
    /// That suits every move made this way: fresh leaves, detached shards and gradients on
    /// the per-replica path, and inference; the Keras-style forward that would need a tracked
    /// move is refused on kinds that move through this process
    /// (`DeviceKind::differentiable_forward`).
    pub(crate) fn write<const D: usize, K>(&self, data: TensorData) -> Tensor<B, D, K>
    where
        K: BasicOps<B>,
    {
        let dtype = data.dtype;
        let moved = Tensor::from_data(data, (self.device, dtype));
        if let Some(traffic) = self.traffic {
            traffic.add(self.direction, tensor_bytes(&moved));
        }
        moved
    }

    /// Waits until what was [`write`](Self::write)n here (or moved here through this process)
    /// has arrived; nothing to wait for on other kinds.
    ///
    /// A Burn server keeps one queue of operations per client thread, and another thread (the
    /// caller's, after a replica's thread moved its gradients home) may use the tensors next,
    /// which must then find them there. A device lost meanwhile shows up at the next operation
    /// on it, where it is handled.
    pub(crate) fn settle(&self) {
        self.kind.settle(self.device);
    }

    /// Waits until the work this thread queued on the destination's device has run (see
    /// `DeviceKind::wait_for_queue`).
    #[cfg(feature = "train")]
    pub(crate) fn wait_for_queue(&self) {
        self.kind.wait_for_queue(self.device);
    }
}

impl<B: Backend> Clone for Destination<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Destination<'_, B> {}

impl<B: Backend> core::fmt::Debug for Destination<'_, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Destination")
            .field("device", self.device)
            .field("kind", &self.kind)
            .field("direction", &self.direction)
            .field("counted", &self.traffic.is_some())
            .field("settled", &self.settled)
            .finish()
    }
}

/// One tensor's read into this process, under way.
type Read = Pin<Box<dyn Future<Output = Result<TensorData, ExecutionError>> + Send>>;

/// Tensors' data read into this process together: every read is sent before the first answer
/// is awaited, so that reading many tensors from a Burn server costs about one round trip, not
/// one per tensor.
#[derive(Default)]
pub(crate) struct Reads(Vec<Read>);

impl Reads {
    /// Adds `tensor`'s read; its data comes back from [`wait`](Self::wait) in this place.
    pub(crate) fn add<B, const D: usize, K>(&mut self, tensor: Tensor<B, D, K>)
    where
        B: Backend,
        K: BasicOps<B> + 'static,
    {
        self.0.push(Box::pin(tensor.into_data_async()));
    }

    /// Every tensor's data, in the order they were added.
    ///
    /// # Panics
    ///
    /// When a read fails (its device is lost), with Burn's error, as Burn's own `into_data`
    /// does: the watched thread of a replica whose device is lost stops there.
    pub(crate) fn wait(self) -> Vec<TensorData> {
        join_all(self.0)
            .into_iter()
            .map(|read| {
                read.unwrap_or_else(|error| {
                    panic!("reading a tensor into this process failed: {error:?}")
                })
            })
            .collect()
    }
}

/// Runs `futures` at once on this thread, each polled again when it can go on, and returns
/// their outputs in order.
fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send>>>) -> Vec<T> {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    loop {
        for (future, output) in futures.iter_mut().zip(&mut outputs) {
            if output.is_none()
                && let Poll::Ready(value) = future.as_mut().poll(&mut context)
            {
                *output = Some(value);
            }
        }
        if outputs.iter().all(Option::is_some) {
            return outputs.into_iter().flatten().collect();
        }
        // Woken by a future that can go on; a spurious wake-up only polls again.
        thread::park();
    }
}

/// Burn's `to_device`, with Bool tensors crossing as Int tensors.
fn to_device<B, const D: usize, K>(tensor: Tensor<B, D, K>, device: &B::Device) -> Tensor<B, D, K>
where
    B: Backend,
    K: BasicOps<B> + 'static,
{
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
