//! The Keras-style path with a parallel backward (`forward_parallel`, then
//! `ParallelBackward::backward`): outputs, gradients and ten Adam steps equal the bare model's
//! on one device, for 1 to 4 replicas, odd batches, losses that mix rows, several outputs and
//! derived output structs.

use burn::backend::ndarray::NdArrayDevice;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn_data_parallel::{DataParallel, Gather, Mean};
use burn_data_parallel_tests::*;

const TOLERANCE: f32 = 1e-6;

fn assert_gradients_match<B: AutodiffBackend, M: AutodiffModule<B>>(
    dp: &DataParallel<B, M>,
    actual: &GradientsParams,
    bare: &M,
    expected: &GradientsParams,
    what: &str,
) {
    let (actual, expected) = (gradients(dp.template(), actual), gradients(bare, expected));
    assert_eq!(actual.len(), expected.len());
    let mut compared = 0;
    for ((id, a), (_, e)) in actual.iter().zip(&expected) {
        match (a, e) {
            (Some(a), Some(e)) => {
                assert_close(a, e, TOLERANCE, &format!("{what}: gradient of {id}"));
                compared += 1;
            }
            (None, None) => {} // running state: no gradient on either side
            _ => panic!("{what}: gradient of {id} only on one side"),
        }
    }
    assert!(compared > 0, "{what}: no gradient compared");
}

/// A mean over every element of the merged output: a loss that mixes all rows.
fn mean_square<B: Backend>(y: Tensor<B, 2>) -> Tensor<B, 1> {
    y.powi_scalar(2).mean()
}

