//! Shared parts of the benchmark, soak and gpu-check programs: models, batches, timing rounds,
//! step phases and process figures.

pub mod learner;
pub mod memory;
pub mod models;
pub mod phases;
pub mod rounds;
