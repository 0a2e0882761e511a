//! Replicating a module onto a device: Burn's `to_device` or `fork`, or, for device kinds that
//! take one tensor at a time, the same parameter by parameter.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::traffic::tensor_bytes;
use crate::transfer::Destination;

/// How a module is brought to a replica's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replicate {
    /// `to_device`: linked to the original in the autodiff graph (the Keras-style path).
    Linked,
    /// `fork`: fresh leaves of its own (the per-replica training path).
    Forked,
}

/// `module` on `to`'s device, linked or forked. The bytes are not counted here: the caller
/// counts the template once per replica off the host.
pub(crate) fn replicate<B: Backend, M: Module<B>>(
    module: M,
    to: Destination<'_, B>,
    how: Replicate,
) -> M {
    if to.kind().moves_params_one_by_one() {
        return module.map(&mut MoveParams::<B> {
            to: to.without_count(),
            fork: how == Replicate::Forked,
        });
    }
    match how {
        Replicate::Linked => module.to_device(to.device()),
        Replicate::Forked => module.fork(to.device()),
    }
}

/// Moves a module's parameters one at a time, as `to_device` (or, with `fork`, as `fork`:
/// detached, trainable again when they were) would all at once.
struct MoveParams<'a, B: Backend> {
    to: Destination<'a, B>,
    fork: bool,
}

impl<B: Backend> ModuleMapper<B> for MoveParams<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let moved = self.to.move_to(tensor);
        let moved = match (self.fork, require_grad) {
            (true, true) => moved.detach().require_grad(),
            (true, false) => moved.detach(),
            (false, _) => moved,
        };
        Param::from_mapped_value(id, moved, mapper)
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, self.to.move_to(tensor), mapper)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, self.to.move_to(tensor), mapper)
    }
}

/// The bytes of every tensor of `module`: what a copy of it to another device moves.
pub(crate) fn module_bytes<B: Backend, M: Module<B>>(module: &M) -> u64 {
    struct Bytes(u64);
    impl<B: Backend> ModuleVisitor<B> for Bytes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 += tensor_bytes(&param.val());
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            self.0 += tensor_bytes(&param.val());
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
            self.0 += tensor_bytes(&param.val());
        }
    }
    let mut bytes = Bytes(0);
    module.visit(&mut bytes);
    bytes.0
}
