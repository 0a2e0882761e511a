//! Remote devices (feature `remote`): Burn servers reached over WebSocket, with the Burn 0.21
//! workarounds of [`crate::remote`] behind each answer.

use std::any::Any;

use burn::backend::remote::RemoteDevice;
use burn::tensor::backend::Backend;

use super::device_kind::DeviceKind;
use crate::error::{DataParallelError, Result};
use crate::remote::server::{accepts_connections, probe, sync_or_wake, wake};

/// A device on a Burn server: an address, available while a server answers there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remote;

impl Remote {
    /// Whether `device` is a remote device.
    pub(crate) fn includes(device: &dyn Any) -> bool {
        device.is::<RemoteDevice>()
    }
}

impl<B: Backend> DeviceKind<B> for Remote {
    /// `RemoteBackend::device_count` is 1 whatever the servers, so a remote device exists
    /// when a server accepts a connection at its address.
    fn check_exists(&self, device: &B::Device) -> Result<()> {
        match accepts_connections(device) {
            Some(Err(why)) => Err(DataParallelError::DeviceUnavailable {
                device: format!("{device:?}"),
                available: why,
            }),
            _ => Ok(()),
        }
    }

    fn lost(&self, device: &B::Device) -> Option<String> {
        probe::<B>(device).err()
    }

    fn unreachable(&self, device: &B::Device) -> Option<String> {
        accepts_connections(device).and_then(core::result::Result::err)
    }

    fn wake(&self, device: &B::Device) {
        wake::<B>(device);
    }

    /// Burn's own move between servers has the destination download from the source, with an
    /// id that collides when several transfers leave one server at once, and a destination
    /// whose source dies during the download is cut off from this process: every move goes
    /// through this process instead.
    fn moves_through_this_process(&self) -> bool {
        true
    }

    fn settle(&self, device: &B::Device) {
        sync_or_wake::<B>(device);
    }

    /// A server that dies never answers a sync: the wait ends when it is found lost.
    fn wait_for_queue(&self, device: &B::Device) {
        sync_or_wake::<B>(device);
    }

    /// Once a connection is lost, dropping a tensor of its device panics: a replica unwinding
    /// through such tensors would abort the process.
    fn needs_watched_threads(&self) -> bool {
        true
    }

    /// A server's tensors stay with the caller's thread: a connection lost during the work
    /// must not unwind a worker through them (see `needs_watched_threads`).
    fn works_from_any_thread(&self) -> bool {
        false
    }

    /// The backward pass of the Keras-style forward would run Burn's own transfers, several
    /// from one server at once, out of this crate's reach.
    fn differentiable_forward(&self) -> bool {
        false
    }
}
