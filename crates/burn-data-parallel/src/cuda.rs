//! CUDA devices (feature `cuda`): Keras's `multi_gpu_model(model, gpus=n)` as
//! [`DataParallel::gpus`], and finding the GPUs without crashing on a machine that has none.
//! What a CUDA device is to the core (how its existence is checked) is `kind/cuda.rs`.

use std::panic::{self, AssertUnwindSafe};

use burn::DispatchDevice;
use burn::backend::cuda::CudaDevice;
use burn::module::Module;
use burn::tensor::backend::{Backend, DeviceOps};

use crate::data_parallel::DataParallel;
use crate::error::{DataParallelError, Result, panic_message};
use crate::kind::cuda::{cuda_driver_present, no_driver};

/// A device type that can name CUDA GPUs: Burn's `CudaDevice`, and `DispatchDevice`, whose
/// backend also spans the CPU (so the template can stay on the CPU while replicas run on GPUs).
pub trait CudaDevices: Sized {
    /// The CUDA device with this index.
    fn cuda(index: usize) -> Self;
}

impl CudaDevices for CudaDevice {
    fn cuda(index: usize) -> Self {
        CudaDevice::new(index)
    }
}

impl CudaDevices for DispatchDevice {
    fn cuda(index: usize) -> Self {
        DispatchDevice::Cuda(CudaDevice::new(index))
    }
}

/// Every CUDA device of this machine, in index order; empty, with the reason, when it has none.
fn gpus_of<B: Backend>() -> core::result::Result<Vec<B::Device>, String>
where
    B::Device: CudaDevices,
{
    if !cuda_driver_present() {
        return Err(no_driver());
    }
    let type_id = B::Device::cuda(0).id().type_id;
    let count =
        panic::catch_unwind(AssertUnwindSafe(|| B::device_count(type_id))).map_err(|payload| {
            format!(
                "the CUDA runtime could not start: {}",
                panic_message(payload.as_ref())
            )
        })?;
    Ok((0..count).map(B::Device::cuda).collect())
}

/// Every CUDA device this machine has, in index order.
///
/// # Errors
///
/// [`DataParallelError::NotEnoughGpus`] when it has none, saying why (no driver, or a runtime
/// that could not start).
pub fn cuda_devices<B: Backend>() -> Result<Vec<B::Device>>
where
    B::Device: CudaDevices,
{
    match gpus_of::<B>() {
        Ok(gpus) if !gpus.is_empty() => Ok(gpus),
        Ok(_) => Err(not_enough(1, "this machine has none".to_string())),
        Err(reason) => Err(not_enough(1, format!("this machine has none ({reason})"))),
    }
}

fn not_enough(requested: usize, available: String) -> DataParallelError {
    DataParallelError::NotEnoughGpus {
        requested,
        available,
    }
}

impl<B: Backend, M: Module<B>> DataParallel<B, M>
where
    B::Device: CudaDevices,
{
    /// Keras's `multi_gpu_model(model, gpus=count)`: replicas on the first `count` CUDA
    /// devices, the template left where it was built.
    ///
    /// With `B = Autodiff<Dispatch>` and a template built on a CPU device (`Flex` or
    /// `NdArray`), the weights stay on the CPU as in Keras; [`with_host`](Self::with_host)
    /// moves them to a GPU. That is usually much faster: every step moves the weights to the
    /// replicas and the gradients back over PCIe, and the optimizer step runs on the CPU.
    /// Measured on one H200 with one replica, against the bare model on the GPU: a CNN of
    /// 981k parameters ran at 0.74x–0.77x with the template on the CPU and 1.00x–1.01x with
    /// it on the GPU; an MLP of 8.8M parameters at 0.02x–0.03x and 1.08x–1.09x
    /// (`docs/choosing-the-host.md`).
    ///
    /// # Errors
    ///
    /// [`InvalidGpuCount`](DataParallelError::InvalidGpuCount) for `count == 0`,
    /// [`NotEnoughGpus`](DataParallelError::NotEnoughGpus) when this machine has fewer GPUs
    /// (the message lists the ones it has, or says why it has none), and the errors of
    /// [`new`](Self::new).
    pub fn gpus(template: M, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(DataParallelError::InvalidGpuCount { requested: 0 });
        }
        let gpus = gpus_of::<B>()
            .map_err(|reason| not_enough(count, format!("this machine has none ({reason})")))?;
        if gpus.len() < count {
            let available = match gpus.len() {
                0 => "this machine has none".to_string(),
                n => format!("this machine has {n}: {gpus:?}"),
            };
            return Err(not_enough(count, available));
        }
        Self::new(template, gpus.into_iter().take(count).collect())
    }
}
