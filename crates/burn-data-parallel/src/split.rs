//! How a batch is cut into shards: arithmetic only, no tensors.

use core::ops::Range;

use crate::error::{DataParallelError, Result};

/// The rows of a batch that each replica receives.
///
/// Shards are contiguous and in device order. An even plan ([`new`](Self::new)) gives sizes
/// that differ by at most one (the first `batch_size % shards` shards get the extra row); a
/// [weighted](Self::weighted) one follows given weights. A batch smaller than the number of
/// devices uses fewer replicas: a shard is never empty.
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
    /// The device (its index in the device list) of each shard: shard `i` on device `i`,
    /// unless devices were lost (`FailurePolicy::Redistribute`) or a failed shard's rows were
    /// redistributed.
    devices: Vec<usize>,
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
        let sizes: Vec<usize> = (0..count)
            .map(|index| base + usize::from(index < extra))
            .collect();
        Ok(Self::from_sizes(batch_size, &sizes))
    }

    /// Plans the split of `batch_size` rows over `weights.len()` replicas, replica `i` taking
    /// rows in proportion to `weights[i]`, rounded by largest remainder (ties to the earlier
    /// device). No shard is empty: while the batch has at least as many rows as there are
    /// devices, every device gets at least one row, taken from the largest shard; a smaller
    /// batch uses the first `batch_size` devices, one row each.
    ///
    /// ```
    /// use burn_data_parallel::SplitPlan;
    ///
    /// let plan = SplitPlan::weighted(10, &[3.0, 1.0, 1.0]).unwrap();
    /// assert_eq!(plan.shards(), &[0..6, 6..8, 8..10]);
    /// // 1.2, 2.4 and 2.4 rows: of the two largest remainders (0.4 each), the earlier device
    /// // takes the row left over.
    /// let plan = SplitPlan::weighted(6, &[1.0, 2.0, 2.0]).unwrap();
    /// assert_eq!(plan.shards(), &[0..1, 1..4, 4..6]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`DataParallelError::NoDevices`] for no weights, [`DataParallelError::EmptyBatch`]
    /// when `batch_size` is 0, and [`DataParallelError::InvalidSplit`] for a weight that is
    /// not a finite number above zero.
    pub fn weighted(batch_size: usize, weights: &[f64]) -> Result<Self> {
        if weights.is_empty() {
            return Err(DataParallelError::NoDevices);
        }
        if batch_size == 0 {
            return Err(DataParallelError::EmptyBatch);
        }
        if let Some((index, weight)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w > 0.0))
        {
            return Err(DataParallelError::InvalidSplit {
                reason: format!(
                    "weight {index} is {weight}: every weight must be a finite number above zero"
                ),
            });
        }
        if batch_size <= weights.len() {
            return Self::new(batch_size, weights.len());
        }
        let total: f64 = weights.iter().sum();
        if !total.is_finite() {
            return Err(DataParallelError::InvalidSplit {
                reason: "the weights add up to more than a float can hold: scale them down"
                    .to_string(),
            });
        }
        let ideal: Vec<f64> = weights
            .iter()
            .map(|w| batch_size as f64 * w / total)
            .collect();
        let mut sizes: Vec<usize> = ideal.iter().map(|x| x.floor() as usize).collect();
        let assigned: usize = sizes.iter().sum();
        // Largest remainder: the rows left go to the largest fractional parts, earlier first.
        let mut order: Vec<usize> = (0..sizes.len()).collect();
        order.sort_by(|&a, &b| {
            let (ra, rb) = (ideal[a] - ideal[a].floor(), ideal[b] - ideal[b].floor());
            rb.total_cmp(&ra).then(a.cmp(&b))
        });
        for &index in order.iter().take(batch_size.saturating_sub(assigned)) {
            sizes[index] += 1;
        }
        // Never starve a device: an empty shard takes a row from the largest one.
        while let Some(empty) = sizes.iter().position(|&size| size == 0) {
            let largest = (0..sizes.len())
                .max_by_key(|&i| (sizes[i], core::cmp::Reverse(i)))
                .expect("at least one shard");
            sizes[largest] -= 1;
            sizes[empty] += 1;
        }
        debug_assert_eq!(sizes.iter().sum::<usize>(), batch_size);
        Ok(Self::from_sizes(batch_size, &sizes))
    }

    fn from_sizes(batch_size: usize, sizes: &[usize]) -> Self {
        let mut start = 0;
        let shards = sizes
            .iter()
            .map(|&len| {
                let rows = start..start + len;
                start += len;
                rows
            })
            .collect();
        Self {
            batch_size,
            shards,
            devices: (0..sizes.len()).collect(),
        }
    }

    /// The plan whose shard `i` runs on device `devices[i]` (an index into the device list).
    ///
    /// # Panics
    ///
    /// When `devices` has fewer entries than the plan has shards (a bug of this crate).
    pub(crate) fn on_devices(mut self, devices: &[usize]) -> Self {
        self.devices = devices[..self.shards.len()].to_vec();
        self
    }

    /// A plan from shards that cover `0..batch_size` in any order, each with its device; the
    /// shards are put in row order.
    #[cfg(feature = "train")]
    pub(crate) fn from_parts(batch_size: usize, mut parts: Vec<(Range<usize>, usize)>) -> Self {
        parts.sort_by_key(|(rows, _)| rows.start);
        debug_assert!(
            parts
                .windows(2)
                .all(|pair| pair[0].0.end == pair[1].0.start),
            "the parts cover the batch without gaps or overlaps"
        );
        let (shards, devices) = parts.into_iter().unzip();
        Self {
            batch_size,
            shards,
            devices,
        }
    }

    /// A plan of some rows of a batch of `batch_size` (`parts`, each with its device, in the
    /// order given): a failed shard's rows to run again. Each part's weight is its share of
    /// the whole batch.
    #[cfg(feature = "train")]
    pub(crate) fn partial(batch_size: usize, parts: Vec<(Range<usize>, usize)>) -> Self {
        let (shards, devices) = parts.into_iter().unzip();
        Self {
            batch_size,
            shards,
            devices,
        }
    }

    /// The device (its index in the device list) that shard `index` runs on.
    pub(crate) fn device(&self, index: usize) -> usize {
        self.devices[index]
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
    fn weighted_splits_follow_the_weights_and_never_starve_a_device() {
        let sizes = |n, w: &[f64]| -> Vec<usize> {
            let plan = SplitPlan::weighted(n, w).expect("valid plan");
            assert_eq!(plan.shards().iter().map(|r| r.len()).sum::<usize>(), n);
            plan.shards().iter().map(|r| r.len()).collect()
        };
        assert_eq!(sizes(12, &[1.0, 1.0, 1.0]), [4, 4, 4]);
        assert_eq!(sizes(12, &[2.0, 1.0]), [8, 4]);
        assert_eq!(sizes(10, &[0.5, 0.25, 0.25]), [5, 3, 2]);
        // A device with a tiny weight still gets a row, from the largest shard.
        assert_eq!(sizes(10, &[1000.0, 1.0, 1.0]), [8, 1, 1]);
        // Fewer rows than devices: the first devices, one row each.
        assert_eq!(sizes(2, &[1.0, 5.0, 1.0]), [1, 1]);
        // Even weights give the even plan.
        for n in 3..40 {
            assert_eq!(
                SplitPlan::weighted(n, &[1.0; 3]).expect("valid"),
                SplitPlan::new(n, 3).expect("valid")
            );
        }
    }

    #[test]
    fn bad_weights_are_errors() {
        assert!(matches!(
            SplitPlan::weighted(10, &[f64::MAX, f64::MAX]),
            Err(DataParallelError::InvalidSplit { .. })
        ));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                SplitPlan::weighted(4, &[1.0, bad]),
                Err(DataParallelError::InvalidSplit { .. })
            ));
        }
        assert_eq!(
            SplitPlan::weighted(4, &[]),
            Err(DataParallelError::NoDevices)
        );
        assert_eq!(
            SplitPlan::weighted(0, &[1.0]),
            Err(DataParallelError::EmptyBatch)
        );
    }

    #[test]
    fn zero_devices_and_empty_batches_are_errors() {
        assert_eq!(SplitPlan::new(4, 0), Err(DataParallelError::NoDevices));
        assert_eq!(SplitPlan::new(0, 4), Err(DataParallelError::EmptyBatch));
    }
}
