//! Device checks: the list must be non-empty and every device must exist on this machine.
//!
//! Devices have no `Eq` or `Hash` in Burn; they are compared through `PartialEq`. Repeated
//! devices are allowed: two replicas on one device is how several CPU cores are used with a
//! single-threaded backend.

use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::error::{DataParallelError, Result};
use crate::kind;

/// Checks that `devices` is non-empty and that each device exists on this machine.
///
/// A device exists when its index is below [`Backend::device_count`] for its kind; with the
/// `remote` feature, a remote device exists when a Burn server accepts a connection at its
/// address. A backend that cannot start (for example CUDA on a machine without a driver)
/// panics when counting; that panic is caught and reported as
/// [`DataParallelError::DeviceUnavailable`].
///
/// # Errors
///
/// [`DataParallelError::NoDevices`] for an empty list, [`DataParallelError::DeviceUnavailable`]
/// for the first device that does not exist, naming the devices of its kind that do.
pub fn check_devices<B: Backend>(devices: &[B::Device]) -> Result<()> {
    if devices.is_empty() {
        return Err(DataParallelError::NoDevices);
    }
    for device in devices {
        kind::of::<B>(device).check_exists(device)?;
    }
    Ok(())
}

/// The one device the template's parameters live on, or `None` for a module without any.
///
/// # Errors
///
/// [`DataParallelError::TemplateSpansDevices`] when the parameters are on several devices.
pub(crate) fn template_device<B: Backend, M: Module<B>>(template: &M) -> Result<Option<B::Device>> {
    let mut devices = template.devices();
    if devices.len() > 1 {
        return Err(DataParallelError::TemplateSpansDevices {
            devices: format!("{devices:?}"),
        });
    }
    Ok(devices.pop())
}
