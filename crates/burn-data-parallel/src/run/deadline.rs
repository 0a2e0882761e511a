//! The worker pool under a step deadline: the caller waits for the replicas with a timeout
//! instead of joining them, and gives up those still running when it passes.
//!
//! A replica cannot be stopped from outside. One that misses the deadline keeps its worker
//! busy until it ends on its own; its result is then dropped on that worker. Meanwhile the
//! other workers take the jobs no worker has started, so a stuck worker delays no one.

use core::fmt::Debug;
use core::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::pool::{Job, Timing, Workers};
use crate::error::{DataParallelError, Result, panic_message};

/// A job waiting for a worker, with what it needs to run on any thread.
type Slot<M, I, D> = Mutex<Option<(M, I, D)>>;

/// Each job's thread, once a worker took it.
type Takers = Mutex<Vec<Option<String>>>;

/// Where a job stands between its worker and the caller; whichever moves it out of
/// [`RUNNING`] first decides whether the worker counts as stuck.
const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const GIVEN_UP: u8 = 2;

/// [`run_each`](super::pool::run_each) with a `deadline`: job `i` runs on worker `i`, or on
/// the first worker free to take it; the outcomes come back in job order. A job still running
/// (or not yet started) when the deadline passes ends in
/// [`Stalled`](DataParallelError::Stalled), its phase left blank for the caller to fill in.
pub(crate) fn run_each_until<M, I, O, D, F>(
    workers: &Workers,
    jobs: Vec<Job<'_, M, I, D>>,
    work: Arc<F>,
    deadline: Duration,
    timing: Timing,
) -> Result<Vec<Result<O>>>
where
    M: Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
    D: Debug + Clone + Send + Sync + 'static,
    F: Fn(M, I, &D) -> O + Send + Sync + 'static,
{
    let pool = workers.pool()?;
    let started = Instant::now();
    let described: Vec<(usize, String, Range<usize>)> = jobs
        .iter()
        .map(|job| (job.index, format!("{:?}", job.device), job.rows.clone()))
        .collect();
    let slots: Arc<Vec<Slot<M, I, D>>> = Arc::new(
        jobs.into_iter()
            .map(|job| Mutex::new(Some((job.replica, job.shard, job.device.clone()))))
            .collect(),
    );
    let takers: Arc<Takers> = Arc::new(Mutex::new(vec![None; described.len()]));
    let states: Arc<Vec<AtomicU8>> =
        Arc::new(described.iter().map(|_| AtomicU8::new(RUNNING)).collect());
    let (sender, receiver) = mpsc::channel();
    {
        let (slots, takers, states) = (slots.clone(), takers.clone(), states.clone());
        let stuck = workers.stuck.clone();
        pool.spawn_broadcast(move |context| {
            // Its own job first, then any job no worker has taken.
            let order = core::iter::once(context.index()).chain(0..slots.len());
            for position in order {
                let Some(slot) = slots.get(position) else {
                    continue;
                };
                let Some((replica, shard, device)) =
                    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
                else {
                    continue;
                };
                takers.lock().unwrap_or_else(PoisonError::into_inner)[position] =
                    thread::current().name().map(str::to_string);
                let start = Instant::now();
                let result =
                    panic::catch_unwind(AssertUnwindSafe(|| work(replica, shard, &device)));
                let finished = states[position].compare_exchange(
                    RUNNING,
                    FINISHED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if finished.is_err() {
                    // Given up at the deadline: this worker is free again, and no one listens
                    // for the result, which is dropped here.
                    stuck.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let _ = sender.send((position, result, start.elapsed()));
            }
        });
    }

    // A job whose work panicked, as the error that names its device and rows.
    let panicked = |position: usize, payload: &(dyn core::any::Any + Send)| {
        let (index, device, rows) = &described[position];
        DataParallelError::ReplicaPanicked {
            index: *index,
            device: device.clone(),
            rows: rows.clone(),
            message: panic_message(payload),
        }
    };
    let mut outcomes: Vec<Option<Result<O>>> = described.iter().map(|_| None).collect();
    while outcomes.iter().any(Option::is_none) {
        let waited = started.elapsed();
        let Some(remaining) = deadline.checked_sub(waited).filter(|left| !left.is_zero()) else {
            break;
        };
        let (position, result, elapsed) = match receiver.recv_timeout(remaining) {
            Ok(received) => received,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let (index, _, rows) = &described[position];
        outcomes[position] = Some(match result {
            Ok(done) => {
                if timing == Timing::Record {
                    workers.speeds.record(*index, rows.len(), elapsed);
                }
                Ok(done)
            }
            Err(payload) => Err(panicked(position, payload.as_ref())),
        });
    }
    // Jobs that finished in the meantime still count; the others are given up, and their
    // workers counted as stuck until they end.
    for (position, outcome) in outcomes.iter_mut().enumerate() {
        if outcome.is_some() {
            continue;
        }
        // A job no worker started is taken back: it will not run at all.
        let never_started = slots[position]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some();
        // Counted before the job is marked: its worker, seeing the mark, may end at once and
        // take its count back.
        workers.stuck.fetch_add(1, Ordering::AcqRel);
        let given_up = states[position].compare_exchange(
            RUNNING,
            GIVEN_UP,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if given_up.is_err() || never_started {
            workers.stuck.fetch_sub(1, Ordering::AcqRel);
        }
    }
    while let Ok((position, result, _)) = receiver.try_recv() {
        outcomes[position] = Some(result.map_err(|payload| panicked(position, payload.as_ref())));
    }
    let waited = started.elapsed();
    let takers = takers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(outcomes
        .into_iter()
        .zip(described)
        .zip(takers)
        .map(|((outcome, (_, device, _)), taker)| {
            outcome.unwrap_or_else(|| {
                Err(DataParallelError::Stalled {
                    device,
                    phase: String::new(),
                    waited,
                    thread: taker
                        .unwrap_or_else(|| "none: no worker was free to start it".to_string()),
                })
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::pool::tests::jobs;
    use super::*;

    #[test]
    fn a_job_past_the_deadline_is_stalled_and_its_worker_delays_no_one() {
        let workers = Workers::new(3);
        let sleep = Duration::from_secs(3);
        let work = Arc::new(move |replica: u32, _: u32, device: &u32| {
            if replica == 1 {
                thread::sleep(sleep);
            }
            replica * 10 + device
        });
        let began = Instant::now();
        let outcomes = run_each_until(
            &workers,
            jobs(&[7, 8, 9]),
            work.clone(),
            Duration::from_millis(300),
            Timing::Skip,
        )
        .expect("the pool starts");
        assert_eq!(outcomes[0], Ok(7));
        assert_eq!(outcomes[2], Ok(29));
        let Err(DataParallelError::Stalled { device, thread, .. }) = &outcomes[1] else {
            panic!("expected Stalled, got {:?}", outcomes[1]);
        };
        assert_eq!(device, "8");
        // Job 1's own worker, or one that finished its own job first and took it.
        assert!(thread.starts_with("dp-replica-"), "{thread}");
        assert_eq!(workers.stuck.load(Ordering::Acquire), 1);

        // While worker 1 sleeps, calls with and without a deadline run on the free workers.
        let two = |devices| {
            jobs(devices)
                .into_iter()
                .filter(|job| job.index != 1)
                .collect()
        };
        let outcomes = run_each_until(
            &workers,
            two(&[7, 7, 7]),
            work.clone(),
            Duration::from_secs(2),
            Timing::Skip,
        )
        .expect("the pool starts");
        assert_eq!(outcomes, vec![Ok(7), Ok(27)]);
        let plain = |replica: u32, _: u32, device: &u32| replica + device;
        let outputs =
            super::super::pool::run_replicas(&workers, two(&[1, 1, 1]), &plain, Timing::Skip)
                .expect("no job fails");
        assert_eq!(outputs, vec![1, 3]);
        assert!(began.elapsed() < sleep, "{:?}", began.elapsed());

        // When the sleeper ends, its worker is free again.
        while workers.stuck.load(Ordering::Acquire) != 0 {
            assert!(
                began.elapsed() < sleep * 3,
                "the stuck count never fell back"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}
