//! Burn's `Learner` (feature `train`): [`TrainStep`] and [`InferenceStep`] for
//! [`DataParallel`], for every inner model that implements them.
//!
//! Rust's orphan rule keeps users from writing these impls for `DataParallel<B, TheirModel<B>>`,
//! so they are blanket impls here, bounded on this crate's [`Scatter`] and [`Gather`] for the
//! inner model's input and output types.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use core::time::Duration;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use crate::data_parallel::DataParallel;
use crate::error::{DataParallelError, Result};
use crate::failure::{FailurePolicy, redistribute};
use crate::gather::{Gather, GatherContext};
use crate::gradients::{ReduceOn, sum_gradients, weighted_on_host};
use crate::kind::Kind;
use crate::normaliser::shard_weights;
use crate::replicate::{Replicate, replicate};
use crate::run::{Job, Timing, run_each, run_each_until, run_watched};
use crate::scatter::{Scatter, ScatterContext};
use crate::split::SplitPlan;
use crate::state::{ReplicaState, collect_state, collect_state_at, write_state};
use crate::sync::cross_replica;
use crate::sync::group::{self, Mode, SyncGroup};
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
    ///    (`n_i/n` for [`Reduction::Mean`](crate::Reduction::Mean), or `c_i/c` when the input
    ///    declares a [normaliser](crate::Normaliser); 1 for
    ///    [`Reduction::Sum`](crate::Reduction::Sum)) and moves them to the host. Layers that
    ///    share statistics across replicas ([`SyncBatchNorm`](crate::SyncBatchNorm)) exchange
    ///    them between the workers, forward and backward.
    /// 4. The host adds them in device order: `Σ w_i · g_i`. For a mean-reduced loss, this is
    ///    the gradient of the full batch.
    /// 5. The items are merged with [`Gather`] (losses as the same weighted mean or sum).
    /// 6. State updated in forward (BatchNorm's running statistics) becomes the shard-weighted
    ///    mean `Σ n_i/n · s_i` of the replicas' updated state, stored in the template on the
    ///    host. With `SyncBatchNorm` every replica holds the batch's statistics, so this is the
    ///    single-device value; with Burn's `BatchNorm` the running mean is, and the running
    ///    variance is the mean of the shards' variances, which leaves out the spread between
    ///    shard means.
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
    /// [`Stalled`](crate::DataParallelError::Stalled) when a replica is still running at the
    /// [step deadline](Self::with_step_deadline). On error, the template (weights and running
    /// state) is unchanged.
    ///
    /// Under [`FailurePolicy::Redistribute`] a failed replica is not an error: the replicas
    /// that finished run its rows (or, when layers shared statistics across the replicas, the
    /// whole batch runs again on the devices left), and the step completes with the full
    /// batch's gradient ([`with_failure_policy`](Self::with_failure_policy)).
    pub fn try_train_step(&self, input: M::Input) -> Result<TrainOutput<M::Output>> {
        let started = Instant::now();
        let plan = self.plan(&input)?;
        let round = self.train_round(&plan, &input, Timing::Record)?;
        let scatter = round.scatter;
        let ran = Instant::now();
        let (plan, results) = self.settle(plan, round, &input)?;
        let settled = Instant::now();

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
        let item = M::Output::gather(items, &self.gather_context(&plan, &input))?;
        self.wait_for_host_if_synced(ReduceOn::Caller)?;
        let gathered = Instant::now();
        let grads = sum_gradients(&self.template, grads, self.reduce_on())?;
        self.wait_for_host_if_synced(self.reduce_on())?;
        let reduced = Instant::now();
        write_state(&self.template, states, &plan.weights(), self.to_host());
        let merged = Instant::now();
        let timings = with_replicas(
            StepTimings {
                total: merged - started,
                scatter,
                gather: gathered - settled,
                reduction: reduced - gathered,
                state_merge: merged - reduced,
                // Redistributed rows (a failed replica's) are part of the replicas' work.
                redistribution: settled - ran,
                ..StepTimings::default()
            },
            &replicas,
        );
        self.workers.last_step.store(timings);
        Ok(TrainOutput { grads, item })
    }

    /// With [synced phases](Self::with_synced_phases), waits until the work queued on the
    /// host by the threads `on` names (the caller's, or every worker's) has run.
    fn wait_for_host_if_synced(&self, on: ReduceOn<'_>) -> Result<()> {
        if !self.synced_phases {
            return Ok(());
        }
        let (kind, host) = (self.kinds.host(), &self.host);
        match on {
            ReduceOn::Workers(workers) => workers.on_every_thread(|| kind.wait_for_queue(host)),
            ReduceOn::Caller => {
                kind.wait_for_queue(host);
                Ok(())
            }
        }
    }

    /// Runs one replica per shard of `plan` (the inner model's step on the shard, gradients
    /// weighted and moved home, running state collected) and returns each one's outcome in
    /// shard order, with the time the shards and replicas took to make.
    fn train_round(&self, plan: &SplitPlan, input: &M::Input, timing: Timing) -> Result<Round<M>> {
        let started = Instant::now();
        let weights = shard_weights(self.reduction, plan, input);
        // `valid()` gives each replica running state of its own (clones would share the
        // template's). The rest happens on each replica's worker, in parallel: `fork` makes
        // fresh leaves on the replica's device, and the gradients come back weighted.
        let phases: Vec<Arc<AtomicU8>> = (0..plan.len()).map(|_| Arc::default()).collect();
        // On watched threads (devices that can be lost), everything that touches a replica's
        // device happens on its own thread, which can be left behind: the shard is cut here
        // but moved there, and the items and running state come home from there. The caller
        // never waits on a replica's device: a request sent just before its server died is
        // never answered, and an operation after it panics.
        let watched = self.kinds.watched();
        let on_host = Destination::new(&self.host, self.kinds.host(), Direction::ToReplica);
        let context = |to| ScatterContext::replica(if watched { on_host } else { to });
        let jobs: Vec<_> = self
            .jobs(plan, input, context, |template, to| {
                (M::from_inner(template.valid()), to.kind())
            })
            .into_iter()
            .zip(weights)
            .zip(&phases)
            .enumerate()
            .map(|(rank, ((job, weight), phase))| {
                let (replica, kind) = job.replica;
                let rows = job.rows.len();
                Job {
                    index: job.index,
                    replica: (replica, kind, weight, phase.clone(), rank, rows),
                    shard: job.shard,
                    device: job.device,
                    rows: job.rows,
                }
            })
            .collect();
        if watched {
            // The shards were cut by operations queued from this thread; a server runs each
            // client thread's queue on its own, so they must have run before the replicas'
            // threads read the shards.
            on_host.settle();
        }
        let scattered = started.elapsed();
        // Owned, so that the work can outlive this call on a watched thread.
        let (host, host_kind, traffic, reduction, synced) = (
            self.host.clone(),
            self.kinds.host(),
            self.traffic.clone(),
            self.reduction,
            self.synced_phases,
        );

        // Layers that share statistics across the replicas (SyncBatchNorm) meet in `group`.
        let group = SyncGroup::new(plan.len());
        let (reducer, members) = (cross_replica::reducer::<B>(), group.clone());
        let work = move |(replica, kind, weight, phase, rank, rows): ReplicaJob<M, B>,
                         shard: M::Input,
                         device: &B::Device| {
            let mode = Mode::Separate {
                weight,
                reducer: reducer.clone(),
            };
            let _member = group::join(&members, rank, mode, true);
            let start = Instant::now();
            // What moves here is used on this thread only; what moves home is waited for once,
            // at the end (see `Destination::settle`).
            let to = Destination::new(device, kind, Direction::ToReplica).unsettled();
            let shard = if watched {
                shard.shard(0..rows, &ScatterContext::replica(to.counted(&traffic)))
            } else {
                shard
            };
            // With synced phases, a queueing backend's phase ends when its device has run it,
            // not when it was issued.
            let replica = replicate(replica, to, Replicate::Forked);
            if synced {
                to.wait_for_queue();
            }
            let set_up = Instant::now();
            phase.store(Phase::Compute as u8, Ordering::Relaxed);
            let output = replica.step(shard);
            if synced {
                to.wait_for_queue();
            }
            let computed = Instant::now();
            phase.store(Phase::GradientsHome as u8, Ordering::Relaxed);
            let to_host = Destination::new(&host, host_kind, Direction::ToHost)
                .counted(&traffic)
                .unsettled();
            let grads = weighted_on_host(&replica, output.grads, weight, to_host);
            let (item, state) = if watched {
                (
                    home_item(output.item, rows, reduction, to_host),
                    collect_state_at(&replica, Some(to_host)),
                )
            } else {
                (output.item, collect_state(&replica))
            };
            to_host.settle();
            if synced {
                to_host.wait_for_queue();
            }
            let timings = ReplicaTimings {
                setup: set_up - start,
                compute: computed - set_up,
                home: computed.elapsed(),
            };
            (grads, item, state, timings)
        };
        // Replicas on devices that can be lost run on threads that the caller watches and can
        // leave behind; under a deadline, the caller waits for the workers with a timeout.
        let outcomes = if self.kinds.watched() {
            run_watched(
                jobs,
                &self.kinds,
                &self.host,
                Arc::new(work),
                self.step_deadline,
            )
        } else if let Some(deadline) = self.step_deadline {
            run_each_until(&self.workers, jobs, Arc::new(work), deadline, timing)?
        } else {
            run_each(&self.workers, jobs, &work, timing)?
        };
        let outcomes: Vec<_> = outcomes
            .into_iter()
            .zip(&phases)
            .map(|(outcome, phase)| outcome.map_err(|error| with_phase(error, phase)))
            .collect();
        if let Some(Err(error)) = outcomes.iter().find(|outcome| outcome.is_err()) {
            // Replicas still waiting at an exchange (one stalled past the deadline) fail now.
            group.abort(&error.to_string());
        }
        Ok(Round {
            outcomes,
            scatter: scattered,
            group,
        })
    }

    /// The plan and replica results a step goes on with, in row order: those of `plan` when
    /// every replica finished; otherwise, under [`FailurePolicy::Redistribute`], those that
    /// finished and the failed shards' rows run again by their replicas.
    ///
    /// # Errors
    ///
    /// The first failure in device order under [`FailurePolicy::Fail`], when no replica
    /// finished, or when a redistributed part fails too.
    fn settle(
        &self,
        plan: SplitPlan,
        round: Round<M>,
        input: &M::Input,
    ) -> Result<(SplitPlan, Vec<ReplicaDone<M>>)> {
        let mut finished = Vec::with_capacity(round.outcomes.len());
        let mut failures = Vec::new();
        let mut released = Vec::new();
        for (shard, outcome) in round.outcomes.into_iter().enumerate() {
            match outcome {
                Ok(done) => finished.push((shard, done)),
                // Failed only because another replica did, at a shared layer: healthy.
                Err(error) if round.group.was_released(shard) => released.push((shard, error)),
                Err(error) => failures.push((shard, error)),
            }
        }
        // The cause first: a released replica's error only says that another failed.
        let Some((_, first_error)) = failures.first().or(released.first()) else {
            let results = finished.into_iter().map(|(_, done)| done).collect();
            return Ok((plan, results));
        };
        if self.failure_policy == FailurePolicy::Fail || finished.len() + released.len() == 0 {
            return Err(first_error.clone());
        }
        for (shard, error) in &failures {
            if error.loses_the_device() {
                self.leave_out(plan.device(*shard), error);
            } else {
                log::warn!(
                    "DataParallel: rows {:?} run again by the other replicas: {error}",
                    plan.shards()[*shard]
                );
            }
        }
        let failed: Vec<usize> = failures.iter().map(|(shard, _)| *shard).collect();
        if round.group.used() {
            // Statistics were shared across the replicas: a shard re-run alone would see
            // only its own rows. The whole batch runs again on the devices left.
            let devices: Vec<usize> = (0..plan.len())
                .filter(|shard| !failed.contains(shard))
                .map(|shard| plan.device(shard))
                .collect();
            if devices.is_empty() {
                return Err(first_error.clone());
            }
            let retry = SplitPlan::new(plan.batch_size(), devices.len())?.on_devices(&devices);
            let round = self.train_round(&retry, input, Timing::Skip)?;
            let group = round.group;
            let mut results = Vec::with_capacity(round.outcomes.len());
            let mut errors = Vec::new();
            for (shard, outcome) in round.outcomes.into_iter().enumerate() {
                match outcome {
                    Ok(done) => results.push(done),
                    Err(error) => errors.push((group.was_released(shard), error)),
                }
            }
            // The cause's error, not that of a replica it released.
            errors.sort_by_key(|(released, _)| *released);
            return match errors.into_iter().next() {
                Some((_, error)) => Err(error),
                None => Ok((retry, results)),
            };
        }
        let survivors: Vec<usize> = finished.iter().map(|(shard, _)| *shard).collect();
        let retry = SplitPlan::partial(plan.batch_size(), redistribute(&plan, &failed, &survivors));
        let retried = self.train_round(&retry, input, Timing::Skip)?.outcomes;

        let mut parts: Vec<_> = finished
            .into_iter()
            .map(|(shard, done)| ((plan.shards()[shard].clone(), plan.device(shard)), done))
            .collect();
        for (shard, outcome) in retried.into_iter().enumerate() {
            parts.push((
                (retry.shards()[shard].clone(), retry.device(shard)),
                outcome?,
            ));
        }
        parts.sort_by_key(|((rows, _), _)| rows.start);
        let (shards, results): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        Ok((SplitPlan::from_parts(plan.batch_size(), shards), results))
    }
}

