//! [`SyncBatchNorm`]: Burn's `BatchNorm` with statistics over the whole batch across replicas.

use core::any::type_name;
use core::fmt;

use burn::module::{
    AutodiffModule, Content, Devices, HasAutodiffModule, Module, ModuleDisplay,
    ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::cross_replica::Reducer;
use super::group::{Key, Member, Mode, with_member};

/// Batch normalisation whose statistics cover the whole batch, across the replicas of a
/// [`DataParallel`](crate::DataParallel) call: a drop-in for `burn::nn::BatchNorm`.
///
/// Inside a call over several replicas, each training forward pass adds every replica's
/// per-channel sums (in device order, so every replica gets the same value) to normalise
/// with the batch's mean and biased variance, and the backward pass accounts for those
/// shared statistics: outputs, gradients and running statistics are the bare model's on one
/// device, within float rounding. Outside a call, with one replica, and in inference (on a
/// backend without autodiff, e.g. after `valid()`), it is exactly `BatchNorm`.
///
/// It is `BatchNorm` underneath: the same config, the same record (files load both ways), the
/// same running-statistics rule (momentum, biased variance).
///
/// # Examples
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::BatchNormConfig;
/// use burn::tensor::Tensor;
/// use burn_data_parallel::{DataParallel, SyncBatchNorm};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let norm = SyncBatchNorm::<B>::new(&BatchNormConfig::new(3), &device);
/// let x = Tensor::<B, 2>::random([8, 3], burn::tensor::Distribution::Default, &device);
/// // Outside DataParallel it is BatchNorm: the statistics of all 8 rows.
/// let expected = norm.forward(x.clone());
///
/// let dp = DataParallel::new(norm, vec![device, device]).unwrap();
/// let y = dp.forward(x, |norm, shard| norm.forward(shard)); // 4 rows on each replica
/// // Still the statistics of all 8 rows, not of each replica's 4.
/// let difference = (y - expected).abs().max().into_scalar();
/// assert!(difference < 1e-5);
/// ```
///
/// # Panics
///
/// Inside a per-replica training step (or `forward_parallel`) on a backend that is not
/// Burn's `Autodiff` over some backend, since the shared statistics need a backward pass of
/// their own there; and when a replica of the call fails before sharing its statistics (the
/// call then reports that replica's error).
#[derive(Debug, Clone)]
pub struct SyncBatchNorm<B: Backend> {
    inner: BatchNorm<B>,
}

impl<B: Backend> SyncBatchNorm<B> {
    /// A layer initialised as `config.init(device)` initialises a `BatchNorm`.
    pub fn new(config: &BatchNormConfig, device: &B::Device) -> Self {
        Self {
            inner: config.init(device),
        }
    }

    /// The `BatchNorm` underneath, with its weights and running statistics.
    pub fn into_batch_norm(self) -> BatchNorm<B> {
        self.inner
    }

    /// The `BatchNorm` underneath.
    pub fn batch_norm(&self) -> &BatchNorm<B> {
        &self.inner
    }

    /// Normalises `input` (`[batch, channels, ...]`), as `BatchNorm::forward` does, with the
    /// statistics of the whole batch across replicas (see the type's documentation).
    ///
    /// # Panics
    ///
    /// As `BatchNorm::forward`, when `input` has rank below 2; and as the type's
    /// documentation says.
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        if D < 2 || !B::ad_enabled(&input.device()) {
            return self.inner.forward(input);
        }
        with_member(|member| match member {
            Some(member) if member.group.size() > 1 => self.forward_synced(input, member),
            _ => self.inner.forward(input),
        })
    }

    /// The training forward pass with statistics summed over `member`'s group: the mean
    /// first, then the variance about it (two passes, as `BatchNorm` computes them).
    fn forward_synced<const D: usize>(
        &self,
        input: Tensor<B, D>,
        member: &mut Member,
    ) -> Tensor<B, D> {
        let dims = input.dims();
        let channels = dims[1];
        let count = input.shape().num_elements() / channels;
        let mut shape = [1; D];
        shape[1] = channels;
        let per_channel = |tensor: Tensor<B, D>| {
            tensor
                .swap_dims(0, 1)
                .reshape([channels, count])
                .sum_dim(1)
                .reshape([channels])
        };
        let (total, sum) = sum_over_replicas(per_channel(input.clone()), count as f64, member);
        let mean = sum.div_scalar(total);
        let centered = input.sub(mean.clone().reshape(shape));
        let (_, squares) =
            sum_over_replicas(per_channel(centered.clone().square()), count as f64, member);
        let var = squares.div_scalar(total);

        let norm = &self.inner;
        let device = centered.device();
        let momentum = norm.momentum;
        let running_mean = norm.running_mean.value_sync().to_device(&device);
        let running_var = norm.running_var.value_sync().to_device(&device);
        let running_mean = running_mean
            .mul_scalar(1.0 - momentum)
            .add(mean.detach().mul_scalar(momentum));
        let running_var = running_var
            .mul_scalar(1.0 - momentum)
            .add(var.clone().detach().mul_scalar(momentum));
        norm.running_mean.update(running_mean.detach());
        norm.running_var.update(running_var.detach());

        let std = var.reshape(shape).add_scalar(norm.epsilon).sqrt();
        centered
            .div(std)
            .mul(norm.gamma.val().reshape(shape))
            .add(norm.beta.val().reshape(shape))
    }
}

