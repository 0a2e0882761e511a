//! Replicas on remote devices: each on a thread of its own that, when its server is lost,
//! reports the loss and stops without unwinding.
//!
//! Unwinding would drop the replica's tensors, and in Burn 0.21 dropping a tensor whose
//! connection is lost panics; a panic while unwinding aborts the whole process. A thread that
//! stops instead keeps what it holds, on a device that is gone, until the process ends. Its
//! data is its own (`'static`), so nothing it refers to is freed under it.

use core::ops::Range;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::thread;
use std::time::Duration;

use burn::tensor::backend::Backend;

use super::server::{accepts_connections, probe, wake};
use super::transfer::give_up_turn;
use crate::error::{DataParallelError, Result};
use crate::replica::{Job, panic_message};

/// How often the caller checks the servers of the replicas still running.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a replica thread does when it panics.
struct Watch {
    /// `Some((device, why))` when the replica's server or the host's is lost.
    lost: Box<dyn Fn() -> Option<Lost>>,
    /// Tells the caller which server is lost.
    report: Box<dyn Fn(Lost)>,
}

/// A lost server: its device's `Debug` form, and what failed.
type Lost = (String, String);

thread_local! {
    static WATCH: RefCell<Option<Watch>> = const { RefCell::new(None) };
}

/// How one replica's work ended.
enum Outcome<O> {
    Done(O),
    Panicked(String),
    Lost(Lost),
    NotStarted(String),
}

/// Returns an error naming the first device in `devices` whose server is lost, checking each
/// remote device once. Other devices pass.
///
/// # Errors
///
/// [`DeviceLost`](DataParallelError::DeviceLost) for the first lost device.
pub(crate) fn check_servers<'a, B: Backend>(
    devices: impl IntoIterator<Item = &'a B::Device>,
) -> Result<()> {
    let mut checked: Vec<&B::Device> = Vec::new();
    for device in devices {
        if checked.contains(&device) {
            continue;
        }
        checked.push(device);
        probe::<B>(device).map_err(|reason| DataParallelError::DeviceLost {
            device: format!("{device:?}"),
            reason,
        })?;
    }
    Ok(())
}

/// Runs `work` on every job, each on a new thread, and returns the outputs in device order.
///
/// Every job has ended or been given up before this returns: a job whose server, or the
/// host's, is lost ends in [`DeviceLost`](DataParallelError::DeviceLost), noticed by the
/// replica when an operation fails or by this caller, which checks the host's and the running
/// replicas' servers every second. A panic
/// on a replica whose server is fine becomes
/// [`ReplicaPanicked`](DataParallelError::ReplicaPanicked), as with local devices. The first
/// failure in device order is reported.
pub(crate) fn run_watched<B, M, I, O, F>(
    jobs: Vec<Job<'_, M, I, B::Device>>,
    host: &B::Device,
    work: Arc<F>,
) -> Result<Vec<O>>
where
    B: Backend,
    M: Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(M, I, &B::Device) -> O + Send + Sync + 'static,
{
    install_hook();
    let described: Vec<(B::Device, Range<usize>)> = jobs
        .iter()
        .map(|job| (job.device.clone(), job.rows.clone()))
        .collect();
    let (sender, receiver) = mpsc::channel();
    let mut outcomes: Vec<Option<Outcome<O>>> = described.iter().map(|_| None).collect();
    for (index, job) in jobs.into_iter().enumerate() {
        let (sender, work, device) = (sender.clone(), work.clone(), job.device.clone());
        let host = host.clone();
        let (replica, shard) = (job.replica, job.shard);
        let started = thread::Builder::new()
            .name(format!("dp-remote-replica-{index}"))
            .spawn(move || {
                watch::<B, O>(index, [device.clone(), host], sender.clone());
                let outcome =
                    match panic::catch_unwind(AssertUnwindSafe(|| work(replica, shard, &device))) {
                        Ok(output) => Outcome::Done(output),
                        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
                    };
                let _ = sender.send((index, outcome));
            });
        if let Err(error) = started {
            outcomes[index] = Some(Outcome::NotStarted(error.to_string()));
        }
    }
    drop(sender);

    while outcomes.iter().any(Option::is_none) {
        match receiver.recv_timeout(CHECK_EVERY) {
            Ok((index, outcome)) => match &outcomes[index] {
                None => outcomes[index] = Some(outcome),
                // Already given up as lost: what it holds may live on the lost device, where
                // dropping it would panic.
                Some(_) => std::mem::forget(outcome),
            },
            Err(RecvTimeoutError::Timeout) => {
                let host_lost = accepts_connections(host).and_then(Result::err);
                if host_lost.is_some() {
                    wake::<B>(host);
                }
                for ((device, _), outcome) in described.iter().zip(&mut outcomes) {
                    if outcome.is_some() {
                        continue;
                    }
                    let lost = match (&host_lost, accepts_connections(device)) {
                        (Some(why), _) => Some((format!("{host:?}"), why.clone())),
                        (None, Some(Err(why))) => {
                            // The replica may be waiting for an answer that will not come.
                            wake::<B>(device);
                            Some((format!("{device:?}"), why))
                        }
                        (None, _) => None,
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
        .enumerate()
        .map(|(index, (outcome, (device, rows)))| match outcome {
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
            Outcome::NotStarted(message) => Err(DataParallelError::ThreadSpawn {
                threads: 1,
                message,
            }),
        })
        .collect()
}

/// Watches this thread: when it panics and the server of one of `devices` (the replica's and
/// the host's) is lost, it reports the loss to `sender` as job `index` and stops.
fn watch<B: Backend, O: Send + 'static>(
    index: usize,
    devices: [B::Device; 2],
    sender: mpsc::Sender<(usize, Outcome<O>)>,
) {
    let watch = Watch {
        lost: Box::new(move || {
            devices.iter().find_map(|device| {
                probe::<B>(device)
                    .err()
                    .map(|why| (format!("{device:?}"), why))
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

/// On a watched thread whose server is lost: reports the loss and parks for good, before any
/// unwinding starts. Elsewhere, does nothing.
fn stop_if_lost() {
    let lost = WATCH.try_with(|slot| {
        let slot = slot.try_borrow().ok()?;
        let watch = slot.as_ref()?;
        let why = (watch.lost)()?;
        (watch.report)(why);
        Some(())
    });
    if let Ok(Some(())) = lost {
        // A transfer this thread had started will not finish; let the others go on.
        give_up_turn();
        loop {
            thread::park();
        }
    }
}
