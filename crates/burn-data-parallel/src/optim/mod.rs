//! [`ParallelOptimizer`]: Burn's simple optimizers (Adam, AdamW, SGD, ...) stepping a
//! [`DataParallel`]'s parameters on every worker at once, with the records of Burn's own
//! `OptimizerAdaptor`.
//!
//! Burn's `OptimizerAdaptor` steps a module's parameters one after the other, on the
//! caller's thread: with N replicas finishing their work in parallel, that step becomes the
//! serial part of a training step (for a 9.6M-parameter MLP, about half of it on two cores).
//! Burn's `Optimizer` trait gives the optimizer the whole module, so this one can plan every
//! parameter's step first, run the steps on the workers, and write the results back.

mod chunk;
mod parallel;

pub use parallel::ParallelOptimizer;
