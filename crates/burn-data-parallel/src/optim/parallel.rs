//! The optimizer: plan each parameter's step on the caller's thread, run the steps on the
//! workers, write the results into the template.

use core::any::Any;
use core::marker::PhantomData;
use std::collections::HashMap as StdHashMap;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::grad_clipping::GradientClipping;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    GradientsParams, LearningRate, MultiGradientsParams, Optimizer, SimpleOptimizer,
};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rayon::prelude::*;

use super::chunk;
use crate::data_parallel::DataParallel;

/// The records of Burn's `OptimizerAdaptor` for `O` on `B`: one per parameter, by id.
type Records<O, B, M> = <OptimizerAdaptor<O, M, B> as Optimizer<M, B>>::Record;

/// A Burn simple optimizer (Adam, AdamW, SGD, ...) for a [`DataParallel`], whose step runs
/// on the module's workers: every parameter's update at once, and a large parameter's (at
/// least 65,536 elements) by rows at once for Adam and AdamW, which update element by element.
///
/// The results are Burn's `OptimizerAdaptor`'s bit for bit, and so are the records: a
/// checkpoint of this optimizer's state loads into the adaptor of the bare model, and back
/// ([`from_adaptor`](Self::from_adaptor), [`into_adaptor`](Self::into_adaptor), or the
/// records through any recorder). Give it to Burn's `Learner` in place of
/// `AdamConfig::new().init()`.
///
/// # Examples
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::{AdamConfig, GradientsParams, Optimizer};
/// use burn::tensor::Tensor;
/// use burn_data_parallel::{DataParallel, ParallelOptimizer};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let model: Linear<B> = LinearConfig::new(8, 2).init(&device);
/// let dp = DataParallel::new(model, vec![device, device]).unwrap();
/// let mut optim = ParallelOptimizer::from_adaptor(AdamConfig::new().init());
///
/// let x = Tensor::<B, 2>::ones([6, 8], &device);
/// let loss = dp.forward(x, |model, shard| model.forward(shard)).mean();
/// let grads = GradientsParams::from_grads(loss.backward(), &dp);
/// let dp = optim.step(1e-3, dp, grads);
/// # let _ = dp;
/// ```
pub struct ParallelOptimizer<O, B, M>
where
    O: SimpleOptimizer<B::InnerBackend>,
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    optim: O,
    records: Records<O, B, M>,
    grad_clipping: Option<GradientClipping>,
    module: PhantomData<M>,
}

impl<O, B, M> Clone for ParallelOptimizer<O, B, M>
where
    O: SimpleOptimizer<B::InnerBackend>,
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    fn clone(&self) -> Self {
        Self {
            optim: self.optim.clone(),
            records: self.records.clone(),
            grad_clipping: self.grad_clipping.clone(),
            module: PhantomData,
        }
    }
}

impl<O, B, M> ParallelOptimizer<O, B, M>
where
    O: SimpleOptimizer<B::InnerBackend> + 'static,
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    /// An optimizer that steps with `optim` (for example `AdamConfig::new().build()`), with no
    /// state yet and no gradient clipping.
    pub fn new(optim: O) -> Self {
        Self {
            optim,
            records: Default::default(),
            grad_clipping: None,
            module: PhantomData,
        }
    }

    /// The same optimizer as Burn's `adaptor` for the `DataParallel` (what
    /// `AdamConfig::new().init()` gives), with its gradient clipping and its state. For an
    /// adaptor of another module (the bare model), move its state with
    /// `ParallelOptimizer::new(optim).load_record(adaptor.to_record())`.
    pub fn from_adaptor(adaptor: OptimizerAdaptor<O, DataParallel<B, M>, B>) -> Self {
        Self {
            optim: adaptor.optim().clone(),
            records: adaptor.to_record(),
            grad_clipping: adaptor.grad_clipping().cloned(),
            module: PhantomData,
        }
    }

    /// Burn's adaptor for another module (the bare model, say), with this optimizer's
    /// gradient clipping and state.
    pub fn into_adaptor<M2: AutodiffModule<B>>(self) -> OptimizerAdaptor<O, M2, B> {
        let adaptor = OptimizerAdaptor::from(self.optim);
        let adaptor = match self.grad_clipping {
            Some(clipping) => adaptor.with_grad_clipping(clipping),
            None => adaptor,
        };
        adaptor.load_record(self.records)
    }

    /// Clips each parameter's gradient before its step, as the adaptor's option does.
    pub fn with_grad_clipping(mut self, clipping: GradientClipping) -> Self {
        self.grad_clipping = Some(clipping);
        self
    }

    fn step_with(
        &mut self,
        lr: LearningRate,
        module: DataParallel<B, M>,
        mut grads: Grads,
    ) -> DataParallel<B, M> {
        let mut planner = Planner::<O, B, M> {
            optim: &self.optim,
            records: &mut self.records,
            grads: &mut grads,
            grad_clipping: self.grad_clipping.as_ref(),
            lr,
            steps: Vec::new(),
        };
        module.template().visit(&mut planner);
        let steps = planner.steps;
        let workers = &module.workers;
        // The host's tensors may have to stay on this thread, and the workers may fail to
        // start: then each step runs here, one after the other, as the adaptor's do.
        let on_workers =
            module.kinds.host_works_from_any_thread() && workers.install(|| ()).is_ok();
        let results: StdHashMap<ParamId, Stepped> = if on_workers {
            let stepped = workers.install(move || {
                let parts = rayon::current_num_threads();
                steps
                    .into_par_iter()
                    .map(|(id, step)| (id, step(parts)))
                    .collect::<Vec<_>>()
            });
            match stepped {
                Ok(stepped) => stepped.into_iter().collect(),
                Err(_) => unreachable!("the workers started above"),
            }
        } else {
            steps.into_iter().map(|(id, step)| (id, step(1))).collect()
        };
        let mut writer = Writer::<O, B, M> {
            results,
            records: &mut self.records,
        };
        Module::map(module, &mut writer)
    }
}

