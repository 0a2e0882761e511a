//! Every error a user can reach, with its message; and a failing replica leaves the template
//! as it was.

use burn::backend::ndarray::NdArrayDevice;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_data_parallel::{Broadcast, DataParallel, DataParallelError};
use burn_data_parallel_tests::*;

fn mlp_dp(replicas: usize) -> DataParallel<NdAutodiff, Mlp<NdAutodiff>> {
    DataParallel::new(Mlp::new(5, 3, &NdArrayDevice::Cpu), nd_devices(replicas)).expect("valid")
}

#[test]
fn an_empty_device_list_is_an_error() {
    let error = DataParallel::new(Mlp::<NdAutodiff>::new(5, 3, &NdArrayDevice::Cpu), vec![]);
    let error = error.expect_err("no devices");
    assert_eq!(error, DataParallelError::NoDevices);
    assert_eq!(
        error.to_string(),
        "no devices given: DataParallel needs at least one device to run a replica on"
    );
}

#[derive(Module, Debug)]
struct TwoLayers<B: Backend> {
    first: Linear<B>,
    second: Linear<B>,
}

#[test]
fn a_template_spread_over_two_devices_is_an_error() {
    let model = TwoLayers::<DispatchAutodiff> {
        first: LinearConfig::new(2, 2).init(&flex()),
        second: LinearConfig::new(2, 2).init(&ndarray()),
    };
    let error = DataParallel::new(model, vec![flex()]).expect_err("two devices");
    assert!(matches!(
        error,
        DataParallelError::TemplateSpansDevices { .. }
    ));
    assert_eq!(
        error.to_string(),
        "the template's parameters are spread over [Flex(Cpu), NdArray(Cpu)]: move the \
         model to one host device (`model.fork(&host)`) before wrapping it"
    );
}

#[test]
fn an_empty_batch_is_an_error() {
    let x = Tensor::<NdAutodiff, 2>::zeros([0, 5], &NdArrayDevice::Cpu);
    let error = mlp_dp(2)
        .try_forward(x, |m, x| m.forward(x))
        .expect_err("empty");
    assert_eq!(error, DataParallelError::EmptyBatch);
    assert_eq!(
        error.to_string(),
        "empty batch: the input's batch dimension (dim 0) has size 0, nothing to split"
    );
}

#[test]
#[should_panic(expected = "DataParallel::forward failed: empty batch")]
fn forward_panics_with_the_errors_message() {
    let x = Tensor::<NdAutodiff, 2>::zeros([0, 5], &NdArrayDevice::Cpu);
    let _ = mlp_dp(2).forward(x, |m, x| m.forward(x));
}

#[test]
fn inputs_that_disagree_on_the_batch_size_are_an_error() {
    let host = NdArrayDevice::Cpu;
    let input = (
        Tensor::<NdAutodiff, 2>::zeros([4, 5], &host),
        Tensor::<NdAutodiff, 2>::zeros([6, 5], &host),
    );
    let error = mlp_dp(2)
        .try_forward(input, |m, (a, b)| m.forward(a) + m.forward(b))
        .expect_err("4 rows against 6");
    assert_eq!(
        error,
        DataParallelError::BatchSizeMismatch { sizes: vec![4, 6] }
    );
    assert_eq!(
        error.to_string(),
        "the input's tensors disagree on the batch size (dim 0): found sizes [4, 6]"
    );
}

#[test]
fn an_input_without_a_batch_dimension_is_an_error() {
    let error = mlp_dp(2)
        .try_forward(Broadcast(3usize), |_, Broadcast(n)| {
            Tensor::<NdAutodiff, 1>::zeros([n], &NdArrayDevice::Cpu)
        })
        .expect_err("nothing to split");
    assert_eq!(error, DataParallelError::NothingToSplit);
}

#[test]
fn a_batch_smaller_than_the_device_count_uses_fewer_replicas() {
    let x = random::<NdAutodiff, 2>([2, 5], 1, &NdArrayDevice::Cpu);
    let shards = mlp_dp(4).forward(x, |_, x| {
        vec![Tensor::<NdAutodiff, 1>::from_floats(
            [x.dims()[0] as f32],
            &x.device(),
        )]
    });
    assert_eq!(shards.len(), 1);
    // Two replicas of one row each: the merged output holds one entry per replica.
    assert_eq!(
        shards[0].to_data().to_vec::<f32>().expect("floats"),
        vec![1.0, 1.0]
    );
}