fn mlp_matches<B: AutodiffBackend>(host: B::Device, devices: Vec<B::Device>, rows: usize) {
    let replicas = devices.len();
    let model = initialised(Mlp::<B>::new(5, 3, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, devices).expect("valid devices");
    let x = random::<B, 2>([rows, 5], 11, &host);

    let expected = bare.forward(x.clone());
    let (actual, pending) = dp.forward_parallel(x, |m, x| m.forward(x));
    let what = format!("{replicas} replicas, {rows} rows");
    assert_eq!(actual.device(), host, "{what}: merged on the host");
    assert_close(&actual.to_data(), &expected.to_data(), TOLERANCE, &what);

    let expected_grads = GradientsParams::from_grads(mean_square(expected).backward(), &bare);
    let actual_grads = pending.backward(mean_square(actual));
    assert_gradients_match(&dp, &actual_grads, &bare, &expected_grads, &what);
}

#[test]
fn outputs_and_gradients_match_the_bare_model_for_one_to_four_replicas() {
    for replicas in 1..=4 {
        for rows in [12, 11, 3] {
            mlp_matches::<NdAutodiff>(NdArrayDevice::Cpu, nd_devices(replicas), rows);
            mlp_matches::<DispatchAutodiff>(flex(), mixed_devices(replicas), rows);
        }
    }
}

#[test]
fn a_loss_on_the_sum_of_two_outputs_matches_the_bare_model() {
    for replicas in 1..=4 {
        let host = flex();
        let model = initialised(TwoOutputs::<DispatchAutodiff>::new(4, &host));
        let bare = bare_copy(&model);
        let dp = DataParallel::new(model, mixed_devices(replicas)).expect("valid");
        let x = random::<DispatchAutodiff, 2>([9, 4], 12, &host);
        // The two heads' outputs mixed into one loss: a sum across columns and rows.
        let loss = |(first, second): (Tensor<DispatchAutodiff, 2>, Tensor<DispatchAutodiff, 2>)| {
            (first.sum_dim(1) + second.sum_dim(1)).powi_scalar(2).mean()
        };
        let expected = GradientsParams::from_grads(loss(bare.forward(x.clone())).backward(), &bare);
        let (outputs, pending) = dp.forward_parallel(x, |m, x| m.forward(x));
        let actual = pending.backward(loss(outputs));
        assert_gradients_match(
            &dp,
            &actual,
            &bare,
            &expected,
            &format!("{replicas} replicas"),
        );
    }
}

/// An output struct: per-row scores, and a mean that each replica computes over its shard.
#[derive(Debug, Clone, Gather)]
struct Scored<B: Backend> {
    scores: Tensor<B, 2>,
    #[gather(mean)]
    average: Tensor<B, 1>,
}

#[test]
fn a_derived_output_struct_with_a_shard_mean_matches_the_bare_model() {
    let host = flex();
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    let x = random::<DispatchAutodiff, 2>([11, 5], 13, &host);
    let score = |m: &Mlp<DispatchAutodiff>, x| {
        let scores = m.forward(x);
        Scored {
            average: scores.clone().mean(),
            scores,
        }
    };
    let loss = |s: Scored<DispatchAutodiff>| s.scores.powi_scalar(2).mean() + s.average * 3.0;
    let expected = GradientsParams::from_grads(loss(score(&bare, x.clone())).backward(), &bare);
    let (output, pending) = dp.forward_parallel(x, score);
    let actual = pending.backward(loss(output));
    assert_gradients_match(&dp, &actual, &bare, &expected, "derived struct");
}

#[test]
fn a_vec_of_outputs_and_a_mean_wrapper_match_the_bare_model() {
    let host = NdArrayDevice::Cpu;
    let model = initialised(Mlp::<NdAutodiff>::new(5, 3, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, nd_devices(4)).expect("valid");
    let x = random::<NdAutodiff, 2>([10, 5], 14, &host);
    let run = |m: &Mlp<NdAutodiff>, x: Tensor<NdAutodiff, 2>| {
        let y = m.forward(x);
        (vec![y.clone(), y.clone().exp()], Mean(y.abs().mean()))
    };
    let loss = |(ys, Mean(m)): (Vec<Tensor<NdAutodiff, 2>>, Mean<Tensor<NdAutodiff, 1>>)| {
        ys.into_iter()
            .map(|y| y.mean())
            .reduce(|a, b| a + b)
            .expect("two")
            + m
    };
    let expected = GradientsParams::from_grads(loss(run(&bare, x.clone())).backward(), &bare);
    let (output, pending) = dp.forward_parallel(x, run);
    let actual = pending.backward(loss(output));
    assert_gradients_match(&dp, &actual, &bare, &expected, "Vec and Mean");
}

fn ten_adam_steps<B: AutodiffBackend>(host: B::Device, devices: Vec<B::Device>) {
    let replicas = devices.len();
    let model = initialised(ConvNet::<B>::new(3, &host));
    let mut bare = bare_copy(&model);
    let mut dp = DataParallel::new(model, devices).expect("valid devices");
    let (mut bare_optim, mut dp_optim) = (AdamConfig::new().init(), AdamConfig::new().init());
    for step in 0..10 {
        let images = random::<B, 4>([7 + step as usize % 3, 1, 6, 6], 100 + step, &host);
        let rows = images.dims()[0];
        let target = random::<B, 2>([rows, 3], 200 + step, &host);

        let loss = (bare.forward(images.clone()) - target.clone())
            .powi_scalar(2)
            .mean();
        let grads = GradientsParams::from_grads(loss.backward(), &bare);
        bare = bare_optim.step(1e-2, bare, grads);

        let (y, pending) = dp.forward_parallel(images, |m, x| m.forward(x));
        let grads = pending.backward((y - target).powi_scalar(2).mean());
        dp = dp_optim.step(1e-2, dp, grads);
    }
    let what = format!("{replicas} replicas");
    for ((id, a), (_, e)) in float_params(dp.template()).iter().zip(&float_params(&bare)) {
        assert_close(a, e, TOLERANCE, &format!("{what}: parameter {id}"));
    }
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
fn an_input_that_requires_a_gradient_is_detached_and_the_weights_still_match() {
    let host = NdArrayDevice::Cpu;
    let model = initialised(Mlp::<NdAutodiff>::new(5, 3, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, nd_devices(2)).expect("valid");
    let x = random::<NdAutodiff, 2>([4, 5], 1, &host).require_grad();
    let expected =
        GradientsParams::from_grads(mean_square(bare.forward(x.clone())).backward(), &bare);
    let (y, pending) = dp.forward_parallel(x.clone(), |m, x| m.forward(x));
    // Without the detach, the replicas' backward passes would reach into the input's graph
    // from their threads; with it, they stop at their shards and the weights' gradients are
    // still the bare model's.
    let actual = pending.backward(mean_square(y));
    assert_gradients_match(&dp, &actual, &bare, &expected, "tracked input");
}

#[test]
fn a_loss_that_reads_no_output_gives_no_gradients() {
    let host = NdArrayDevice::Cpu;
    let dp = DataParallel::new(
        initialised(Mlp::<NdAutodiff>::new(5, 3, &host)),
        nd_devices(2),
    )
    .expect("valid");
    let x = random::<NdAutodiff, 2>([4, 5], 2, &host);
    let (_, pending) = dp.forward_parallel(x, |m, x| m.forward(x));
    let unrelated = random::<NdAutodiff, 1>([1], 3, &host).require_grad();
    let grads = pending.backward(unrelated.sum());
    assert!(
        gradients(dp.template(), &grads)
            .iter()
            .all(|(_, g)| g.is_none())
    );
}

#[test]
fn a_loss_term_on_the_templates_own_parameters_adds_its_gradient() {
    use burn::nn::{Linear, LinearConfig};
    let host = flex();
    let model: Linear<DispatchAutodiff> = initialised(LinearConfig::new(4, 3).init(&host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    let x = random::<DispatchAutodiff, 2>([7, 4], 21, &host);
    // A weight penalty computed on the host, from the template itself: its gradient comes
    // from the host's backward pass, not from any replica.
    let penalty = |m: &Linear<DispatchAutodiff>| m.weight.val().powi_scalar(2).sum() * 0.5;
    let expected_loss = mean_square(bare.forward(x.clone())) + penalty(&bare);
    let expected = GradientsParams::from_grads(expected_loss.backward(), &bare);
    let (y, pending) = dp.forward_parallel(x, |m, x| m.forward(x));
    let actual = pending.backward(mean_square(y) + penalty(dp.template()));
    assert_gradients_match(&dp, &actual, &bare, &expected, "loss with a weight penalty");
}

#[test]
fn a_replica_that_panics_leaves_the_template_and_its_running_stats_unchanged() {
    let host = flex();
    let model = initialised(Normalised::<DispatchAutodiff>::new(4, 3, &host));
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    let before = float_params(dp.template());
    let x = random::<DispatchAutodiff, 2>([7, 4], 22, &host);
    let error = dp
        .try_forward_parallel(x, |m, x| {
            if std::thread::current().name() == Some("dp-replica-1") {
                panic!("replica 1 fails");
            }
            m.forward(x)
        })
        .map(|_| ())
        .expect_err("a replica panicked");
    assert!(
        matches!(
            error,
            burn_data_parallel::DataParallelError::ReplicaPanicked { index: 1, .. }
        ),
        "{error}"
    );
    assert_eq!(float_params(dp.template()), before);
}
