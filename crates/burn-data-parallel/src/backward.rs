//! The Keras-style path whose backward runs on the replicas:
//! [`DataParallel::forward_parallel`] and [`ParallelBackward`].
//!
//! Keras's `multi_gpu_model` computes the loss on the merged output; so does this path. Each
//! replica is forked from the template (its own autodiff leaves and running state, as on the
//! per-replica path) and runs forward on its worker. The outputs are merged on the host from
//! detached copies, as fresh leaves (see `cut.rs`), so the user's loss and its backward pass
//! on the host stop at the merged output. [`ParallelBackward::backward`] then hands each
//! replica its slice of the merged output's gradient, and each worker runs its replica's
//! backward pass in parallel; the replicas' gradients are added on the workers, along a fixed tree over device order.

use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::cut::{Cut, CutSplit, Cuts};
use crate::data_parallel::DataParallel;
use crate::error::Result;
use crate::gather::Gather;
use crate::gradients::{sum_gradients, weighted_on_host};
use crate::replicate::{Replicate, replicate};
use crate::run::{Job, Timing, run_replicas, with_ranks};
use crate::scatter::{Scatter, ScatterContext};
use crate::split::SplitPlan;
use crate::state::{collect_state, write_state};
use crate::sync::cross_replica;
use crate::sync::group::{self as sync_group, Mode, SyncGroup};

/// What [`DataParallel::forward_parallel`] leaves for the backward pass: each replica with the
/// parts of its output that the merged output was cut from.
///
/// Call [`backward`](Self::backward) (or [`try_backward`](Self::try_backward)) with the loss
/// computed from the merged output; it returns the template's gradients.
#[must_use = "the replicas' backward passes run only when `backward` is called"]
pub struct ParallelBackward<B: AutodiffBackend, M> {
    replicas: Vec<M>,
    cuts: Vec<Cut<B>>,
    plan: SplitPlan,
    /// Where the replicas' shared layers meet again in their backward passes.
    group: Arc<SyncGroup>,
    /// The module the forward ran on: its template receives the gradients, its workers run
    /// the backward passes, its traffic counts the moves.
    parallel: DataParallel<B, M>,
}

