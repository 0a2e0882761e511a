//! [`DataParallel`]: the template, its devices, and the Keras-style forward.

use core::time::Duration;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::balance::Split;
use crate::device::{check_devices, template_device};
use crate::error::{DataParallelError, Result};
use crate::failure::FailurePolicy;
use crate::gather::{Gather, GatherContext};
use crate::gradients::ReduceOn;
use crate::graph::join_graphs;
use crate::kind::DeviceKinds;
use crate::normaliser::declared_weights;
use crate::reduce::Reduction;
use crate::replicate::{Replicate, module_bytes, replicate};
use crate::run::{Job, Timing, Workers, run_replicas, with_ranks};
use crate::scatter::{Scatter, ScatterContext, batch_size};
use crate::split::SplitPlan;
use crate::state::{collect_state, settle_shared_state, write_state};
use crate::sync::group::{self as sync_group, Mode, SyncGroup};
use crate::timings::StepTimings;
use crate::traffic::{Direction, Traffic, TrafficCounter};
use crate::transfer::Destination;

/// A module replicated over several devices: each batch is split along dim 0, every replica
/// runs on its shard in its own thread, and the outputs are merged back into one batch on the
/// host.
///
/// The weights live in one *template* module on the host device (the device the model was
/// built on). The template is the only module Burn sees: visitors, optimizers and recorders
/// reach its parameters and nothing else, and the record of a `DataParallel` is the template's
/// own record, so files load into the bare model and back. Replicas are made from the template
/// for every call and never outlive it.
///
/// Two ways to run it:
///
/// - [`forward`](Self::forward), Keras's `multi_gpu_model`: replicas are linked to the template
///   in the autodiff graph, so a loss computed on the merged output and one `backward()` give
///   the template the exact full-batch gradient.
/// - Burn's `Learner` (feature `train`): `DataParallel` implements `TrainStep` and
///   `InferenceStep` for any model that does, and runs the backward passes in parallel too.
///
/// # Examples
///
/// ```
/// use burn::backend::{Autodiff, NdArray, ndarray::NdArrayDevice};
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::Tensor;
/// use burn_data_parallel::DataParallel;
///
/// type B = Autodiff<NdArray>;
/// let host = NdArrayDevice::Cpu;
/// let model: Linear<B> = LinearConfig::new(4, 2).init(&host);
///
/// // Two replicas on the CPU: NdArray devices may repeat.
/// let dp = DataParallel::new(model, vec![host, host]).unwrap();
///
/// let x = Tensor::<B, 2>::ones([5, 4], &host);
/// let y = dp.forward(x, |model, shard| model.forward(shard));
/// assert_eq!(y.dims(), [5, 2]);
///
/// let grads = y.sum().backward();
/// assert!(dp.template().weight.grad(&grads).is_some());
/// ```
#[derive(Debug, Clone)]
pub struct DataParallel<B: Backend, M> {
    pub(crate) template: M,
    pub(crate) devices: Vec<B::Device>,
    pub(crate) host: B::Device,
    /// The kind of the host and of each replica device, chosen once here.
    pub(crate) kinds: DeviceKinds<B>,
    pub(crate) reduction: Reduction,
    pub(crate) split: Split,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) step_deadline: Option<Duration>,
    /// Whether a training step waits for its devices' queues at the end of each timed phase.
    pub(crate) synced_phases: bool,
    pub(crate) traffic: Arc<TrafficCounter>,
    pub(crate) workers: Arc<Workers>,
}

impl<B: Backend, M: Module<B>> DataParallel<B, M> {
    /// Wraps `template`, to be replicated on each of `devices` (repeats allowed).
    ///
    /// The template stays on the device it was built on, which becomes the host: outputs are
    /// merged there and gradients meet there. A template without parameters takes the first
    /// device as its host. The template's parameters are initialised here, before any replica
    /// is made: Burn initialises clones of a fresh module independently.
    ///
    /// # Errors
    ///
    /// [`NoDevices`](crate::DataParallelError::NoDevices) for an empty list,
    /// [`DeviceUnavailable`](crate::DataParallelError::DeviceUnavailable) for a device this
    /// machine does not have, and
    /// [`TemplateSpansDevices`](crate::DataParallelError::TemplateSpansDevices) when the
    /// template's parameters are not all on one device.
    pub fn new(template: M, devices: Vec<B::Device>) -> Result<Self> {
        check_devices::<B>(&devices)?;
        // `devices()` visits every parameter, which initialises the lazy ones.
        let host = template_device::<B, M>(&template)?.unwrap_or_else(|| devices[0].clone());
        let workers = Arc::new(Workers::new(devices.len()));
        let kinds = DeviceKinds::of(&host, &devices);
        Ok(Self {
            template,
            devices,
            host,
            kinds,
            reduction: Reduction::default(),
            split: Split::default(),
            failure_policy: FailurePolicy::default(),
            step_deadline: None,
            synced_phases: false,
            traffic: Arc::default(),
            workers,
        })
    }

