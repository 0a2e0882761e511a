//! Burn's `Learner` (feature `train`): [`TrainStep`] and [`InferenceStep`] for
//! [`DataParallel`], for every inner model that implements them.
//!
//! Rust's orphan rule keeps users from writing these impls for `DataParallel<B, TheirModel<B>>`,
//! so they are blanket impls here, bounded on this crate's [`Scatter`] and [`Gather`] for the
//! inner model's input and output types.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use core::time::Duration;
use std::sync::Arc;
use std::time::Instant;

use crate::data_parallel::DataParallel;
use crate::error::Result;
use crate::gather::Gather;
use crate::gradients::{sum_gradients, weighted_on_host};
use crate::kind::Kind;
use crate::replicate::{Replicate, replicate};
use crate::run::{Job, Timing, run_replicas, run_watched};
use crate::scatter::{Scatter, ScatterContext};
use crate::state::{collect_state, write_state};
use crate::timings::StepTimings;
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
        let started = Instant::now();
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
        let scattered = Instant::now();
        // Owned, so that the work can outlive this call on a watched thread.
        let (host, host_kind, traffic) =
            (self.host.clone(), self.kinds.host(), self.traffic.clone());
        let work = move |(replica, kind, weight): (M, Kind<B>, f64),
                         shard: M::Input,
                         device: &B::Device| {
            let start = Instant::now();
            let to = Destination::new(device, kind, Direction::ToReplica);
            let replica = replicate(replica, to, Replicate::Forked);
            let set_up = Instant::now();
            let output = replica.step(shard);
            let computed = Instant::now();
            let to_host = Destination::new(&host, host_kind, Direction::ToHost).counted(&traffic);
            let grads = weighted_on_host(&replica, output.grads, weight, to_host);
            let state = collect_state(&replica);
            let timings = ReplicaTimings {
                setup: set_up - start,
                compute: computed - set_up,
                home: computed.elapsed(),
            };
            (grads, output.item, state, timings)
        };
        // Replicas on devices that can be lost run on threads that survive the loss.
        let results = if self.kinds.watched() {
            run_watched(jobs, &self.kinds, &self.host, Arc::new(work))?
        } else {
            run_replicas(&self.workers, jobs, &work, Timing::Record)?
        };
        let ran = Instant::now();

        let mut grads = Vec::with_capacity(results.len());
        let mut items = Vec::with_capacity(results.len());
        let mut states = Vec::with_capacity(results.len());
        let mut replicas = Vec::with_capacity(results.len());
        for (replica_grads, item, state, timings) in results {
            grads.push(replica_grads);
            items.push(item);
            states.push(state);
            replicas.push(timings);
        }
        let item = M::Output::gather(items, &self.gather_context(&plan))?;
        let gathered = Instant::now();
        let grads = sum_gradients(&self.template, grads, self.reduce_on())?;
        let reduced = Instant::now();
        write_state(&self.template, states, &shares, self.to_host());
        let merged = Instant::now();
        let timings = with_replicas(
            StepTimings {
                total: merged - started,
                scatter: scattered - started,
                gather: gathered - ran,
                reduction: reduced - gathered,
                state_merge: merged - reduced,
                ..StepTimings::default()
            },
            &replicas,
        );
        self.workers.last_step.store(timings);
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

/// One replica's phases of a training step, measured on its worker.
#[derive(Debug, Clone, Copy, Default)]
struct ReplicaTimings {
    setup: Duration,
    compute: Duration,
    home: Duration,
}

/// `host`'s timings with the replica phases filled in from each replica's own: the slowest
/// replica's (what the host waits for), and the mean compute time.
fn with_replicas(host: StepTimings, replicas: &[ReplicaTimings]) -> StepTimings {
    let slowest = |phase: fn(&ReplicaTimings) -> Duration| {
        replicas.iter().map(phase).max().unwrap_or_default()
    };
    let total_compute: Duration = replicas.iter().map(|replica| replica.compute).sum();
    let count = u32::try_from(replicas.len().max(1)).unwrap_or(u32::MAX);
    StepTimings {
        replica_setup: slowest(|replica| replica.setup),
        compute_slowest: slowest(|replica| replica.compute),
        compute_mean: total_compute / count,
        gradients_home: slowest(|replica| replica.home),
        replicas: replicas.len(),
        ..host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn replica_phases_take_the_slowest_and_the_mean() {
        let replicas = [
            ReplicaTimings {
                setup: ms(1),
                compute: ms(10),
                home: ms(4),
            },
            ReplicaTimings {
                setup: ms(3),
                compute: ms(20),
                home: ms(2),
            },
        ];
        let host = StepTimings {
            total: ms(40),
            scatter: ms(2),
            ..StepTimings::default()
        };
        let timings = with_replicas(host, &replicas);
        assert_eq!(timings.replica_setup, ms(3));
        assert_eq!(timings.compute_slowest, ms(20));
        assert_eq!(timings.compute_mean, ms(15));
        assert_eq!(timings.gradients_home, ms(4));
        assert_eq!(timings.replicas, 2);
        assert_eq!((timings.total, timings.scatter), (ms(40), ms(2)));
        assert_eq!(with_replicas(host, &[]).compute_mean, Duration::ZERO);
    }
}
