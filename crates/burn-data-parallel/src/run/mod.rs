//! Running the replicas: the worker pool every path uses, and the watched threads of the
//! per-replica path on devices that can be lost.

#[cfg(feature = "train")]
mod deadline;
mod pool;
// Only the per-replica training step runs replicas on watched threads.
#[cfg(feature = "train")]
mod watched;

#[cfg(feature = "train")]
pub(crate) use deadline::run_each_until;
#[cfg(feature = "train")]
pub(crate) use pool::run_each;
pub(crate) use pool::{Job, Timing, Workers, run_replicas, with_ranks};
#[cfg(feature = "train")]
pub(crate) use watched::run_watched;
