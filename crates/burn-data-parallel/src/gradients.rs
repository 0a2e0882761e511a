//! Gradient reduction: each replica's gradients are weighted and moved to the host on the
//! replica's own worker, in parallel; the workers then add them, every parameter at once,
//! each along a fixed binary tree.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData, backend::AutodiffBackend};

use rayon::prelude::*;

use crate::error::Result;
use crate::run::Workers;
use crate::transfer::{Destination, Reads};

/// One replica's gradients, multiplied by `weight` and moved to `host`, keyed by the
/// parameter ids of `replica` (which are the template's).
pub(crate) fn weighted_on_host<B: AutodiffBackend, M: AutodiffModule<B>>(
    replica: &M,
    mut grads: GradientsParams,
    weight: f64,
    host: Destination<'_, B>,
) -> GradientsParams {
    if weight == 0.0 {
        // A shard that holds none of what the loss averages over: its loss, and so its
        // gradients, are 0/0, and its share of the batch's gradient is nothing.
        return GradientsParams::new();
    }
    let mut visitor = Weigh::<B> {
        grads: &mut grads,
        weight,
        host,
        weighted: GradientsParams::new(),
        reads: Reads::default(),
        writes: Vec::new(),
    };
    replica.visit(&mut visitor);
    let Weigh {
        mut weighted,
        reads,
        writes,
        ..
    } = visitor;
    if !writes.is_empty() {
        for (data, write) in reads.wait().into_iter().zip(writes) {
            write(data, &mut weighted);
        }
        host.settle_if_settled();
    }
    weighted
}

struct Weigh<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    weight: f64,
    host: Destination<'a, B>,
    weighted: GradientsParams,
    /// For a host whose moves go through this process: every gradient's read, started
    /// together, and what registers each on the host once read.
    reads: Reads,
    writes: Vec<GradientWrite<'a>>,
}

/// Registers one gradient, read from its replica's device, on the host.
type GradientWrite<'a> = Box<dyn FnOnce(TensorData, &mut GradientsParams) + 'a>;

impl<B: AutodiffBackend> ModuleVisitor<B> for Weigh<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        // Scale before moving: on a replica off the host, the multiply runs on its device.
        let grad = if self.weight == 1.0 {
            grad
        } else {
            grad.mul_scalar(self.weight)
        };
        let (id, host) = (param.id, self.host);
        if host.moves_through_this_process() {
            self.reads.add(grad);
            self.writes.push(Box::new(move |data, weighted| {
                let grad: Tensor<B, D> = host.write(data);
                weighted.register(id, grad.inner());
            }));
            return;
        }
        // Moved as an untracked tensor of `B`, the backend whose device kinds the host knows.
        let grad = host.move_to(Tensor::<B, D>::from_inner(grad)).inner();
        self.weighted.register(id, grad);
    }
}

/// Where [`sum_gradients`] does its adds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReduceOn<'a> {
    /// On the worker threads: the parameters' sums, and the two halves of each tree, at once.
    Workers(&'a Workers),
    /// On the caller's thread, one add after the other (a host whose tensors must stay on the
    /// caller's thread: see `DeviceKind::works_from_any_thread`).
    Caller,
}

/// The sum of the replicas' weighted gradients (see [`weighted_on_host`]), parameter by
/// parameter of `template`: `Σ w_i · g_i`.
///
/// Each parameter's parts are added along [`tree_sum`]'s fixed tree, the same for the same
/// number of parts every step, so that a step's sum is bit-identical run to run whichever
/// worker did which add.
///
/// # Errors
///
/// [`DataParallelError::ThreadSpawn`](crate::DataParallelError::ThreadSpawn) when the
/// workers could not be started.
pub(crate) fn sum_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    template: &M,
    parts: Vec<GradientsParams>,
    on: ReduceOn<'_>,
) -> Result<GradientsParams> {
    let mut collect = Collect::<B> {
        parts,
        sums: Vec::new(),
        backend: core::marker::PhantomData,
    };
    template.visit(&mut collect);
    let sums = collect.sums;
    let registrations: Vec<Registration> = match on {
        ReduceOn::Workers(workers) => workers.install(|| {
            sums.into_par_iter()
                .map(|sum| sum(Parallelism::Join))
                .collect()
        })?,
        ReduceOn::Caller => sums
            .into_iter()
            .map(|sum| sum(Parallelism::Sequential))
            .collect(),
    };
    let mut total = GradientsParams::new();
    for register in registrations {
        register(&mut total);
    }
    Ok(total)
}

