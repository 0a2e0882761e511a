//! Devices of the machine itself that Burn counts: CPU devices, and GPUs once their driver is
//! known to be there.

use std::panic::{self, AssertUnwindSafe};

use burn::tensor::backend::{Backend, Device as _, DeviceId, DeviceOps};

use super::device_kind::DeviceKind;
use crate::error::{DataParallelError, Result, panic_message};

/// A device of this machine: it exists when its index is below [`Backend::device_count`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local;

impl<B: Backend> DeviceKind<B> for Local {
    fn check_exists(&self, device: &B::Device) -> Result<()> {
        counted::<B>(device)
    }
}

/// Checks that `device`'s index is below the count of its kind. A backend that cannot start
/// panics when counting; the panic is caught and reported.
pub(crate) fn counted<B: Backend>(device: &B::Device) -> Result<()> {
    let id = device.id();
    let count = panic::catch_unwind(AssertUnwindSafe(|| B::device_count(id.type_id)))
        .map_err(|payload| panic_message(payload.as_ref()));
    availability(format!("{device:?}"), id, count, |id| {
        format!("{:?}", B::Device::from_id(id))
    })
}

/// Whether device `id` exists given how many devices its kind has (`Err` with the reason when
/// counting failed); `name` gives the `Debug` form of a device of the same kind.
pub(crate) fn availability(
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
