//! `DataParallel::last_step_timings`: each per-replica training step is timed, phase by phase,
//! and the phases fit inside the step.

use std::time::Duration;

use burn::data::dataloader::batcher::Batcher;
use burn_data_parallel::{DataParallel, StepTimings};
use burn_data_parallel_tests::learner::{ClassBatch, ClassBatcher, class_items};
use burn_data_parallel_tests::*;

fn check_fits(timings: &StepTimings) {
    let host = timings.scatter + timings.gather + timings.reduction + timings.state_merge;
    assert_eq!(timings.serial(), host);
    // The host's phases and the slowest replica's follow one another inside the step.
    let slowest = timings
        .replica_setup
        .max(timings.compute_slowest)
        .max(timings.gradients_home);
    assert!(host + slowest <= timings.total, "{timings:?}");
    assert!(
        timings.compute_mean <= timings.compute_slowest,
        "{timings:?}"
    );
    assert!(timings.compute_slowest > Duration::ZERO, "{timings:?}");
    assert!((0.0..=1.0).contains(&timings.serial_share()), "{timings:?}");
}

#[test]
fn each_training_step_is_timed_and_its_phases_fit_inside_it() {
    let host = flex();
    let dp = DataParallel::new(
        initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host)),
        vec![ndarray(), flex(), ndarray()],
    )
    .expect("valid");
    assert_eq!(dp.last_step_timings(), None, "no step yet");

    let batch: ClassBatch<DispatchAutodiff> = ClassBatcher.batch(class_items(9, 5, 3), &host);
    let _ = dp.try_train_step(batch).expect("step");
    let first = dp.last_step_timings().expect("the step was timed");
    assert_eq!(first.replicas, 3);
    check_fits(&first);

    // The Keras-style path is not timed: the last training step's figures stay.
    let _ = dp.forward(random([9, 5], 1, &host), |m, x| m.forward(x));
    assert_eq!(dp.last_step_timings(), Some(first));

    // Two rows on three devices: two replicas ran. A clone reads the same figures.
    let batch: ClassBatch<DispatchAutodiff> = ClassBatcher.batch(class_items(2, 5, 3), &host);
    let _ = dp.try_train_step(batch).expect("step");
    let second = dp.clone().last_step_timings().expect("the step was timed");
    assert_eq!(second.replicas, 2);
    check_fits(&second);
}

// On these CPU backends the waits of synced phases return at once: this checks that the
// setting is kept and changes no result, not that it waits (gpu-check's phase table shows that
// on a GPU).
#[test]
fn synced_phases_change_no_result_and_survive_valid_and_from_inner() {
    use burn::module::AutodiffModule;
    use burn::train::TrainStep;

    let host = flex();
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, vec![ndarray(), flex(), ndarray()])
        .expect("valid")
        .with_synced_phases(true);
    assert!(dp.synced_phases());
    assert!(!dp.clone().with_synced_phases(false).synced_phases());
    let round_trip: DataParallel<DispatchAutodiff, Mlp<DispatchAutodiff>> =
        DataParallel::from_inner(dp.valid());
    assert!(round_trip.synced_phases(), "valid() and from_inner keep it");

    let batch =
        || -> ClassBatch<DispatchAutodiff> { ClassBatcher.batch(class_items(9, 5, 3), &host) };
    let output = dp.try_train_step(batch()).expect("step");
    let expected = TrainStep::step(&bare, batch());
    assert_gradients(dp.template(), &output.grads, &bare, &expected.grads, 1e-6);
    let timings = dp.last_step_timings().expect("the step was timed");
    assert_eq!(timings.replicas, 3);
    check_fits(&timings);
}
