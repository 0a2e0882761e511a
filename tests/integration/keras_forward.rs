//! The Keras-style `forward`: outputs and gradients equal the bare model's on one device, for
//! 1 to 4 replicas, batches that divide and that don't, and four kinds of model.

use burn::backend::ndarray::NdArrayDevice;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use burn_data_parallel::{DataParallel, Gather, Scatter};
use burn_data_parallel_tests::*;

const TOLERANCE: f32 = 1e-5;

/// Runs `run` through `DataParallel` over `devices` and on the bare model, then compares the
/// outputs and the gradients of `loss`.
fn check_against_bare<B, M, I, O>(
    model: M,
    devices: Vec<B::Device>,
    input: I,
    run: impl Fn(&M, I) -> O + Sync,
    outputs: impl Fn(&O) -> Vec<Tensor<B, 2>>,
) where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    I: Scatter<B> + Send + Clone,
    O: Gather<B> + Send,
{
    let model = initialised(model);
    let bare = bare_copy(&model);
    let replicas = devices.len();
    let dp = DataParallel::new(model, devices).expect("valid devices");

    let expected = run(&bare, input.clone());
    let actual = dp.forward(input, &run);

    let loss = |tensors: Vec<Tensor<B, 2>>| {
        tensors
            .into_iter()
            .map(|t| t.powi_scalar(2).mean())
            .reduce(|a, b| a + b)
            .expect("at least one output")
    };
    let (expected, actual) = (outputs(&expected), outputs(&actual));
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a.device(), e.device(), "outputs are merged on the host");
        let what = format!("output with {replicas} replicas");
        assert_close(&a.to_data(), &e.to_data(), TOLERANCE, &what);
    }

    let expected_grads = GradientsParams::from_grads(loss(expected).backward(), &bare);
    let actual_grads = GradientsParams::from_grads(loss(actual).backward(), &dp);
    let expected_grads = gradients(&bare, &expected_grads);
    let actual_grads = gradients(dp.template(), &actual_grads);
    assert_eq!(actual_grads.len(), expected_grads.len());
    for ((id, actual), (_, expected)) in actual_grads.iter().zip(&expected_grads) {
        let actual = actual
            .as_ref()
            .expect("every template parameter has a gradient");
        let expected = expected
            .as_ref()
            .expect("every bare parameter has a gradient");
        let what = format!("gradient of {id} with {replicas} replicas");
        assert_close(actual, expected, TOLERANCE, &what);
    }
}

/// Batch sizes that divide by every replica count, that don't, and one smaller than 4.
const BATCH_SIZES: [usize; 3] = [12, 7, 3];

#[test]
fn mlp_matches_the_bare_model_on_repeated_devices() {
    let host = NdArrayDevice::Cpu;
    for replicas in 1..=4 {
        for batch in BATCH_SIZES {
            let x = random::<NdAutodiff, 2>([batch, 5], 7, &host);
            check_against_bare(
                Mlp::new(5, 3, &host),
                nd_devices(replicas),
                x,
                |m: &Mlp<NdAutodiff>, x| m.forward(x),
                |y| vec![y.clone()],
            );
        }
    }
}

#[test]
fn convnet_matches_the_bare_model_on_repeated_devices() {
    let host = NdArrayDevice::Cpu;
    for replicas in 1..=4 {
        for batch in BATCH_SIZES {
            let images = random::<NdAutodiff, 4>([batch, 1, 6, 6], 11, &host);
            check_against_bare(
                ConvNet::new(3, &host),
                nd_devices(replicas),
                images,
                |m: &ConvNet<NdAutodiff>, x| m.forward(x),
                |y| vec![y.clone()],
            );
        }
    }
}

fn token_ids<B: burn::tensor::backend::Backend>(
    batch: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..batch * 3).map(|i| ((i * 7 + 3) % 10) as i64).collect();
    Tensor::<B, 1, Int>::from_ints(ids.as_slice(), device).reshape([batch, 3])
}

#[test]
fn two_input_model_with_int_ids_matches_the_bare_model() {
    let host = NdArrayDevice::Cpu;
    for replicas in 1..=4 {
        for batch in BATCH_SIZES {
            let input = (
                token_ids::<NdAutodiff>(batch, &host),
                random([batch, 2], 3, &host),
            );
            check_against_bare(
                TwoInputs::new(2, &host),
                nd_devices(replicas),
                input,
                |m: &TwoInputs<NdAutodiff>, (ids, features)| m.forward(ids, features),
                |y| vec![y.clone()],
            );
        }
    }
}

#[test]
fn two_output_model_matches_the_bare_model() {
    let host = NdArrayDevice::Cpu;
    for replicas in 1..=4 {
        for batch in BATCH_SIZES {
            let x = random::<NdAutodiff, 2>([batch, 4], 5, &host);
            check_against_bare(
                TwoOutputs::new(4, &host),
                nd_devices(replicas),
                x,
                |m: &TwoOutputs<NdAutodiff>, x| m.forward(x),
                |(a, b)| vec![a.clone(), b.clone()],
            );
        }
    }
}

