//! Moving tensors between devices, the one way every part of the crate does it: through a
//! [`Destination`], which knows its device's kind and which count the bytes go to.

use core::any::Any;

use burn::tensor::{BasicOps, Bool, Tensor, backend::Backend};

use crate::kind::{self, Kind};
use crate::traffic::{Direction, TrafficCounter, tensor_bytes};

/// Where the moves of one call go: a device, its kind, and the count the bytes go to (none
/// for moves that are the crate's own bookkeeping).
pub(crate) struct Destination<'a, B: Backend> {
    device: &'a B::Device,
    kind: Kind<B>,
    direction: Direction,
    traffic: Option<&'a TrafficCounter>,
}

impl<'a, B: Backend> Destination<'a, B> {
    /// Moves to `device`, of kind `kind`, counted nowhere.
    pub(crate) fn new(device: &'a B::Device, kind: Kind<B>, direction: Direction) -> Self {
        Self {
            device,
            kind,
            direction,
            traffic: None,
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
        if let Some(traffic) = self.traffic {
            traffic.add(self.direction, tensor_bytes(&tensor));
        }
        let from = tensor.device();
        let mut pending = Some(tensor);
        let mut moved = None;
        self.kind.transfer(&from, self.device, &mut || {
            if let Some(tensor) = pending.take() {
                moved = Some(to_device(tensor, self.device));
            }
        });
        moved.expect("every device kind runs the transfer it is given exactly once")
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
            .finish()
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
