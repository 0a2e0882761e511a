//! The replicas of one call as a group that can exchange values: each replica's thread joins
//! as a [`Member`] for the length of its work, and a layer that needs the whole batch (see
//! [`SyncBatchNorm`](super::SyncBatchNorm)) posts its shard's part and waits for every other
//! replica's.
//!
//! A replica that leaves (fails, panics, is lost, or ends its work) before posting to an
//! exchange the others wait at, and a group the caller aborts (a replica stalled past the step
//! deadline), release the waiters with a panic that names the cause. The caller turns the
//! panics into its usual typed errors. Exchanges are matched by their order on each replica:
//! replicas must make the same sequence of them, as the same model on rows of the same batch
//! does; a model whose control flow depends on its rows could leave one waiting (bounded by the
//! step deadline where one is set).

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::traffic::Direction;
use crate::transfer::Destination;

/// A value posted to an exchange: the count of elements the shard's part covers, and the part.
pub(crate) type Posted = (f64, Arc<dyn Any + Send + Sync>);

/// Which pass an exchange belongs to, and which exchange of that pass it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// The `n`-th exchange of a replica's forward pass.
    Forward(usize),
    /// The backward pass of forward exchange `n`.
    Backward(usize),
}

/// The replicas of one call, by rank (their order in the call's plan).
#[derive(Debug)]
pub(crate) struct SyncGroup {
    size: usize,
    state: Mutex<GroupState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    exchanges: HashMap<Key, Exchange>,
    /// Why each rank left, for ranks that left before the call's end.
    departed: HashMap<usize, String>,
    /// Set by the caller: every waiter, now and later, is released with this reason.
    aborted: Option<String>,
    /// Whether any exchange took place: a step whose layers exchanged nothing can be
    /// redistributed by shards.
    used: bool,
    /// Ranks that failed only because the group released them, or that were waiting at an
    /// exchange when the caller aborted (a deadline counts them as stalled: they are not).
    released: Vec<usize>,
    /// Ranks blocked at an exchange now.
    waiting: Vec<usize>,
}

#[derive(Debug)]
struct Exchange {
    posted: Vec<Option<Posted>>,
    /// Ranks that have read the exchange; it is dropped when every rank has.
    read: usize,
}