/// Registers one parameter's summed gradient.
type Registration = Box<dyn FnOnce(&mut GradientsParams) + Send>;
/// Sums one parameter's parts; what it returns registers the sum.
type ParamSum = Box<dyn FnOnce(Parallelism) -> Registration + Send>;

/// Whether a tree's two halves are summed at once (inside the worker pool) or one after the
/// other.
#[derive(Debug, Clone, Copy)]
enum Parallelism {
    Join,
    Sequential,
}

/// Takes each parameter's parts out of the replicas' gradients, in device order, as one
/// [`ParamSum`] per parameter.
struct Collect<B> {
    parts: Vec<GradientsParams>,
    sums: Vec<ParamSum>,
    backend: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let id = param.id;
        let parts: Vec<Tensor<B::InnerBackend, D>> = self
            .parts
            .iter_mut()
            .filter_map(|grads| grads.remove::<B::InnerBackend, D>(id))
            .collect();
        if parts.is_empty() {
            return;
        }
        self.sums.push(Box::new(move |parallelism| {
            let total = tree_sum(parts, &Tensor::add, parallelism);
            Box::new(move |grads: &mut GradientsParams| {
                if let Some(total) = total {
                    grads.register(id, total);
                }
            })
        }));
    }
}

/// The sum of `parts` along a fixed binary tree: the first half's sum plus the second
/// half's, the first half being the shorter when the count is odd. For four parts that is
/// `(p0 + p1) + (p2 + p3)`; for two, `p0 + p1`, as a sum in device order.
fn tree_sum<T: Send>(
    mut parts: Vec<T>,
    add: &(impl Fn(T, T) -> T + Sync),
    parallelism: Parallelism,
) -> Option<T> {
    if parts.len() <= 1 {
        return parts.pop();
    }
    let second_half = parts.split_off(parts.len() / 2);
    let sum_first = || tree_sum(parts, add, parallelism);
    let sum_second = || tree_sum(second_half, add, parallelism);
    let (first, second) = match parallelism {
        Parallelism::Join => rayon::join(sum_first, sum_second),
        Parallelism::Sequential => (sum_first(), sum_second()),
    };
    match (first, second) {
        (Some(first), Some(second)) => Some(add(first, second)),
        (first, second) => first.or(second),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(count: usize, parallelism: Parallelism) -> Option<String> {
        let parts = (0..count).map(|index| format!("p{index}")).collect();
        tree_sum(parts, &|a, b| format!("({a} + {b})"), parallelism)
    }

    #[test]
    fn the_tree_is_fixed_by_the_count() {
        for parallelism in [Parallelism::Sequential, Parallelism::Join] {
            assert_eq!(tree(0, parallelism), None);
            assert_eq!(tree(1, parallelism).as_deref(), Some("p0"));
            assert_eq!(tree(2, parallelism).as_deref(), Some("(p0 + p1)"));
            assert_eq!(tree(3, parallelism).as_deref(), Some("(p0 + (p1 + p2))"));
            assert_eq!(
                tree(4, parallelism).as_deref(),
                Some("((p0 + p1) + (p2 + p3))")
            );
            assert_eq!(
                tree(5, parallelism).as_deref(),
                Some("((p0 + p1) + (p2 + (p3 + p4)))")
            );
        }
    }
}
