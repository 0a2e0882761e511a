//! Items the derive macros' generated code names. Not public API.

pub use burn::tensor::Tensor;
pub use burn::tensor::backend::Backend;
pub use core::ops::Range;
pub use std::vec::Vec;

use crate::error::{DataParallelError, Result};

/// The first replica's value of a `#[gather(first)]` field.
pub fn first<T>(values: Vec<T>) -> Result<T> {
    values
        .into_iter()
        .next()
        .ok_or_else(|| DataParallelError::Gather {
            reason: "no replica produced an output".to_string(),
        })
}
