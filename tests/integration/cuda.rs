//! CUDA devices (feature `cuda`, always on in these tests): Keras-style `gpus(n)` and its
//! errors. On a machine without a GPU every request must fail with "this machine has none";
//! on a machine with GPUs the same tests check the counts. Exactness on real GPUs is checked by
//! `scripts/gpu-check.sh`.

use burn::backend::cuda::CudaDevice;
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::{DataParallel, DataParallelError, cuda_devices, cuda_driver_present};
use burn_data_parallel_tests::*;

fn model() -> Mlp<DispatchAutodiff> {
    Mlp::new(5, 3, &flex())
}

#[test]
fn asking_for_no_gpu_is_an_error() {
    let error = DataParallel::gpus(model(), 0).err();
    assert_eq!(
        error,
        Some(DataParallelError::InvalidGpuCount { requested: 0 })
    );
    assert_eq!(
        error.map(|e| e.to_string()).as_deref(),
        Some("asked for 0 GPUs: ask for at least 1")
    );
}

#[test]
fn asking_for_more_gpus_than_there_are_names_what_there_is() {
    let available = cuda_devices::<Dispatch>().map_or(0, |gpus| gpus.len());
    let error = DataParallel::gpus(model(), available + 1).expect_err("too many GPUs");
    let message = error.to_string();
    assert!(
        matches!(error, DataParallelError::NotEnoughGpus { .. }),
        "{error:?}"
    );
    if cuda_driver_present() {
        assert!(
            message.contains(&format!("this machine has {available}")),
            "{message}"
        );
    } else {
        assert_eq!(
            message,
            "asked for 1 GPU, but this machine has none (no CUDA driver found: \
             the libcuda library could not be loaded)"
        );
    }
}

#[test]
fn without_a_driver_cuda_devices_are_unavailable_not_a_crash() {
    if cuda_driver_present() {
        // A GPU machine: the devices it lists must be accepted.
        let gpus = cuda_devices::<Dispatch>().expect("a driver and at least one GPU");
        let dp = DataParallel::new(model(), gpus.clone()).expect("listed GPUs are available");
        assert_eq!(dp.replica_devices(), gpus.as_slice());
        assert_eq!(dp.host(), &flex(), "the template stays on the CPU");
        return;
    }
    let error = DataParallel::new(model(), vec![DispatchDevice::Cuda(CudaDevice::new(0))])
        .expect_err("no driver");
    assert_eq!(
        error.to_string(),
        "device Cuda(Cuda(0)) is not available: its backend could not start (no CUDA driver \
         found: the libcuda library could not be loaded), so this machine has no device of this kind"
    );
    // The plain CUDA backend's devices get the same answer.
    let error = burn_data_parallel::check_devices::<burn::backend::Cuda>(&[CudaDevice::new(1)]);
    assert!(matches!(
        error,
        Err(DataParallelError::DeviceUnavailable { .. })
    ));
    assert!(cuda_devices::<Dispatch>().is_err());
    // The CPU keeps working after the CUDA checks.
    let dp = DataParallel::new(model(), mixed_devices(2)).expect("CPU devices");
    let y = dp.forward(random([3, 5], 1, &flex()), |m, x| m.forward(x));
    assert_eq!(y.dims(), [3, 3]);
}
