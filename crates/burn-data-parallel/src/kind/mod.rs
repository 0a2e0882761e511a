//! Device kinds: everything that differs between a local device, a CUDA GPU and a remote Burn
//! server, in one place. Each device's kind is chosen once, when a `DataParallel` is built;
//! the features decide which kinds exist, here and nowhere else in the core.

mod device_kind;
mod local;

#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "remote")]
mod remote;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub(crate) use device_kind::Kind;

use crate::error::{DataParallelError, Result};

/// The kind of `device`.
pub(crate) fn of<B: Backend>(device: &B::Device) -> Kind<B> {
    #[cfg(feature = "remote")]
    if remote::Remote::includes(device) {
        return &remote::Remote;
    }
    #[cfg(feature = "cuda")]
    if cuda::Cuda::includes(device) {
        return &cuda::Cuda;
    }
    let _ = device;
    &local::Local
}

/// The kinds of a `DataParallel`'s host and replica devices, in device order.
#[derive(Debug, Clone)]
pub(crate) struct DeviceKinds<B: Backend> {
    host: Kind<B>,
    replicas: Vec<Kind<B>>,
}

impl<B: Backend> DeviceKinds<B> {
    /// The kinds of `host` and of each of `devices`.
    pub(crate) fn of(host: &B::Device, devices: &[B::Device]) -> Self {
        Self {
            host: of::<B>(host),
            replicas: devices.iter().map(of::<B>).collect(),
        }
    }

    /// The same kinds with the host on `host`.
    pub(crate) fn with_host(self, host: &B::Device) -> Self {
        Self {
            host: of::<B>(host),
            ..self
        }
    }

    /// The host's kind.
    pub(crate) fn host(&self) -> Kind<B> {
        self.host
    }

    /// Whether the host's tensors may be reduced on the worker threads.
    pub(crate) fn host_works_from_any_thread(&self) -> bool {
        self.host.works_from_any_thread()
    }

    /// The kind of replica `index`'s device.
    pub(crate) fn replica(&self, index: usize) -> Kind<B> {
        self.replicas[index]
    }

    /// Whether the per-replica path runs its replicas on watched threads.
    #[cfg(feature = "train")]
    pub(crate) fn watched(&self) -> bool {
        core::iter::once(&self.host)
            .chain(&self.replicas)
            .any(|kind| kind.needs_watched_threads())
    }

    /// Checks that `host` and the replica devices `used` (indices into `devices`) can still be
    /// reached, each device once, before anything moves (a move to a lost server panics on the
    /// caller's thread).
    ///
    /// # Errors
    ///
    /// [`DeviceLost`](DataParallelError::DeviceLost) for the first device that cannot, with its
    /// index in `devices` when it is a replica's (`None` for the host).
    pub(crate) fn check_reachable(
        &self,
        host: &B::Device,
        devices: &[B::Device],
        used: &[usize],
    ) -> core::result::Result<(), (Option<usize>, DataParallelError)> {
        let mut checked: Vec<&B::Device> = Vec::new();
        let all = core::iter::once((None, host, self.host)).chain(
            used.iter()
                .map(|&index| (Some(index), &devices[index], self.replicas[index])),
        );
        for (index, device, kind) in all {
            if checked.contains(&device) {
                continue;
            }
            checked.push(device);
            if let Some(reason) = kind.lost(device) {
                let error = DataParallelError::DeviceLost {
                    device: format!("{device:?}"),
                    reason,
                };
                return Err((index, error));
            }
        }
        Ok(())
    }

    /// Refuses a Keras-style forward whose output could be differentiated through `template`
    /// on a replica device whose kind does not allow it: with `B` an autodiff backend and a
    /// template parameter that requires a gradient. (An input that requires a gradient, with
    /// a frozen template, is not detected.)
    ///
    /// # Errors
    ///
    /// [`DifferentiableRemoteForward`](DataParallelError::DifferentiableRemoteForward), the
    /// one kind that refuses being a remote device.
    pub(crate) fn check_differentiable_forward<M: Module<B>>(
        &self,
        template: &M,
        devices: &[B::Device],
    ) -> Result<()> {
        let refusing = devices
            .iter()
            .zip(&self.replicas)
            .find(|(_, kind)| !kind.differentiable_forward());
        let Some((device, _)) = refusing else {
            return Ok(());
        };
        if !B::ad_enabled(device) {
            return Ok(());
        }
        let mut tracked = Tracked(false);
        template.visit(&mut tracked);
        if tracked.0 {
            return Err(DataParallelError::DifferentiableRemoteForward {
                device: format!("{device:?}"),
            });
        }
        Ok(())
    }
}

/// Whether any float parameter requires a gradient.
struct Tracked(bool);

impl<B: Backend> ModuleVisitor<B> for Tracked {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 |= param.is_require_grad();
    }
}
