//! Splitting one parameter's step by rows, for optimizers that work element by element and
//! whose state this crate can cut and join: Adam and AdamW. One large parameter (a wide
//! layer's weight) would otherwise keep a single core busy while the others wait.
//!
//! Each element's update reads only that element's tensor, gradient and state, so a step on
//! rows `a..b` gives exactly rows `a..b` of the whole step: the joined result is bit for bit
//! the adaptor's.

use core::any::TypeId;
use core::ops::Range;

use burn::optim::{
    Adam, AdamState, AdamW, AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer,
};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rayon::prelude::*;

use crate::same_type::same_type;

/// Parameters smaller than this many elements are stepped whole: cutting and joining them
/// costs more than it saves.
pub(crate) const MIN_ELEMENTS: usize = 1 << 16;

/// One parameter's step: `optim.step` on the whole tensor, or, for Adam and AdamW on a
/// parameter of at least [`MIN_ELEMENTS`] elements, on `parts` row ranges at once (on the
/// current rayon pool), joined.
pub(crate) fn step<B, O, const D: usize>(
    optim: &O,
    lr: LearningRate,
    tensor: Tensor<B, D>,
    grad: Tensor<B, D>,
    state: Option<O::State<D>>,
    parts: usize,
) -> (Tensor<B, D>, Option<O::State<D>>)
where
    B: Backend,
    O: SimpleOptimizer<B> + 'static,
{
    let rows = tensor.dims()[0];
    let ranges = row_ranges(rows, parts);
    if tensor.shape().num_elements() < MIN_ELEMENTS || ranges.len() < 2 {
        return optim.step(lr, tensor, grad, state);
    }
    if TypeId::of::<O>() == TypeId::of::<Adam>() {
        by_momentum::<B, O, AdamState<B, D>, D>(optim, lr, tensor, grad, state, &ranges)
    } else if TypeId::of::<O>() == TypeId::of::<AdamW>() {
        by_momentum::<B, O, AdamWState<B, D>, D>(optim, lr, tensor, grad, state, &ranges)
    } else {
        optim.step(lr, tensor, grad, state)
    }
}

/// The state of an optimizer whose state is an adaptive momentum and nothing else.
trait MomentumState<B: Backend, const D: usize>: 'static {
    fn into_momentum(self) -> AdaptiveMomentumState<B, D>;
    fn from_momentum(momentum: AdaptiveMomentumState<B, D>) -> Self;
}

impl<B: Backend, const D: usize> MomentumState<B, D> for AdamState<B, D> {
    fn into_momentum(self) -> AdaptiveMomentumState<B, D> {
        self.momentum
    }

    fn from_momentum(momentum: AdaptiveMomentumState<B, D>) -> Self {
        AdamState::new(momentum)
    }
}

impl<B: Backend, const D: usize> MomentumState<B, D> for AdamWState<B, D> {
    fn into_momentum(self) -> AdaptiveMomentumState<B, D> {
        self.momentum
    }

    fn from_momentum(momentum: AdaptiveMomentumState<B, D>) -> Self {
        AdamWState::new(momentum)
    }
}

/// [`by_rows`] for an optimizer `O` whose state type the caller checked is `S`.
fn by_momentum<B, O, S, const D: usize>(
    optim: &O,
    lr: LearningRate,
    tensor: Tensor<B, D>,
    grad: Tensor<B, D>,
    state: Option<O::State<D>>,
    ranges: &[Range<usize>],
) -> (Tensor<B, D>, Option<O::State<D>>)
where
    B: Backend,
    O: SimpleOptimizer<B>,
    S: MomentumState<B, D>,
{
    let wrap = |momentum| same_type::<S, O::State<D>>(S::from_momentum(momentum));
    let unwrap = |state: O::State<D>| same_type::<O::State<D>, S>(state).into_momentum();
    let state = state.map(unwrap);
    let (tensor, momentum) = by_rows(optim, lr, tensor, grad, state, ranges, wrap, unwrap);
    (tensor, momentum.map(wrap))
}

