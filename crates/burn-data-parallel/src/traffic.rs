//! [`Traffic`]: the bytes a `DataParallel` moves between devices.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{BasicOps, Tensor, backend::Backend};

/// Bytes moved between devices by one `DataParallel` (and its clones), in both directions.
///
/// Counted where the crate moves data: weights to replicas not on the host, input shards to
/// their devices, and outputs, gradients and running state back to the host. Moves within one
/// device cost nothing and count nothing. Read it with
/// [`DataParallel::traffic`](crate::DataParallel::traffic); take the difference of two
/// readings to measure a step (see `docs/performance.md` for the lower bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes sent to replicas: weights, and input shards not already on their device.
    pub to_replicas: u64,
    /// Bytes sent back to the host: outputs, gradients and running state.
    pub to_host: u64,
}

impl Traffic {
    /// Both directions together.
    pub fn total(&self) -> u64 {
        self.to_replicas + self.to_host
    }

    /// What was moved between an earlier reading and this one.
    pub fn since(&self, earlier: Traffic) -> Traffic {
        Traffic {
            to_replicas: self.to_replicas - earlier.to_replicas,
            to_host: self.to_host - earlier.to_host,
        }
    }
}

/// Which way data crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    ToReplica,
    ToHost,
}

/// The running count behind [`Traffic`], shared by a `DataParallel` and its clones, and handed
/// to every place that moves data for it (the scatter and gather contexts among them).
#[derive(Debug, Default)]
pub(crate) struct TrafficCounter {
    to_replicas: AtomicU64,
    to_host: AtomicU64,
}

impl TrafficCounter {
    pub(crate) fn read(&self) -> Traffic {
        Traffic {
            to_replicas: self.to_replicas.load(Ordering::Relaxed),
            to_host: self.to_host.load(Ordering::Relaxed),
        }
    }

    /// Adds `bytes` moved in `direction`.
    pub(crate) fn add(&self, direction: Direction, bytes: u64) {
        let total = match direction {
            Direction::ToReplica => &self.to_replicas,
            Direction::ToHost => &self.to_host,
        };
        total.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The bytes of `tensor`'s data.
pub(crate) fn tensor_bytes<B: Backend, const D: usize, K: BasicOps<B>>(
    tensor: &Tensor<B, D, K>,
) -> u64 {
    (tensor.shape().num_elements() * tensor.dtype().size()) as u64
}
