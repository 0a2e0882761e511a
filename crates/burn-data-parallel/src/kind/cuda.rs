//! CUDA GPUs (feature `cuda`): local devices whose driver may be missing, which Burn's runtime
//! meets with a panic; the driver is looked for first.

use std::any::Any;

use burn::DispatchDevice;
use burn::backend::cuda::CudaDevice;
use burn::tensor::backend::{Backend, DeviceOps};

use super::device_kind::DeviceKind;
use super::local::{availability, counted};
use crate::error::Result;

/// A CUDA device, as Burn's `CudaDevice` or as `DispatchDevice::Cuda`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cuda;

impl Cuda {
    /// Whether `device` is a CUDA device.
    pub(crate) fn includes(device: &dyn Any) -> bool {
        device.is::<CudaDevice>()
            || matches!(
                device.downcast_ref::<DispatchDevice>(),
                Some(DispatchDevice::Cuda(_))
            )
    }
}

impl<B: Backend> DeviceKind<B> for Cuda {
    fn check_exists(&self, device: &B::Device) -> Result<()> {
        if !cuda_driver_present() {
            return availability(format!("{device:?}"), device.id(), Err(no_driver()), |_| {
                String::new()
            });
        }
        counted::<B>(device)
    }
}

/// Whether a CUDA driver library can be loaded on this machine, checked without starting
/// Burn's CUDA runtime (which panics on a machine without one).
pub fn cuda_driver_present() -> bool {
    // SAFETY: the call only tries to open the driver library with `libloading` and drops it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Why no CUDA device works when [`cuda_driver_present`] is false.
pub(crate) fn no_driver() -> String {
    "no CUDA driver found: the libcuda library could not be loaded".to_string()
}
