//! Exactness checks that report instead of asserting, for `gpu-check`: each runs
//! `DataParallel` with a given host and replica devices against the bare model on a reference
//! device and returns the largest relative error seen.

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::train::TrainStep;
use burn_data_parallel::DataParallel;

use crate::learner::{ClassBatch, ClassBatcher, class_items};
use crate::{
    Mlp, bare_copy, float_params, gradient_errors, initialised, random, relative_error, worst_of,
};
use burn::data::dataloader::batcher::Batcher;

/// The largest relative error of a check, or why it could not run.
pub type Outcome = Result<f32, String>;

/// The largest error, NaN if any is NaN: a check that computed NaN must not pass.
pub fn worst(errors: impl IntoIterator<Item = f32>) -> f32 {
    errors.into_iter().fold(0.0, worst_of)
}

/// A model built on `host` and the bare copy of it moved to `reference`.
fn pair<B: AutodiffBackend>(host: &B::Device, reference: &B::Device) -> (Mlp<B>, Mlp<B>) {
    let model = initialised(Mlp::<B>::new(5, 3, host));
    let bare = bare_copy(&model).fork(reference);
    (model, bare)
}

/// Keras-style forward and one backward: outputs and gradients against the bare model.
pub fn forward_and_gradients<B: AutodiffBackend>(
    host: &B::Device,
    devices: Vec<B::Device>,
    reference: &B::Device,
) -> Outcome {
    let (model, bare) = pair::<B>(host, reference);
    let dp = DataParallel::new(model, devices).map_err(|e| e.to_string())?;
    let x = random::<B, 2>([11, 5], 3, host);
    let expected = bare.forward(x.clone().to_device(reference));
    let actual = dp
        .try_forward(x, |m, x| m.forward(x))
        .map_err(|e| e.to_string())?;
    let mut errors = vec![relative_error(&actual.to_data(), &expected.to_data())];
    let expected = GradientsParams::from_grads(expected.powi_scalar(2).mean().backward(), &bare);
    let actual = GradientsParams::from_grads(actual.powi_scalar(2).mean().backward(), &dp);
    errors.extend(gradient_errors(dp.template(), &actual, &bare, &expected)?);
    Ok(worst(errors))
}

/// One per-replica training step (the `Learner` path): loss, logits and gradients.
pub fn train_step<B: AutodiffBackend>(
    host: &B::Device,
    devices: Vec<B::Device>,
    reference: &B::Device,
) -> Outcome {
    let (model, bare) = pair::<B>(host, reference);
    let dp = DataParallel::new(model, devices).map_err(|e| e.to_string())?;
    let batch =
        |device: &B::Device| -> ClassBatch<B> { ClassBatcher.batch(class_items(11, 5, 3), device) };
    let expected = TrainStep::step(&bare, batch(reference));
    let actual = dp.try_train_step(batch(host)).map_err(|e| e.to_string())?;
    let mut errors = vec![
        relative_error(&actual.item.loss.to_data(), &expected.item.loss.to_data()),
        relative_error(
            &actual.item.output.to_data(),
            &expected.item.output.to_data(),
        ),
    ];
    errors.extend(gradient_errors(
        dp.template(),
        &actual.grads,
        &bare,
        &expected.grads,
    )?);
    Ok(worst(errors))
}

/// Ten Adam steps through the per-replica path: the weights against the bare model's.
pub fn ten_adam_steps<B: AutodiffBackend>(
    host: &B::Device,
    devices: Vec<B::Device>,
    reference: &B::Device,
) -> Outcome {
    let (model, mut bare) = pair::<B>(host, reference);
    let mut dp = DataParallel::new(model, devices).map_err(|e| e.to_string())?;
    let (mut bare_optim, mut dp_optim) = (AdamConfig::new().init(), AdamConfig::new().init());
    for step in 0..10 {
        let items = class_items(9 + step, 5, 3);
        let output = TrainStep::step(&bare, ClassBatcher.batch(items.clone(), reference));
        bare = bare_optim.step(1e-2, bare, output.grads);
        let output = dp
            .try_train_step(ClassBatcher.batch(items, host))
            .map_err(|e| e.to_string())?;
        dp = dp_optim.step(1e-2, dp, output.grads);
    }
    let errors = float_params(dp.template())
        .iter()
        .zip(&float_params(&bare))
        .map(|((_, a), (_, e))| relative_error(a, e))
        .collect::<Vec<_>>();
    if dp.template().devices() != vec![host.clone()] {
        return Err(format!(
            "the template left its host: {:?}",
            dp.template().devices()
        ));
    }
    Ok(worst(errors))
}

/// Every check above for one configuration, by name.
pub fn all<B: AutodiffBackend>(
    host: &B::Device,
    devices: &[B::Device],
    reference: &B::Device,
) -> Vec<(&'static str, Outcome)>
where
    Mlp<B>: AutodiffModule<B>,
{
    vec![
        (
            "forward and gradients",
            forward_and_gradients::<B>(host, devices.to_vec(), reference),
        ),
        (
            "training step",
            train_step::<B>(host, devices.to_vec(), reference),
        ),
        (
            "ten Adam steps",
            ten_adam_steps::<B>(host, devices.to_vec(), reference),
        ),
    ]
}
