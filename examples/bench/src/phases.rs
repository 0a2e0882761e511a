//! [`Phases`]: where the timed steps of a `DataParallel` training-step row went, summed
//! phase by phase, with the optimizer step that follows each.

use std::time::Duration;

use burn_data_parallel::StepTimings;

/// The sum of the timed steps of one training-step row, phase by phase.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    steps: u32,
    total: Duration,
    scatter: Duration,
    setup: Duration,
    compute_slowest: Duration,
    compute_mean: Duration,
    home: Duration,
    reduction: Duration,
    state_merge: Duration,
    gather: Duration,
    optimizer: Duration,
}

impl Phases {
    /// The header of [`row`](Self::row)'s cells, after a first column for the run's name.
    pub const HEADER: &'static str = "scatter | replica set-up (weights to the replica) | \
        compute, slowest (mean) | gradients home | reduction | state merge | gather | step | \
        optimizer step | serial share of step + optimizer";

    /// Adds one step: its `timings` and the time of the optimizer step after it.
    pub fn add(&mut self, timings: &StepTimings, optimizer: Duration) {
        self.steps += 1;
        self.total += timings.total;
        self.scatter += timings.scatter;
        self.setup += timings.replica_setup;
        self.compute_slowest += timings.compute_slowest;
        self.compute_mean += timings.compute_mean;
        self.home += timings.gradients_home;
        self.reduction += timings.reduction;
        self.state_merge += timings.state_merge;
        self.gather += timings.gather;
        self.optimizer += optimizer;
    }

    /// The steps added so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The table cells after the run's name, in [`HEADER`](Self::HEADER)'s order: mean
    /// milliseconds per step, and the share of a step and its optimizer step that one thread
    /// does alone.
    pub fn row(&self) -> String {
        let steps = self.steps.max(1);
        let ms = |total: Duration| format!("{:.2}", (total / steps).as_secs_f64() * 1e3);
        let serial =
            self.scatter + self.reduction + self.state_merge + self.gather + self.optimizer;
        let whole = (self.total + self.optimizer)
            .as_secs_f64()
            .max(f64::MIN_POSITIVE);
        format!(
            "{} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {:.0}%",
            ms(self.scatter),
            ms(self.setup),
            ms(self.compute_slowest),
            ms(self.compute_mean),
            ms(self.home),
            ms(self.reduction),
            ms(self.state_merge),
            ms(self.gather),
            ms(self.total),
            ms(self.optimizer),
            100.0 * serial.as_secs_f64() / whole
        )
    }
}
