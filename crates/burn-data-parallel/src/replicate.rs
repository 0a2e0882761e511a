//! Replicating a module onto a device: Burn's `to_device` or `fork`, or, for device kinds whose
//! moves go through this process, every parameter read here at once, then written there.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{BasicOps, Bool, Int, Tensor, TensorData, backend::Backend};

use crate::traffic::tensor_bytes;
use crate::transfer::{Destination, Reads};

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
    if to.moves_through_this_process() {
        return through_this_process(module, to.without_count());
    }
    match how {
        Replicate::Linked => module.to_device(to.device()),
        Replicate::Forked => module.fork(to.device()),
    }
}

/// `module` on `to`'s device, its parameters read into this process all at once, then
/// written there: fresh leaves, trainable when the original's were. (That is `fork`; a linked
/// copy is asked for on such a device only when nothing in it is trainable: see
/// `DeviceKind::differentiable_forward`.)
fn through_this_process<B: Backend, M: Module<B>>(module: M, to: Destination<'_, B>) -> M {
    let mut reads = ReadParams(Reads::default());
    module.visit(&mut reads);
    let mut data = reads.0.wait().into_iter();
    let moved = module.map(&mut WriteParams::<B> {
        to,
        data: &mut data,
    });
    to.settle_if_settled();
    moved
}

/// Starts the read of every parameter, in the module's order.
struct ReadParams(Reads);

impl<B: Backend> ModuleVisitor<B> for ReadParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.add(param.val());
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.0.add(param.val());
    }
    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        self.0.add(param.val());
    }
}

/// Puts each parameter's data, read by [`ReadParams`] in the same order, on the destination.
struct WriteParams<'a, B: Backend> {
    to: Destination<'a, B>,
    data: &'a mut std::vec::IntoIter<TensorData>,
}

impl<B: Backend> WriteParams<'_, B> {
    /// The next parameter's tensor, on the destination.
    fn write_next<const D: usize, K: BasicOps<B>>(&mut self) -> Tensor<B, D, K> {
        let data = self
            .data
            .next()
            .expect("a module maps the parameters it visited, in the same order");
        self.to.write(data)
    }
}

impl<B: Backend> ModuleMapper<B> for WriteParams<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let moved: Tensor<B, D> = self.write_next();
        let moved = if require_grad {
            moved.require_grad()
        } else {
            moved
        };
        Param::from_mapped_value(id, moved, mapper)
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let (id, _, mapper) = param.consume();
        Param::from_mapped_value(id, self.write_next(), mapper)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        let (id, _, mapper) = param.consume();
        Param::from_mapped_value(id, self.write_next(), mapper)
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