/// `Σ_i part_i` over the replicas of `member`'s group, with the total element count, as the
/// group's mode says: tracked moves and adds when the replicas share one graph, the
/// cross-replica operation when each differentiates its own.
fn sum_over_replicas<B: Backend>(
    part: Tensor<B, 1>,
    count: f64,
    member: &mut Member,
) -> (f64, Tensor<B, 1>) {
    match &member.mode {
        Mode::Linked => {
            let key = Key::Forward(member.next_forward());
            member.group.sum(key, member.rank, count, part)
        }
        Mode::Separate { weight, reducer } => {
            let weight = *weight;
            let reducer = reducer
                .as_ref()
                .and_then(|reducer| reducer.downcast_ref::<Reducer<B>>())
                .cloned()
                .unwrap_or_else(|| {
                    panic!(
                        "SyncBatchNorm: replicas that run their own backward pass need Burn's \
                         `Autodiff<_>` backend to share statistics, and this call's backend is \
                         `{}`; use `Autodiff<YourBackend>`, or BatchNorm",
                        type_name::<B>()
                    )
                });
            reducer(part, count, member, weight)
        }
    }
}

impl<B: Backend> Module<B> for SyncBatchNorm<B> {
    type Record = <BatchNorm<B> as Module<B>>::Record;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        self.inner.collect_devices(devices)
    }

    fn fork(self, device: &B::Device) -> Self {
        Self {
            inner: self.inner.fork(device),
        }
    }

    fn to_device(self, device: &B::Device) -> Self {
        Self {
            inner: self.inner.to_device(device),
        }
    }

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        self.inner.visit(visitor);
    }

    fn map<Mapper: ModuleMapper<B>>(self, mapper: &mut Mapper) -> Self {
        Self {
            inner: self.inner.map(mapper),
        }
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            inner: self.inner.load_record(record),
        }
    }

    fn into_record(self) -> Self::Record {
        self.inner.into_record()
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for SyncBatchNorm<B> {
    type InnerModule = SyncBatchNorm<B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        SyncBatchNorm {
            inner: self.inner.valid(),
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        Self {
            inner: BatchNorm::from_inner(module.inner),
        }
    }
}

impl<B: AutodiffBackend> HasAutodiffModule<B> for SyncBatchNorm<B::InnerBackend> {
    type TrainModule = SyncBatchNorm<B>;
}

impl<B: Backend> From<BatchNorm<B>> for SyncBatchNorm<B> {
    fn from(inner: BatchNorm<B>) -> Self {
        Self { inner }
    }
}

impl<B: Backend> ModuleDisplayDefault for SyncBatchNorm<B> {
    fn content(&self, content: Content) -> Option<Content> {
        let content = content.set_top_level_type("SyncBatchNorm");
        self.inner.content(content)
    }

    fn num_params(&self) -> usize {
        Module::num_params(&self.inner)
    }
}

impl<B: Backend> ModuleDisplay for SyncBatchNorm<B> {}

impl<B: Backend> fmt::Display for SyncBatchNorm<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.format(Default::default()))
    }
}