impl<B: AutodiffBackend, M> core::fmt::Debug for ParallelBackward<B, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ParallelBackward")
            .field("devices", &&self.parallel.devices[..self.plan.len()])
            .field("merged_tensors", &self.cuts.len())
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl<B, M> DataParallel<B, M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + 'static,
{
    /// Keras-style training with a parallel backward: splits `input` along dim 0, runs
    /// `forward` on every replica in parallel, and merges the outputs on the host, as
    /// [`forward`](Self::forward) does; but the merged output's float tensors are fresh
    /// leaves, so the loss's backward on the host stops there, and
    /// [`ParallelBackward::backward`] runs each replica's backward on its own worker thread.
    ///
    /// ```
    /// use burn::backend::{Autodiff, NdArray, ndarray::NdArrayDevice};
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn::optim::{AdamConfig, Optimizer};
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_data_parallel::DataParallel;
    ///
    /// type B = Autodiff<NdArray>;
    /// let host = NdArrayDevice::Cpu;
    /// let model: Linear<B> = LinearConfig::new(8, 1).init(&host);
    /// let dp = DataParallel::new(model, vec![host; 2]).unwrap();
    ///
    /// let x = Tensor::<B, 2>::random([10, 8], Distribution::Default, &host);
    /// let (y, pending) = dp.forward_parallel(x, |model, shard| model.forward(shard));
    /// let loss = y.powi_scalar(2).mean(); // on the merged output, as with Keras
    /// let grads = pending.backward(loss); // each replica's backward on its worker
    /// let dp = AdamConfig::new().init().step(1e-3, dp, grads);
    /// ```
    ///
    /// Every float tensor that the output's [`Gather`] merges through the
    /// [`GatherContext`](crate::GatherContext) (tensors, tuples, `Vec`, `Option`, arrays,
    /// [`Mean`](crate::Mean), [`Sum`](crate::Sum), burn-train's outputs and derived structs)
    /// carries its gradient back to the replicas. A field merged as `#[gather(first)]` is
    /// replica 0's value as it is, still in that replica's graph, and a `Gather` of your own
    /// that moves tensors with [`GatherContext::to_host`](crate::GatherContext::to_host) keeps
    /// them there too: the loss must not read such values (their gradient would be lost, and
    /// the host's backward pass would consume part of replica 0's graph). Likewise a
    /// [`Broadcast`](crate::Broadcast) input is given to the replicas as it is: it must not
    /// require a gradient.
    ///
    /// The loss may also read tensors of the host's own graph, such as a penalty on the
    /// template's parameters: their gradients are added to the replicas'.
    ///
    /// The input's shards are detached from its autodiff graph: the replicas' backward passes
    /// run on their own threads and stop at their shards, so an input that requires a
    /// gradient gets none. Use [`forward`](Self::forward), whose one backward pass reaches
    /// tracked inputs, when an input's gradient is wanted.
    ///
    /// State updated in forward (BatchNorm's running statistics) becomes the shard-weighted
    /// mean of the replicas' updates, summed in device order and stored in the template, as
    /// on the per-replica path.
    ///
    /// # Panics
    ///
    /// With the message of the error [`try_forward_parallel`](Self::try_forward_parallel)
    /// would return.
    pub fn forward_parallel<I, O, F>(&self, input: I, forward: F) -> (O, ParallelBackward<B, M>)
    where
        I: Scatter<B> + Send,
        O: Gather<B> + Send,
        F: Fn(&M, I) -> O + Sync,
    {
        self.try_forward_parallel(input, forward)
            .unwrap_or_else(|error| panic!("DataParallel::forward_parallel failed: {error}"))
    }

    /// [`forward_parallel`](Self::forward_parallel), returning errors instead of panicking.
    ///
    /// # Errors
    ///
    /// The input errors of [`try_forward`](Self::try_forward);
    /// [`ReplicaPanicked`](crate::DataParallelError::ReplicaPanicked) when
    /// `forward` panics on a replica; [`Gather`](crate::DataParallelError::Gather) when the outputs
    /// cannot be merged. On error the template, running state included, is unchanged.
    pub fn try_forward_parallel<I, O, F>(
        &self,
        input: I,
        forward: F,
    ) -> Result<(O, ParallelBackward<B, M>)>
    where
        I: Scatter<B> + Send,
        O: Gather<B> + Send,
        F: Fn(&M, I) -> O + Sync,
    {
        let plan = self.plan(&input)?;
        // As on the per-replica path: running state of its own (`valid()`), fresh leaves made
        // on the worker (`fork`); shards detached from the input's graph.
        let context = |to| ScatterContext::replica(to).detaching();
        let jobs = self.jobs(&plan, &input, context, |template, to| {
            (M::from_inner(template.valid()), to.without_count())
        });
        // Layers that share statistics (SyncBatchNorm) meet in `group`, in the forward pass
        // here and in the backward passes on the replicas' workers. The replicas' gradients
        // come from the loss on the merged output: each in units of the whole loss, weight 1.
        let group = SyncGroup::new(plan.len());
        let reducer = cross_replica::reducer::<B>();
        let work = |((replica, to), rank), shard: I, _: &B::Device| {
            let mode = Mode::Separate {
                weight: 1.0,
                reducer: reducer.clone(),
            };
            let _member = sync_group::join(&group, rank, mode, false);
            let replica = replicate(replica, to, Replicate::Forked);
            let output = forward(&replica, shard);
            (replica, output)
        };
        let results = run_replicas(&self.workers, with_ranks(jobs), &work, Timing::Record)
            .inspect_err(|error| group.abort(&error.to_string()))?;
        let (replicas, outputs): (Vec<M>, Vec<O>) = results.into_iter().unzip();

        let cuts = Cuts::<B>::default();
        let output = O::gather(outputs, &self.gather_context(&plan, &input).cutting(&cuts))?;
        let states = replicas.iter().map(collect_state).collect();
        write_state(&self.template, states, &plan.weights(), self.to_host());
        let pending = ParallelBackward {
            replicas,
            cuts: cuts.into_inner(),
            plan,
            group,
            parallel: self.clone(),
        };
        Ok((output, pending))
    }
}

