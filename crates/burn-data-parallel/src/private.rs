//! Items the derive macros' generated code names. Not public API.

pub use burn::tensor::Tensor;
pub use burn::tensor::backend::Backend;
pub use core::ops::Range;
pub use std::vec::Vec;

use crate::error::{DataParallelError, Result};

/// Adds a part's declared normaliser to a struct's (see `Scatter::normaliser`).
pub fn add_normaliser(total: Option<f64>, part: Option<f64>) -> Option<f64> {
    crate::normaliser::add(total, part)
}

/// The first replica's value of a `#[gather(first)]` field.
pub fn first<T>(values: Vec<T>) -> Result<T> {
    values
        .into_iter()
        .next()
        .ok_or_else(|| DataParallelError::Gather {
            reason: "no replica produced an output".to_string(),
        })
}

/// A `#[gather(loss)]` field: merged as the inner model reduced its loss.
pub fn loss<B: Backend, const D: usize>(
    values: Vec<Tensor<B, D>>,
    context: &crate::GatherContext<'_, B>,
) -> Result<Tensor<B, D>> {
    context.loss(values)
}