/// Steps each row range of `tensor` with the same rows of `grad` and of the momentum
/// `state`, in parallel, and joins the updated rows and momenta. `wrap` and `unwrap` turn a
/// momentum into the optimizer's state and back.
#[allow(clippy::too_many_arguments)]
fn by_rows<B, O, const D: usize>(
    optim: &O,
    lr: LearningRate,
    tensor: Tensor<B, D>,
    grad: Tensor<B, D>,
    state: Option<AdaptiveMomentumState<B, D>>,
    ranges: &[Range<usize>],
    wrap: impl Fn(AdaptiveMomentumState<B, D>) -> O::State<D> + Sync,
    unwrap: impl Fn(O::State<D>) -> AdaptiveMomentumState<B, D> + Sync,
) -> (Tensor<B, D>, Option<AdaptiveMomentumState<B, D>>)
where
    B: Backend,
    O: SimpleOptimizer<B>,
{
    let rows =
        |t: &Tensor<B, D>, range: &Range<usize>| t.clone().narrow(0, range.start, range.len());
    let parts: Vec<_> = ranges
        .par_iter()
        .map(|range| {
            let part_state = state.as_ref().map(|state| {
                let mut part = AdaptiveMomentumState::new(
                    state.time,
                    rows(&state.moment_1, range),
                    rows(&state.moment_2, range),
                );
                part.max_moment_2 = state.max_moment_2.as_ref().map(|max| rows(max, range));
                wrap(part)
            });
            optim.step(lr, rows(&tensor, range), rows(&grad, range), part_state)
        })
        .collect();
    let mut tensors = Vec::with_capacity(parts.len());
    let mut momenta = Vec::with_capacity(parts.len());
    for (part, part_state) in parts {
        tensors.push(part);
        momenta.extend(part_state.map(&unwrap));
    }
    let tensor = Tensor::cat(tensors, 0);
    if momenta.len() != ranges.len() {
        return (tensor, None);
    }
    let time = momenta[0].time;
    let max: Option<Vec<_>> = momenta.iter().map(|m| m.max_moment_2.clone()).collect();
    let (first, second): (Vec<_>, Vec<_>) = momenta
        .into_iter()
        .map(|m| (m.moment_1, m.moment_2))
        .unzip();
    let mut momentum =
        AdaptiveMomentumState::new(time, Tensor::cat(first, 0), Tensor::cat(second, 0));
    momentum.max_moment_2 = max.map(|parts| Tensor::cat(parts, 0));
    (tensor, Some(momentum))
}

/// `rows` cut into at most `parts` contiguous ranges whose sizes differ by at most one.
pub(crate) fn row_ranges(rows: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, rows.max(1));
    let (base, extra) = (rows / parts, rows % parts);
    let mut start = 0;
    (0..parts)
        .map(|index| {
            let len = base + usize::from(index < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .filter(|range| !range.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::optim::{AdamConfig, AdamWConfig, SgdConfig};
    use burn::tensor::Distribution;

    type B = NdArray;

    #[test]
    fn rows_are_cut_evenly() {
        assert_eq!(row_ranges(10, 3), [0..4, 4..7, 7..10]);
        assert_eq!(row_ranges(2, 4), [0..1, 1..2]);
        assert_eq!(row_ranges(5, 1), vec![Range { start: 0, end: 5 }]);
        assert!(row_ranges(0, 3).is_empty());
    }

    /// Three steps whole and three by rows: the same bits.
    fn same_as_whole<O: SimpleOptimizer<B> + 'static>(optim: O) {
        let device = Default::default();
        let shape = [300, 300];
        let mut whole = Tensor::<B, 2>::random(shape, Distribution::Default, &device);
        let mut cut = whole.clone();
        let (mut whole_state, mut cut_state) = (None, None);
        for step in 0..3 {
            B::seed(&device, step);
            let grad = Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            (whole, whole_state) = optim.step(1e-2, whole, grad.clone(), whole_state);
            (cut, cut_state) = super::step(&optim, 1e-2, cut, grad, cut_state, 3);
        }
        assert_eq!(whole.into_data(), cut.into_data());
    }

    #[test]
    fn adam_and_adamw_by_rows_are_the_whole_step() {
        same_as_whole(AdamConfig::new().build());
        same_as_whole(AdamConfig::new().with_amsgrad(true).build());
        same_as_whole(AdamWConfig::new().build());
        // Stepped whole: nothing to cut.
        same_as_whole(SgdConfig::new().build::<B>());
    }
}
