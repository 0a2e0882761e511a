//! [`DeviceKind`]: what differs between the kinds of device a replica can run on.

use core::fmt::Debug;

use burn::tensor::backend::Backend;

use crate::error::Result;

/// One kind of device (a local device, a CUDA GPU, a remote Burn server): how to tell that a
/// device of the kind exists, whether it can still be reached, and how data gets to it.
///
/// The core of the crate asks these questions of every device, whatever its kind; the answers
/// of a kind whose feature is off are never needed, so its implementation is not compiled.
/// The defaults describe a device that is always reachable and moves data through Burn alone.
pub(crate) trait DeviceKind<B: Backend>: Debug + Send + Sync {
    /// Checks that `device` exists on this machine (or, for an address, answers there).
    ///
    /// # Errors
    ///
    /// [`DeviceUnavailable`](crate::DataParallelError::DeviceUnavailable), saying why.
    fn check_exists(&self, device: &B::Device) -> Result<()>;

    /// Why `device` can no longer be reached, checked thoroughly (it may wait on the device);
    /// `None` while it can.
    fn lost(&self, _device: &B::Device) -> Option<String> {
        None
    }

    /// Why `device` can no longer be reached, from a check that does not wait on the device
    /// itself; `None` while it can.
    #[cfg_attr(
        not(feature = "train"),
        expect(
            dead_code,
            reason = "asked by watched threads, which only training uses"
        )
    )]
    fn unreachable(&self, _device: &B::Device) -> Option<String> {
        None
    }

    /// Wakes, without waiting, whatever waits on `device` (after it was found lost).
    #[cfg_attr(
        not(feature = "train"),
        expect(
            dead_code,
            reason = "asked by watched threads, which only training uses"
        )
    )]
    fn wake(&self, _device: &B::Device) {}

    /// Runs `transfer`: one tensor's move from `from` to `to`, a device of this kind.
    fn transfer(&self, _from: &B::Device, _to: &B::Device, transfer: &mut dyn FnMut()) {
        transfer();
    }

    /// Whether a module reaches a device of this kind one parameter at a time, each through
    /// [`transfer`](Self::transfer), rather than through Burn's `to_device` or `fork` at once.
    fn moves_params_one_by_one(&self) -> bool {
        false
    }

    /// Whether replicas on this kind of device train on watched threads (`run::watched`),
    /// which survive the loss of their device, rather than on the worker pool.
    #[cfg_attr(
        not(feature = "train"),
        expect(
            dead_code,
            reason = "asked by watched threads, which only training uses"
        )
    )]
    fn needs_watched_threads(&self) -> bool {
        false
    }

    /// Whether a tensor on this kind of device may be worked on by the worker threads at
    /// once (the gradient reduction), rather than only by the caller's thread.
    fn works_from_any_thread(&self) -> bool {
        true
    }

    /// Whether a Keras-style forward whose output can be differentiated may run replicas on
    /// this kind of device.
    fn differentiable_forward(&self) -> bool {
        true
    }

    /// Gives up what a thread that stops for good holds for this kind (a turn to transfer).
    #[cfg_attr(
        not(feature = "train"),
        expect(
            dead_code,
            reason = "asked by watched threads, which only training uses"
        )
    )]
    fn release(&self) {}

    /// Gives up what `thread`, a replica's thread the caller has given up on, holds for this
    /// kind's devices: called from the caller's thread, for a replica that will neither finish
    /// nor panic (it waits on a device that is gone).
    #[cfg_attr(
        not(feature = "train"),
        expect(
            dead_code,
            reason = "asked by watched threads, which only training uses"
        )
    )]
    fn release_from(&self, _thread: std::thread::ThreadId) {}
}

/// A device kind, chosen once per device: kinds are stateless, so one value serves all.
pub(crate) type Kind<B> = &'static dyn DeviceKind<B>;