#[test]
fn every_model_matches_across_distinct_cpu_devices() {
    let host = flex();
    for replicas in 1..=4 {
        for batch in [8, 5] {
            let devices = || mixed_devices(replicas);
            check_against_bare(
                Mlp::new(5, 3, &host),
                devices(),
                random::<DispatchAutodiff, 2>([batch, 5], 7, &host),
                |m: &Mlp<DispatchAutodiff>, x| m.forward(x),
                |y| vec![y.clone()],
            );
            check_against_bare(
                ConvNet::new(3, &host),
                devices(),
                random::<DispatchAutodiff, 4>([batch, 1, 6, 6], 11, &host),
                |m: &ConvNet<DispatchAutodiff>, x| m.forward(x),
                |y| vec![y.clone()],
            );
            check_against_bare(
                TwoInputs::new(2, &host),
                devices(),
                (
                    token_ids::<DispatchAutodiff>(batch, &host),
                    random([batch, 2], 3, &host),
                ),
                |m: &TwoInputs<DispatchAutodiff>, (ids, features)| m.forward(ids, features),
                |y| vec![y.clone()],
            );
            check_against_bare(
                TwoOutputs::new(4, &host),
                devices(),
                random::<DispatchAutodiff, 2>([batch, 4], 5, &host),
                |m: &TwoOutputs<DispatchAutodiff>, x| m.forward(x),
                |(a, b)| vec![a.clone(), b.clone()],
            );
        }
    }
}

/// Ten Adam steps on a template updated through `DataParallel` against the bare model.
fn ten_adam_steps<B: AutodiffBackend>(host: B::Device, devices: Vec<B::Device>) {
    let model = initialised(Mlp::<B>::new(5, 3, &host));
    let mut bare = bare_copy(&model);
    let mut dp = DataParallel::new(model, devices).expect("valid devices");
    let mut bare_optim = AdamConfig::new().init();
    let mut dp_optim = AdamConfig::new().init();

    for step in 0..10 {
        let x = random::<B, 2>([7, 5], 100 + step, &host);
        let target = random::<B, 2>([7, 3], 200 + step, &host);

        let loss = (bare.forward(x.clone()) - target.clone())
            .powi_scalar(2)
            .mean();
        let grads = GradientsParams::from_grads(loss.backward(), &bare);
        bare = bare_optim.step(1e-2, bare, grads);

        let y = dp.forward(x, |m, x| m.forward(x));
        let loss = (y - target).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &dp);
        dp = dp_optim.step(1e-2, dp, grads);
    }

    assert_same_params(dp.template(), &bare, TOLERANCE);
    assert_eq!(
        dp.template().devices(),
        vec![host],
        "the template stays on the host"
    );
}

#[test]
fn ten_adam_steps_reach_the_bare_models_weights() {
    for replicas in 1..=4 {
        ten_adam_steps::<NdAutodiff>(NdArrayDevice::Cpu, nd_devices(replicas));
        ten_adam_steps::<DispatchAutodiff>(flex(), mixed_devices(replicas));
    }
}

#[test]
fn the_template_is_unchanged_by_forward_and_stays_on_the_host() {
    let host = flex();
    let model = initialised(ConvNet::<DispatchAutodiff>::new(3, &host));
    let before = float_params(&model);
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid devices");
    let _ = dp.forward(random([6, 1, 6, 6], 1, &host), |m, x| m.forward(x));
    assert_eq!(float_params(dp.template()), before);
    assert_eq!(dp.template().devices(), vec![host.clone()]);
    assert_eq!(dp.host(), &host);
}

/// Burn 0.21 loses a node registered while another thread merges its graph; `forward` joins
/// the graphs first. Before that, about one call in twenty lost a replica's share of the first
/// layer's gradient: a hundred calls in a row must all be exact.
#[test]
fn gradients_stay_exact_over_many_calls() {
    let host = NdArrayDevice::Cpu;
    for call in 0..100 {
        let batch = 5 + call % 4;
        let input = (
            token_ids::<NdAutodiff>(batch, &host),
            random([batch, 2], call as u64, &host),
        );
        check_against_bare(
            TwoInputs::new(2, &host),
            nd_devices(4),
            input,
            |m: &TwoInputs<NdAutodiff>, (ids, features)| m.forward(ids, features),
            |y| vec![y.clone()],
        );
    }
}

/// The same `DataParallel` over many calls without an optimizer step: its parameters' leaves
/// are consumed by the first backward, and later calls must stay exact, for the input's
/// gradient too.
#[test]
fn gradients_reach_the_parameters_and_a_tracked_input_on_every_call() {
    let host = flex();
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid devices");
    for call in 0..30 {
        // Two leaves with the same values: a leaf's graph is consumed by its first backward.
        let data = random::<DispatchAutodiff, 2>([7, 5], call, &host).into_data();
        let x = Tensor::<DispatchAutodiff, 2>::from_data(data.clone(), &host).require_grad();
        let grads = bare.forward(x.clone()).powi_scalar(2).mean().backward();
        let expected_input = x.grad(&grads).expect("input gradient").into_data();
        let expected = gradients(&bare, &GradientsParams::from_grads(grads, &bare));

        let x = Tensor::<DispatchAutodiff, 2>::from_data(data, &host).require_grad();
        let y = dp.forward(x.clone(), |m, x| m.forward(x));
        let grads = y.powi_scalar(2).mean().backward();
        let actual_input = x.grad(&grads).expect("input gradient").into_data();
        let actual = gradients(dp.template(), &GradientsParams::from_grads(grads, &dp));

        assert_close(&actual_input, &expected_input, TOLERANCE, "input gradient");
        for ((id, a), (_, e)) in actual.iter().zip(&expected) {
            let (a, e) = (a.as_ref().expect("grad"), e.as_ref().expect("grad"));
            assert_close(a, e, TOLERANCE, &format!("gradient of {id}, call {call}"));
        }
    }
}