/// What a parameter's planned step returns, type-erased: the stepped inner tensor, the new
/// state, and whether the parameter required a gradient.
type Stepped = Box<dyn Any + Send>;
/// A parameter's step, given how many row ranges a large one may be cut into.
type PlannedStep = Box<dyn FnOnce(usize) -> Stepped + Send>;

/// Where gradients come from: a single set, or Burn's per-device sets.
enum Grads {
    Single(GradientsParams),
    Multi(MultiGradientsParams),
}

impl Grads {
    /// The parameter's gradient and the device its step runs on, as the adaptor takes them
    /// (Burn's multi-device sets sum the devices' gradients).
    fn remove<B: Backend, const D: usize>(
        &mut self,
        id: ParamId,
    ) -> Option<(Tensor<B, D>, B::Device)> {
        match self {
            Grads::Single(grads) => grads.remove::<B, D>(id).map(|grad| {
                let device = grad.device();
                (grad, device)
            }),
            Grads::Multi(grads) => grads.remove::<B, D>(id),
        }
    }
}

struct Planner<'a, O, B, M>
where
    O: SimpleOptimizer<B::InnerBackend> + 'a,
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    optim: &'a O,
    records: &'a mut Records<O, B, M>,
    grads: &'a mut Grads,
    grad_clipping: Option<&'a GradientClipping>,
    lr: LearningRate,
    steps: Vec<(ParamId, PlannedStep)>,
}

impl<O, B, M> ModuleVisitor<B> for Planner<'_, O, B, M>
where
    O: SimpleOptimizer<B::InnerBackend> + 'static,
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let id = param.id;
        let Some((grad, device)) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return;
        };
        let tensor = param.val();
        let require_grad = tensor.is_require_grad();
        let tensor = tensor.inner().to_device(&device);
        let state = self
            .records
            .remove(&id)
            .map(|record: AdaptorRecord<O, B>| O::to_device(record.into_state::<D>(), &device));
        let (optim, lr, clipping) = (self.optim.clone(), self.lr, self.grad_clipping.cloned());
        self.steps.push((
            id,
            Box::new(move |parts| {
                let grad = match &clipping {
                    Some(clipping) => clipping.clip_gradient(grad),
                    None => grad,
                };
                let stepped = chunk::step(&optim, lr, tensor, grad, state, parts);
                Box::new((stepped, require_grad))
            }),
        ));
    }
}

struct Writer<'a, O, B, M>
where
    O: SimpleOptimizer<B::InnerBackend> + 'a,
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    results: StdHashMap<ParamId, Stepped>,
    records: &'a mut Records<O, B, M>,
}

impl<O, B, M> ModuleMapper<B> for Writer<'_, O, B, M>
where
    O: SimpleOptimizer<B::InnerBackend> + 'static,
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(stepped) = self.results.remove(&param.id) else {
            return param;
        };
        type Result<B, O, const D: usize> = (
            (
                Tensor<<B as AutodiffBackend>::InnerBackend, D>,
                Option<<O as SimpleOptimizer<<B as AutodiffBackend>::InnerBackend>>::State<D>>,
            ),
            bool,
        );
        let ((tensor, state), require_grad) = *stepped
            .downcast::<Result<B, O, D>>()
            .unwrap_or_else(|_| unreachable!("each parameter's result has its own rank"));
        let (id, _, mapper) = param.consume();
        if let Some(state) = state {
            self.records.insert(id, AdaptorRecord::from_state(state));
        }
        let tensor = Tensor::from_inner(tensor);
        let tensor = if require_grad {
            tensor.require_grad()
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

impl<O, B, M> Optimizer<DataParallel<B, M>, B> for ParallelOptimizer<O, B, M>
where
    O: SimpleOptimizer<B::InnerBackend> + 'static,
    B: AutodiffBackend,
    M: AutodiffModule<B> + 'static,
{
    type Record = Records<O, B, M>;

    fn step(
        &mut self,
        lr: LearningRate,
        module: DataParallel<B, M>,
        grads: GradientsParams,
    ) -> DataParallel<B, M> {
        self.step_with(lr, module, Grads::Single(grads))
    }

    fn step_multi(
        &mut self,
        lr: LearningRate,
        module: DataParallel<B, M>,
        grads: MultiGradientsParams,
    ) -> DataParallel<B, M> {
        self.step_with(lr, module, Grads::Multi(grads))
    }

    fn to_record(&self) -> Self::Record {
        self.records.clone()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.records = record;
        self
    }
}
