//! Gradient reduction onto the host (feature `train`): the replicas' gradients become one
//! set for the template.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, backend::AutodiffBackend};

/// Combines the replicas' gradients (keyed by the template's parameter ids) into one set on
/// `host`: `Σ w_i · g_i`, summed in device order.
pub(crate) fn reduce_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    template: &M,
    parts: Vec<GradientsParams>,
    weights: &[f64],
    host: &B::Device,
) -> GradientsParams {
    let mut reducer = GradientReducer::<B> {
        parts,
        weights,
        host,
        reduced: GradientsParams::new(),
    };
    template.visit(&mut reducer);
    reducer.reduced
}

struct GradientReducer<'a, B: AutodiffBackend> {
    parts: Vec<GradientsParams>,
    weights: &'a [f64],
    host: &'a B::Device,
    reduced: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradientReducer<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let mut total: Option<Tensor<B::InnerBackend, D>> = None;
        for (grads, &weight) in self.parts.iter_mut().zip(self.weights) {
            let Some(grad) = grads.remove::<B::InnerBackend, D>(param.id) else {
                continue;
            };
            let grad = if grad.device() == *self.host {
                grad
            } else {
                grad.to_device(self.host)
            };
            let grad = if weight == 1.0 {
                grad
            } else {
                grad.mul_scalar(weight)
            };
            total = Some(match total {
                Some(total) => total.add(grad),
                None => grad,
            });
        }
        if let Some(total) = total {
            self.reduced.register(param.id, total);
        }
    }
}
