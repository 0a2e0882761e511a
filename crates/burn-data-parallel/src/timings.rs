//! [`StepTimings`]: where the time of one per-replica training step goes.

use core::time::Duration;
use std::sync::Mutex;

/// Where the time of one per-replica training step
/// ([`try_train_step`](crate::DataParallel::try_train_step), the `Learner`'s step) went,
/// phase by phase, each measured on the thread that ran it.
///
/// The phases outside the replicas' work (`scatter`, `reduction`, `state_merge`, `gather`) run
/// one after the other while no replica runs: they are the step's serial part (the reduction
/// itself is spread over the worker threads, every parameter at once). The
/// replicas' phases run on every worker at once; the slowest replica is what the host waits
/// for, so those are given for the slowest replica (and compute also as the mean, whose gap
/// to the slowest is time lost to imbalance). The optimizer step that follows is the
/// caller's, outside this step.
///
/// On a backend that queues its work (CUDA), a phase measures the time to issue its
/// operations, and the wait shows up in the first phase that reads a result, unless the
/// module waits for its devices at the end of each phase
/// ([`with_synced_phases`](crate::DataParallel::with_synced_phases)); on CPU backends
/// (NdArray, Flex) each phase measures its work.
///
/// Read it with [`DataParallel::last_step_timings`](crate::DataParallel::last_step_timings);
/// `cargo run --release -p bench --bin throughput` prints it for the benchmark's models.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimings {
    /// The whole step, from the call to its return.
    pub total: Duration,
    /// Host: splitting the batch, cutting each shard and moving it to its device, and each
    /// replica's copy of the template (`valid()`, running state of its own).
    pub scatter: Duration,
    /// Workers, slowest replica: `fork` onto the replica's device (the weights' move, for a
    /// replica off the host).
    pub replica_setup: Duration,
    /// Workers, slowest replica: the inner model's step, forward and backward.
    pub compute_slowest: Duration,
    /// Workers: the same, mean over the replicas.
    pub compute_mean: Duration,
    /// Workers, slowest replica: weighting the gradients, moving them to the host, and reading
    /// the running state.
    pub gradients_home: Duration,
    /// Workers, after every replica finished: adding the replicas' gradients along a fixed
    /// tree over device order, every parameter at once.
    pub reduction: Duration,
    /// Host: the shard-weighted merge of the running state into the template.
    pub state_merge: Duration,
    /// Host: merging the replicas' outputs ([`Gather`](crate::Gather)).
    pub gather: Duration,
    /// Workers: the rows of replicas that failed, run again by the replicas that finished
    /// ([`FailurePolicy::Redistribute`](crate::FailurePolicy::Redistribute)); zero when every
    /// replica finished. The replica phases above include these runs.
    pub redistribution: Duration,
    /// How many replicas ran.
    pub replicas: usize,
}

impl StepTimings {
    /// The phases during which no replica runs: scatter, reduction, state merge and gather.
    pub fn serial(&self) -> Duration {
        self.scatter + self.reduction + self.state_merge + self.gather
    }

    /// [`serial`](Self::serial) as a share of [`total`](Self::total), 0 for a step that took
    /// no measurable time.
    pub fn serial_share(&self) -> f64 {
        if self.total.is_zero() {
            return 0.0;
        }
        self.serial().as_secs_f64() / self.total.as_secs_f64()
    }
}

/// The last training step's timings, shared by a `DataParallel` and its clones.
#[derive(Debug, Default)]
pub(crate) struct LastStep(Mutex<Option<StepTimings>>);

impl LastStep {
    /// Keeps `timings` as the last step's.
    // Only the per-replica training step is timed.
    #[cfg(feature = "train")]
    pub(crate) fn store(&self, timings: StepTimings) {
        *self.lock() = Some(timings);
    }

    /// The last step's timings; `None` before the first.
    pub(crate) fn get(&self) -> Option<StepTimings> {
        *self.lock()
    }

    /// A poisoned lock only means a panic while a value was stored; the value is still one.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StepTimings>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn the_serial_part_is_the_hosts_phases() {
        let timings = StepTimings {
            total: ms(40),
            scatter: ms(2),
            compute_slowest: ms(30),
            reduction: ms(3),
            state_merge: ms(1),
            gather: ms(4),
            ..StepTimings::default()
        };
        assert_eq!(timings.serial(), ms(10));
        assert_eq!(timings.serial_share(), 0.25);
    }

    #[test]
    fn an_empty_step_has_no_serial_share() {
        assert_eq!(StepTimings::default().serial_share(), 0.0);
    }
}
