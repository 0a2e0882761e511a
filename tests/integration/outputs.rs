//! What crosses the split: every burn-train output type merges to the full-batch output,
//! `Option`s, arrays and tracked tensors inside derived structs go both ways, each shard holds
//! exactly `narrow(0, rows)` of the batch, and `#[gather(first)]` keeps replica 0's value.

use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::{
    ClassificationOutput, MultiLabelClassificationOutput, RegressionOutput, SequenceOutput,
};
use burn_data_parallel::{
    DataParallel, Gather, GatherContext, Reduction, Scatter, ScatterContext, SplitPlan,
};
use burn_data_parallel_tests::*;

const TOLERANCE: f32 = 1e-6;
const ROWS: usize = 11;
const DEVICES: usize = 3;

type B = NdAutodiff;

fn host() -> NdArrayDevice {
    NdArrayDevice::Cpu
}

/// Values `[rows, columns]` that differ in every element.
fn floats(rows: usize, columns: usize) -> Tensor<B, 2> {
    let values: Vec<f32> = (0..rows * columns)
        .map(|v| ((v * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, columns]), &host())
}

fn ints(rows: usize, columns: usize, modulo: i64) -> Tensor<B, 2, Int> {
    let values: Vec<i64> = (0..(rows * columns) as i64)
        .map(|v| v * 7 % modulo)
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, columns]), &host())
}

/// The mean of a per-row value over `rows`: a loss that mixes the rows of its shard.
fn mean_loss(values: &Tensor<B, 2>) -> Tensor<B, 1> {
    values.clone().powi_scalar(2).mean()
}

/// Builds an output for the given rows of the full batch, for every shard of the plan, merges
/// the shards' outputs, and returns them with the full-batch output.
fn merged<O: Gather<B>>(make: impl Fn(core::ops::Range<usize>) -> O) -> (O, O) {
    let plan = SplitPlan::new(ROWS, DEVICES).expect("a plan");
    let device = host();
    let context = GatherContext::new(&device, &plan, Reduction::Mean);
    let parts = plan.shards().iter().cloned().map(&make).collect();
    (O::gather(parts, &context).expect("merged"), make(0..ROWS))
}

fn rows<const D: usize, K: burn::tensor::BasicOps<B>>(
    tensor: Tensor<B, D, K>,
    rows: &core::ops::Range<usize>,
) -> Tensor<B, D, K> {
    tensor.narrow(0, rows.start, rows.len())
}

#[test]
fn classification_outputs_merge_to_the_full_batch() {
    let (logits, targets) = (floats(ROWS, 4), ints(ROWS, 1, 4).squeeze_dim::<1>(1));
    let (actual, expected) = merged(|r| {
        let output = rows(logits.clone(), &r);
        ClassificationOutput::new(mean_loss(&output), output, rows(targets.clone(), &r))
    });
    assert_close(
        &actual.loss.to_data(),
        &expected.loss.to_data(),
        TOLERANCE,
        "loss",
    );
    assert_eq!(actual.output.to_data(), expected.output.to_data());
    assert_eq!(actual.targets.to_data(), expected.targets.to_data());
}

#[test]
fn multi_label_outputs_merge_to_the_full_batch() {
    let (logits, targets) = (floats(ROWS, 3), ints(ROWS, 3, 2));
    let (actual, expected) = merged(|r| {
        let output = rows(logits.clone(), &r);
        MultiLabelClassificationOutput::new(mean_loss(&output), output, rows(targets.clone(), &r))
    });
    assert_close(
        &actual.loss.to_data(),
        &expected.loss.to_data(),
        TOLERANCE,
        "loss",
    );
    assert_eq!(actual.output.to_data(), expected.output.to_data());
    assert_eq!(actual.targets.to_data(), expected.targets.to_data());
}

#[test]
fn regression_outputs_merge_to_the_full_batch() {
    let (outputs, targets) = (floats(ROWS, 2), floats(ROWS, 2).mul_scalar(0.5));
    let (actual, expected) = merged(|r| {
        let output = rows(outputs.clone(), &r);
        let target = rows(targets.clone(), &r);
        RegressionOutput::new(
            mean_loss(&(output.clone() - target.clone())),
            output,
            target,
        )
    });
    assert_close(
        &actual.loss.to_data(),
        &expected.loss.to_data(),
        TOLERANCE,
        "loss",
    );
    assert_eq!(actual.output.to_data(), expected.output.to_data());
    assert_eq!(actual.targets.to_data(), expected.targets.to_data());
}

