//! A replica that fails during a training step: made to panic, or to sleep past the step
//! deadline, on one device at one step. Each run is compared with the same run without the
//! fault (ten Adam steps), and bounded in time.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use burn::backend::ndarray::NdArrayDevice;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ClassificationOutput, TrainOutput, TrainStep};
use burn_data_parallel::{DataParallel, DataParallelError, FailurePolicy, Result};
use burn_data_parallel_tests::learner::{ClassBatch, ClassBatcher, class_items};
use burn_data_parallel_tests::{
    Mlp, NdAutodiff, bare_copy, float_params, initialised, nd_devices, relative_error,
};

/// What an armed fault does to the replica it hits.
#[derive(Debug, Clone, Copy)]
enum Action {
    Panic,
    Sleep(Duration),
}

/// A fault armed for the replica on one device: it fires once, on that replica's worker
/// (`dp-replica-{i}`).
#[derive(Debug, Clone, Default)]
struct Fault(Arc<Mutex<Option<(usize, Action)>>>);

impl Fault {
    fn arm(&self, device: usize, action: Action) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((device, action));
    }

    fn fire(&self) {
        let name = thread::current().name().unwrap_or_default().to_string();
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((device, action)) = *slot else {
            return;
        };
        if !(name.starts_with("dp-") && name.ends_with(&format!("-replica-{device}"))) {
            return;
        }
        *slot = None;
        drop(slot);
        match action {
            Action::Panic => panic!("a fault made to fail the replica on device {device}"),
            Action::Sleep(duration) => thread::sleep(duration),
        }
    }
}

/// The test MLP with a fault that can be armed between steps.
#[derive(Module, Debug)]
struct Faulty<B: Backend> {
    mlp: Mlp<B>,
    #[module(skip)]
    fault: Fault,
}

