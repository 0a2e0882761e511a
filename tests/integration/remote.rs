//! Replicas on Burn servers (feature `remote`): servers started in this process on 127.0.0.1,
//! Flex behind them, against the bare model on a local Flex device.

use std::time::{Duration, Instant};

use burn::backend::remote::RemoteDevice;
use burn::backend::{Autodiff, Flex, RemoteBackend};
use burn::module::{AutodiffModule, Module, ParamId};
use burn::optim::{AdamConfig, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{Tensor, TensorData};
use burn::train::{ClassificationOutput, InferenceStep, TrainStep};
use burn_data_parallel::{DataParallel, DataParallelError, FailurePolicy};
use burn_data_parallel_tests::learner::{ClassBatch, ClassBatcher, class_items};
use burn_data_parallel_tests::remote::{Server, Stop, StopsItsServer, doom, within};
use burn_data_parallel_tests::*;

use burn::data::dataloader::batcher::Batcher;

type Remote = Autodiff<RemoteBackend>;
type Local = Autodiff<Flex>;

const LIMIT: Duration = Duration::from_secs(120);

/// The same model on the local device and on `host` (a server): same weights, same ids.
fn models(host: &burn::backend::remote::RemoteDevice) -> (Mlp<Local>, Mlp<Remote>) {
    let local = initialised(Mlp::<Local>::new(5, 3, &Default::default()));
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder
        .record(local.clone().into_record(), ())
        .expect("a record");
    let record = recorder
        .load(bytes, host)
        .expect("the record loads on the server");
    let remote = Mlp::<Remote>::new(5, 3, host).load_record(record);
    (bare_copy(&local), remote)
}

/// Asserts that `actual` and `expected` name the same parameters in the same order, with
/// values within 1e-5 relative.
fn assert_same_values(
    actual: &[(ParamId, TensorData)],
    expected: &[(ParamId, TensorData)],
    what: &str,
) {
    assert_eq!(actual.len(), expected.len(), "{what} counts differ");
    for ((id, a), (expected_id, e)) in actual.iter().zip(expected) {
        assert_eq!(id, expected_id, "{what} ids differ");
        assert_close(a, e, 1e-5, &format!("{what} {id}"));
    }
}

fn data<const D: usize>(tensor: &Tensor<impl burn::tensor::backend::Backend, D>) -> TensorData {
    tensor.to_data()
}

#[test]
fn forward_and_gradients_equal_the_bare_models() {
    within(LIMIT, || {
        let servers: Vec<Server> = (0..3).map(|_| Server::start()).collect();
        let host = servers[0].device();
        let (bare, model) = models(&host);
        let dp = DataParallel::new(model, vec![servers[1].device(), servers[2].device()])
            .expect("the servers answer");

        // Inference: the Keras-style forward on the inner (non-autodiff) modules.
        let x = random::<Flex, 2>([7, 5], 3, &Default::default());
        let expected = bare.valid().forward(x.clone());
        let x = Tensor::<RemoteBackend, 2>::from_data(x.to_data(), &host);
        let actual = dp
            .valid()
            .try_forward(x, |m, x| m.forward(x))
            .expect("a forward pass");
        assert_close(&data(&actual), &data(&expected), 1e-5, "outputs");

        // Training: the per-replica step's gradients.
        let items = class_items(7, 5, 3);
        let expected = TrainStep::step(
            &bare,
            ClassBatcher.batch(items.clone(), &Default::default()),
        );
        let actual = dp
            .try_train_step(ClassBatcher.batch(items, &host))
            .expect("a training step");
        assert_close(
            &data(&actual.item.loss),
            &data(&expected.item.loss),
            1e-5,
            "loss",
        );
        let present = |grads: Vec<(ParamId, Option<TensorData>)>| -> Vec<(ParamId, TensorData)> {
            grads
                .into_iter()
                .map(|(id, grad)| (id, grad.expect("every parameter has a gradient")))
                .collect()
        };
        assert_same_values(
            &present(gradients(dp.template(), &actual.grads)),
            &present(gradients(&bare, &expected.grads)),
            "gradient",
        );
    });
}

#[test]
fn a_differentiable_keras_style_forward_over_servers_is_refused() {
    within(LIMIT, || {
        let servers: Vec<Server> = (0..2).map(|_| Server::start()).collect();
        let host = servers[0].device();
        let model = Mlp::<Remote>::new(5, 3, &host);
        let dp = DataParallel::new(model, vec![servers[1].device()]).expect("the server answers");
        let x = Tensor::<Remote, 2>::from_data(TensorData::zeros::<f32, _>([2, 5]), &host);
        let error = dp.try_forward(x, |m, x| m.forward(x)).expect_err("refused");
        assert_eq!(
            error,
            DataParallelError::DifferentiableRemoteForward {
                device: format!("{:?}", servers[1].device())
            }
        );
    });
}

#[test]
fn ten_adam_steps_on_the_learner_path_reach_the_bare_models_weights() {
    within(LIMIT, || {
        let servers: Vec<Server> = (0..3).map(|_| Server::start()).collect();
        let host = servers[0].device();
        let (mut bare, model) = models(&host);
        let mut dp = DataParallel::new(model, vec![servers[1].device(), servers[2].device()])
            .expect("the servers answer");
        let (mut bare_optim, mut dp_optim) = (AdamConfig::new().init(), AdamConfig::new().init());
        for step in 0..10 {
            let items = class_items(9 + step, 5, 3);
            let batch: ClassBatch<Local> = ClassBatcher.batch(items.clone(), &Default::default());
            let output = TrainStep::step(&bare, batch);
            bare = bare_optim.step(1e-2, bare, output.grads);
            let output = dp
                .try_train_step(ClassBatcher.batch(items, &host))
                .expect("a training step");
            dp = dp_optim.step(1e-2, dp, output.grads);
        }
        assert_same_values(
            &float_params(dp.template()),
            &float_params(&bare),
            "parameter",
        );
        assert_eq!(dp.template().devices(), vec![host]);
    });
}

#[test]
fn a_server_that_is_not_there_is_an_unavailable_device() {
    within(LIMIT, || {
        let mut server = Server::start();
        let device = server.device();
        server.stop();
        let local = Server::start();
        let model = Mlp::<Remote>::new(5, 3, &local.device());
        let error = DataParallel::new(model, vec![device]).expect_err("no server");
        let DataParallelError::DeviceUnavailable { available, .. } = &error else {
            panic!("expected DeviceUnavailable, got {error:?}");
        };
        assert!(
            available.starts_with("no Burn server answers at 127.0.0.1:"),
            "{error}"
        );
    });
}

/// The servers of a loss test: the host's and a replica's that stay, and one that will be lost;
/// a `DataParallel` over the last two, and the template's weights after one step on them all.
struct BeforeLoss<M: Module<Remote>> {
    servers: Vec<Server>,
    doomed: Server,
    dp: DataParallel<Remote, M>,
    before: Vec<(ParamId, TensorData)>,
}

fn one_step_before_a_loss<M>(wrap: impl FnOnce(Mlp<Remote>) -> M) -> BeforeLoss<M>
where
    M: AutodiffModule<Remote>
        + TrainStep<Input = ClassBatch<Remote>, Output = ClassificationOutput<Remote>>
        + 'static,
{
    let servers: Vec<Server> = (0..2).map(|_| Server::start()).collect();
    let doomed = Server::start();
    let (_, model) = models(&servers[0].device());
    let dp = DataParallel::new(wrap(model), vec![servers[1].device(), doomed.device()])
        .expect("the servers answer");
    dp.try_train_step(batch_on(&servers[0].device()))
        .expect("a step while every server runs");
    let before = float_params(dp.template());
    BeforeLoss {
        servers,
        doomed,
        dp,
        before,
    }
}

/// The batch of the loss tests, on `host`.
fn batch_on(host: &RemoteDevice) -> ClassBatch<Remote> {
    ClassBatcher.batch(class_items(8, 5, 3), host)
}

/// Asserts that `lost` is the one device a `DataParallel` reports lost.
fn assert_only_lost(lost_devices: &[RemoteDevice], lost: &RemoteDevice) {
    let reported: Vec<String> = lost_devices
        .iter()
        .map(|device| format!("{device:?}"))
        .collect();
    assert_eq!(reported, vec![format!("{lost:?}")]);
}

/// Asserts that what began at `started` ended within a minute: a loss is noticed in seconds.
fn assert_within_a_minute(started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// Asserts that `error` is `DeviceLost` naming `lost`.
fn assert_lost(error: &DataParallelError, lost: &RemoteDevice) {
    let DataParallelError::DeviceLost { device, .. } = error else {
        panic!("expected DeviceLost, got {error:?}");
    };
    assert_eq!(device, &format!("{lost:?}"));
}

#[test]
fn a_server_stopped_between_steps_is_a_lost_device_and_the_template_stays() {
    within(LIMIT, || {
        let BeforeLoss {
            servers,
            mut doomed,
            dp,
            before,
        } = one_step_before_a_loss(|model| model);
        let lost = doomed.device();
        doomed.stop();
        let error = dp
            .try_train_step(batch_on(&servers[0].device()))
            .err()
            .expect("the stopped server fails the step");
        assert_lost(&error, &lost);
        assert_eq!(float_params(dp.template()), before);
    });
}

#[test]
fn under_redistribute_a_server_stopped_between_steps_is_left_out() {
    within(LIMIT, || {
        let BeforeLoss {
            servers,
            mut doomed,
            dp,
            ..
        } = one_step_before_a_loss(|model| model);
        let dp = dp.with_failure_policy(FailurePolicy::Redistribute);
        let lost = doomed.device();
        doomed.stop();
        dp.try_train_step(batch_on(&servers[0].device()))
            .expect("the step goes on without the stopped server");
        assert_only_lost(&dp.lost_devices(), &lost);
    });
}

/// Set in the child process that runs [`lost_mid_step_scenario`].
const SCENARIO: &str = "BURN_DATA_PARALLEL_LOST_MID_STEP";

/// The child's exit code when every check passed (0 could also mean that no test ran).
const SCENARIO_PASSED: i32 = 42;

#[test]
fn a_server_lost_in_the_middle_of_a_step_is_a_lost_device_and_the_template_stays() {
    run_in_own_process("remote::lost_mid_step_scenario");
}

#[test]
fn under_redistribute_a_server_lost_in_the_middle_of_a_step_costs_nothing() {
    run_in_own_process("remote::lost_mid_step_redistributed_scenario");
}

#[test]
fn under_redistribute_a_server_lost_while_its_gradients_move_home_costs_nothing() {
    run_in_own_process("remote::lost_after_backward_redistributed_scenario");
}

#[test]
fn under_redistribute_a_server_lost_during_inference_costs_nothing() {
    run_in_own_process("remote::lost_during_inference_redistributed_scenario");
}

/// Run by [`under_redistribute_a_server_lost_during_inference_costs_nothing`] in a process of
/// its own: Burn's `InferenceStep` (the Learner's validation) over two servers, one stopped as
/// its replica starts, against the bare model on the host's server.
#[test]
#[ignore = "run in its own process by under_redistribute_a_server_lost_during_inference_..."]
fn lost_during_inference_redistributed_scenario() {
    as_scenario(|| {
        let servers: Vec<Server> = (0..2).map(|_| Server::start()).collect();
        let doomed = Server::start();
        let (host, lost) = (servers[0].device(), doomed.device());
        let (_, model) = models(&host);
        let bare = model.valid();
        let dp = DataParallel::new(
            StopsItsServer { inner: model },
            vec![servers[1].device(), lost.clone()],
        )
        .expect("the servers answer")
        .with_failure_policy(FailurePolicy::Redistribute)
        .valid();
        let batch = ClassBatcher.batch(class_items(8, 5, 3), &host);

        doom(doomed, Stop::AtStart);
        let started = Instant::now();
        let output = InferenceStep::step(&dp, batch.clone());
        assert_within_a_minute(started);
        assert_only_lost(&dp.lost_devices(), &lost);
        let expected = bare.classify(batch);
        assert_eq!(output.output.dims(), expected.output.dims());
        let error = relative_error(&output.output.into_data(), &expected.output.into_data());
        assert!(error <= 1e-6, "logits differ by {error:e}");
        assert_eq!(output.targets.into_data(), expected.targets.into_data());
    });
}

/// Runs the ignored test `name` of this binary in a process of its own and expects it to
/// exit with [`SCENARIO_PASSED`] within [`LIMIT`].
///
/// The replica whose server is lost stops inside the panic hook and holds what it holds for
/// the rest of the process; the test harness takes the hook when it ends, so such a scenario
/// runs apart from the other tests.
fn run_in_own_process(name: &str) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env(SCENARIO, "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the scenario's process starts");
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the scenario's status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the scenario {name} did not end within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status.code(),
        Some(SCENARIO_PASSED),
        "the scenario {name} failed: {status} (its stderr is above)"
    );
}

