//! How a batch is cut into shards: arithmetic only, no tensors.

use core::ops::Range;

use crate::error::{DataParallelError, Result};

/// The rows of a batch that each replica receives.
///
/// Shards are contiguous, in device order, and their sizes differ by at most one (the first
/// `batch_size % shards` shards get the extra row). A batch smaller than the number of devices
/// uses fewer replicas: a shard is never empty.
///
/// # Examples
///
/// ```
/// use burn_data_parallel::SplitPlan;
///
/// let plan = SplitPlan::new(10, 3).unwrap();
/// assert_eq!(plan.shards(), &[0..4, 4..7, 7..10]);
/// assert_eq!(plan.weight(0), 0.4);
///
/// // Two rows for four devices: two replicas of one row each.
/// assert_eq!(SplitPlan::new(2, 4).unwrap().shards(), &[0..1, 1..2]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    batch_size: usize,
    shards: Vec<Range<usize>>,
}

impl SplitPlan {
    /// Plans the split of `batch_size` rows over at most `devices` replicas.
    ///
    /// # Errors
    ///
    /// [`DataParallelError::NoDevices`] when `devices` is 0 and
    /// [`DataParallelError::EmptyBatch`] when `batch_size` is 0.
    pub fn new(batch_size: usize, devices: usize) -> Result<Self> {
        if devices == 0 {
            return Err(DataParallelError::NoDevices);
        }
        if batch_size == 0 {
            return Err(DataParallelError::EmptyBatch);
        }
        let count = devices.min(batch_size);
        let base = batch_size / count;
        let extra = batch_size % count;
        let mut start = 0;
        let shards = (0..count)
            .map(|index| {
                let len = base + usize::from(index < extra);
                let rows = start..start + len;
                start += len;
                rows
            })
            .collect();
        Ok(Self { batch_size, shards })
    }

    /// The number of rows in the whole batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The rows of each shard, in device order.
    pub fn shards(&self) -> &[Range<usize>] {
        &self.shards
    }

    /// The number of shards, which is also the number of replicas that run.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always `false`: a plan has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The share of the batch in shard `index`: `n_i / n`.
    ///
    /// This is the weight of the shard's gradient and of its mean-reduced loss.
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn weight(&self, index: usize) -> f64 {
        self.shards[index].len() as f64 / self.batch_size as f64
    }

    /// The weights of every shard, in device order; see [`weight`](Self::weight).
    pub fn weights(&self) -> Vec<f64> {
        (0..self.len()).map(|index| self.weight(index)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_split_is_balanced_contiguous_and_never_empty() {
        for batch_size in 1..=64 {
            for devices in 1..=8 {
                let plan = SplitPlan::new(batch_size, devices).expect("valid plan");
                assert_eq!(plan.len(), devices.min(batch_size));
                let mut next = 0;
                for rows in plan.shards() {
                    assert_eq!(rows.start, next);
                    assert!(!rows.is_empty());
                    next = rows.end;
                }
                assert_eq!(next, batch_size);
                let sizes: Vec<usize> = plan.shards().iter().map(|r| r.len()).collect();
                let (min, max) = (sizes.iter().min(), sizes.iter().max());
                assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1));
            }
        }
    }

    #[test]
    fn weights_are_shares_of_the_batch() {
        let plan = SplitPlan::new(7, 2).expect("valid plan");
        assert_eq!(plan.shards(), &[0..4, 4..7]);
        assert_eq!(plan.weights(), vec![4.0 / 7.0, 3.0 / 7.0]);
    }

    #[test]
    fn zero_devices_and_empty_batches_are_errors() {
        assert_eq!(SplitPlan::new(4, 0), Err(DataParallelError::NoDevices));
        assert_eq!(SplitPlan::new(0, 4), Err(DataParallelError::EmptyBatch));
    }
}
