//! Moves to and between remote devices, one tensor at a time.

use std::cell::Cell;
use std::sync::{Condvar, Mutex};

use burn::module::{ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

/// Whether a remote transfer is under way in this process.
static BUSY: Mutex<bool> = Mutex::new(false);
static FREED: Condvar = Condvar::new();

thread_local! {
    /// Whether this thread is the one whose transfer is under way.
    static HOLDS_TURN: Cell<bool> = const { Cell::new(false) };
}

/// This thread's turn to transfer; the next waiting thread's when dropped.
struct Turn;

impl Turn {
    fn take() -> Self {
        // The flag guards no data, so a poisoned lock is still a good lock.
        let mut busy = BUSY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while *busy {
            busy = FREED
                .wait(busy)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *busy = true;
        HOLDS_TURN.with(|holds| holds.set(true));
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        give_up_turn();
    }
}

/// Ends this thread's turn, if it has one: on drop, and for a thread that stops for good in
/// the middle of a transfer (see `lost`).
pub(crate) fn give_up_turn() {
    if HOLDS_TURN.with(|holds| holds.replace(false)) {
        *BUSY.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
        FREED.notify_one();
    }
}

/// Runs `transfer` (one tensor's move from `from` to `to`) alone among this process's remote
/// transfers, and waits until both servers have carried it out.
pub(crate) fn one_at_a_time<B: Backend, T>(
    from: &B::Device,
    to: &B::Device,
    transfer: impl FnOnce() -> T,
) -> T {
    let _turn = Turn::take();
    let moved = transfer();
    // Burn's router runs operations lazily: syncing makes the servers carry the move out now.
    // The syncs must come from this thread: a server keeps one queue per client thread, and a
    // sync waits only for its own queue, here the one holding the expose and the download.
    // A lost connection shows up at the next operation on the device, where it is handled.
    let _ = B::sync(from);
    let _ = B::sync(to);
    moved
}

/// Moves a module's parameters to `device` one at a time, as `to_device` (or, with `fork`, as
/// `fork`: detached, trainable again when they were) would all at once.
pub(crate) struct MoveParams<'a, B: Backend> {
    pub(crate) device: &'a B::Device,
    pub(crate) fork: bool,
}

impl<B: Backend> MoveParams<'_, B> {
    fn to_device<T>(&self, from: B::Device, tensor: T, transfer: impl FnOnce(T) -> T) -> T {
        if from == *self.device {
            tensor
        } else {
            one_at_a_time::<B, _>(&from, self.device, || transfer(tensor))
        }
    }
}

impl<B: Backend> ModuleMapper<B> for MoveParams<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let device = self.device;
        let moved = self.to_device(tensor.device(), tensor, |tensor| tensor.to_device(device));
        let moved = match (self.fork, require_grad) {
            (true, true) => moved.detach().require_grad(),
            (true, false) => moved.detach(),
            (false, _) => moved,
        };
        Param::from_mapped_value(id, moved, mapper)
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let (id, tensor, mapper) = param.consume();
        let device = self.device;
        let moved = self.to_device(tensor.device(), tensor, |tensor| tensor.to_device(device));
        Param::from_mapped_value(id, moved, mapper)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        let (id, tensor, mapper) = param.consume();
        let device = self.device;
        let moved = self.to_device(tensor.device(), tensor, |tensor| tensor.to_device(device));
        Param::from_mapped_value(id, moved, mapper)
    }
}