    /// Moves the template to `host` (with `fork`, so its parameters stay trainable leaves).
    #[must_use]
    pub fn with_host(self, host: B::Device) -> Self {
        let kinds = self.kinds.with_host(&host);
        let to = Destination::new(&host, kinds.host(), Direction::ToReplica);
        let template = replicate(self.template, to, Replicate::Forked);
        Self {
            template,
            host,
            kinds,
            ..self
        }
    }

    /// Sets how the inner model reduces its loss over a batch (default [`Reduction::Mean`]).
    ///
    /// It decides how the per-replica training path weights gradients and merges losses; the
    /// Keras-style [`forward`](Self::forward) computes the loss on the merged output and does
    /// not need it.
    #[must_use]
    pub fn with_reduction(self, reduction: Reduction) -> Self {
        Self { reduction, ..self }
    }

    /// Sets how batches are shared among the replicas (default [`Split::Even`]).
    ///
    /// [`Split::Weighted`] gives rows in proportion to fixed weights, one per device;
    /// [`Split::Balanced`] measures each replica's time per row and gives faster devices more.
    /// Either way the results are the even split's: shards are weighted by their share of the
    /// batch.
    ///
    /// ```
    /// use burn::backend::{Autodiff, NdArray, ndarray::NdArrayDevice};
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn_data_parallel::{DataParallel, Split};
    ///
    /// type B = Autodiff<NdArray>;
    /// let host = NdArrayDevice::Cpu;
    /// let model: Linear<B> = LinearConfig::new(4, 2).init(&host);
    /// let dp = DataParallel::new(model, vec![host; 2])
    ///     .unwrap()
    ///     .with_split(Split::Weighted(vec![3.0, 1.0]))
    ///     .unwrap();
    /// assert_eq!(dp.split_plan(8).unwrap().shards(), &[0..6, 6..8]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidSplit`](crate::DataParallelError::InvalidSplit) when the weights are not one
    /// finite number above zero per device.
    pub fn with_split(self, split: Split) -> Result<Self> {
        split.check(self.devices.len())?;
        Ok(Self { split, ..self })
    }

    /// How batches are shared among the replicas; see [`with_split`](Self::with_split).
    pub fn split(&self) -> &Split {
        &self.split
    }

    /// Sets what a training step does when a replica fails (default [`FailurePolicy::Fail`]).
    ///
    /// With [`FailurePolicy::Redistribute`], the rows of a replica that panicked, lost its
    /// device or missed the [step deadline](Self::with_step_deadline) are run again by the
    /// replicas that finished, and the step completes with the full batch's gradient. It
    /// applies to [`try_train_step`](Self::try_train_step) (and so to Burn's `Learner`). On
    /// every path, a device found lost before a call starts is left out of it and of later
    /// calls; a replica that fails during a Keras-style call ([`forward`](Self::forward),
    /// [`forward_parallel`](Self::forward_parallel), inference) fails that call, as under
    /// `Fail`.
    ///
    /// ```
    /// use burn::backend::{Autodiff, NdArray, ndarray::NdArrayDevice};
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn_data_parallel::{DataParallel, FailurePolicy};
    ///
    /// type B = Autodiff<NdArray>;
    /// let host = NdArrayDevice::Cpu;
    /// let model: Linear<B> = LinearConfig::new(4, 2).init(&host);
    /// let dp = DataParallel::new(model, vec![host; 2])
    ///     .unwrap()
    ///     .with_failure_policy(FailurePolicy::Redistribute);
    /// assert_eq!(dp.failure_policy(), FailurePolicy::Redistribute);
    /// assert!(dp.lost_devices().is_empty());
    /// ```
    #[must_use]
    pub fn with_failure_policy(self, failure_policy: FailurePolicy) -> Self {
        Self {
            failure_policy,
            ..self
        }
    }

