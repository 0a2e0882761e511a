//! Property tests over ranks 1 to 5, Float/Int/Bool tensors, random shapes, batch sizes 1 to
//! 64 and 1 to 8 devices: each shard holds exactly `narrow(0, rows)` of the input, shards tile
//! the batch in order, are balanced and never empty, and gather returns the input exactly. Devices alternate between the NdArray and Flex CPU devices, so
//! every shard crosses a backend.

use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Bool, Int, Shape, Tensor, TensorData};
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::{
    Gather, GatherContext, Reduction, Scatter, ScatterContext, SplitPlan, batch_size,
};
use burn_data_parallel_tests::{flex, mixed_devices};
use proptest::prelude::*;

/// Cases per kind of tensor: three kinds, over 10,000 cases in all.
const CASES: u32 = 3_400;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Float,
    Int,
    Bool,
}

/// Distinct values for every element, so that any misplaced row shows.
fn data(kind: Kind, shape: &[usize]) -> TensorData {
    let len: usize = shape.iter().product();
    match kind {
        Kind::Float => TensorData::new(
            (0..len).map(|i| i as f32 * 0.5 - 3.0).collect(),
            shape.to_vec(),
        ),
        Kind::Int => TensorData::new((0..len).map(|i| i as i64 * 3 - 7).collect(), shape.to_vec()),
        Kind::Bool => TensorData::new((0..len).map(|i| (i * 7) % 3 == 0).collect(), shape.to_vec()),
    }
}

/// Scatters a tensor of `shape` over `devices` and gathers it back.
fn round_trip<const D: usize, K: BasicOps<Dispatch> + 'static>(
    original: Tensor<Dispatch, D, K>,
    devices: &[DispatchDevice],
) -> Result<(), TestCaseError> {
    let host = flex();
    let rows = original.dims()[0];
    prop_assert_eq!(batch_size(&original), Ok(rows));
    let plan = SplitPlan::new(rows, devices.len()).expect("rows and devices are positive");

    let sizes: Vec<usize> = plan.shards().iter().map(|r| r.len()).collect();
    prop_assert_eq!(sizes.len(), devices.len().min(rows));
    prop_assert!(
        sizes.iter().all(|&s| s > 0),
        "a shard is empty: {:?}",
        sizes
    );
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    prop_assert!(
        max.zip(min).is_some_and(|(a, b)| a - b <= 1),
        "unbalanced: {:?}",
        sizes
    );

    let shards: Vec<_> = plan
        .shards()
        .iter()
        .zip(devices)
        .map(|(rows, device)| original.shard(rows.clone(), &ScatterContext::new(device)))
        .collect();
    // The shards tile the batch in order: 0..a, a..b, ..., ..rows.
    let mut next = 0;
    for rows in plan.shards() {
        prop_assert_eq!(rows.start, next, "shards out of order: {:?}", plan.shards());
        next = rows.end;
    }
    prop_assert_eq!(next, rows);
    // Shard i holds exactly `narrow(0, rows_i)` of the batch, on device i.
    for ((shard, rows), device) in shards.iter().zip(plan.shards()).zip(devices) {
        prop_assert_eq!(shard.dims()[0], rows.len());
        prop_assert_eq!(&shard.device(), device);
        // Compared as values: backends store Bool and Int elements in types of their own.
        let values =
            |data: TensorData| (data.shape.clone(), data.iter::<f64>().collect::<Vec<_>>());
        let expected = original
            .clone()
            .narrow(0, rows.start, rows.len())
            .into_data();
        prop_assert_eq!(
            values(shard.to_data()),
            values(expected),
            "shard of rows {:?}",
            rows
        );
    }
    let context = GatherContext::new(&host, &plan, Reduction::Mean);
    // Fully qualified: `Tensor` has an inherent `gather` of its own.
    let merged = <Tensor<Dispatch, D, K> as Gather<Dispatch>>::gather(shards, &context)
        .expect("shards of one tensor merge");
    prop_assert_eq!(merged.device(), host);
    prop_assert_eq!(merged.into_data(), original.into_data());
    Ok(())
}

fn check(kind: Kind, shape: Vec<usize>, replicas: usize) -> Result<(), TestCaseError> {
    let devices = mixed_devices(replicas);
    let host = flex();
    let data = data(kind, &shape);
    macro_rules! with_rank {
        ($rank:literal) => {
            match kind {
                Kind::Float => {
                    round_trip(Tensor::<Dispatch, $rank>::from_data(data, &host), &devices)
                }
                Kind::Int => round_trip(
                    Tensor::<Dispatch, $rank, Int>::from_data(data, &host),
                    &devices,
                ),
                Kind::Bool => round_trip(
                    Tensor::<Dispatch, $rank, Bool>::from_data(data, &host),
                    &devices,
                ),
            }
        };
    }
    match Shape::from(shape.clone()).num_dims() {
        1 => with_rank!(1),
        2 => with_rank!(2),
        3 => with_rank!(3),
        4 => with_rank!(4),
        _ => with_rank!(5),
    }
}

/// A shape of rank 1 to 5: a batch of 1 to 64 rows, then up to four dims of 1 to 3.
fn shapes() -> impl Strategy<Value = Vec<usize>> {
    (1usize..=64, prop::collection::vec(1usize..=3, 0..=4)).prop_map(|(batch, rest)| {
        let mut shape = vec![batch];
        shape.extend(rest);
        shape
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn float_tensors_survive_scatter_then_gather(shape in shapes(), replicas in 1usize..=8) {
        check(Kind::Float, shape, replicas)?;
    }

    #[test]
    fn int_tensors_survive_scatter_then_gather(shape in shapes(), replicas in 1usize..=8) {
        check(Kind::Int, shape, replicas)?;
    }

    #[test]
    fn bool_tensors_survive_scatter_then_gather(shape in shapes(), replicas in 1usize..=8) {
        check(Kind::Bool, shape, replicas)?;
    }
}

#[test]
fn the_backend_type_is_the_one_under_test() {
    // The properties run on plain Dispatch (no autodiff): the split itself is what is tested.
    assert!(!Dispatch::ad_enabled(&flex()));
}
