//! Integration tests of burn-data-parallel, in one binary so that Burn is linked once.

mod cuda;
mod derive;
mod errors;
mod gpu_check;
mod keras_forward;
mod learner;
mod properties;
mod records;
mod remote;
mod traffic;
