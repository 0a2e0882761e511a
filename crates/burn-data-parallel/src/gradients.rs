//! Gradient reduction: each replica's gradients are weighted and moved to the
//! host on the replica's own worker, in parallel; the host then only adds them, in device
//! order.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, backend::AutodiffBackend};

use crate::transfer::Destination;

/// One replica's gradients, multiplied by `weight` and moved to `host`, keyed by the
/// parameter ids of `replica` (which are the template's).
pub(crate) fn weighted_on_host<B: AutodiffBackend, M: AutodiffModule<B>>(
    replica: &M,
    mut grads: GradientsParams,
    weight: f64,
    host: Destination<'_, B>,
) -> GradientsParams {
    let mut visitor = Weigh::<B> {
        grads: &mut grads,
        weight,
        host,
        weighted: GradientsParams::new(),
    };
    replica.visit(&mut visitor);
    visitor.weighted
}

struct Weigh<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    weight: f64,
    host: Destination<'a, B>,
    weighted: GradientsParams,
}

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
        // Moved as an untracked tensor of `B`, the backend whose device kinds the host knows.
        let grad = self.host.move_to(Tensor::<B, D>::from_inner(grad)).inner();
        self.weighted.register(param.id, grad);
    }
}

/// The sum of the replicas' weighted gradients (see [`weighted_on_host`]), parameter by
/// parameter of `template`, added in device order: `Σ w_i · g_i`.
pub(crate) fn sum_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    template: &M,
    parts: Vec<GradientsParams>,
) -> GradientsParams {
    let mut sum = Sum::<B> {
        parts,
        total: GradientsParams::new(),
        backend: core::marker::PhantomData,
    };
    template.visit(&mut sum);
    sum.total
}

struct Sum<B> {
    parts: Vec<GradientsParams>,
    total: GradientsParams,
    backend: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Sum<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let total = self
            .parts
            .iter_mut()
            .filter_map(|grads| grads.remove::<B::InnerBackend, D>(param.id))
            .reduce(Tensor::add);
        if let Some(total) = total {
            self.total.register(param.id, total);
        }
    }
}