impl<B: AutodiffBackend> TrainStep for Faulty<B> {
    type Input = ClassBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        self.fault.fire();
        let item = self.mlp.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

/// One run's set-up: policy, deadline, and the fault to arm before step `at`.
struct Run {
    policy: FailurePolicy,
    deadline: Option<Duration>,
    fault: Option<(usize, usize, Action)>,
}

impl Run {
    const FAULT_FREE: Run = Run {
        policy: FailurePolicy::Fail,
        deadline: None,
        fault: None,
    };
}

/// The initial weights every run starts from.
fn model() -> Mlp<NdAutodiff> {
    initialised(Mlp::new(5, 3, &NdArrayDevice::Cpu))
}

/// Ten Adam steps of a `DataParallel` over three replicas, batches of 12 rows (four per
/// replica); the module comes back for inspection.
fn train(
    start: &Mlp<NdAutodiff>,
    run: Run,
) -> Result<DataParallel<NdAutodiff, Faulty<NdAutodiff>>> {
    let host = NdArrayDevice::Cpu;
    let fault = Fault::default();
    let model = Faulty {
        mlp: bare_copy(start),
        fault: fault.clone(),
    };
    let mut dp = DataParallel::new(model, nd_devices(3))?.with_failure_policy(run.policy);
    if let Some(deadline) = run.deadline {
        dp = dp.with_step_deadline(deadline);
    }
    let mut optim = AdamConfig::new().init();
    for step in 0..10 {
        if let Some((at, device, action)) = run.fault
            && step == at
        {
            fault.arm(device, action);
        }
        let items = class_items(12, 5, 3)
            .into_iter()
            .cycle()
            .skip(step)
            .take(12)
            .collect();
        let output = dp.try_train_step(ClassBatcher.batch(items, &host))?;
        dp = optim.step(1e-2, dp, output.grads);
    }
    Ok(dp)
}

/// The largest relative difference between two templates' weights.
fn worst_difference(a: &Faulty<NdAutodiff>, b: &Faulty<NdAutodiff>) -> f32 {
    float_params(a)
        .iter()
        .zip(&float_params(b))
        .map(|((_, a), (_, b))| relative_error(a, b))
        .fold(0.0, f32::max)
}

#[test]
fn a_replica_that_panics_once_is_redistributed_and_training_matches_the_fault_free_run() {
    let start = model();
    let fault_free = train(&start, Run::FAULT_FREE).expect("no fault");
    let redistributed = train(
        &start,
        Run {
            policy: FailurePolicy::Redistribute,
            deadline: None,
            fault: Some((3, 1, Action::Panic)),
        },
    )
    .expect("the failed shard is run by the others");
    let worst = worst_difference(fault_free.template(), redistributed.template());
    eprintln!("worst relative difference to the uninterrupted run: {worst:e}");
    assert!(worst <= 1e-6, "worst relative difference {worst:e}");
    // A panic does not lose the device: every later step used all three.
    assert!(redistributed.lost_devices().is_empty());
    assert_eq!(redistributed.split_plan(12).expect("a plan").len(), 3);
}

#[test]
fn under_fail_a_panicking_replica_fails_the_step_and_names_its_device() {
    let error = train(
        &model(),
        Run {
            policy: FailurePolicy::Fail,
            deadline: None,
            fault: Some((0, 2, Action::Panic)),
        },
    )
    .expect_err("the step fails");
    assert!(
        matches!(
            &error,
            DataParallelError::ReplicaPanicked { index: 2, rows, message, .. }
                if *rows == (8..12) && message.contains("a fault made to fail")
        ),
        "{error}"
    );
}

#[test]
fn a_replica_past_the_deadline_fails_the_step_without_waiting_for_it() {
    let host = NdArrayDevice::Cpu;
    let fault = Fault::default();
    let model = Faulty {
        mlp: model(),
        fault: fault.clone(),
    };
    let dp = DataParallel::new(model, nd_devices(3))
        .expect("valid")
        .with_step_deadline(Duration::from_millis(500));
    let before = float_params(dp.template());
    fault.arm(1, Action::Sleep(Duration::from_secs(20)));
    let began = Instant::now();
    let error = dp
        .try_train_step(ClassBatcher.batch(class_items(12, 5, 3), &host))
        .err()
        .expect("the sleeping replica misses the deadline");
    // The caller waited for the deadline, not for the replica.
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    match &error {
        DataParallelError::Stalled {
            device,
            phase,
            waited,
            thread,
        } => {
            assert_eq!(device, "Cpu");
            assert_eq!(phase, "compute");
            assert!(*waited >= Duration::from_millis(500), "{waited:?}");
            assert_eq!(thread, "dp-replica-1");
        }
        other => panic!("expected Stalled, got {other}"),
    }
    assert!(
        error.to_string().contains("past the step deadline"),
        "{error}"
    );
    assert_eq!(
        float_params(dp.template()),
        before,
        "the template is unchanged"
    );
    assert!(
        dp.lost_devices().is_empty(),
        "under Fail no device is left out"
    );
}

#[test]
fn under_redistribute_a_stalled_replica_is_left_out_and_training_matches_the_fault_free_run() {
    let start = model();
    let fault_free = train(&start, Run::FAULT_FREE).expect("no fault");
    let began = Instant::now();
    let redistributed = train(
        &start,
        Run {
            policy: FailurePolicy::Redistribute,
            deadline: Some(Duration::from_secs(2)),
            fault: Some((4, 1, Action::Sleep(Duration::from_secs(20)))),
        },
    )
    .expect("the stalled shard is run by the others");
    // The stalled replica still sleeps on its worker: a Keras-style call goes on without it.
    let x = Tensor::<NdAutodiff, 2>::zeros([6, 5], &NdArrayDevice::Cpu);
    let y = redistributed
        .try_forward(x, |model, x| model.mlp.forward(x))
        .expect("a forward on the devices left");
    assert_eq!(y.dims(), [6, 3]);
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    let worst = worst_difference(fault_free.template(), redistributed.template());
    eprintln!("worst relative difference to the uninterrupted run: {worst:e}");
    assert!(worst <= 1e-6, "worst relative difference {worst:e}");
    assert_eq!(redistributed.lost_devices(), vec![NdArrayDevice::Cpu]);
    // Later batches are split over the two devices left.
    let plan = redistributed.split_plan(12).expect("a plan");
    assert_eq!(plan.shards(), &[0..6, 6..12]);
}
