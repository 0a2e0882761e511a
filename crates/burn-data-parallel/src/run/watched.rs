//! Watched replica threads: each replica on a thread of its own that, when its device (or the
//! host) is lost, reports the loss and stops without unwinding.
//!
//! Unwinding would drop the replica's tensors, and on a device kind whose tensors panic when
//! dropped after a loss (Burn 0.21's remote devices), a panic while unwinding aborts the whole
//! process. A thread that stops instead keeps what it holds, on a device that is gone, until
//! the process ends. Its data is its own (`'static`), so nothing it refers to is freed under
//! it. What "lost" means, and how to wake a thread waiting on a lost device, is the device
//! kind's to say.

use core::ops::Range;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;

use super::pool::Job;
use crate::error::{DataParallelError, Result, panic_message};
use crate::kind::{DeviceKinds, Kind};

/// How often the caller checks the devices of the replicas still running.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a replica thread does when it panics.
struct Watch {
    /// `Some((device, why))` when the replica's device or the host is lost.
    lost: Box<dyn Fn() -> Option<Lost>>,
    /// Tells the caller which device is lost.
    report: Box<dyn Fn(Lost)>,
}

/// A lost device: its `Debug` form, and what failed.
type Lost = (String, String);

thread_local! {
    static WATCH: RefCell<Option<Watch>> = const { RefCell::new(None) };
}

/// How one replica's work ended.
enum Outcome<O> {
    Done(O),
    Panicked(String),
    Lost(Lost),
    Stalled(Duration),
    NotStarted(String),
}

