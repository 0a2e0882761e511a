//! Burn's `Learner` (feature `train`): [`TrainStep`] and [`InferenceStep`] for
//! [`DataParallel`], for every inner model that implements them.
//!
//! Rust's orphan rule keeps users from writing these impls for `DataParallel<B, TheirModel<B>>`,
//! so they are blanket impls here, bounded on this crate's [`Scatter`] and [`Gather`] for the
//! inner model's input and output types.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use std::sync::Arc;

use crate::data_parallel::DataParallel;
use crate::error::Result;
use crate::gather::Gather;
use crate::gradients::{sum_gradients, weighted_on_host};
use crate::kind::Kind;
use crate::replicate::{Replicate, replicate};
use crate::run::{Job, Timing, run_replicas, run_watched};
use crate::scatter::{Scatter, ScatterContext};
use crate::state::{collect_state, write_state};
use crate::traffic::Direction;
use crate::transfer::Destination;

impl<B, M> TrainStep for DataParallel<B, M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + TrainStep + 'static,
    M::Input: Scatter<B>,
    M::Output: Gather<B>,
{
    type Input = M::Input;
    type Output = M::Output;

    /// [`try_train_step`](DataParallel::try_train_step), for the `Learner`.
    ///
    /// # Panics
    ///
    /// `TrainStep` allows no `Result`: every error of `try_train_step` becomes a panic with its
    /// message, after every replica has joined, with the template unchanged.
    fn step(&self, input: Self::Input) -> TrainOutput<Self::Output> {
        self.try_train_step(input)
            .unwrap_or_else(|error| panic!("DataParallel training step failed: {error}"))
    }
}

impl<B, M> DataParallel<B, M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + TrainStep + 'static,
    M::Input: Scatter<B>,
    M::Output: Gather<B>,
{
    /// One training step over every device: the inner model's own
    /// [`TrainStep::step`], forward and backward, runs on each shard in parallel.
    ///
    /// 1. The batch is split along dim 0 ([`SplitPlan`](crate::SplitPlan)).
    /// 2. Each replica is forked from the template on its worker thread (`fork`: its own
    ///    autodiff leaves, with the template's parameter ids) and owns its running state.
    /// 3. Each worker runs the inner model's `step` on its shard, weights the gradients
    ///    (`n_i/n` for [`Reduction::Mean`](crate::Reduction::Mean), 1 for
    ///    [`Reduction::Sum`](crate::Reduction::Sum)) and moves them to the host.
    /// 4. The host adds them in device order: `Σ w_i · g_i`. For a mean-reduced loss, this is
    ///    the gradient of the full batch.
    /// 5. The items are merged with [`Gather`] (losses as the same weighted mean or sum).
    /// 6. State updated in forward (BatchNorm's running statistics) becomes the shard-weighted
    ///    mean `Σ n_i/n · s_i` of the replicas' updated state, stored in the template on the
    ///    host. For BatchNorm's running mean this is exactly the single-device value; the
    ///    running variance is the mean of the shards' variances, which leaves out the spread
    ///    between shard means.
    ///
    /// The optimizer step that follows (`Learner`'s, or the caller's) updates the template.
    ///
    /// # Errors
    ///
    /// The input errors of [`try_forward`](Self::try_forward),
    /// [`ReplicaPanicked`](crate::DataParallelError::ReplicaPanicked) when a replica's step
    /// panics, and [`Gather`](crate::DataParallelError::Gather) when items cannot be merged.
    /// With replicas on Burn servers (feature `remote`),
    /// [`DeviceLost`](crate::DataParallelError::DeviceLost) when a server is lost, before the
    /// step or during it (see `docs/scale-out.md` for what a loss during a step leaves behind).
    /// On error, the template (weights and running state) is unchanged.
    pub fn try_train_step(&self, input: M::Input) -> Result<TrainOutput<M::Output>> {
        let plan = self.plan(&input)?;
        let shares = plan.weights();
        let weights = self.reduction.gradient_weights(shares.clone());
        // `valid()` gives each replica running state of its own (clones would share the
        // template's). The rest happens on each replica's worker, in parallel: `fork` makes
        // fresh leaves on the replica's device, and the gradients come back weighted.
        let jobs: Vec<_> = self
            .jobs(&plan, &input, ScatterContext::replica, |template, to| {
                (M::from_inner(template.valid()), to.kind())
            })
            .into_iter()
            .zip(weights)
            .map(|(job, weight)| {
                let (replica, kind) = job.replica;
                Job {
                    replica: (replica, kind, weight),
                    shard: job.shard,
                    device: job.device,
                    rows: job.rows,
                }
            })
            .collect();
        // Owned, so that the work can outlive this call on a watched thread.
        let (host, host_kind, traffic) =
            (self.host.clone(), self.kinds.host(), self.traffic.clone());
        let work = move |(replica, kind, weight): (M, Kind<B>, f64),
                         shard: M::Input,
                         device: &B::Device| {
            let to = Destination::new(device, kind, Direction::ToReplica);
            let replica = replicate(replica, to, Replicate::Forked);
            let output = replica.step(shard);
            let to_host = Destination::new(&host, host_kind, Direction::ToHost).counted(&traffic);
            let grads = weighted_on_host(&replica, output.grads, weight, to_host);
            (grads, output.item, collect_state(&replica))
        };
        // Replicas on devices that can be lost run on threads that survive the loss.
        let results = if self.kinds.watched() {
            run_watched(jobs, &self.kinds, &self.host, Arc::new(work))?
        } else {
            run_replicas(&self.workers, jobs, &work, Timing::Record)?
        };

        let mut grads = Vec::with_capacity(results.len());
        let mut items = Vec::with_capacity(results.len());
        let mut states = Vec::with_capacity(results.len());
        for (replica_grads, item, state) in results {
            grads.push(replica_grads);
            items.push(item);
            states.push(state);
        }
        let item = M::Output::gather(items, &self.gather_context(&plan))?;
        let grads = sum_gradients(&self.template, grads);
        write_state(&self.template, states, &shares, self.to_host());
        Ok(TrainOutput { grads, item })
    }
}

impl<B, M> InferenceStep for DataParallel<B, M>
where
    B: Backend,
    M: burn::module::Module<B> + InferenceStep,
    M::Input: Scatter<B>,
    M::Output: Gather<B>,
{
    type Input = M::Input;
    type Output = M::Output;

    /// Runs the inner model's [`InferenceStep::step`] on every device through
    /// [`forward`](DataParallel::forward), and merges the outputs on the host.
    ///
    /// # Panics
    ///
    /// `InferenceStep` allows no `Result`: errors of [`try_forward`](DataParallel::try_forward)
    /// become a panic with their message.
    fn step(&self, input: Self::Input) -> Self::Output {
        self.try_forward(input, |replica, shard| replica.step(shard))
            .unwrap_or_else(|error| panic!("DataParallel inference step failed: {error}"))
    }
}