#[test]
fn a_shape_error_on_one_shard_names_its_replica_and_rows() {
    // 5 rows over 2 replicas: 3 then 2. Only a 2-row shard reshapes to [2, 5].
    let x = random::<NdAutodiff, 2>([5, 5], 1, &NdArrayDevice::Cpu);
    let error = mlp_dp(2)
        .try_forward(x, |m, x| m.forward(x.reshape([2, 5])))
        .expect_err("shard 0 has 3 rows");
    let DataParallelError::ReplicaPanicked {
        index,
        device,
        rows,
        message,
    } = &error
    else {
        panic!("expected a replica panic, got {error:?}");
    };
    assert_eq!((*index, device.as_str(), rows.clone()), (0, "Cpu", 0..3));
    assert!(
        message.contains("Reshape"),
        "Burn's message is kept: {message}"
    );
    assert!(
        error
            .to_string()
            .starts_with("replica 0 on device Cpu panicked on batch rows 0..3: "),
        "{error}"
    );
}

#[test]
fn a_failing_replica_leaves_the_template_and_its_running_stats_as_they_were() {
    let host = flex();
    let model = initialised(Normalised::<DispatchAutodiff>::new(4, 3, &host));
    let dp = DataParallel::new(model, mixed_devices(3)).expect("valid");
    let before = float_params(dp.template());
    let x = random::<DispatchAutodiff, 2>([8, 4], 3, &host);
    // 3, 3 and 2 rows: the last shard fails after the others have updated their running statistics.
    let error = dp
        .try_forward(x, |m, x| {
            let y = m.forward(x.clone());
            assert!(x.dims()[0] > 2, "the last replica fails");
            y
        })
        .expect_err("the last replica panics");
    assert!(matches!(
        error,
        DataParallelError::ReplicaPanicked { index: 2, .. }
    ));
    assert_eq!(
        float_params(dp.template()),
        before,
        "every tensor is bit for bit unchanged"
    );
    assert_eq!(dp.template().devices(), vec![host]);
}

#[test]
fn outputs_that_cannot_be_merged_are_an_error() {
    let x = random::<NdAutodiff, 2>([5, 5], 1, &NdArrayDevice::Cpu);
    // A Vec with one element per row: 3 from the first replica, 2 from the second.
    let error = mlp_dp(2)
        .try_forward(x, |m, x| {
            let rows = x.dims()[0];
            (0..rows).map(|_| m.forward(x.clone())).collect::<Vec<_>>()
        })
        .expect_err("lengths differ");
    assert_eq!(
        error.to_string(),
        "cannot merge the replicas' outputs: replica 1 returned a Vec of 2 elements, replica 0 one of 3"
    );
}

/// The message of the panic `body` raises; fails the test if it returns.
fn panic_message_of(body: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
        .expect_err("the step must panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .expect("a panic message")
}

fn class_batch(features: usize, targets: usize) -> learner::ClassBatch<NdAutodiff> {
    let host = NdArrayDevice::Cpu;
    learner::ClassBatch {
        features: Tensor::zeros([features, 5], &host),
        targets: Tensor::zeros([targets], &host),
    }
}

#[test]
fn the_step_traits_panic_with_the_message_of_an_empty_batch() {
    use burn::module::AutodiffModule;
    use burn::train::{InferenceStep, TrainStep};
    let dp = mlp_dp(2);
    let message = panic_message_of(|| {
        let _ = TrainStep::step(&dp, class_batch(0, 0));
    });
    assert_eq!(
        message,
        "DataParallel training step failed: empty batch: the input's batch dimension (dim 0) \
         has size 0, nothing to split"
    );
    let valid = dp.valid();
    let message = panic_message_of(|| {
        let _ = InferenceStep::step(
            &valid,
            learner::ClassBatch {
                features: Tensor::zeros([0, 5], &NdArrayDevice::Cpu),
                targets: Tensor::zeros([0], &NdArrayDevice::Cpu),
            },
        );
    });
    assert!(
        message.starts_with("DataParallel inference step failed: empty batch"),
        "{message}"
    );
}

#[test]
fn the_step_traits_panic_with_the_message_of_a_mismatched_batch() {
    use burn::module::AutodiffModule;
    use burn::train::{InferenceStep, TrainStep};
    let dp = mlp_dp(2);
    let before = float_params(dp.template());
    let expected = "the input's tensors disagree on the batch size (dim 0): found sizes [6, 4]";
    let message = panic_message_of(|| {
        let _ = TrainStep::step(&dp, class_batch(6, 4));
    });
    assert_eq!(
        message,
        format!("DataParallel training step failed: {expected}")
    );
    let valid = dp.valid();
    let message = panic_message_of(|| {
        let _ = InferenceStep::step(
            &valid,
            learner::ClassBatch {
                features: Tensor::zeros([6, 5], &NdArrayDevice::Cpu),
                targets: Tensor::zeros([4], &NdArrayDevice::Cpu),
            },
        );
    });
    assert_eq!(
        message,
        format!("DataParallel inference step failed: {expected}")
    );
    // The template is untouched by the refused steps.
    assert_eq!(float_params(dp.template()), before);
}