    /// What a training step does when a replica fails; see
    /// [`with_failure_policy`](Self::with_failure_policy).
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    /// Sets how long the replicas of a training step may take, from the moment they start
    /// (default: no deadline).
    ///
    /// A replica still running when it passes fails the step with
    /// [`Stalled`](crate::DataParallelError::Stalled), naming its device, the phase it was in
    /// and its thread, with the template unchanged; under [`FailurePolicy::Redistribute`] its
    /// device counts as lost and its rows go to the others. A replica cannot be stopped from
    /// outside: its thread is left to finish on its own and what it returns is dropped.
    ///
    /// The replicas still run on the module's worker threads; the caller waits for them with a
    /// timeout instead of joining them. A stalled replica keeps its worker busy until it ends,
    /// and the other workers take the jobs it cannot.
    #[must_use]
    pub fn with_step_deadline(self, deadline: Duration) -> Self {
        Self {
            step_deadline: Some(deadline),
            ..self
        }
    }

    /// How long a training step's replicas may take; see
    /// [`with_step_deadline`](Self::with_step_deadline).
    pub fn step_deadline(&self) -> Option<Duration> {
        self.step_deadline
    }

    /// The devices this module (or a clone) lost under [`FailurePolicy::Redistribute`], in the
    /// order they were lost: they take no part in later calls.
    pub fn lost_devices(&self) -> Vec<B::Device> {
        self.workers
            .lost
            .get()
            .into_iter()
            .map(|index| self.devices[index].clone())
            .collect()
    }

    /// The rows each replica would get of a batch of `batch_size` rows in the next call.
    ///
    /// Devices lost under [`FailurePolicy::Redistribute`] get no rows: the batch is split over
    /// the others (evenly when the split is [`Split::Balanced`], whose measurements are per
    /// device).
    ///
    /// # Errors
    ///
    /// [`EmptyBatch`](crate::DataParallelError::EmptyBatch) when `batch_size` is 0.
    pub fn split_plan(&self, batch_size: usize) -> Result<SplitPlan> {
        let live = self.workers.lost.live(self.devices.len());
        if live.len() == self.devices.len() {
            return self
                .split
                .plan(batch_size, self.devices.len(), &self.workers.speeds);
        }
        let plan = match &self.split {
            Split::Weighted(weights) => {
                let weights: Vec<f64> = live.iter().map(|&index| weights[index]).collect();
                SplitPlan::weighted(batch_size, &weights)?
            }
            Split::Even | Split::Balanced => SplitPlan::new(batch_size, live.len())?,
        };
        Ok(plan.on_devices(&live))
    }

    /// Each replica's measured time per row, in seconds, in device order: a running estimate
    /// over recent calls, `None` for a replica that has not run yet. [`Split::Balanced`] plans
    /// with it.
    pub fn replica_seconds_per_row(&self) -> Vec<Option<f64>> {
        let mut estimates = self.workers.speeds.seconds_per_row();
        estimates.resize(self.devices.len(), None);
        estimates
    }

    /// The template: the module that holds the weights.
    pub fn template(&self) -> &M {
        &self.template
    }

    /// The devices replicas run on, in order.
    ///
    /// Not to be confused with [`Module::devices`], which, as for any module, lists where the
    /// parameters are: the template's host.
    pub fn replica_devices(&self) -> &[B::Device] {
        &self.devices
    }

    /// The device the template lives on and outputs are merged on.
    pub fn host(&self) -> &B::Device {
        &self.host
    }

    /// How the inner model's loss is reduced; see [`with_reduction`](Self::with_reduction).
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// Bytes this module (and its clones, including the one `valid()` returns) moved between
    /// the host and the replicas so far; see [`Traffic`].
    pub fn traffic(&self) -> Traffic {
        self.traffic.read()
    }

    /// Where the time of the last per-replica training step of this module (or of a clone)
    /// went, phase by phase; `None` before the first. See [`StepTimings`].
    ///
    /// Steps are timed by the per-replica path (feature `train`); the Keras-style paths are
    /// not.
    pub fn last_step_timings(&self) -> Option<StepTimings> {
        self.workers.last_step.get()
    }

    /// Makes a training step wait for its devices' queues at the end of each timed phase
    /// (default: it does not): each replica waits for its device after its set-up and its
    /// compute, and for the host after moving its gradients home; the host is waited for after
    /// the gather and, on every worker, after the reduction. On a backend that queues its work
    /// (CUDA), [`last_step_timings`](Self::last_step_timings) then gives each phase the time of
    /// its work rather than the time to issue it (the state merge, a few small tensors, is not
    /// waited for).
    ///
    /// A measuring aid: the waits cost the overlap of one phase's last kernels with the next
    /// phase's first, and results are the same with or without them. On CPU backends
    /// (NdArray, Flex), whose operations finish before they return, it changes nothing.
    ///
    /// ```
    /// use burn::backend::{Autodiff, NdArray};
    /// use burn::backend::ndarray::NdArrayDevice;
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn_data_parallel::DataParallel;
    ///
    /// type B = Autodiff<NdArray>;
    /// let device = NdArrayDevice::Cpu;
    /// let model: Linear<B> = LinearConfig::new(4, 2).init(&device);
    /// let dp = DataParallel::new(model, vec![device, device])
    ///     .unwrap()
    ///     .with_synced_phases(true);
    /// assert!(dp.synced_phases());
    /// ```
    #[must_use]
    pub fn with_synced_phases(self, synced: bool) -> Self {
        Self {
            synced_phases: synced,
            ..self
        }
    }

