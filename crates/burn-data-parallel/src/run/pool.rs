//! The worker pool: one named worker thread per replica, kept between calls, each job in
//! device order on its own thread.

use core::fmt::{self, Debug};
use core::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::balance::ReplicaSpeeds;
use crate::error::{DataParallelError, Result, panic_message};
use crate::failure::LostDevices;
use crate::timings::LastStep;

/// One replica's work: its model, its shard, and where it came from.
pub(crate) struct Job<'a, M, I, D> {
    /// The device's index in the device list.
    pub(crate) index: usize,
    pub(crate) replica: M,
    pub(crate) shard: I,
    pub(crate) device: &'a D,
    pub(crate) rows: Range<usize>,
}

/// `jobs` with each replica paired with its rank: its position in the call's plan, which is
/// its place in the call's [`SyncGroup`](crate::sync::group::SyncGroup).
pub(crate) fn with_ranks<'a, M, I, D>(
    jobs: Vec<Job<'a, M, I, D>>,
) -> Vec<Job<'a, (M, usize), I, D>> {
    jobs.into_iter()
        .enumerate()
        .map(|(rank, job)| Job {
            index: job.index,
            replica: (job.replica, rank),
            shard: job.shard,
            device: job.device,
            rows: job.rows,
        })
        .collect()
}

/// The worker threads of a `DataParallel`: one per device, named `dp-replica-{i}`, started at
/// the first call and kept until the last clone of the module is dropped.
///
/// Starting threads on every step would cost more than their start-up: each new thread gets
/// fresh allocator state, so every step paid again for the memory pages its tensors touch.
pub(crate) struct Workers {
    threads: usize,
    /// The devices lost under `FailurePolicy::Redistribute`: shared by every clone.
    pub(crate) lost: LostDevices,
    /// Jobs given up at a step deadline that still hold their worker.
    pub(crate) stuck: Arc<AtomicUsize>,
    pool: OnceLock<core::result::Result<ThreadPool, String>>,
    /// How long each worker's jobs take per row: what `Split::Balanced` plans with.
    pub(crate) speeds: ReplicaSpeeds,
    /// Where the last training step's time went.
    pub(crate) last_step: LastStep,
}

impl Workers {
    /// Workers for `threads` replicas; no thread starts before the first call.
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            threads,
            lost: LostDevices::default(),
            stuck: Arc::default(),
            pool: OnceLock::new(),
            speeds: ReplicaSpeeds::default(),
            last_step: LastStep::default(),
        }
    }

    /// Runs `op` inside the worker pool, so that its rayon work (`join`, parallel iterators)
    /// is shared among the workers; returns its result on the caller's thread.
    ///
    /// # Errors
    ///
    /// [`DataParallelError::ThreadSpawn`] when the workers could not be started.
    pub(crate) fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> Result<R> {
        Ok(self.pool()?.install(op))
    }

    /// Runs `op` once on every worker thread, and returns when all have.
    #[cfg(feature = "train")]
    pub(crate) fn on_every_thread(&self, op: impl Fn() + Sync) -> Result<()> {
        self.pool()?.broadcast(|_| op());
        Ok(())
    }

    pub(super) fn pool(&self) -> Result<&ThreadPool> {
        let pool = self.pool.get_or_init(|| {
            ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .thread_name(|index| format!("dp-replica-{index}"))
                .build()
                .map_err(|error| error.to_string())
        });
        pool.as_ref()
            .map_err(|message| DataParallelError::ThreadSpawn {
                threads: self.threads,
                message: message.clone(),
            })
    }
}

impl Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads)
            .field("started", &self.pool.get().is_some())
            .finish()
    }
}

/// Whether a call's jobs count in the replicas' measured speeds (`Split::Balanced`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    /// Each job's time per row updates its replica's estimate.
    Record,
    /// The call's times are not representative of the replicas' work.
    Skip,
}

/// A job waiting for its worker: taken exactly once.
type Slot<'a, M, I, D> = Mutex<Option<(M, I, &'a D)>>;

/// Runs `work` on every job (its replica, shard and device), job `i` on worker thread `i`, and
/// returns the outputs in device order.
///
/// # Notes
///
/// Every job has finished before this returns, also when one fails. A panic inside `work` is
/// caught and becomes [`DataParallelError::ReplicaPanicked`] naming the device and the rows of
/// the batch; when several replicas fail, the first in device order is reported. Rayon code
/// inside `work` (a CPU backend's parallel kernels) runs on these same workers.
pub(crate) fn run_replicas<M, I, O, D, F>(
    workers: &Workers,
    jobs: Vec<Job<'_, M, I, D>>,
    work: &F,
    timing: Timing,
) -> Result<Vec<O>>
where
    M: Send,
    I: Send,
    O: Send,
    D: Debug + Sync,
    F: Fn(M, I, &D) -> O + Sync,
{
    run_each(workers, jobs, work, timing)?.into_iter().collect()
}

