//! Shared parts of the benchmark and soak programs: models, batches and process figures.

pub mod learner;
pub mod memory;
pub mod models;
