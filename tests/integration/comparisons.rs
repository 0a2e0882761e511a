//! The suite's own comparisons fail when they should: on NaN, on infinities, on any element
//! out of bounds, and against an all-zero expectation.

use burn::tensor::TensorData;
use burn_data_parallel_tests::exactness::{within_criterion, worst};
use burn_data_parallel_tests::{assert_close, first_outside, relative_error};

fn data(values: &[f32]) -> TensorData {
    TensorData::new(values.to_vec(), [values.len()])
}

fn passes(actual: &[f32], expected: &[f32], tolerance: f32) -> bool {
    std::panic::catch_unwind(|| assert_close(&data(actual), &data(expected), tolerance, "t"))
        .is_ok()
}

#[test]
fn nan_never_passes() {
    let nan = f32::NAN;
    assert!(!passes(&[nan, nan], &[1.0, 2.0], 1e-5), "all NaN");
    assert!(!passes(&[1.0, nan], &[1.0, 2.0], 1e-5), "one NaN");
    assert!(!passes(&[1.0, 2.0], &[1.0, nan], 1e-5), "NaN expected");
    assert!(!passes(&[nan], &[nan], 1e-5), "NaN against NaN");
    assert!(relative_error(&data(&[nan, nan]), &data(&[1.0, 2.0])).is_nan());
    assert!(relative_error(&data(&[1.0, 2.0]), &data(&[nan, 2.0])).is_nan());
}

#[test]
fn infinities_pass_only_where_they_are_expected() {
    let inf = f32::INFINITY;
    assert!(passes(&[inf, 1.0], &[inf, 1.0], 1e-5));
    assert!(!passes(&[inf, 1.0], &[1.0, 1.0], 1e-5));
    assert!(!passes(&[1.0, 1.0], &[inf, 1.0], 1e-5));
    assert!(!passes(&[-inf], &[inf], 1e-5));
    assert!(relative_error(&data(&[inf, 1.0]), &data(&[1.0, 1.0])) > 1.0);
}

#[test]
fn an_all_zero_expectation_bounds_the_difference_absolutely() {
    assert!(passes(&[0.0, 5e-8], &[0.0, 0.0], 1e-5));
    assert!(!passes(&[0.0, 0.5], &[0.0, 0.0], 1e-5), "0.5 is not zero");
    assert!(!passes(&[1e-3], &[0.0], 1e-5));
}

#[test]
fn every_element_is_checked() {
    // One element off by 1e-3 among many that agree: found, whatever the others.
    let expected: Vec<f32> = (0..100).map(|v| v as f32).collect();
    let mut actual = expected.clone();
    actual[37] += 1e-3 * 99.0 + 1.0;
    assert!(!passes(&actual, &expected, 1e-5));
    assert_eq!(
        first_outside(&data(&actual), &data(&expected), 1e-5, 0.0).map(|(i, _, _)| i),
        Some(37)
    );
    // Within the tolerance: rounding-sized differences pass.
    let mut near = expected.clone();
    near[99] *= 1.0 + 1e-6;
    assert!(passes(&near, &expected, 1e-5));
}

#[test]
fn the_worst_error_of_a_check_is_nan_when_any_is() {
    assert_eq!(worst([1e-7, 3e-7, 2e-7]), 3e-7);
    assert!(worst([1e-7, f32::NAN, 2e-7]).is_nan());
    assert!(worst([f32::NAN]).is_nan());
    // A NaN worst error is never within a tolerance: the comparison gpu-check makes is false.
    let within = |error: f32| error <= 1e-4;
    assert!(!within(worst([f32::NAN, 0.0])));
}

#[test]
fn gpu_checks_criterion_follows_the_bare_models_error_and_fails_on_nan() {
    // Within twice the bare model's error plus the 1e-6 floor.
    assert!(within_criterion(1e-4, 2e-4));
    assert!(within_criterion(0.0, 1e-6));
    assert!(!within_criterion(1e-4, 2.1e-4));
    assert!(!within_criterion(0.0, 2e-6));
    assert!(!within_criterion(f64::NAN, 0.0));
    assert!(!within_criterion(1e-4, f64::NAN));
}