/// [`run_replicas`], with each job's own outcome: the outputs and errors in job order, for a
/// caller that goes on without the jobs that failed. Only a pool that cannot start is an error
/// of the whole call.
pub(crate) fn run_each<M, I, O, D, F>(
    workers: &Workers,
    jobs: Vec<Job<'_, M, I, D>>,
    work: &F,
    timing: Timing,
) -> Result<Vec<Result<O>>>
where
    M: Send,
    I: Send,
    O: Send,
    D: Debug + Sync,
    F: Fn(M, I, &D) -> O + Sync,
{
    let pool = workers.pool()?;
    let described: Vec<(usize, String, Range<usize>)> = jobs
        .iter()
        .map(|job| (job.index, format!("{:?}", job.device), job.rows.clone()))
        .collect();
    let slots: Vec<Slot<'_, M, I, D>> = jobs
        .into_iter()
        .map(|job| Mutex::new(Some((job.replica, job.shard, job.device))))
        .collect();
    let run = |slot: &Slot<'_, M, I, D>| {
        let job = slot.lock().ok().and_then(|mut slot| slot.take());
        job.map(|(replica, shard, device)| {
            let start = std::time::Instant::now();
            let result = panic::catch_unwind(AssertUnwindSafe(|| work(replica, shard, device)));
            (result, start.elapsed())
        })
    };
    let results: Vec<_> = if workers.stuck.load(Ordering::Acquire) == 0 {
        // Each worker takes the job with its own index; a batch smaller than the device count
        // leaves the last workers without one.
        let mut results = pool.broadcast(|context| slots.get(context.index()).and_then(run));
        results.truncate(described.len());
        results
    } else {
        // A worker still holds a job given up at a deadline: a broadcast would wait for it.
        // Each job goes to the first free worker instead.
        let done: Vec<Mutex<Option<_>>> = slots.iter().map(|_| Mutex::new(None)).collect();
        pool.in_place_scope(|scope| {
            for (slot, done) in slots.iter().zip(&done) {
                scope.spawn(move |_| {
                    let result = run(slot);
                    *done.lock().unwrap_or_else(PoisonError::into_inner) = result;
                });
            }
        });
        done.into_iter()
            .map(|done| done.into_inner().unwrap_or_else(PoisonError::into_inner))
            .collect()
    };
    Ok(results
        .into_iter()
        .zip(described)
        .map(|(result, (index, device, rows))| match result {
            Some((Ok(done), elapsed)) => {
                if timing == Timing::Record {
                    workers.speeds.record(index, rows.len(), elapsed);
                }
                Ok(done)
            }
            Some((Err(payload), _)) => Err(DataParallelError::ReplicaPanicked {
                index,
                device,
                rows,
                message: panic_message(payload.as_ref()),
            }),
            None => Err(DataParallelError::ReplicaPanicked {
                index,
                device,
                rows,
                message: "no worker thread took the job".to_string(),
            }),
        })
        .collect())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    /// One job per device of `devices`, job `i` with replica `i` and shard `10 i`.
    pub(in crate::run) fn jobs(devices: &[u32]) -> Vec<Job<'_, u32, u32, u32>> {
        devices
            .iter()
            .enumerate()
            .map(|(index, device)| Job {
                index,
                replica: index as u32,
                shard: index as u32 * 10,
                device,
                rows: index..index + 1,
            })
            .collect()
    }

    #[test]
    fn each_job_runs_on_its_own_named_worker_in_device_order() {
        let workers = Workers::new(3);
        let work = |replica: u32, shard: u32, device: &u32| {
            (
                replica + shard + device,
                thread::current().name().map(str::to_string),
            )
        };
        let outputs = run_replicas(&workers, jobs(&[7, 8, 9]), &work, Timing::Record)
            .expect("no replica fails");
        let sums: Vec<_> = outputs.iter().map(|(sum, _)| *sum).collect();
        assert_eq!(sums, [7, 19, 31]);
        let names: Vec<_> = outputs.iter().map(|(_, name)| name.clone()).collect();
        assert_eq!(
            names,
            ["dp-replica-0", "dp-replica-1", "dp-replica-2"].map(|n| Some(n.to_string()))
        );
    }

    #[test]
    fn workers_are_kept_between_calls_and_fewer_jobs_leave_some_idle() {
        let workers = Workers::new(3);
        let thread_of = |jobs| {
            run_replicas(
                &workers,
                jobs,
                &|_: u32, _: u32, _: &u32| thread::current().id(),
                Timing::Skip,
            )
            .expect("no replica fails")
        };
        let first = thread_of(jobs(&[1, 2, 3]));
        let second = thread_of(jobs(&[1, 2]));
        assert_eq!(second, first[..2]);
        assert_ne!(first[0], thread::current().id());
    }

    #[test]
    fn the_first_failing_replica_is_named_after_all_finished() {
        let workers = Workers::new(3);
        let finished = AtomicUsize::new(0);
        let result = run_replicas(
            &workers,
            jobs(&[7, 8, 9]),
            &|replica: u32, _: u32, _: &u32| {
                if replica >= 1 {
                    panic!("boom on {replica}");
                }
                thread::sleep(std::time::Duration::from_millis(50));
                finished.fetch_add(1, Ordering::SeqCst);
            },
            Timing::Record,
        );
        assert_eq!(
            result.err(),
            Some(DataParallelError::ReplicaPanicked {
                index: 1,
                device: "8".to_string(),
                rows: 1..2,
                message: "boom on 1".to_string(),
            })
        );
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }
}
