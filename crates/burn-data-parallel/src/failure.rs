//! What a training step does when a replica fails: the policy, the devices lost so far, and
//! how a failed shard's rows are shared among the replicas that finished.

#[cfg(feature = "train")]
use core::ops::Range;
use std::sync::{Mutex, PoisonError};

#[cfg(feature = "train")]
use crate::split::SplitPlan;

/// What [`try_train_step`](crate::DataParallel::try_train_step) does when a replica fails; see
/// [`DataParallel::with_failure_policy`](crate::DataParallel::with_failure_policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// The step fails with the first replica's error, in device order, and the template is
    /// unchanged (the default).
    #[default]
    Fail,
    /// The failed replicas' rows are split again over the replicas that finished, which run
    /// them at once, and the step completes with the gradient of the whole batch: the
    /// fault-free step's, within float rounding (the shards are summed in other groups).
    ///
    /// A replica fails when its step panics, when its device is lost (a remote server gone),
    /// or when it misses the step deadline
    /// ([`with_step_deadline`](crate::DataParallel::with_step_deadline)). A lost or stalled
    /// device is left out of every later step
    /// ([`lost_devices`](crate::DataParallel::lost_devices)), as is one found lost before a
    /// call starts, on every path; a device whose step panicked stays in. When a redistributed part fails too, or no replica finished, the step fails
    /// as under [`Fail`](Self::Fail).
    Redistribute,
}

/// The devices (indices into the device list) a module has lost, in the order they were lost.
#[derive(Debug, Default)]
pub(crate) struct LostDevices {
    lost: Mutex<Vec<usize>>,
}

impl LostDevices {
    /// Records that device `index` is lost; a device is recorded once.
    pub(crate) fn record(&self, index: usize) {
        let mut lost = self.lock();
        if !lost.contains(&index) {
            lost.push(index);
        }
    }

    /// The lost devices, in the order they were lost.
    pub(crate) fn get(&self) -> Vec<usize> {
        self.lock().clone()
    }

    /// The devices of a list of `count` still in use, in device order.
    pub(crate) fn live(&self, count: usize) -> Vec<usize> {
        let lost = self.lock();
        (0..count).filter(|index| !lost.contains(index)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.lost.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The rows of each failed shard of `plan`, split evenly over the devices of the shards that
/// finished (`finished`, positions in `plan`): `(rows, device)` pairs, in row order.
///
/// Each failed shard is split on its own, the first rows to the earliest finished device, so
/// the parts depend only on the plan and on which shards failed.
#[cfg(feature = "train")]
pub(crate) fn redistribute(
    plan: &SplitPlan,
    failed: &[usize],
    finished: &[usize],
) -> Vec<(Range<usize>, usize)> {
    let survivors: Vec<usize> = finished.iter().map(|&shard| plan.device(shard)).collect();
    let mut parts = Vec::new();
    for &shard in failed {
        let rows = plan.shards()[shard].clone();
        let Ok(split) = SplitPlan::new(rows.len(), survivors.len()) else {
            continue; // no survivors, or an empty shard: nothing to hand out
        };
        for (part, &device) in split.shards().iter().zip(&survivors) {
            parts.push((rows.start + part.start..rows.start + part.end, device));
        }
    }
    parts
}

#[cfg(all(test, feature = "train"))]
mod redistribution_tests {
    use super::*;

    #[test]
    fn a_failed_shard_is_split_evenly_over_the_devices_that_finished() {
        let plan = SplitPlan::new(10, 3).expect("a plan"); // 0..4, 4..7, 7..10
        assert_eq!(
            redistribute(&plan, &[1], &[0, 2]),
            vec![(4..6, 0), (6..7, 2)]
        );
        assert_eq!(
            redistribute(&plan, &[0, 2], &[1]),
            vec![(0..4, 1), (7..10, 1)]
        );
        // Fewer rows than survivors: one row each to the first.
        let plan = SplitPlan::new(7, 4).expect("a plan"); // 0..2, 2..4, 4..6, 6..7
        assert_eq!(redistribute(&plan, &[3], &[0, 1, 2]), vec![(6..7, 0)]);
        assert!(redistribute(&plan, &[3], &[]).is_empty());
    }

    #[test]
    fn parts_keep_the_devices_of_a_plan_that_left_one_out() {
        // Devices 0 and 2 remain (1 was lost); the shard on device 2 fails.
        let plan = SplitPlan::new(6, 2).expect("a plan").on_devices(&[0, 2]);
        assert_eq!(redistribute(&plan, &[1], &[0]), vec![(3..6, 0)]);
        let parts = vec![(3..6, 0), (0..3, 0)];
        let merged = SplitPlan::from_parts(6, parts);
        assert_eq!(merged.shards(), &[0..3, 3..6]);
        assert_eq!((merged.device(0), merged.device(1)), (0, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_devices_are_recorded_once_and_left_out_of_the_live_ones() {
        let lost = LostDevices::default();
        lost.record(2);
        lost.record(0);
        lost.record(2);
        assert_eq!(lost.get(), vec![2, 0]);
        assert_eq!(lost.live(4), vec![1, 3]);
    }
}