/// What a replica's worker is given besides its shard: the replica, its device's kind, its
/// gradients' weight, the phase it reports to the deadline, and its rank in the step.
type ReplicaJob<M, B> = (M, Kind<B>, f64, Arc<AtomicU8>, usize, usize);

/// The outcome of running one plan's replicas: each one's result in shard order, the time
/// the shards and replicas took to make, and the group their shared layers met in.
struct Round<M: TrainStep> {
    outcomes: Vec<Result<ReplicaDone<M>>>,
    scatter: Duration,
    group: Arc<SyncGroup>,
}

/// What one replica's part of a training step returns: its weighted gradients on the host,
/// its output item, its updated running state, and its timings.
type ReplicaDone<M> = (
    GradientsParams,
    <M as TrainStep>::Output,
    ReplicaState,
    ReplicaTimings,
);

/// The phase of its step a replica is in, as the deadline sees it.
#[repr(u8)]
enum Phase {
    SetUp = 0,
    Compute = 1,
    GradientsHome = 2,
}

/// A stalled replica's error with the phase it was in filled in.
fn with_phase(error: DataParallelError, phase: &AtomicU8) -> DataParallelError {
    match error {
        DataParallelError::Stalled {
            device,
            waited,
            thread,
            ..
        } => {
            let phase = match phase.load(Ordering::Relaxed) {
                value if value == Phase::SetUp as u8 => "set-up",
                value if value == Phase::Compute as u8 => "compute",
                _ => "gradients home",
            };
            DataParallelError::Stalled {
                device,
                phase: phase.to_string(),
                waited,
                thread,
            }
        }
        other => other,
    }
}

