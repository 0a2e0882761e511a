//! Integration tests of burn-data-parallel, in one binary so that Burn is linked once.

mod comparisons;
mod cuda;
mod derive;
mod determinism;
mod devices;
mod errors;
mod failures;
mod gpu_check;
mod keras_forward;
mod keras_parallel;
mod learner;
mod normalisers;
mod optimizer_records;
mod outputs;
mod parallel_optimizer;
mod properties;
mod records;
mod remote;
mod resume;
mod split;
mod state;
mod sync_batch_norm;
mod timing_rounds;
mod timings;
mod traffic;