/// The body of a scenario that [`run_in_own_process`] runs: nothing in the ordinary test run;
/// in its own process, `checks`, then an exit with [`SCENARIO_PASSED`] when they passed.
fn as_scenario(checks: impl FnOnce() + std::panic::UnwindSafe) {
    if std::env::var_os(SCENARIO).is_none() {
        return;
    }
    let passed = std::panic::catch_unwind(checks).is_ok();
    std::process::exit(if passed { SCENARIO_PASSED } else { 1 });
}

/// Run by [`under_redistribute_a_server_lost_in_the_middle_of_a_step_costs_nothing`] in a
/// process of its own.
#[test]
#[ignore = "run in its own process by under_redistribute_a_server_lost_in_the_middle_..."]
fn lost_mid_step_redistributed_scenario() {
    redistributed_after_a_loss(Stop::AtStart);
}

/// Run by [`under_redistribute_a_server_lost_while_its_gradients_move_home_costs_nothing`] in a
/// process of its own.
#[test]
#[ignore = "run in its own process by under_redistribute_a_server_lost_while_..."]
fn lost_after_backward_redistributed_scenario() {
    redistributed_after_a_loss(Stop::AfterBackward);
}

/// Ten Adam steps of a `DataParallel` whose second server is stopped at `when` in the first,
/// under `Redistribute`, against the same ten steps on the server that stays, without a loss.
fn redistributed_after_a_loss(when: Stop) {
    as_scenario(|| {
        let BeforeLoss {
            servers,
            doomed,
            dp,
            ..
        } = one_step_before_a_loss(|inner| StopsItsServer { inner });
        let (host, lost) = (servers[0].device(), doomed.device());
        let fault_free = DataParallel::new(dp.template().clone(), vec![servers[1].device()])
            .expect("the server answers");
        let mut dp = dp.with_failure_policy(FailurePolicy::Redistribute);

        doom(doomed, when);
        let started = Instant::now();
        let mut runs = [
            (dp.clone(), AdamConfig::new().init()),
            (fault_free, AdamConfig::new().init()),
        ];
        for step in 0..10 {
            for (module, optim) in &mut runs {
                let batch = ClassBatcher.batch(class_items(8 + step, 5, 3), &host);
                let output = module
                    .try_train_step(batch)
                    .expect("the step completes without the lost server");
                *module = optim.step(1e-2, module.clone(), output.grads);
            }
        }
        assert_within_a_minute(started);
        dp = runs[0].0.clone();
        assert_only_lost(&dp.lost_devices(), &lost);
        let differences: Vec<(ParamId, f32)> = float_params(dp.template())
            .iter()
            .zip(&float_params(runs[1].0.template()))
            .map(|((id, a), (_, b))| (*id, relative_error(a, b)))
            .collect();
        let worst = differences.iter().map(|(_, d)| *d).fold(0.0, worst_of);
        eprintln!("worst relative difference to the fault-free run: {worst:e}");
        assert!(worst <= 1e-6, "relative differences {differences:?}");
    });
}

/// Run by [`a_server_lost_in_the_middle_of_a_step_is_a_lost_device_and_the_template_stays`] in
/// a process of its own.
#[test]
#[ignore = "run in its own process by a_server_lost_in_the_middle_of_a_step_..."]
fn lost_mid_step_scenario() {
    as_scenario(|| {
        let BeforeLoss {
            servers,
            doomed,
            dp,
            before,
        } = one_step_before_a_loss(|inner| StopsItsServer { inner });
        let (host, lost) = (servers[0].device(), doomed.device());

        doom(doomed, Stop::AtStart);
        let started = Instant::now();
        let error = dp
            .try_train_step(batch_on(&host))
            .err()
            .expect("the lost server fails the step");
        assert_within_a_minute(started);
        assert_lost(&error, &lost);
        assert_eq!(float_params(dp.template()), before);

        // The remaining devices still train.
        let dp = DataParallel::new(dp.into_inner(), vec![servers[1].device()])
            .expect("the other server answers");
        dp.try_train_step(batch_on(&host))
            .expect("a step without the lost server");
    });
}