#[test]
fn sequence_outputs_merge_to_the_full_batch_with_and_without_predictions() {
    let logits: Tensor<B, 3> = floats(ROWS, 5 * 4).reshape([ROWS, 5, 4]);
    let (predictions, targets) = (ints(ROWS, 5, 4), ints(ROWS, 5, 3));
    for with_predictions in [true, false] {
        let (actual, expected) = merged(|r| SequenceOutput {
            loss: mean_loss(&rows(logits.clone(), &r).flatten(1, 2)),
            logits: rows(logits.clone(), &r),
            predictions: with_predictions.then(|| rows(predictions.clone(), &r)),
            targets: rows(targets.clone(), &r),
        });
        assert_close(
            &actual.loss.to_data(),
            &expected.loss.to_data(),
            TOLERANCE,
            "loss",
        );
        assert_eq!(actual.logits.to_data(), expected.logits.to_data());
        assert_eq!(
            actual.predictions.map(|p| p.to_data()),
            expected.predictions.map(|p| p.to_data())
        );
        assert_eq!(actual.targets.to_data(), expected.targets.to_data());
    }
}

/// A struct with an `Option`, an array, and a value kept from the first replica.
#[derive(Debug, Clone, Scatter, Gather)]
struct Extras<B: Backend> {
    features: Tensor<B, 2>,
    mask: Option<Tensor<B, 2, Int>>,
    pair: [Tensor<B, 1>; 2],
    #[scatter(broadcast)]
    #[gather(first)]
    origin: Tensor<B, 1>,
}

fn extras(mask: bool) -> Extras<B> {
    let features = floats(ROWS, 3);
    Extras {
        mask: mask.then(|| ints(ROWS, 3, 2)),
        pair: [
            features.clone().sum_dim(1).squeeze_dim::<1>(1),
            features.clone().mean_dim(1).squeeze_dim::<1>(1),
        ],
        features,
        origin: Tensor::from_data([1.0f32, 2.0], &host()),
    }
}

#[test]
fn options_and_arrays_in_derived_structs_cross_the_split_both_ways() {
    let plan = SplitPlan::new(ROWS, DEVICES).expect("a plan");
    let device = host();
    let context = GatherContext::new(&device, &plan, Reduction::Mean);
    for mask in [true, false] {
        let batch = extras(mask);
        let shards: Vec<Extras<B>> = plan
            .shards()
            .iter()
            .map(|r| batch.shard(r.clone(), &ScatterContext::new(&device)))
            .collect();
        for (shard, r) in shards.iter().zip(plan.shards()) {
            assert_eq!(shard.mask.is_some(), mask);
            if let (Some(part), Some(full)) = (&shard.mask, &batch.mask) {
                assert_eq!(part.to_data(), rows(full.clone(), r).to_data());
            }
            assert_eq!(
                shard.pair[1].to_data(),
                rows(batch.pair[1].clone(), r).to_data()
            );
            assert_eq!(
                shard.origin.to_data(),
                batch.origin.to_data(),
                "broadcast whole"
            );
        }
        let merged = Extras::gather(shards, &context).expect("merged");
        assert_eq!(merged.features.to_data(), batch.features.to_data());
        assert_eq!(
            merged.mask.map(|m| m.to_data()),
            batch.mask.map(|m| m.to_data())
        );
        assert_eq!(merged.pair[0].to_data(), batch.pair[0].to_data());
        assert_eq!(merged.pair[1].to_data(), batch.pair[1].to_data());
    }
}

#[test]
fn gather_first_keeps_the_first_replicas_value_not_another() {
    let plan = SplitPlan::new(ROWS, DEVICES).expect("a plan");
    let device = host();
    let context = GatherContext::new(&device, &plan, Reduction::Mean);
    let batch = extras(false);
    // Each replica reports a different origin: replica i reports [i, i].
    let shards: Vec<Extras<B>> = plan
        .shards()
        .iter()
        .enumerate()
        .map(|(i, r)| Extras {
            origin: Tensor::from_data([i as f32, i as f32], &device),
            ..batch.shard(r.clone(), &ScatterContext::new(&device))
        })
        .collect();
    let merged = Extras::gather(shards, &context).expect("merged");
    assert_eq!(merged.origin.to_data(), TensorData::from([0.0f32, 0.0]));
}

#[test]
fn tracked_tensors_in_derived_structs_carry_gradients_through_forward() {
    // A tracked input inside a derived struct: its gradient through the split equals the
    // gradient through the bare model on the whole batch.
    let model = initialised(Mlp::<B>::new(3, 2, &host()));
    let dp = DataParallel::new(model.clone(), nd_devices(DEVICES)).expect("valid");
    let tracked = |batch: Extras<B>| Extras {
        features: batch.features.require_grad(),
        ..batch
    };
    let (split, whole) = (tracked(extras(true)), tracked(extras(true)));
    let output = dp.forward(split.clone(), |m, b| {
        let scale = b.mask.expect("a mask").float() + 1.0;
        m.forward(b.features * scale)
    });
    let expected =
        model.forward(whole.features.clone() * (whole.mask.clone().expect("a mask").float() + 1.0));
    assert_close(&output.to_data(), &expected.to_data(), 1e-5, "outputs");
    let actual_grad = split
        .features
        .grad(&output.powi_scalar(2).mean().backward())
        .expect("a gradient");
    let expected_grad = whole
        .features
        .grad(&expected.powi_scalar(2).mean().backward())
        .expect("a gradient");
    assert_close(
        &actual_grad.to_data(),
        &expected_grad.to_data(),
        1e-5,
        "input gradient",
    );
}
