//! A `Learner` run checkpointed with one device count and resumed with another goes on along
//! the uninterrupted run's trajectory: a checkpoint holds the template's weights and the
//! optimizer's state, with no trace of the devices.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use burn_data_parallel::DataParallel;
use burn_data_parallel_tests::learner::{class_items, fit, fit_from};
use burn_data_parallel_tests::{
    Mlp, NdAutodiff, bare_copy, float_params, initialised, nd_devices, relative_error,
};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bdp-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Three epochs with two replicas in one go, and the same run stopped after epoch 2 and
/// resumed for epoch 3 by `resume` (given the checkpoint folder): the largest relative
/// difference between the two runs' final weights.
fn resumed_against_whole(name: &str, resume: impl FnOnce(&PathBuf) -> Mlp<NdArray>) -> f32 {
    let host = NdArrayDevice::Cpu;
    let start = initialised(Mlp::<NdAutodiff>::new(5, 3, &host));
    // 30 samples in batches of 7: uneven splits over every device count.
    let items = class_items(30, 5, 3);

    let whole_dir = scratch_dir(&format!("{name}-whole"));
    let dp = DataParallel::new(bare_copy(&start), nd_devices(2)).expect("valid devices");
    let (whole, _) = fit(dp, items.clone(), 7, 3, &whole_dir);

    let dir = scratch_dir(name);
    let dp = DataParallel::new(bare_copy(&start), nd_devices(2)).expect("valid devices");
    let _ = fit(dp, items, 7, 2, &dir);
    let resumed = resume(&dir);

    let worst = float_params(&resumed)
        .iter()
        .zip(&float_params(whole.template()))
        .map(|((_, a), (_, b))| relative_error(a, b))
        .fold(0.0, f32::max);
    let _ = std::fs::remove_dir_all(whole_dir);
    let _ = std::fs::remove_dir_all(dir);
    worst
}

/// Resumes from epoch 2 on `replicas` replicas, from weights unlike the checkpoint's (the
/// checkpoint replaces them).
fn on_replicas(replicas: usize) -> impl FnOnce(&PathBuf) -> Mlp<NdArray> {
    move |dir| {
        let fresh = Mlp::<NdAutodiff>::new(5, 3, &NdArrayDevice::Cpu);
        let dp = DataParallel::new(fresh, nd_devices(replicas)).expect("valid devices");
        let items = class_items(30, 5, 3);
        fit_from(dp, items, 7, 3, dir, Some(2)).0.into_inner()
    }
}

#[test]
fn a_run_checkpointed_on_two_replicas_resumes_on_three() {
    let worst = resumed_against_whole("three", on_replicas(3));
    eprintln!("worst relative difference to the uninterrupted run: {worst:e}");
    assert!(worst <= 1e-6, "worst relative difference {worst:e}");
}

#[test]
fn a_run_checkpointed_on_two_replicas_resumes_on_one() {
    let worst = resumed_against_whole("one", on_replicas(1));
    eprintln!("worst relative difference to the uninterrupted run: {worst:e}");
    assert!(worst <= 1e-6, "worst relative difference {worst:e}");
}

#[test]
fn a_run_checkpointed_on_two_replicas_resumes_as_the_bare_model() {
    let worst = resumed_against_whole("bare", |dir| {
        let fresh = Mlp::<NdAutodiff>::new(5, 3, &NdArrayDevice::Cpu);
        fit_from(fresh, class_items(30, 5, 3), 7, 3, dir, Some(2)).0
    });
    eprintln!("worst relative difference to the uninterrupted run: {worst:e}");
    assert!(worst <= 1e-6, "worst relative difference {worst:e}");
}
