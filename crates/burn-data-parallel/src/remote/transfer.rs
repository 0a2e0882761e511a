//! Moves to and between remote devices, one tensor at a time.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread::{self, ThreadId};

use burn::tensor::backend::Backend;

/// The thread whose remote transfer is under way in this process, if any.
static TURN: Mutex<Option<ThreadId>> = Mutex::new(None);
static FREED: Condvar = Condvar::new();

thread_local! {
    /// Whether this thread is the one whose transfer is under way.
    static HOLDS_TURN: Cell<bool> = const { Cell::new(false) };
}

/// This thread's turn to transfer; the next waiting thread's when dropped.
struct Turn;

impl Turn {
    fn take() -> Self {
        // The lock guards only the holder's id, so a poisoned lock is still a good lock.
        let mut turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        while turn.is_some() {
            turn = FREED.wait(turn).unwrap_or_else(PoisonError::into_inner);
        }
        *turn = Some(thread::current().id());
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
/// the middle of a transfer (see `lost`). A turn taken back from it meanwhile stays with
/// whoever holds it now.
pub(crate) fn give_up_turn() {
    if HOLDS_TURN.with(|holds| holds.replace(false)) {
        take_turn_back_from(thread::current().id());
    }
}

/// Ends the turn of `thread`, if it holds it: for a replica's thread that its caller gave up
/// while it waits, forever, on a transfer with a lost server, and that will neither finish nor
/// panic. Its transfer is abandoned; the others go on.
pub(crate) fn take_turn_back_from(thread: ThreadId) {
    let mut turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    if *turn == Some(thread) {
        *turn = None;
        FREED.notify_all();
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