/// Runs `work` on every job, each on a new thread, and returns the outputs in device order;
/// job `i` runs on replica device `i` of `kinds`.
///
/// Every job has ended or been given up before this returns: a job whose device, or the
/// host, is lost ends in [`DeviceLost`](DataParallelError::DeviceLost), noticed by the
/// replica when an operation fails or by this caller, which checks the host and the running
/// replicas' devices every second. A panic on a replica whose device is fine becomes
/// [`ReplicaPanicked`](DataParallelError::ReplicaPanicked), as on the worker pool. With a
/// `deadline`, a job still running when it passes is given up as
/// [`Stalled`](DataParallelError::Stalled) (its phase left blank, for the caller who knows the
/// phases to fill in): its thread goes on, and what it returns is dropped on that thread.
/// Each job's outcome comes back, in job order.
pub(crate) fn run_watched<B, M, I, O, F>(
    jobs: Vec<Job<'_, M, I, B::Device>>,
    kinds: &DeviceKinds<B>,
    host: &B::Device,
    work: Arc<F>,
    deadline: Option<Duration>,
) -> Vec<Result<O>>
where
    B: Backend,
    M: Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(M, I, &B::Device) -> O + Send + Sync + 'static,
{
    install_hook();
    let started_at = Instant::now();
    let host_kind = kinds.host();
    let described: Vec<Described<B>> = jobs
        .iter()
        .map(|job| Described {
            index: job.index,
            device: job.device.clone(),
            kind: kinds.replica(job.index),
            rows: job.rows.clone(),
        })
        .collect();
    let (sender, receiver) = mpsc::channel();
    let mut outcomes: Vec<Option<Outcome<O>>> = described.iter().map(|_| None).collect();
    for (position, job) in jobs.into_iter().enumerate() {
        let (sender, work, device) = (sender.clone(), work.clone(), job.device.clone());
        let watched = [
            (device.clone(), kinds.replica(job.index)),
            (host.clone(), host_kind),
        ];
        let (replica, shard) = (job.replica, job.shard);
        let started = thread::Builder::new()
            .name(thread_name(job.index))
            .spawn(move || {
                watch::<B, O>(position, watched, sender.clone());
                let outcome =
                    match panic::catch_unwind(AssertUnwindSafe(|| work(replica, shard, &device))) {
                        Ok(output) => Outcome::Done(output),
                        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
                    };
                let _ = sender.send((position, outcome));
            });
        if let Err(error) = started {
            outcomes[position] = Some(Outcome::NotStarted(error.to_string()));
        }
    }
    drop(sender);
    while outcomes.iter().any(Option::is_none) {
        let waited = started_at.elapsed();
        if let Some(deadline) = deadline.filter(|&deadline| waited >= deadline) {
            for outcome in &mut outcomes {
                if outcome.is_none() {
                    *outcome = Some(Outcome::Stalled(waited.max(deadline)));
                }
            }
            break;
        }
        let wait = deadline.map_or(CHECK_EVERY, |deadline| CHECK_EVERY.min(deadline - waited));
        match receiver.recv_timeout(wait) {
            Ok((index, outcome)) => match &outcomes[index] {
                None => outcomes[index] = Some(outcome),
                // Already given up as lost: what it holds may live on the lost device, where
                // dropping it would panic.
                Some(_) => std::mem::forget(outcome),
            },
            Err(RecvTimeoutError::Timeout) => {
                let host_lost = host_kind.unreachable(host);
                if host_lost.is_some() {
                    host_kind.wake(host);
                }
                for (Described { device, kind, .. }, outcome) in described.iter().zip(&mut outcomes)
                {
                    if outcome.is_some() {
                        continue;
                    }
                    let lost = match (&host_lost, kind.unreachable(device)) {
                        (Some(why), _) => Some((format!("{host:?}"), why.clone())),
                        (None, Some(why)) => {
                            // The replica may be waiting for an answer that will not come.
                            kind.wake(device);
                            Some((format!("{device:?}"), why))
                        }
                        (None, None) => None,
                    };
                    if let Some(lost) = lost {
                        *outcome = Some(Outcome::Lost(lost));
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_none()) {
                    *outcome = Some(Outcome::Panicked(
                        "the replica's thread ended without a result".to_string(),
                    ));
                }
            }
        }
    }

    outcomes
        .into_iter()
        .flatten()
        .zip(described)
        .map(
            |(
                outcome,
                Described {
                    index,
                    device,
                    rows,
                    ..
                },
            )| match outcome {
                Outcome::Done(output) => Ok(output),
                Outcome::Panicked(message) => Err(DataParallelError::ReplicaPanicked {
                    index,
                    device: format!("{device:?}"),
                    rows,
                    message,
                }),
                Outcome::Lost((device, reason)) => {
                    Err(DataParallelError::DeviceLost { device, reason })
                }
                Outcome::Stalled(waited) => Err(DataParallelError::Stalled {
                    device: format!("{device:?}"),
                    phase: String::new(),
                    waited,
                    thread: thread_name(index),
                }),
                Outcome::NotStarted(message) => Err(DataParallelError::ThreadSpawn {
                    threads: 1,
                    message,
                }),
            },
        )
        .collect()
}

/// What the caller keeps of a job while its thread runs.
struct Described<B: Backend> {
    /// The device's index in the device list.
    index: usize,
    device: B::Device,
    kind: Kind<B>,
    rows: Range<usize>,
}

/// The name of the watched thread of the replica on device `index`.
fn thread_name(index: usize) -> String {
    format!("dp-watched-replica-{index}")
}

/// Watches this thread: when it panics and one of `devices` (the replica's and the host's) is
/// lost, it reports the loss to `sender` as job `index` and stops.
fn watch<B: Backend, O: Send + 'static>(
    index: usize,
    devices: [(B::Device, Kind<B>); 2],
    sender: mpsc::Sender<(usize, Outcome<O>)>,
) {
    let watch = Watch {
        lost: Box::new(move || {
            devices.iter().find_map(|(device, kind)| {
                kind.lost(device).map(|why| (format!("{device:?}"), why))
            })
        }),
        report: Box::new(move |lost| {
            let _ = sender.send((index, Outcome::Lost(lost)));
        }),
    };
    WATCH.with(|slot| *slot.borrow_mut() = Some(watch));
}

/// Adds [`stop_if_lost`] to the process's panic hook, once, after the hook already there.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            previous(info);
            stop_if_lost();
        }));
    });
}

/// On a watched thread whose device is lost: reports the loss and parks for good, before any
/// unwinding starts. Elsewhere, does nothing.
fn stop_if_lost() {
    let stopped = WATCH.try_with(|slot| {
        let slot = slot.try_borrow().ok()?;
        let watch = slot.as_ref()?;
        let why = (watch.lost)()?;
        // Replicas waiting for this one at a shared layer (SyncBatchNorm) must not wait on.
        crate::sync::group::leave_for_good(&format!("its device {} was lost: {}", why.0, why.1));
        (watch.report)(why);
        Some(())
    });
    if let Ok(Some(())) = stopped {
        loop {
            thread::park();
        }
    }
}
