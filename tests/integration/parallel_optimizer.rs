//! `ParallelOptimizer` against Burn's `OptimizerAdaptor` on the same `DataParallel` and the
//! same gradients: Adam (whose large parameter is stepped by rows), Adam with AMSGrad, AdamW
//! and SGD with momentum and weight decay, each with gradient clipping too, give the
//! adaptor's weights bit for bit; and optimizer state moves between the two through files
//! (see `optimizer_records` for the bare model's side).

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamConfig, AdamWConfig, MultiGradientsParams, Optimizer, SgdConfig, SimpleOptimizer,
};
use burn::tensor::Int;
use burn::tensor::Tensor;
use burn::tensor::backend::DeviceOps;
use burn_data_parallel::{DataParallel, ParallelOptimizer};
use burn_data_parallel_tests::learner::ClassBatch;
use burn_data_parallel_tests::*;

type B = NdAutodiff;
type Dp = DataParallel<B, Mlp<B>>;

/// Wide enough that the first layer's weight (5000 × 16) is stepped in row ranges.
const INPUTS: usize = 5_000;
const STEPS: u64 = 5;

fn batch(step: u64) -> ClassBatch<B> {
    let device = Default::default();
    let features = random::<B, 2>([8, INPUTS], step, &device);
    let targets = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 0, 1, 2, 0, 1], &device);
    ClassBatch { features, targets }
}

/// Five steps of two copies of one `DataParallel`, one with the adaptor and one with the
/// parallel optimizer, on the same gradients; their weights must be the same bits.
fn same_as_adaptor<O>(adaptor: OptimizerAdaptor<O, Dp, B>)
where
    O: SimpleOptimizer<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend> + 'static,
{
    let device = Default::default();
    let model = initialised(Mlp::<B>::new(INPUTS, 3, &device));
    let mut with_adaptor = DataParallel::new(bare_copy(&model), nd_devices(2)).expect("CPU");
    let mut with_parallel = DataParallel::new(model, nd_devices(2)).expect("CPU");
    let mut parallel = ParallelOptimizer::from_adaptor(adaptor.clone());
    let mut adaptor = adaptor;
    for step in 0..STEPS {
        // One batch for both: other tests draw from the same seeded generator meanwhile.
        let batch = batch(step);
        let grads = with_adaptor
            .try_train_step(batch.clone())
            .expect("a step")
            .grads;
        with_adaptor = adaptor.step(1e-2, with_adaptor, grads);
        let grads = with_parallel.try_train_step(batch).expect("a step").grads;
        with_parallel = parallel.step(1e-2, with_parallel, grads);
    }
    for ((id, actual), (_, expected)) in float_params(&with_parallel)
        .iter()
        .zip(&float_params(&with_adaptor))
    {
        assert_eq!(actual, expected, "parameter {id}");
    }
    // The state is the adaptor's too: one more step from each optimizer's record agrees.
    assert_eq!(parallel.to_record().len(), adaptor.to_record().len());
    let mut resumed = adaptor.clone().load_record(parallel.to_record());
    let last = batch(STEPS);
    let grads = with_adaptor
        .try_train_step(last.clone())
        .expect("a step")
        .grads;
    let from_adaptor_state = adaptor.step(1e-2, with_adaptor.clone(), grads);
    let grads = with_adaptor.try_train_step(last).expect("a step").grads;
    let from_parallel_state = resumed.step(1e-2, with_adaptor, grads);
    for ((id, actual), (_, expected)) in float_params(&from_parallel_state)
        .iter()
        .zip(&float_params(&from_adaptor_state))
    {
        assert_eq!(actual, expected, "parameter {id} after resuming");
    }
}

#[test]
fn adam_steps_are_the_adaptors() {
    same_as_adaptor(AdamConfig::new().init());
    same_as_adaptor(
        AdamConfig::new()
            .with_amsgrad(true)
            .with_weight_decay(Some(WeightDecayConfig::new(1e-3)))
            .with_grad_clipping(Some(GradientClippingConfig::Norm(0.5)))
            .init(),
    );
}

#[test]
fn adamw_steps_are_the_adaptors() {
    same_as_adaptor(AdamWConfig::new().with_weight_decay(1e-2).init());
}

#[test]
fn sgd_steps_are_the_adaptors() {
    same_as_adaptor(
        SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new()))
            .with_weight_decay(Some(WeightDecayConfig::new(1e-3)))
            .with_gradient_clipping(Some(GradientClippingConfig::Value(0.1)))
            .init(),
    );
}

#[test]
fn gradient_clipping_carries_over_both_ways() {
    let adaptor = AdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init::<B, Dp>();
    let parallel: ParallelOptimizer<_, B, Mlp<B>> = ParallelOptimizer::from_adaptor(adaptor);
    let back: OptimizerAdaptor<_, Mlp<B>, B> = parallel.into_adaptor();
    assert!(back.has_gradient_clipping());
    let plain = ParallelOptimizer::<_, B, Mlp<B>>::new(AdamConfig::new().build());
    let back: OptimizerAdaptor<_, Mlp<B>, B> = plain.into_adaptor();
    assert!(!back.has_gradient_clipping());
}

#[test]
fn per_device_gradient_sets_are_summed_as_the_adaptor_sums_them() {
    // Burn's multi-device strategy hands the optimizer one gradient set per device; both
    // optimizers add a parameter's sets together before its step.
    let device = Default::default();
    let model = initialised(Mlp::<B>::new(INPUTS, 3, &device));
    let with_adaptor = DataParallel::new(bare_copy(&model), nd_devices(2)).expect("CPU");
    let with_parallel = DataParallel::new(model, nd_devices(2)).expect("CPU");
    let batches = [batch(0), batch(1)];
    let sets = |dp: &Dp| MultiGradientsParams {
        grads: batches
            .iter()
            .map(|batch| {
                let grads = dp.try_train_step(batch.clone()).expect("a step").grads;
                (grads, device.id())
            })
            .collect(),
    };
    let mut adaptor = AdamConfig::new().init();
    let mut parallel = ParallelOptimizer::from_adaptor(AdamConfig::new().init());
    let grads = sets(&with_adaptor);
    let with_adaptor = adaptor.step_multi(1e-2, with_adaptor, grads);
    let grads = sets(&with_parallel);
    let with_parallel = parallel.step_multi(1e-2, with_parallel, grads);
    for ((id, actual), (_, expected)) in float_params(&with_parallel)
        .iter()
        .zip(&float_params(&with_adaptor))
    {
        assert_eq!(actual, expected, "parameter {id}");
    }
}
