//! Single-machine data parallelism for [Burn](https://burn.dev), in the spirit of Keras's
//! `multi_gpu_model`: split each batch along dim 0, run one replica of the model per device,
//! merge the outputs back into one batch, and keep the weights in one *template* module on a
//! host device, which is what the optimizer updates and what is saved.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray, ndarray::NdArrayDevice};
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::{AdamConfig, GradientsParams, Optimizer};
//! use burn::tensor::Tensor;
//! use burn_data_parallel::DataParallel;
//!
//! type B = Autodiff<NdArray>;
//! let host = NdArrayDevice::Cpu;
//! let model: Linear<B> = LinearConfig::new(8, 1).init(&host);
//! let dp = DataParallel::new(model, vec![host, host, host]).unwrap(); // three replicas
//!
//! let x = Tensor::<B, 2>::ones([10, 8], &host);
//! let y = dp.forward(x, |model, shard| model.forward(shard)); // 4 + 3 + 3 rows
//! let loss = y.powi_scalar(2).mean();
//!
//! let grads = GradientsParams::from_grads(loss.backward(), &dp);
//! let mut optim = AdamConfig::new().init();
//! let dp = optim.step(1e-3, dp, grads); // updates the template
//! let model: Linear<B> = dp.into_inner();
//! ```
//!
//! # The contract
//!
//! - **Same result as one device**: training over N devices gives the parameters that training
//!   the bare model on one device with the same batches gives, within float rounding, for
//!   models without dropout whose layers treat rows independently and whose loss is a mean
//!   over rows (or a sum, with [`Reduction::Sum`]); for BatchNorm models through
//!   [`SyncBatchNorm`], and for losses averaged over tokens, masks or class weights once the
//!   batch declares the count ([`Normaliser`]). Burn's own `BatchNorm` normalises each shard
//!   with its own statistics, so models using it differ.
//! - **One source of truth**: only the template is a module to Burn; the record of a
//!   `DataParallel` is its template's record, byte for byte.
//! - **Deterministic**: outputs, gradients, losses and running state are reduced in device
//!   order, never in completion order. The one exception is the Keras-style
//!   [`forward`](DataParallel::forward), where BatchNorm's running state is Burn's unweighted
//!   mean over the replicas' threads, summed in hash-map order;
//!   [`forward_parallel`](DataParallel::forward_parallel) merges it shard-weighted in device
//!   order. With [`Split::Balanced`] the split follows measured times, so results agree
//!   within float rounding rather than bit for bit.
//! - **Clear errors**: a bad device list or an input that cannot be split is a
//!   [`DataParallelError`]; a replica that panics is named, after every replica has joined.
//!
//! # Crate layout
//!
//! - [`DataParallel`]: the wrapper, with the Keras-style
//!   [`forward_parallel`](DataParallel::forward_parallel) (backward on the replicas, through
//!   [`ParallelBackward`]) and [`forward`](DataParallel::forward) (one backward on the caller's
//!   thread), and the per-replica `try_train_step` behind Burn's `Learner`.
//! - [`Split`]: even, weighted or self-balancing shares of each batch.
//! - [`Scatter`] and [`Gather`]: what crosses the split, for tensors, tuples, `Vec`, `Option`
//!   and arrays, each given a context ([`ScatterContext`], [`GatherContext`]) that says where
//!   its data goes; [`Broadcast`], [`Mean`] and [`Sum`] for values without a batch dimension;
//!   `#[derive(Scatter, Gather)]` for structs, with `#[scatter(broadcast | normaliser | skip)]` and
//!   `#[gather(loss | mean | sum | first | skip)]` on fields.
//! - [`SplitPlan`]: which rows go to which replica.
//! - [`Reduction`]: how the inner model's loss is reduced, which decides gradient weights;
//!   [`Normaliser`] and [`Normalised`]: what a loss averages over, when not rows.
//! - [`SyncBatchNorm`]: Burn's `BatchNorm` with statistics over every replica's shard.
//! - [`ParallelOptimizer`] (feature `train`): Burn's simple optimizers stepping the template's
//!   parameters on the workers, with the records of Burn's `OptimizerAdaptor`.
//!
//! # Features
//!
//! - `train` (default): Burn's `Learner` support (`TrainStep`, `InferenceStep`).
//! - `cuda`: Burn's CUDA backend and `DataParallel::gpus`.
//! - `remote`: replicas on Burn servers through Burn's remote backend; see
//!   `docs/scale-out.md` for what it supports and Burn 0.21's limits.
#![deny(missing_docs)]

// The verbs of a call, in order: scatter (split the input), replicate (the template onto each
// device), run (the worker pool, or watched threads), gather (merge the outputs), train (the
// per-replica step behind Burn's Learner). The device kinds (`kind`) answer what differs
// between local, CUDA and remote devices; the features select them here and in `kind`, and
// nowhere else in the core.
mod backward;
mod balance;
#[cfg(feature = "cuda")]
mod cuda;
mod cut;
mod data_parallel;
mod device;
mod error;
mod failure;
mod gather;
mod gradients;
mod graph;
#[cfg(feature = "train")]
mod inference;
mod kind;
mod module;
mod normaliser;
#[cfg(feature = "train")]
mod optim;
mod reduce;
#[cfg(feature = "remote")]
mod remote;
mod replicate;
mod run;
mod same_type;
mod scatter;
mod split;
mod state;
mod sync;
mod timings;
mod traffic;
#[cfg(feature = "train")]
mod train;
#[cfg(feature = "train")]
mod train_outputs;
mod transfer;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// The guide's pages in `docs/` and the README, compiled and run as doctests so that their
/// examples stay true.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../../../README.md")]
    struct Readme;
    #[doc = include_str!("../../../docs/getting-started.md")]
    struct GettingStarted;
    #[doc = include_str!("../../../docs/how-it-works.md")]
    struct HowItWorks;
    #[doc = include_str!("../../../docs/migrating.md")]
    struct Migrating;
    #[doc = include_str!("../../../docs/state-and-randomness.md")]
    struct StateAndRandomness;
    #[doc = include_str!("../../../docs/saving-and-loading.md")]
    struct SavingAndLoading;
    #[doc = include_str!("../../../docs/choosing-the-host.md")]
    struct ChoosingTheHost;
    #[doc = include_str!("../../../docs/faq.md")]
    struct Faq;
    #[cfg(feature = "cuda")]
    #[doc = include_str!("../../../docs/cuda.md")]
    struct Cuda;
    #[cfg(feature = "remote")]
    #[doc = include_str!("../../../docs/scale-out.md")]
    struct ScaleOut;
}

pub use backward::ParallelBackward;
pub use balance::Split;
pub use burn_data_parallel_derive::{Gather, Scatter};
#[cfg(feature = "cuda")]
pub use cuda::{CudaDevices, cuda_devices};
pub use data_parallel::DataParallel;
pub use device::check_devices;
pub use error::{DataParallelError, Result};
pub use failure::FailurePolicy;
pub use gather::{Gather, GatherContext, Mean, Sum};
#[cfg(feature = "cuda")]
pub use kind::cuda::cuda_driver_present;
pub use normaliser::{Normalised, Normaliser};
#[cfg(feature = "train")]
pub use optim::ParallelOptimizer;
pub use reduce::Reduction;
pub use scatter::{Broadcast, Scatter, ScatterContext, batch_size};
pub use split::SplitPlan;
pub use sync::SyncBatchNorm;
pub use timings::StepTimings;
pub use traffic::Traffic;
