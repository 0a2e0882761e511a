//! Timing in rounds: the median and the round-by-round spread that the benchmark programs and
//! gpu-check print, and gpu-check's warm-up, which lasts until the step time settles.

use std::time::{Duration, Instant};

/// When a warm-up has lasted long enough: the last `window` step times agree within
/// `tolerance` and none is above the fastest step seen by more than that. Autotuning kernels
/// (CUDA) make the first steps slow, for a number of steps no fixed count covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settle {
    /// Steps whose times must agree.
    pub window: usize,
    /// Relative margin: 0.1 lets a step be 10% slower than the fastest.
    pub tolerance: f64,
    /// Warm-up steps at most, settled or not.
    pub max_steps: usize,
    /// Warm-up time at most, settled or not.
    pub max_time: Duration,
}

impl Settle {
    /// Whether `times`, the warm-up's step times in order, have settled.
    pub fn settled(&self, times: &[Duration]) -> bool {
        let window = self.window.max(1);
        if times.len() < window {
            return false;
        }
        let fastest = times.iter().min().copied().unwrap_or_default();
        let bound = fastest.as_secs_f64() * (1.0 + self.tolerance);
        times[times.len() - window..]
            .iter()
            .all(|time| time.as_secs_f64() <= bound)
    }
}

/// What a warm-up took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmUp {
    /// Steps run.
    pub steps: usize,
    /// Whether the step time settled before `max_steps` or `max_time` ran out.
    pub settled: bool,
}

/// Runs `step` (one training step, waiting for its devices) until its time settles by
/// `settle`, or its `max_steps` or `max_time` run out.
pub fn warm_up(settle: &Settle, mut step: impl FnMut()) -> WarmUp {
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < settle.max_steps && started.elapsed() < settle.max_time {
        let start = Instant::now();
        step();
        times.push(start.elapsed());
        if settle.settled(&times) {
            return WarmUp {
                steps: times.len(),
                settled: true,
            };
        }
    }
    WarmUp {
        steps: times.len(),
        settled: false,
    }
}

/// The median of `values` (the upper middle one of an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The lowest and highest of the round-by-round ratios `rates[i] / base[i]`: each round's two
/// rates were measured side by side, so a busy moment of the machine cancels out of them.
pub fn ratio_spread(rates: &[f64], base: &[f64]) -> (f64, f64) {
    rates
        .iter()
        .zip(base)
        .map(|(rate, base)| rate / base)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), ratio| {
            (low.min(ratio), high.max(ratio))
        })
}
