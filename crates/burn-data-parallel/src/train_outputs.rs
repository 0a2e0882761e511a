//! [`Gather`] for burn-train's step outputs (feature `train`): losses merged as the inner
//! model reduced them (the shard-weighted mean by default), per-sample tensors concatenated,
//! so that every metric the `Learner` shows is the full-batch one.

use burn::tensor::backend::Backend;
use burn::train::{
    ClassificationOutput, MultiLabelClassificationOutput, RegressionOutput, SequenceOutput,
};

use crate::error::Result;
use crate::gather::{Gather, GatherContext};

/// Implements `Gather` for a burn-train output with a `loss` and per-sample tensor fields.
macro_rules! gather_output {
    ($output:ident { $($field:ident),+ }) => {
        impl<B: Backend> Gather<B> for $output<B> {
            fn gather(parts: Vec<Self>, context: &GatherContext<'_, B>) -> Result<Self> {
                let mut loss = Vec::with_capacity(parts.len());
                $(let mut $field = Vec::with_capacity(parts.len());)+
                for part in parts {
                    loss.push(part.loss);
                    $($field.push(part.$field);)+
                }
                Ok(Self {
                    loss: context.loss(loss)?,
                    $($field: Gather::gather($field, context)?,)+
                })
            }
        }
    };
}

gather_output!(ClassificationOutput { output, targets });
gather_output!(MultiLabelClassificationOutput { output, targets });
gather_output!(RegressionOutput { output, targets });
gather_output!(SequenceOutput {
    logits,
    predictions,
    targets
});
