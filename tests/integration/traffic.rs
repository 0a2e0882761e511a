//! `DataParallel::traffic`: the bytes that cross between the host and replicas off it, against
//! a hand count.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_data_parallel::{DataParallel, Traffic};
use burn_data_parallel_tests::learner::{ClassBatch, ClassBatcher, class_items};
use burn_data_parallel_tests::*;

use burn::data::dataloader::batcher::Batcher;

const F32: u64 = 4;

#[test]
fn replicas_on_the_host_move_nothing() {
    let host = flex();
    let dp = DataParallel::new(
        Mlp::<DispatchAutodiff>::new(5, 3, &host),
        vec![flex(), flex()],
    )
    .expect("valid");
    let _ = dp.forward(random([7, 5], 1, &host), |m, x| m.forward(x));
    let batch: ClassBatch<DispatchAutodiff> = ClassBatcher.batch(class_items(7, 5, 3), &host);
    let _ = dp.try_train_step(batch).expect("step");
    assert_eq!(dp.traffic(), Traffic::default());
}

#[test]
fn the_keras_path_moves_the_weights_the_shard_and_the_outputs() {
    let host = flex();
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host));
    let params = model.num_params() as u64;
    let dp = DataParallel::new(model, vec![ndarray(), flex()]).expect("valid");
    let _ = dp.forward(random([7, 5], 1, &host), |m, x| m.forward(x));
    // Rows 0..4 go to the NdArray replica with a copy of the weights; its 4 × 3 outputs come
    // back. The Flex replica sits on the host: nothing of it moves.
    let expected = Traffic {
        to_replicas: params * F32 + 4 * 5 * F32,
        to_host: 4 * 3 * F32,
    };
    assert_eq!(dp.traffic(), expected);
    // Clones, and the inference copy, add to the same count.
    let valid = burn::module::AutodiffModule::valid(&dp);
    let _ = valid.forward(random([7, 5], 1, &host), |m, x| m.forward(x));
    assert_eq!(dp.traffic().since(expected), expected);
}

#[test]
fn the_learner_path_also_returns_gradients_and_items() {
    let host = flex();
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &host));
    let params = model.num_params() as u64;
    let dp = DataParallel::new(model, vec![ndarray(), flex()]).expect("valid");
    let batch: ClassBatch<DispatchAutodiff> = ClassBatcher.batch(class_items(7, 5, 3), &host);
    let label = batch.targets.dtype().size() as u64;
    let _ = dp.try_train_step(batch).expect("step");
    // To the NdArray replica: the weights, 4 rows of features and labels. Back: its gradients
    // (one per weight), its loss, its 4 × 3 logits and its 4 labels.
    let expected = Traffic {
        to_replicas: params * F32 + 4 * 5 * F32 + 4 * label,
        to_host: params * F32 + F32 + 4 * 3 * F32 + 4 * label,
    };
    assert_eq!(dp.traffic(), expected);
    assert!(DispatchAutodiff::ad_enabled(&host));
}
