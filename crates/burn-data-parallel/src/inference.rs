//! Inference (Burn's `InferenceStep`) on devices that can be lost: every replica on a watched
//! thread (`run/watched.rs`), as in a training step, so that a lost server costs the call its
//! replica, not the process.

use std::sync::Arc;

use burn::module::Module;
use burn::train::InferenceStep;

use crate::data_parallel::DataParallel;
use crate::error::Result;
use crate::failure::FailurePolicy;
use crate::gather::Gather;
use crate::replicate::{Replicate, replicate};
use crate::run::{Job, run_watched};
use crate::scatter::{Scatter, ScatterContext};
use crate::traffic::Direction;
use crate::train::home_item;
use crate::transfer::Destination;

impl<B, M> DataParallel<B, M>
where
    B: burn::tensor::backend::Backend,
    M: Module<B> + InferenceStep + 'static,
    M::Input: Scatter<B>,
    M::Output: Gather<B> + Send,
{
    /// The inner model's inference step on every device, each replica on a watched thread:
    /// its shard is cut here and moved there, and its output comes home from there, so that
    /// this thread never waits on a replica's device.
    ///
    /// Under [`FailurePolicy::Redistribute`], a device lost or stalled during the call is left
    /// out and the whole batch runs again on the devices left (an inference step is cheap
    /// beside a training step, and a whole batch keeps the merge as it always is).
    ///
    /// # Errors
    ///
    /// The errors of a training step's replicas: a panic in the inner step (it would panic
    /// again), every error under [`FailurePolicy::Fail`], and a loss that leaves no device.
    pub(crate) fn try_infer_watched(&self, input: M::Input) -> Result<M::Output> {
        loop {
            let plan = self.plan(&input)?;
            let on_host = Destination::new(&self.host, self.kinds.host(), Direction::ToReplica);
            let jobs: Vec<_> = self
                .jobs(
                    &plan,
                    &input,
                    |_| ScatterContext::replica(on_host),
                    |template, to| (template.clone(), to.kind()),
                )
                .into_iter()
                .map(|job| {
                    let (replica, kind) = job.replica;
                    Job {
                        replica: (replica, kind, job.rows.len()),
                        index: job.index,
                        shard: job.shard,
                        device: job.device,
                        rows: job.rows,
                    }
                })
                .collect();
            // The shards were cut by operations queued from this thread; a server runs each
            // client thread's queue on its own, so they must have run before the replicas'
            // threads read the shards.
            on_host.settle();
            let (host, host_kind, traffic, reduction) = (
                self.host.clone(),
                self.kinds.host(),
                self.traffic.clone(),
                self.reduction,
            );
            let work = move |(replica, kind, rows): (M, _, usize),
                             shard: M::Input,
                             device: &B::Device| {
                // What moves here is used on this thread only; the output's move home is waited
                // for once, at the end (see `Destination::settle`).
                let to = Destination::new(device, kind, Direction::ToReplica).unsettled();
                let shard = shard.shard(0..rows, &ScatterContext::replica(to.counted(&traffic)));
                // The template's bytes were counted when the jobs were made.
                let replica = replicate(replica, to, Replicate::Linked);
                let output = replica.step(shard);
                let home = Destination::new(&host, host_kind, Direction::ToHost)
                    .counted(&traffic)
                    .unsettled();
                let output = home_item(output, rows, reduction, home);
                home.settle();
                output
            };
            let outcomes = run_watched(
                jobs,
                &self.kinds,
                &self.host,
                Arc::new(work),
                self.step_deadline,
            );
            let mut outputs = Vec::with_capacity(outcomes.len());
            let mut failures = Vec::new();
            for (shard, outcome) in outcomes.into_iter().enumerate() {
                match outcome {
                    Ok(output) => outputs.push(output),
                    Err(error) => failures.push((shard, error)),
                }
            }
            let Some((_, first_error)) = failures.first() else {
                return M::Output::gather(outputs, &self.gather_context(&plan, &input));
            };
            let lost_only = failures.iter().all(|(_, error)| error.loses_the_device());
            let left = self.workers.lost.live(self.devices.len()).len();
            if self.failure_policy == FailurePolicy::Fail || !lost_only || failures.len() >= left {
                return Err(first_error.clone());
            }
            for (shard, error) in &failures {
                self.leave_out(plan.device(*shard), error);
            }
        }
    }
}