impl<B, M> ParallelBackward<B, M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + 'static,
{
    /// Runs `loss`'s backward pass on the host, down to the merged output, then each replica's
    /// backward pass on its worker, in parallel, and returns the template's gradients: the
    /// replicas' gradients added along a fixed tree over device order.
    ///
    /// # Panics
    ///
    /// With the message of the error [`try_backward`](Self::try_backward) would return.
    pub fn backward<const D: usize>(self, loss: Tensor<B, D>) -> GradientsParams {
        self.try_backward(loss)
            .unwrap_or_else(|error| panic!("DataParallel backward pass failed: {error}"))
    }

    /// [`backward`](Self::backward), returning errors instead of panicking.
    ///
    /// # Errors
    ///
    /// [`ReplicaPanicked`](crate::DataParallelError::ReplicaPanicked) when a replica's backward pass
    /// panics; the template is unchanged (it only receives gradients).
    pub fn try_backward<const D: usize>(self, loss: Tensor<B, D>) -> Result<GradientsParams> {
        let parallel = &self.parallel;
        let host_grads = loss.backward();
        let replica_count = self.replicas.len();
        // Each replica's share of the loss: Σ over the merged tensors of (part · gradient).
        let mut terms: Vec<Vec<Tensor<B, 1>>> = (0..replica_count).map(|_| Vec::new()).collect();
        for cut in self.cuts {
            let Some(grad) = cut.leaf.grad(&host_grads) else {
                continue; // the loss does not read this merged tensor
            };
            let grad = Tensor::<B, 1>::from_inner(grad);
            let mut offset = 0;
            for (index, part) in cut.parts.into_iter().enumerate() {
                let len = part.dims()[0];
                if len == 0 {
                    continue; // nothing of this replica in this tensor (`narrow` refuses 0)
                }
                if let CutSplit::Scaled(weights) = &cut.split
                    && weights[index] == 0.0
                {
                    // Left out of the merge (a shard with nothing its loss averages over,
                    // whose loss is 0/0): nothing of the loss flows back to it.
                    offset += len;
                    continue;
                }
                let slice = match &cut.split {
                    CutSplit::Rows => grad.clone().narrow(0, offset, len),
                    CutSplit::Scaled(weights) if weights[index] == 1.0 => grad.clone(),
                    CutSplit::Scaled(weights) => grad.clone().mul_scalar(weights[index]),
                };
                offset += len;
                let slice = parallel.to_replica(self.plan.device(index)).move_to(slice);
                terms[index].push((part * slice).sum());
            }
        }
        let plan = &self.plan;
        let jobs = self
            .replicas
            .into_iter()
            .zip(terms)
            .zip(plan.shards())
            .enumerate()
            .map(|(shard, ((replica, terms), rows))| Job {
                index: plan.device(shard),
                replica: (replica, shard),
                shard: Terms(terms),
                device: &parallel.devices[plan.device(shard)],
                rows: rows.clone(),
            })
            .collect();
        // Gradients the loss gave the host's own graph (a penalty on the template's
        // parameters, say), before the replicas' in the sum.
        let mut parts = vec![GradientsParams::from_grads(host_grads, &parallel.template)];
        let to_host = parallel.to_host();
        let group = self.group;
        let work = |(replica, rank): (M, usize), Terms(terms): Terms<B>, _: &B::Device| {
            // Done with the group at the end: a replica whose output the loss does not read
            // releases those waiting for its gradient at a shared layer.
            let mode = Mode::Separate {
                weight: 1.0,
                reducer: None,
            };
            let _member = sync_group::join(&group, rank, mode, true);
            let Some(total) = terms.into_iter().reduce(Tensor::add) else {
                return GradientsParams::new();
            };
            let grads = GradientsParams::from_grads(total.backward(), &replica);
            weighted_on_host(&replica, grads, 1.0, to_host)
        };
        // Not timed for `Split::Balanced`: the forward passes were, and a replica whose
        // output the loss does not read would measure nothing here.
        parts.extend(
            run_replicas(&parallel.workers, jobs, &work, Timing::Skip)
                .inspect_err(|error| group.abort(&error.to_string()))?,
        );
        sum_gradients(&parallel.template, parts, parallel.reduce_on())
    }
}

/// One replica's terms of the vector-Jacobian product, sent to its worker.
struct Terms<B: AutodiffBackend>(Vec<Tensor<B, 1>>);
