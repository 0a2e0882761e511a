//! Integration tests of burn-data-parallel, in one binary so that Burn is linked once.

mod derive;
mod errors;
mod keras_forward;
mod learner;
mod properties;
mod records;
