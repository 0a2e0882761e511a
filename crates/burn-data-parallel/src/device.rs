//! Device checks: the list must be non-empty and every device must exist on this machine.
//!
//! Devices have no `Eq` or `Hash` in Burn; they are compared through `PartialEq` and
//! enumerated through their [`DeviceId`]. Repeated devices are allowed: two replicas on one
//! device is how several CPU cores are used with a single-threaded backend.

use std::panic::{self, AssertUnwindSafe};

use burn::module::Module;
use burn::tensor::backend::{Backend, Device as _, DeviceId, DeviceOps};

use crate::error::{DataParallelError, Result};
use crate::replica::panic_message;

/// Checks that `devices` is non-empty and that each device exists on this machine.
///
/// A device exists when its index is below [`Backend::device_count`] for its kind; with the
/// `remote` feature, a remote device exists when a Burn server accepts a connection at its
/// address. A backend
/// that cannot start (for example CUDA on a machine without a driver) panics when counting;
/// that panic is caught and reported as [`DataParallelError::DeviceUnavailable`].
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
        check_device::<B>(device)?;
    }
    Ok(())
}

fn check_device<B: Backend>(device: &B::Device) -> Result<()> {
    let id = device.id();
    // A remote device is an address: available when a server answers there.
    #[cfg(feature = "remote")]
    if let Some(answered) = crate::remote::server::accepts_connections(device) {
        return answered.map_err(|why| DataParallelError::DeviceUnavailable {
            device: format!("{device:?}"),
            available: why,
        });
    }
    // A CUDA device without a driver: say so without letting Burn's runtime panic first.
    #[cfg(feature = "cuda")]
    if let Some(reason) = crate::cuda::missing_driver(device) {
        return availability(format!("{device:?}"), id, Err(reason), |_| String::new());
    }
    let count = panic::catch_unwind(AssertUnwindSafe(|| B::device_count(id.type_id)))
        .map_err(|payload| panic_message(payload.as_ref()));
    availability(format!("{device:?}"), id, count, |id| {
        format!("{:?}", B::Device::from_id(id))
    })
}

/// Whether device `id` exists given how many devices its kind has (`Err` with the panic
/// message when counting failed); `name` gives the `Debug` form of a device of the same kind.
fn availability(
    device: String,
    id: DeviceId,
    count: core::result::Result<usize, String>,
    name: impl Fn(DeviceId) -> String,
) -> Result<()> {
    let count = match count {
        Ok(count) if usize::from(id.index_id) < count => return Ok(()),
        Ok(count) => count,
        Err(message) => {
            return Err(DataParallelError::DeviceUnavailable {
                device,
                available: format!(
                    "its backend could not start ({message}), so this machine has no device of this kind"
                ),
            });
        }
    };
    let available: Vec<String> = (0..count)
        .filter_map(|index| u16::try_from(index).ok())
        .map(|index_id| {
            name(DeviceId {
                type_id: id.type_id,
                index_id,
            })
        })
        .collect();
    let available = match count {
        0 => "this machine has no device of this kind".to_string(),
        1 => format!(
            "this machine has 1 device of this kind: [{}]",
            available.join(", ")
        ),
        _ => format!(
            "this machine has {count} devices of this kind: [{}]",
            available.join(", ")
        ),
    };
    Err(DataParallelError::DeviceUnavailable { device, available })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn name(id: DeviceId) -> String {
        format!("Gpu({})", id.index_id)
    }

    #[test]
    fn an_index_below_the_count_is_available() {
        assert_eq!(
            availability(
                "Gpu(1)".into(),
                DeviceId {
                    type_id: 3,
                    index_id: 1
                },
                Ok(2),
                name
            ),
            Ok(())
        );
    }

    #[test]
    fn an_index_past_the_count_names_what_there_is() {
        let error = availability(
            "Gpu(2)".into(),
            DeviceId {
                type_id: 3,
                index_id: 2,
            },
            Ok(2),
            name,
        );
        assert_eq!(
            error.map_err(|e| e.to_string()),
            Err(
                "device Gpu(2) is not available: this machine has 2 devices of this kind: \
                 [Gpu(0), Gpu(1)]"
                    .to_string()
            )
        );
        let error = availability(
            "Gpu(0)".into(),
            DeviceId {
                type_id: 3,
                index_id: 0,
            },
            Ok(0),
            name,
        );
        assert_eq!(
            error.map_err(|e| e.to_string()),
            Err("device Gpu(0) is not available: this machine has no device of this kind".into())
        );
    }

    #[test]
    fn a_backend_that_cannot_start_has_no_devices() {
        let error = availability(
            "Gpu(0)".into(),
            DeviceId {
                type_id: 3,
                index_id: 0,
            },
            Err("no driver".into()),
            name,
        );
        assert_eq!(
            error.map_err(|e| e.to_string()),
            Err(
                "device Gpu(0) is not available: its backend could not start (no driver), \
                 so this machine has no device of this kind"
                    .to_string()
            )
        );
    }
}
