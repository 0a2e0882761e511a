//! [`Split`]: how a batch is shared among the replicas, and the self-balancing split's
//! measurements.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::error::{DataParallelError, Result};
use crate::split::SplitPlan;

/// How a batch is shared among the replicas; see
/// [`DataParallel::with_split`](crate::DataParallel::with_split).
///
/// Results do not depend on it: each shard's gradient and loss are weighted by the shard's
/// share of the batch, so an uneven split changes only the time a step takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Split {
    /// Shards that differ by at most one row (the default).
    #[default]
    Even,
    /// Rows in proportion to the given weights, one per device, in device order: for devices
    /// of known relative speeds.
    Weighted(Vec<f64>),
    /// Rows in proportion to each replica's measured speed: the crate times each replica's
    /// work per row over recent calls and plans the next call so that replicas finish
    /// together. It adapts when a device slows down, and never starves a device: each keeps
    /// at least one row and its weight never falls below a tenth of an even share, so its
    /// speed stays measured.
    ///
    /// The plan follows measured times, so two runs may split a batch differently: results
    /// agree within float rounding, not bit for bit, since shards are summed in other groups.
    Balanced,
}

/// The smallest share of a balanced split, as a fraction of the even share: enough rows to
/// keep measuring a slow device, so that the split comes back when it speeds up.
const MIN_SHARE_OF_EVEN: f64 = 0.1;

/// How much a new measurement counts against the running estimate.
const NEW_SAMPLE_WEIGHT: f64 = 0.5;

impl Split {
    /// Checks the split against the number of devices.
    pub(crate) fn check(&self, devices: usize) -> Result<()> {
        if let Split::Weighted(weights) = self {
            if weights.len() != devices {
                return Err(DataParallelError::InvalidSplit {
                    reason: format!(
                        "{} weights for {devices} devices: give one weight per device",
                        weights.len()
                    ),
                });
            }
            // The weights' own checks.
            SplitPlan::weighted(devices, weights)?;
        }
        Ok(())
    }

    /// The plan for `batch_size` rows over `devices` replicas.
    pub(crate) fn plan(
        &self,
        batch_size: usize,
        devices: usize,
        speeds: &ReplicaSpeeds,
    ) -> Result<SplitPlan> {
        match self {
            Split::Even => SplitPlan::new(batch_size, devices),
            Split::Weighted(weights) => SplitPlan::weighted(batch_size, weights),
            Split::Balanced => match speeds.balanced_weights(devices) {
                Some(weights) => SplitPlan::weighted(batch_size, &weights),
                None => SplitPlan::new(batch_size, devices),
            },
        }
    }
}

/// Each replica's measured time per row: a running estimate, updated after every call.
#[derive(Debug, Default)]
pub(crate) struct ReplicaSpeeds {
    seconds_per_row: Mutex<Vec<Option<f64>>>,
}

impl ReplicaSpeeds {
    /// Records that replica `index` took `elapsed` for `rows` rows.
    pub(crate) fn record(&self, index: usize, rows: usize, elapsed: Duration) {
        if rows == 0 {
            return;
        }
        let sample = elapsed.as_secs_f64() / rows as f64;
        let mut estimates = self.lock();
        if estimates.len() <= index {
            estimates.resize(index + 1, None);
        }
        let estimate = &mut estimates[index];
        *estimate = Some(match *estimate {
            Some(old) => old + NEW_SAMPLE_WEIGHT * (sample - old),
            None => sample,
        });
    }

    /// The current estimates, one per replica measured so far.
    pub(crate) fn seconds_per_row(&self) -> Vec<Option<f64>> {
        self.lock().clone()
    }

    /// Weights proportional to each replica's speed, each at least a tenth of the even share;
    /// `None` until every one of the `devices` replicas has been measured.
    fn balanced_weights(&self, devices: usize) -> Option<Vec<f64>> {
        let estimates = self.lock();
        let speeds: Vec<f64> = (0..devices)
            .map(|index| {
                let seconds = estimates.get(index).copied().flatten()?;
                Some(1.0 / seconds.max(1e-12))
            })
            .collect::<Option<_>>()?;
        let total: f64 = speeds.iter().sum();
        let floor = MIN_SHARE_OF_EVEN / devices as f64;
        Some(speeds.iter().map(|s| (s / total).max(floor)).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<f64>>> {
        self.seconds_per_row
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_balanced_split_gives_each_replica_rows_in_proportion_to_its_speed() {
        let speeds = ReplicaSpeeds::default();
        // Unmeasured: the even split.
        let plan = Split::Balanced.plan(12, 2, &speeds).expect("a plan");
        assert_eq!(plan.shards(), &[0..6, 6..12]);
        // Replica 1 takes three times as long per row.
        speeds.record(0, 6, Duration::from_millis(60));
        speeds.record(1, 6, Duration::from_millis(180));
        let plan = Split::Balanced.plan(12, 2, &speeds).expect("a plan");
        assert_eq!(plan.shards(), &[0..9, 9..12]);
    }

    #[test]
    fn a_very_slow_replica_keeps_a_tenth_of_an_even_share() {
        let speeds = ReplicaSpeeds::default();
        speeds.record(0, 50, Duration::from_millis(50));
        speeds.record(1, 50, Duration::from_secs(500));
        let plan = Split::Balanced.plan(200, 2, &speeds).expect("a plan");
        let slow = plan.shards()[1].len();
        assert!((9..=11).contains(&slow), "{:?}", plan.shards());
    }

    #[test]
    fn estimates_follow_a_device_that_slows_down() {
        let speeds = ReplicaSpeeds::default();
        speeds.record(0, 10, Duration::from_millis(10));
        for _ in 0..6 {
            speeds.record(0, 10, Duration::from_millis(100));
        }
        let estimate = speeds.seconds_per_row()[0].expect("measured");
        assert!((estimate - 0.01).abs() < 0.001, "{estimate}");
    }

    #[test]
    fn weights_must_match_the_devices() {
        assert!(Split::Weighted(vec![1.0, 2.0]).check(2).is_ok());
        assert!(matches!(
            Split::Weighted(vec![1.0]).check(2),
            Err(DataParallelError::InvalidSplit { .. })
        ));
        assert!(matches!(
            Split::Weighted(vec![1.0, -2.0]).check(2),
            Err(DataParallelError::InvalidSplit { .. })
        ));
        assert!(Split::Balanced.check(3).is_ok());
    }
}
