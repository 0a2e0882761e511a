//! `#[derive(Scatter, Gather)]`: user structs cross the split exactly, and work end to end.

use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use burn_data_parallel::{
    DataParallel, Gather, GatherContext, Reduction, Scatter, ScatterContext, SplitPlan, batch_size,
};
use burn_data_parallel_tests::*;

#[derive(Debug, Clone, Scatter, Gather)]
struct Masks<B: Backend> {
    valid: Tensor<B, 2, Bool>,
    ids: Tensor<B, 1, Int>,
}

#[derive(Debug, Clone, Scatter, Gather)]
struct Batch<B: Backend> {
    images: Tensor<B, 3>,
    masks: Masks<B>,
    #[scatter(broadcast)]
    #[gather(first)]
    scale: f32,
    #[scatter(skip)]
    #[gather(skip)]
    note: Option<String>,
}

/// A tuple struct generic over a second parameter.
#[derive(Debug, Clone, Scatter, Gather)]
struct Pair<B: Backend, T>(Tensor<B, 2>, T);

fn batch<B: Backend>(rows: usize, device: &B::Device) -> Batch<B> {
    let values: Vec<f32> = (0..rows * 2 * 3).map(|v| v as f32 * 0.5).collect();
    let flags: Vec<bool> = (0..rows * 4).map(|v| v % 3 == 0).collect();
    let ids: Vec<i64> = (0..rows as i64).map(|v| v * 10).collect();
    Batch {
        images: Tensor::from_data(TensorData::new(values, [rows, 2, 3]), device),
        masks: Masks {
            valid: Tensor::from_data(TensorData::new(flags, [rows, 4]), device),
            ids: Tensor::from_data(TensorData::new(ids, [rows]), device),
        },
        scale: 0.25,
        note: Some("not sent to replicas".to_string()),
    }
}

#[test]
fn scatter_then_gather_returns_the_batch_exactly() {
    let host = flex();
    let original = batch::<DispatchAutodiff>(7, &host);
    assert_eq!(batch_size(&original), Ok(7));
    for replicas in 1..=4 {
        let devices = mixed_devices(replicas);
        let plan = SplitPlan::new(7, replicas).expect("valid plan");
        let shards: Vec<_> = plan
            .shards()
            .iter()
            .zip(&devices)
            .map(|(rows, device)| original.shard(rows.clone(), &ScatterContext::new(device)))
            .collect();
        for (shard, (rows, device)) in shards.iter().zip(plan.shards().iter().zip(&devices)) {
            assert_eq!(shard.images.dims(), [rows.len(), 2, 3]);
            assert_eq!(shard.masks.ids.device(), *device);
            assert_eq!(shard.scale, 0.25, "broadcast fields are cloned");
            assert_eq!(shard.note, None, "skipped fields take their default");
        }
        let context = GatherContext::new(&host, &plan, Reduction::Mean);
        let merged = Batch::gather(shards, &context).expect("same structure");
        assert_eq!(merged.images.to_data(), original.images.to_data());
        assert_eq!(merged.masks.valid.to_data(), original.masks.valid.to_data());
        assert_eq!(merged.masks.ids.to_data(), original.masks.ids.to_data());
        assert_eq!(merged.images.device(), host);
        assert_eq!(merged.scale, 0.25);
        assert_eq!(merged.note, None);
    }
}

#[test]
fn generic_tuple_structs_scatter_and_gather() {
    let host = NdArrayDevice::Cpu;
    let pair = Pair::<NdAutodiff, _>(
        random([5, 3], 1, &host),
        Tensor::<NdAutodiff, 1, Int>::arange(0..5, &host),
    );
    let plan = SplitPlan::new(5, 2).expect("valid plan");
    let shards: Vec<_> = plan
        .shards()
        .iter()
        .map(|rows| pair.shard(rows.clone(), &ScatterContext::new(&host)))
        .collect();
    assert_eq!(shards[1].1.to_data().to_vec::<i64>().expect("ints"), [3, 4]);
    let merged = Pair::gather(shards, &GatherContext::new(&host, &plan, Reduction::Mean))
        .expect("same structure");
    assert_eq!(merged.0.to_data(), pair.0.to_data());
    assert_eq!(merged.1.to_data(), pair.1.to_data());
}

/// A model output with a per-shard mean loss and a per-shard count.
#[derive(Debug, Scatter, Gather)]
struct Scored<B: Backend> {
    logits: Tensor<B, 2>,
    #[gather(mean)]
    loss: Tensor<B, 1>,
    #[gather(sum)]
    positives: Tensor<B, 1>,
}

fn score<B: Backend>(model: &Mlp<B>, batch: Batch<B>) -> Scored<B> {
    let [rows, _, _] = batch.images.dims();
    let logits = model.forward(batch.images.reshape([rows, 6]).mul_scalar(batch.scale));
    let loss = logits.clone().powi_scalar(2).mean();
    let positives = logits.clone().greater_elem(0.0).float().sum();
    Scored {
        logits,
        loss,
        positives,
    }
}

#[test]
fn derived_types_work_end_to_end_with_forward() {
    let host = flex();
    let model = initialised(Mlp::<DispatchAutodiff>::new(6, 3, &host));
    let bare = bare_copy(&model);
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    let expected = score(&bare, batch(7, &host));
    let actual = dp.forward(batch(7, &host), score);
    assert_close(
        &actual.logits.to_data(),
        &expected.logits.to_data(),
        1e-5,
        "logits",
    );
    assert_close(
        &actual.loss.to_data(),
        &expected.loss.to_data(),
        1e-5,
        "weighted mean loss",
    );
    assert_eq!(
        actual.positives.to_data(),
        expected.positives.to_data(),
        "summed count"
    );
}