    /// Whether a training step waits for its devices at the end of each timed phase; see
    /// [`with_synced_phases`](Self::with_synced_phases).
    pub fn synced_phases(&self) -> bool {
        self.synced_phases
    }

    /// Unwraps the template.
    pub fn into_inner(self) -> M {
        self.template
    }

    /// Splits `input` along dim 0, runs `forward` on every replica with its shard, each in its
    /// own thread, and merges the outputs on the host.
    ///
    /// Replicas are made from the template with `to_device`, so on an autodiff backend the
    /// merged output is linked to the template's parameters: a loss computed from it and one
    /// `backward()` give each parameter its full-batch gradient, summed over the replicas by
    /// Burn. The replicas' threads only run forward and are joined before this returns; the
    /// backward pass runs on the caller's thread.
    ///
    /// # Notes
    ///
    /// State a module updates during its forward pass (BatchNorm's running statistics) is shared
    /// by the replicas with the template, as Burn shares it between clones: after the call it is
    /// the mean of the replicas' updates, and it is back on the host. When a replica panics it
    /// is restored to its value before the call.
    ///
    /// # Panics
    ///
    /// With the message of the [`DataParallelError`](crate::DataParallelError) that
    /// [`try_forward`](Self::try_forward) would return.
    pub fn forward<I, O, F>(&self, input: I, forward: F) -> O
    where
        I: Scatter<B> + Send,
        O: Gather<B> + Send,
        F: Fn(&M, I) -> O + Sync,
    {
        self.try_forward(input, forward)
            .unwrap_or_else(|error| panic!("DataParallel::forward failed: {error}"))
    }

