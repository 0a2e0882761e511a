//! The one error type of the crate.

use core::ops::Range;

/// What can go wrong when building a [`DataParallel`](crate::DataParallel) or running a step.
///
/// Every message names the cause and, where there is one, the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataParallelError {
    /// The device list was empty.
    #[error("no devices given: DataParallel needs at least one device to run a replica on")]
    NoDevices,

    /// A requested device does not exist on this machine.
    #[error("device {device} is not available: {available}")]
    DeviceUnavailable {
        /// The requested device, as its `Debug` form.
        device: String,
        /// What this machine has instead, in words (for example "this machine has 2 devices of
        /// this kind: [Cuda(0), Cuda(1)]").
        available: String,
    },

    /// [`DataParallel::gpus`](crate::DataParallel::gpus) was asked for no GPU.
    #[error("asked for {requested} GPUs: ask for at least 1")]
    InvalidGpuCount {
        /// The number asked for.
        requested: usize,
    },

    /// [`DataParallel::gpus`](crate::DataParallel::gpus) was asked for more GPUs than this
    /// machine has.
    #[error("asked for {requested} GPU{}, but {available}", if *.requested == 1 { "" } else { "s" })]
    NotEnoughGpus {
        /// The number asked for.
        requested: usize,
        /// What this machine has, in words (for example "this machine has none (no CUDA driver
        /// found ...)" or "this machine has 2: [Cuda(0), Cuda(1)]").
        available: String,
    },

    /// The template's parameters do not all live on one device.
    #[error(
        "the template's parameters are spread over {devices}: move the model to one host device \
         (`model.fork(&host)`) before wrapping it"
    )]
    TemplateSpansDevices {
        /// The devices the template's parameters were found on.
        devices: String,
    },

    /// The batch dimension (dim 0) of the input has size 0.
    #[error("empty batch: the input's batch dimension (dim 0) has size 0, nothing to split")]
    EmptyBatch,

    /// The input holds no tensor with a batch dimension.
    #[error(
        "the input has nothing to split: it holds no tensor with a batch dimension \
         (values that are the same for every sample go in `Broadcast`, next to at least one batched tensor)"
    )]
    NothingToSplit,

    /// Parts of the input disagree on the batch size.
    #[error("the input's tensors disagree on the batch size (dim 0): found sizes {sizes:?}")]
    BatchSizeMismatch {
        /// The distinct dim-0 sizes, in the order they were found.
        sizes: Vec<usize>,
    },

    /// A replica panicked; every other replica was joined first and the template is unchanged.
    #[error("replica {index} on device {device} panicked on batch rows {rows:?}: {message}")]
    ReplicaPanicked {
        /// Position of the replica in the device list.
        index: usize,
        /// The replica's device, as its `Debug` form.
        device: String,
        /// The rows of the batch the replica was given.
        rows: Range<usize>,
        /// The panic message.
        message: String,
    },

    /// The connection to a remote device's server was lost (feature `remote`): it stopped, or
    /// the network between here and there failed. The template is unchanged.
    #[error(
        "the connection to device {device} was lost: {reason}. Burn cannot reconnect to it from \
         this process: build the DataParallel again without it"
    )]
    DeviceLost {
        /// The device, as its `Debug` form.
        device: String,
        /// What failed, in words.
        reason: String,
    },

    /// A replica had not finished its part of a training step when the step deadline passed
    /// ([`with_step_deadline`](crate::DataParallel::with_step_deadline)). The template is
    /// unchanged; the replica's thread, which cannot be stopped from outside, is left to end
    /// on its own, and what it returns is dropped.
    #[error(
        "replica on device {device} stalled: still in its {phase} after {waited:?}, past the step \
         deadline. Its thread `{thread}` is left running and its result will be dropped; the \
         template is unchanged. Raise the deadline if the step is just slow, or train with \
         `FailurePolicy::Redistribute` to go on without this device"
    )]
    Stalled {
        /// The replica's device, as its `Debug` form.
        device: String,
        /// The phase of the step it was in: `set-up` (its weights moving to the device),
        /// `compute` (forward and backward) or `gradients home`.
        phase: String,
        /// How long the step had run when the replica was given up.
        waited: core::time::Duration,
        /// The name of the replica's thread.
        thread: String,
    },

    /// The Keras-style [`forward`](crate::DataParallel::forward) was asked for a result that
    /// could be differentiated (a template parameter requires a gradient), with replicas on Burn
    /// servers (feature `remote`).
    ///
    /// Its backward pass would move gradients with Burn's own transfers between servers, several
    /// from one server at once, which Burn 0.21's remote client mixes up.
    #[error(
        "a differentiable forward over remote device {device} is not supported with Burn 0.21: \
         its backward pass would start several transfers from one server at once, which Burn \
         0.21's remote client mixes up. Train with `try_train_step` or Burn's Learner (their \
         gradients move through this process), and call `forward` on `.valid()` for inference"
    )]
    DifferentiableRemoteForward {
        /// The first remote device, as its `Debug` form.
        device: String,
    },

    /// A split was asked for that cannot be made (see
    /// [`DataParallel::with_split`](crate::DataParallel::with_split)).
    #[error("invalid split: {reason}")]
    InvalidSplit {
        /// What is wrong with it.
        reason: String,
    },

    /// The operating system refused to start the replicas' worker threads.
    #[error("could not start the {threads} worker threads of the replicas: {message}")]
    ThreadSpawn {
        /// How many threads were asked for: one per device.
        threads: usize,
        /// The operating system's error.
        message: String,
    },

    /// The replicas' outputs cannot be merged into one.
    #[error("cannot merge the replicas' outputs: {reason}")]
    Gather {
        /// Which part disagreed, and how.
        reason: String,
    },
}

impl DataParallelError {
    /// Whether this failure of a replica costs it its device for good (a lost server, a
    /// replica past the step deadline), rather than only the rows it was running.
    #[cfg_attr(
        not(feature = "train"),
        expect(dead_code, reason = "asked by the training and inference steps only")
    )]
    pub(crate) fn loses_the_device(&self) -> bool {
        matches!(self, Self::DeviceLost { .. } | Self::Stalled { .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataParallelError> = core::result::Result<T, E>;

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn core::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "the panic carried no message".to_string()
    }
}
