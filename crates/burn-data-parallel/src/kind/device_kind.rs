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

    /// Whether a tensor reaches a device of this kind through this process (read from its
    /// device, written to the destination) rather than through Burn's `to_device`; a module
    /// then moves parameter by parameter, all read at once.
    fn moves_through_this_process(&self) -> bool {
        false
    }

    /// Waits until what this thread moved to `device` through this process has arrived (see
    /// [`moves_through_this_process`](Self::moves_through_this_process)); a device lost
    /// meanwhile ends the wait, and shows up at the next operation on it.
    fn settle(&self, _device: &B::Device) {}

    /// Waits until the work this thread queued on `device` has run (Burn's `sync`); a device
    /// of a kind that can be lost ends the wait when it is, and the loss shows up at the next
    /// operation on it. Only [`with_synced_phases`](crate::DataParallel::with_synced_phases)
    /// asks for it.
    #[cfg_attr(
        not(feature = "train"),
        expect(dead_code, reason = "asked by timed training steps only")
    )]
    fn wait_for_queue(&self, device: &B::Device) {
        // A failure here is the device's, and its next operation reports it.
        let _ = B::sync(device);
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
}

/// A device kind, chosen once per device: kinds are stateless, so one value serves all.
pub(crate) type Kind<B> = &'static dyn DeviceKind<B>;