    /// [`forward`](Self::forward), returning errors instead of panicking.
    ///
    /// # Errors
    ///
    /// [`EmptyBatch`](crate::DataParallelError::EmptyBatch),
    /// [`BatchSizeMismatch`](crate::DataParallelError::BatchSizeMismatch) and
    /// [`NothingToSplit`](crate::DataParallelError::NothingToSplit) for an input that cannot be
    /// split, [`ReplicaPanicked`](crate::DataParallelError::ReplicaPanicked) when `forward`
    /// panics on a replica (every replica is joined first and the template is unchanged), and
    /// [`Gather`](crate::DataParallelError::Gather) when the outputs cannot be merged.
    ///
    /// With replicas on Burn servers (feature `remote`):
    /// [`DeviceLost`](crate::DataParallelError::DeviceLost) when a server no longer answers,
    /// checked before anything moves, and
    /// [`DifferentiableRemoteForward`](crate::DataParallelError::DifferentiableRemoteForward)
    /// when the output could be differentiated: on remote devices, this path is for inference
    /// (call it on `.valid()`), and training goes through `try_train_step`.
    pub fn try_forward<I, O, F>(&self, input: I, forward: F) -> Result<O>
    where
        I: Scatter<B> + Send,
        O: Gather<B> + Send,
        F: Fn(&M, I) -> O + Sync,
    {
        self.kinds
            .check_differentiable_forward(&self.template, &self.devices)?;
        let plan = self.plan(&input)?;
        // Replicas share the template's running state; keep its value to restore on failure.
        let state_before = collect_state(&self.template);
        let jobs = self.jobs(&plan, &input, ScatterContext::replica, |template, to| {
            replicate(template.clone(), to.without_count(), Replicate::Linked)
        });
        join_graphs(&jobs, self.to_host());
        // Layers that share statistics (SyncBatchNorm) meet in `group`; the replicas are one
        // graph, differentiated once on this thread.
        let group = SyncGroup::new(plan.len());
        let jobs = with_ranks(jobs);
        let run = |(replica, rank): (M, usize), shard, _: &B::Device| {
            let _member = sync_group::join(&group, rank, Mode::Linked, true);
            forward(&replica, shard)
        };
        let outputs = run_replicas(&self.workers, jobs, &run, Timing::Record);
        settle_shared_state(&self.template, self.to_host());
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(error) => {
                group.abort(&error.to_string());
                write_state(&self.template, vec![state_before], &[1.0], self.to_host());
                return Err(error);
            }
        };
        O::gather(outputs, &self.gather_context(&plan, &input))
    }

    /// How `input` is split over this module's devices.
    ///
    /// The host and the replica devices this plan uses are checked first: one that can no
    /// longer be reached (a lost server) is an error here, before any tensor moves, since
    /// moving a tensor to a lost server panics on the caller's thread.
    ///
    /// Under [`FailurePolicy::Redistribute`], a replica device found lost here is left out,
    /// from this call on, while another remains.
    pub(crate) fn plan<I: Scatter<B>>(&self, input: &I) -> Result<SplitPlan> {
        let rows = batch_size(input)?;
        loop {
            let plan = self.split_plan(rows)?;
            let used: Vec<usize> = (0..plan.len()).map(|shard| plan.device(shard)).collect();
            match self.kinds.check_reachable(&self.host, &self.devices, &used) {
                Ok(()) => return Ok(plan),
                // A lost replica device leaves the plan while another remains, and the plan
                // is made again without it.
                Err((Some(index), error))
                    if self.failure_policy == FailurePolicy::Redistribute
                        && self.workers.lost.live(self.devices.len()).len() > 1 =>
                {
                    self.leave_out(index, &error);
                }
                Err((_, error)) => return Err(error),
            }
        }
    }

    /// Leaves replica device `index` out of every later call, for `why`
    /// ([`FailurePolicy::Redistribute`]), and says so in a `log` warning.
    pub(crate) fn leave_out(&self, index: usize, why: &DataParallelError) {
        self.workers.lost.record(index);
        log::warn!(
            "DataParallel: device {:?} is left out from now on: {why}",
            self.devices[index]
        );
    }

    /// One job per shard of `plan`: the shard of `input`, cut in the context `context` makes
    /// of the replica's destination, and what `make_replica` makes of the template for that
    /// destination. Counts the template's bytes as sent to every replica off the host.
    pub(crate) fn jobs<'a, I, R>(
        &'a self,
        plan: &SplitPlan,
        input: &I,
        context: impl Fn(Destination<'a, B>) -> ScatterContext<'a, B>,
        make_replica: impl Fn(&M, Destination<'a, B>) -> R,
    ) -> Vec<Job<'a, R, I, B::Device>>
    where
        I: Scatter<B>,
    {
        let mut template_bytes = None;
        plan.shards()
            .iter()
            .enumerate()
            .map(|(shard, rows)| {
                let index = plan.device(shard);
                let device = &self.devices[index];
                let to = self.to_replica(index);
                if *device != self.host {
                    let bytes = *template_bytes.get_or_insert_with(|| module_bytes(&self.template));
                    self.traffic.add(Direction::ToReplica, bytes);
                }
                Job {
                    index,
                    shard: input.shard(rows.clone(), &context(to)),
                    replica: make_replica(&self.template, to),
                    device,
                    rows: rows.clone(),
                }
            })
            .collect()
    }

    /// Moves to replica `index`'s device, counted in this module's traffic.
    pub(crate) fn to_replica(&self, index: usize) -> Destination<'_, B> {
        Destination::new(
            &self.devices[index],
            self.kinds.replica(index),
            Direction::ToReplica,
        )
        .counted(&self.traffic)
    }

    /// Moves to the host, counted in this module's traffic.
    pub(crate) fn to_host(&self) -> Destination<'_, B> {
        Destination::new(&self.host, self.kinds.host(), Direction::ToHost).counted(&self.traffic)
    }

    /// Where the replicas' gradients are added: on the workers, unless the host's tensors
    /// must stay on the caller's thread.
    pub(crate) fn reduce_on(&self) -> ReduceOn<'_> {
        if self.kinds.host_works_from_any_thread() {
            ReduceOn::Workers(&self.workers)
        } else {
            ReduceOn::Caller
        }
    }

    /// Where and how outputs of a call on `input` split by `plan` are merged: losses weighted
    /// by the counts a declared normaliser gives, when the input has one.
    pub(crate) fn gather_context<'a, I: Scatter<B>>(
        &'a self,
        plan: &'a SplitPlan,
        input: &I,
    ) -> GatherContext<'a, B> {
        let context = GatherContext::to(self.to_host(), plan, self.reduction);
        match declared_weights(plan, input) {
            Some(weights) => context.with_loss_weights(weights),
            None => context,
        }
    }
}