impl SyncGroup {
    /// A group of `size` replicas.
    pub(crate) fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            state: Mutex::default(),
            changed: Condvar::new(),
        })
    }

    /// How many replicas the call has.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Whether any layer exchanged values during the call.
    #[cfg(feature = "train")]
    pub(crate) fn used(&self) -> bool {
        self.lock().used
    }

    /// Whether `rank` failed only because the group released it (another rank left, or the
    /// caller aborted): its device is sound.
    #[cfg(feature = "train")]
    pub(crate) fn was_released(&self, rank: usize) -> bool {
        self.lock().released.contains(&rank)
    }

    /// Releases every waiter, now and later, with a panic naming `reason`. Called by the
    /// caller when a call ends in an error, so that no replica stays parked at an exchange.
    pub(crate) fn abort(&self, reason: &str) {
        let mut state = self.lock();
        if state.aborted.is_none() {
            state.aborted = Some(reason.to_string());
        }
        let waiting = core::mem::take(&mut state.waiting);
        state.released.extend(waiting);
        drop(state);
        self.changed.notify_all();
    }

    /// Posts `value` as `rank`'s part of exchange `key` and returns every rank's part, in
    /// rank order, once all are posted.
    ///
    /// # Panics
    ///
    /// When the group is aborted, or a rank whose part is missing has left: the waiter's
    /// replica then fails with that cause instead of waiting forever.
    pub(crate) fn exchange(&self, key: Key, rank: usize, value: Posted) -> Vec<Posted> {
        let mut state = self.lock();
        state.used = true;
        let size = self.size;
        let exchange = state.exchanges.entry(key).or_insert_with(|| Exchange {
            posted: vec![None; size],
            read: 0,
        });
        exchange.posted[rank] = Some(value);
        self.changed.notify_all();
        loop {
            if let Some(reason) = &state.aborted {
                // Not counted as released here: `abort` recorded the ranks that were waiting,
                // and one arriving only now is the late one.
                let reason = reason.clone();
                drop(state);
                panic!("SyncBatchNorm: the step was abandoned ({reason})");
            }
            let exchange = &state.exchanges[&key];
            let missing: Vec<usize> = (0..size)
                .filter(|&other| exchange.posted[other].is_none())
                .collect();
            if missing.is_empty() {
                break;
            }
            if let Some((other, why)) = missing
                .iter()
                .find_map(|other| state.departed.get(other).map(|why| (*other, why.clone())))
            {
                state.released.push(rank);
                drop(state);
                panic!(
                    "SyncBatchNorm: replica {other} of the step left before sharing its \
                     batch statistics ({why}); the step's statistics cannot be complete"
                );
            }
            if !state.waiting.contains(&rank) {
                state.waiting.push(rank);
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting.retain(|&other| other != rank);
        }
        let exchange = state
            .exchanges
            .get_mut(&key)
            .expect("the exchange is kept until every rank has read it");
        let parts: Vec<Posted> = exchange.posted.iter().flatten().cloned().collect();
        exchange.read += 1;
        if exchange.read == size {
            state.exchanges.remove(&key);
        }
        parts
    }

    /// `Σ_i part_i` over the group's ranks, each part moved to `part`'s device and added in
    /// rank order (so every rank gets the same value), with the total of the ranks' counts.
    pub(crate) fn sum<B: Backend>(
        &self,
        key: Key,
        rank: usize,
        count: f64,
        part: Tensor<B, 1>,
    ) -> (f64, Tensor<B, 1>) {
        let device = part.device();
        let parts = self.exchange(key, rank, (count, Arc::new(part)));
        let to_here = Destination::uncounted(&device, Direction::ToReplica);
        let total = parts.iter().map(|(count, _)| count).sum();
        let sum = parts
            .iter()
            .map(|(_, part)| {
                // The crate's own move: tracked on local devices (the Keras-style path
                // differentiates through it), through this process on remote ones.
                to_here.move_to(
                    part.downcast_ref::<Tensor<B, 1>>()
                        .unwrap_or_else(|| unreachable!("every rank of a call has one backend"))
                        .clone(),
                )
            })
            .reduce(Tensor::add)
            .unwrap_or_else(|| unreachable!("a group has at least one rank"));
        (total, sum)
    }

    fn leave(&self, rank: usize, why: String) {
        self.lock().departed.entry(rank).or_insert(why);
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        // Nothing panics while holding the lock; a poisoned lock still holds a sound state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a member's layers combine their parts with the other replicas'.
pub(crate) enum Mode {
    /// The replicas' forward passes are one autodiff graph, differentiated once on the
    /// caller's thread (the Keras-style `forward`): parts are summed with tracked `to_device`
    /// and adds, and autodiff does the rest.
    Linked,
    /// Each replica differentiates its own graph on its own thread (the per-replica step,
    /// `forward_parallel`): parts are summed by an operation whose backward pass exchanges
    /// the replicas' gradients too. `weight` is what the step multiplies this replica's
    /// gradients by; `reducer` is that operation for the call's backend (a
    /// [`Reducer`](super::cross_replica::Reducer), type-erased), `None` when the backend has
    /// none.
    Separate {
        weight: f64,
        reducer: Option<Arc<dyn Any + Send + Sync>>,
    },
}

/// One replica's place in a group, as its thread sees it.
pub(crate) struct Member {
    pub(crate) group: Arc<SyncGroup>,
    pub(crate) rank: usize,
    pub(crate) mode: Mode,
    /// Forward exchanges made so far: the key of the next.
    forward_calls: usize,
}

impl Member {
    /// The key of this member's next forward exchange.
    pub(crate) fn next_forward(&mut self) -> usize {
        let call = self.forward_calls;
        self.forward_calls += 1;
        call
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Member>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's membership, if it has one.
///
/// The membership is taken out of the thread for the length of `f` and put back after: work
/// `f` starts may run another replica's job on this same thread (a CPU kernel's rayon join
/// can), and that job joins and leaves with a membership of its own.
pub(crate) fn with_member<T>(f: impl FnOnce(Option<&mut Member>) -> T) -> T {
    let mut member = CURRENT.with(|current| current.borrow_mut().take());
    let result = f(member.as_mut());
    CURRENT.with(|current| *current.borrow_mut() = member);
    result
}

/// Leaves this thread's group, if it is in one, so that no other replica waits for it: for a
/// replica thread that will never return (its device was lost, and it parks for good).
#[cfg(feature = "train")]
pub(crate) fn leave_for_good(why: &str) {
    let member = CURRENT.with(|current| current.borrow_mut().take());
    if let Some(member) = member {
        member.group.leave(member.rank, why.to_string());
    }
}

/// This thread's membership of a group, for as long as the guard lives.
pub(crate) struct Membership {
    group: Arc<SyncGroup>,
    rank: usize,
    /// The membership this thread had before (another replica's job, further down its
    /// stack), given back when the guard drops.
    previous: Option<Member>,
    /// Whether ending the membership means the replica is done with the group: true when
    /// its whole part of the call (forward and any backward) runs under the guard.
    done_on_exit: bool,
}

/// Makes this thread rank `rank` of `group` until the guard drops.
pub(crate) fn join(
    group: &Arc<SyncGroup>,
    rank: usize,
    mode: Mode,
    done_on_exit: bool,
) -> Membership {
    let previous = CURRENT.with(|current| {
        current.borrow_mut().replace(Member {
            group: group.clone(),
            rank,
            mode,
            forward_calls: 0,
        })
    });
    Membership {
        group: group.clone(),
        rank,
        previous,
        done_on_exit,
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
        if std::thread::panicking() {
            self.group.leave(self.rank, "its work panicked".to_string());
        } else if self.done_on_exit {
            self.group.leave(
                self.rank,
                "it finished without reaching this exchange".to_string(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(value: f64) -> Posted {
        (1.0, Arc::new(value))
    }

    fn values(parts: &[Posted]) -> Vec<f64> {
        parts
            .iter()
            .map(|(_, part)| *part.downcast_ref::<f64>().expect("an f64"))
            .collect()
    }

    #[test]
    fn every_rank_gets_every_part_in_rank_order() {
        let group = SyncGroup::new(3);
        let results: Vec<Vec<f64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .rev()
                .map(|rank| {
                    let group = &group;
                    scope.spawn(move || {
                        values(&group.exchange(Key::Forward(0), rank, post(rank as f64)))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        for result in results {
            assert_eq!(result, [0.0, 1.0, 2.0]);
        }
        assert!(
            group.lock().exchanges.is_empty(),
            "read exchanges are dropped"
        );
        assert!(group.used());
    }

    #[test]
    fn a_rank_that_panics_releases_the_others() {
        let group = SyncGroup::new(2);
        let waiter = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let _member = join(&group, 0, Mode::Linked, true);
                group.exchange(Key::Forward(0), 0, post(0.0))
            });
            let failing = scope.spawn(|| {
                let _member = join(&group, 1, Mode::Linked, true);
                panic!("the replica's model failed");
            });
            assert!(failing.join().is_err());
            waiter.join()
        });
        let message = waiter.expect_err("released with a panic");
        let message = message.downcast_ref::<String>().expect("a message");
        assert!(
            message.contains("replica 1") && message.contains("panicked"),
            "{message}"
        );
    }

    #[test]
    fn an_abort_releases_waiters() {
        let group = SyncGroup::new(2);
        let waiter = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| group.exchange(Key::Backward(3), 0, post(0.0)));
            std::thread::sleep(std::time::Duration::from_millis(20));
            group.abort("replica 1 stalled");
            waiter.join()
        });
        let message = waiter.expect_err("released with a panic");
        let message = message.downcast_ref::<String>().expect("a message");
        assert!(message.contains("replica 1 stalled"), "{message}");
    }
}
