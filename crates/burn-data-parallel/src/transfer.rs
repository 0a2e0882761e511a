//! Moving tensors between devices, the one way every part of the crate does it.

use core::any::Any;

use burn::tensor::{BasicOps, Bool, Tensor, backend::Backend};

/// Moves `tensor` to `device`; a no-op when it is there already.
///
/// Bool tensors cross as Int tensors: Burn 0.21's `Dispatch` copies a tensor between backends
/// through its bytes, and a Bool tensor's storage differs between backends (Flex keeps `u8`,
/// which NdArray rejects with "Unsupported dtype Bool(U8)").
pub(crate) fn move_to<B, const D: usize, K>(
    tensor: Tensor<B, D, K>,
    device: &B::Device,
) -> Tensor<B, D, K>
where
    B: Backend,
    K: BasicOps<B> + 'static,
{
    if tensor.device() == *device {
        return tensor;
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