impl<B, M> InferenceStep for DataParallel<B, M>
where
    B: Backend,
    M: burn::module::Module<B> + InferenceStep + 'static,
    M::Input: Scatter<B>,
    M::Output: Gather<B> + Send,
{
    type Input = M::Input;
    type Output = M::Output;

    /// Runs the inner model's [`InferenceStep::step`] on every device through
    /// [`forward`](DataParallel::forward), and merges the outputs on the host.
    ///
    /// On devices that can be lost (Burn servers), the replicas run on watched threads as in
    /// a training step, with its [failure policy](DataParallel::with_failure_policy) and
    /// [deadline](DataParallel::with_step_deadline): under
    /// [`Redistribute`](crate::FailurePolicy::Redistribute), a lost or stalled device is left
    /// out and the batch runs again on the devices left.
    ///
    /// # Panics
    ///
    /// `InferenceStep` allows no `Result`: errors of [`try_forward`](DataParallel::try_forward)
    /// become a panic with their message.
    fn step(&self, input: Self::Input) -> Self::Output {
        let output = if self.kinds.watched() {
            self.try_infer_watched(input)
        } else {
            self.try_forward(input, |replica, shard| replica.step(shard))
        };
        output.unwrap_or_else(|error| panic!("DataParallel inference step failed: {error}"))
    }
}

/// `item`, one replica's output of a step on `rows` rows, moved to `host` on the replica's
/// thread: merged as the only part of a one-shard batch, which for every [`Gather`] of this
/// crate moves its tensors home and leaves their values as they are (a part of weight 1). The
/// caller's merge of the parts then moves nothing.
///
/// # Panics
///
/// When the item cannot be merged, with the reason: the caller's merge would fail the same way.
pub(crate) fn home_item<B: Backend, O: Gather<B>>(
    item: O,
    rows: usize,
    reduction: crate::Reduction,
    host: Destination<'_, B>,
) -> O {
    let merged = SplitPlan::new(rows, 1).and_then(|one_shard| {
        O::gather(vec![item], &GatherContext::to(host, &one_shard, reduction))
    });
    merged.unwrap_or_else(|error| panic!("cannot bring a replica's output home: {error}"))
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
