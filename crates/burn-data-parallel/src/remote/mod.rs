//! Burn's remote backend (feature `remote`): replicas on Burn servers reached over WebSocket.
//!
//! Four things of Burn 0.21's remote client shape this module:
//!
//! - `RemoteBackend::device_count` is 1 whatever the servers: a remote device is an address,
//!   available when a server answers there ([`server`]).
//! - A server-to-server transfer is identified by an id that collides when several transfers
//!   leave one server at once, and the receiving side then waits forever. Every move to a
//!   remote device made here goes one tensor at a time ([`transfer`]).
//! - Once a connection is lost, every later operation on that device panics, dropping a
//!   tensor included. A thread unwinding through such tensors panics again in a destructor,
//!   which aborts the process. Replicas on remote devices therefore run on threads that stop,
//!   without unwinding, when their server is lost ([`lost`]).
//! - The backward pass of the Keras-style forward would run Burn's own transfers, out of this
//!   crate's reach, so that path is for inference on remote devices
//!   ([`check_forward_untracked`]).

pub(crate) mod lost;
pub(crate) mod server;
pub(crate) mod transfer;

use std::any::Any;

use burn::backend::remote::RemoteDevice;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::error::{DataParallelError, Result};

/// Whether `device` is a remote device.
pub(crate) fn is_remote(device: &dyn Any) -> bool {
    device.is::<RemoteDevice>()
}

/// Refuses a Keras-style forward whose output could be differentiated through the template
/// across remote devices: with `B` an autodiff backend, a replica on a remote device, and a
/// template parameter that requires a gradient. (An input that requires a gradient, with a
/// frozen template, is not detected.)
///
/// Its backward pass would run Burn's own transfers, several from one server at once, which
/// Burn 0.21's remote client mixes up (wrong tensors arrive, or none). Training on remote
/// devices goes through the per-replica path, whose transfers this crate makes one at a time.
///
/// # Errors
///
/// [`DifferentiableRemoteForward`](DataParallelError::DifferentiableRemoteForward).
pub(crate) fn check_forward_untracked<B: Backend, M: Module<B>>(
    template: &M,
    devices: &[B::Device],
) -> Result<()> {
    let Some(remote) = devices.iter().find(|device| is_remote(*device)) else {
        return Ok(());
    };
    if !B::ad_enabled(remote) {
        return Ok(());
    }
    let mut tracked = Tracked(false);
    template.visit(&mut tracked);
    if tracked.0 {
        return Err(DataParallelError::DifferentiableRemoteForward {
            device: format!("{remote:?}"),
        });
    }
    Ok(())
}

/// Whether any float parameter requires a gradient.
struct Tracked(bool);

impl<B: Backend> ModuleVisitor<B> for Tracked {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 |= param.is_require_grad();
    }
}
