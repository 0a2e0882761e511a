//! Layers whose statistics span every replica of a call: [`SyncBatchNorm`], and the
//! exchange between the replicas' threads that it uses.

mod batch_norm;
pub(crate) mod cross_replica;
pub(crate) mod group;

pub use batch_norm::SyncBatchNorm;
