//! Moving a `DataParallel` to another device (`with_host`, `Module::fork`,
//! `Module::to_device`): the template and the outputs move there, and training goes on exactly
//! as the bare model's does after the same move.

use burn::module::Module;
use burn::optim::{AdamConfig, Optimizer};
use burn::train::TrainStep;
use burn_data_parallel::DataParallel;
use burn_data_parallel_tests::learner::{ClassBatch, ClassBatcher, class_items};
use burn_data_parallel_tests::*;

use burn::data::dataloader::batcher::Batcher;

const TOLERANCE: f32 = 1e-5;

type Dp = DataParallel<DispatchAutodiff, Mlp<DispatchAutodiff>>;

fn batch(rows: usize, device: &burn::DispatchDevice) -> ClassBatch<DispatchAutodiff> {
    ClassBatcher.batch(class_items(rows, 5, 3), device)
}

/// Builds the template on Flex, moves the `DataParallel` to NdArray with `move_dp` and the
/// bare model with `move_bare`, and trains both for three Adam steps there.
fn check_move(
    what: &str,
    move_dp: impl Fn(Dp) -> Dp,
    move_bare: impl Fn(Mlp<DispatchAutodiff>) -> Mlp<DispatchAutodiff>,
) {
    let (old, new) = (flex(), ndarray());
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &old));
    let mut bare = move_bare(bare_copy(&model));
    let mut dp = move_dp(DataParallel::new(model, mixed_devices(3)).expect("valid"));
    assert_eq!(dp.host(), &new, "{what}: the host");
    assert_eq!(
        dp.template().devices(),
        vec![new.clone()],
        "{what}: the template's device"
    );
    assert_eq!(
        bare.devices(),
        vec![new.clone()],
        "{what}: the bare model's device"
    );

    let (mut dp_optim, mut bare_optim) = (AdamConfig::new().init(), AdamConfig::new().init());
    for step in 0..3 {
        let rows = 9 + step;
        let expected = TrainStep::step(&bare, batch(rows, &new));
        let actual = dp.try_train_step(batch(rows, &new)).expect("a step");
        assert_eq!(
            actual.item.output.device(),
            new,
            "{what}: outputs on the new host"
        );
        assert_close(
            &actual.item.output.to_data(),
            &expected.item.output.to_data(),
            TOLERANCE,
            &format!("{what}: logits of step {step}"),
        );
        for ((id, a), (_, e)) in gradients(dp.template(), &actual.grads)
            .into_iter()
            .zip(gradients(&bare, &expected.grads))
        {
            let a = a.unwrap_or_else(|| panic!("{what}: DataParallel has no gradient for {id}"));
            let e = e.unwrap_or_else(|| panic!("{what}: the bare model has no gradient for {id}"));
            assert_close(&a, &e, TOLERANCE, &format!("{what}: gradient of {id}"));
        }
        dp = dp_optim.step(1e-2, dp, actual.grads);
        bare = bare_optim.step(1e-2, bare, expected.grads);
    }
    assert_same_params(dp.template(), &bare, TOLERANCE);
    assert_eq!(
        dp.template().devices(),
        vec![new],
        "{what}: the template stays"
    );
}

#[test]
fn with_host_trains_like_the_bare_model_forked_there() {
    check_move(
        "with_host",
        |dp| dp.with_host(ndarray()),
        |m| m.fork(&ndarray()),
    );
}

#[test]
fn module_fork_trains_like_the_bare_model_forked_there() {
    check_move("fork", |dp| dp.fork(&ndarray()), |m| m.fork(&ndarray()));
}

#[test]
fn module_to_device_trains_like_the_bare_model_on_the_new_device() {
    // `to_device` keeps the template linked to its old leaves (Burn's rule), so the bare model
    // it is compared with is forked there: same values, trainable leaves of its own. The
    // `DataParallel` trains either way: its replicas are forked from the template.
    check_move(
        "to_device",
        |dp| dp.to_device(&ndarray()),
        |m| m.fork(&ndarray()),
    );
}

#[test]
fn a_moved_keras_style_forward_gives_the_bare_models_output_there() {
    let (old, new) = (flex(), ndarray());
    let model = initialised(Mlp::<DispatchAutodiff>::new(5, 3, &old));
    let bare = bare_copy(&model).fork(&new);
    let dp = DataParallel::new(model, mixed_devices(3))
        .expect("valid")
        .with_host(new.clone());
    let x = random::<DispatchAutodiff, 2>([7, 5], 3, &new);
    let actual = dp.forward(x.clone(), |m, x| m.forward(x));
    assert_eq!(actual.device(), new);
    assert_close(
        &actual.into_data(),
        &bare.forward(x).into_data(),
        TOLERANCE,
        "outputs",
    );
}
