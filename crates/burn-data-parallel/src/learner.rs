//! Burn's `Learner` (feature `train`): [`TrainStep`] and [`InferenceStep`] for
//! [`DataParallel`], for every inner model that implements them.
//!
//! Rust's orphan rule keeps users from writing these impls for `DataParallel<B, TheirModel<B>>`,
//! so they are blanket impls here, bounded on this crate's [`Scatter`] and [`Gather`] for the
//! inner model's input and output types.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::data_parallel::DataParallel;
use crate::error::Result;
use crate::gather::Gather;
use crate::gradients::reduce_gradients;
use crate::replica::run_replicas;
use crate::scatter::Scatter;
use crate::state::{collect_state, write_state};

impl<B, M> TrainStep for DataParallel<B, M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + TrainStep,
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
    M: AutodiffModule<B> + TrainStep,
    M::Input: Scatter<B>,
    M::Output: Gather<B>,
{
    /// One training step over every device: the inner model's own
    /// [`TrainStep::step`], forward and backward, runs on each shard in parallel.
    ///
    /// 1. The batch is split along dim 0 ([`SplitPlan`](crate::SplitPlan)).
    /// 2. Each replica is forked from the template (`fork`: its own autodiff leaves, with the
    ///    template's parameter ids) and owns its running state.
    /// 3. Each thread runs the inner model's `step` on its shard.
    /// 4. Gradients move to the host and are combined in device order: `Σ n_i/n · g_i` for
    ///    [`Reduction::Mean`](crate::Reduction::Mean), `Σ g_i` for
    ///    [`Reduction::Sum`](crate::Reduction::Sum). For a mean-reduced loss, this is the
    ///    gradient of the full batch.
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
    /// On error, the template (weights and running state) is unchanged.
    pub fn try_train_step(&self, input: M::Input) -> Result<TrainOutput<M::Output>> {
        let plan = self.plan(&input)?;
        // `valid()` gives each replica running state of its own (clones would share the
        // template's); `fork` then makes fresh leaves on the replica's device.
        let jobs = self.jobs(&plan, &input, |template, device| {
            M::from_inner(template.valid()).fork(device)
        });
        let results = run_replicas(jobs, &|replica: &M, shard| replica.step(shard))?;

        let mut grads = Vec::with_capacity(results.len());
        let mut items = Vec::with_capacity(results.len());
        let mut states = Vec::with_capacity(results.len());
        for (replica, output) in results {
            states.push(collect_state(&replica));
            grads.push(output.grads);
            items.push(output.item);
        }
        let item = M::Output::gather(items, &self.gather_context(&plan))?;
        let shares = plan.weights();
        let weights = self.reduction.gradient_weights(shares.clone());
        let grads = reduce_gradients(&self.template, grads, &weights, &self.host);
        write_state(&self.template, states, &shares, &self.host);
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
