//! What the job shows while the `Learner` trains, and the epoch timings behind its table.
//!
//! [`EpochRenderer`] is a Burn metrics renderer. On a terminal it hands every event on to
//! Burn's terminal UI; in a pipe or a log it prints one line per epoch (train and valid loss and
//! accuracy, samples/s, elapsed time) instead of Burn's per-batch debug lines; with `--quiet` it
//! prints nothing. In every mode it records when each epoch ended, so that the table can tell
//! the first epoch (kernel compilation, autotuning, first-touch allocations) from the steady
//! state after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// One finished epoch: when it ended, and its metrics averaged over the epoch's samples.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Time from the start of the run to the epoch's last batch (validation included).
    pub ended: Duration,
    /// Mean training loss.
    pub train_loss: Option<f64>,
    /// Mean training accuracy, in percent.
    pub train_accuracy: Option<f64>,
    /// Mean validation loss.
    pub valid_loss: Option<f64>,
    /// Mean validation accuracy, in percent.
    pub valid_accuracy: Option<f64>,
}

/// The epochs a renderer has seen end, shared with the code that launched the training.
#[derive(Debug, Clone, Default)]
pub struct EpochLog(Arc<Mutex<Vec<EpochRecord>>>);

impl EpochLog {
    /// The records so far, in epoch order.
    pub fn records(&self) -> Vec<EpochRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, record: EpochRecord) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

/// Throughput of a run, split into its first epoch and the epochs after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Duration of the first epoch.
    pub first_epoch: Duration,
    /// Samples per second over the first epoch.
    pub first_epoch_rate: f64,
    /// Samples per second over the epochs after the first; `None` with a single epoch.
    pub steady_rate: Option<f64>,
}

impl Throughput {
    /// Throughput from epoch end times, with `samples_per_epoch` samples (training and
    /// validation) in each epoch. `None` when no epoch ended.
    pub fn from_records(records: &[EpochRecord], samples_per_epoch: usize) -> Option<Self> {
        let first = records.first()?;
        let rate = |epochs: usize, time: Duration| {
            (epochs * samples_per_epoch) as f64 / time.as_secs_f64().max(f64::MIN_POSITIVE)
        };
        let steady_rate = records
            .last()
            .filter(|last| last.epoch > first.epoch)
            .map(|last| rate(records.len() - 1, last.ended - first.ended));
        Some(Self {
            first_epoch: first.ended,
            first_epoch_rate: rate(1, first.ended),
            steady_rate,
        })
    }
}

/// How the renderer shows progress.
pub enum Display {
    /// Hand every event to another renderer (Burn's terminal UI).
    Delegate(Box<dyn MetricsRenderer>),
    /// One line per epoch on standard output.
    Lines,
    /// Nothing.
    Quiet,
}

/// Running sums of a metric over an epoch: `Σ value · count` and `Σ count`.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    count: f64,
}

impl Mean {
    fn add(&mut self, entry: &NumericEntry) {
        let (value, count) = match entry {
            NumericEntry::Value(value) => (*value, 1.0),
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => (*aggregated_value, *count as f64),
        };
        self.sum += value * count;
        self.count += count;
    }

    fn value(self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// A Burn metrics renderer that records epoch timings and shows progress as [`Display`] says.
pub struct EpochRenderer {
    display: Display,
    run: String,
    samples_per_epoch: usize,
    epochs: usize,
    start: Instant,
    last_event: Instant,
    names: HashMap<MetricId, String>,
    epoch: Option<usize>,
    train: HashMap<String, Mean>,
    valid: HashMap<String, Mean>,
    /// Metric values of the batch about to be rendered: Burn sends a batch's metrics before
    /// its progress, which tells the epoch it belongs to.
    pending: Vec<(Split, String, NumericEntry)>,
    log: EpochLog,
}

/// Which part of an epoch a metric value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Valid,
}

impl EpochRenderer {
    /// A renderer for the run called `run`, whose epochs hold `samples_per_epoch` samples;
    /// epoch ends are written to `log`.
    pub fn new(
        display: Display,
        run: &str,
        samples_per_epoch: usize,
        epochs: usize,
        log: EpochLog,
    ) -> Self {
        let now = Instant::now();
        Self {
            display,
            run: run.to_string(),
            samples_per_epoch,
            epochs,
            start: now,
            last_event: now,
            names: HashMap::new(),
            epoch: None,
            train: HashMap::new(),
            valid: HashMap::new(),
            pending: Vec::new(),
            log,
        }
    }

    /// Keeps a numeric metric value until its batch's progress tells its epoch.
    fn hold(&mut self, split: Split, state: &MetricState) {
        if let MetricState::Numeric(entry, numeric) = state
            && let Some(name) = self.names.get(&entry.metric_id)
        {
            self.pending.push((split, name.clone(), numeric.clone()));
        }
    }

    /// Notes a batch of `epoch`: the first batch of a new epoch closes the previous one, then
    /// the batch's metric values count in its own epoch.
    fn seen(&mut self, epoch: usize) {
        if self.epoch.is_some_and(|current| current != epoch) {
            self.close_epoch();
        }
        self.epoch = Some(epoch);
        self.last_event = Instant::now();
        for (split, name, value) in self.pending.drain(..) {
            let means = match split {
                Split::Train => &mut self.train,
                Split::Valid => &mut self.valid,
            };
            means.entry(name).or_default().add(&value);
        }
    }

    fn close_epoch(&mut self) {
        let Some(epoch) = self.epoch.take() else {
            return;
        };
        let train = std::mem::take(&mut self.train);
        let valid = std::mem::take(&mut self.valid);
        let metric = |means: &HashMap<String, Mean>, name: &str| {
            means.get(name).copied().and_then(Mean::value)
        };
        let previous = self
            .log
            .records()
            .last()
            .map_or(Duration::ZERO, |r| r.ended);
        let record = EpochRecord {
            epoch,
            ended: self.last_event - self.start,
            train_loss: metric(&train, "Loss"),
            train_accuracy: metric(&train, "Accuracy"),
            valid_loss: metric(&valid, "Loss"),
            valid_accuracy: metric(&valid, "Accuracy"),
        };
        if matches!(self.display, Display::Lines) {
            println!(
                "{}",
                epoch_line(
                    &self.run,
                    self.epochs,
                    &record,
                    previous,
                    self.samples_per_epoch
                )
            );
        }
        self.log.push(record);
    }
}

/// The line printed for one epoch.
pub fn epoch_line(
    run: &str,
    epochs: usize,
    record: &EpochRecord,
    previous_end: Duration,
    samples_per_epoch: usize,
) -> String {
    let number = |value: Option<f64>, decimals: usize| {
        value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
    };
    let seconds = (record.ended - previous_end).as_secs_f64();
    format!(
        "{run}: epoch {}/{epochs}  train loss {} acc {}%  valid loss {} acc {}%  {:.0} samples/s  {:.1} s",
        record.epoch,
        number(record.train_loss, 4),
        number(record.train_accuracy, 2),
        number(record.valid_loss, 4),
        number(record.valid_accuracy, 2),
        samples_per_epoch as f64 / seconds.max(f64::MIN_POSITIVE),
        record.ended.as_secs_f64(),
    )
}

impl MetricsRendererTraining for EpochRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.hold(Split::Train, &state);
        if let Display::Delegate(inner) = &mut self.display {
            inner.update_train(state);
        }
    }

    fn update_valid(&mut self, state: MetricState) {
        self.hold(Split::Valid, &state);
        if let Display::Delegate(inner) = &mut self.display {
            inner.update_valid(state);
        }
    }

    fn render_train(&mut self, item: TrainingProgress, progress_indicators: Vec<ProgressType>) {
        self.seen(item.global_progress.items_processed);
        if let Display::Delegate(inner) = &mut self.display {
            inner.render_train(item, progress_indicators);
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, progress_indicators: Vec<ProgressType>) {
        self.seen(item.global_progress.items_processed);
        if let Display::Delegate(inner) = &mut self.display {
            inner.render_valid(item, progress_indicators);
        }
    }

    fn on_train_end(
        &mut self,
        summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        self.close_epoch();
        match &mut self.display {
            Display::Delegate(inner) => inner.on_train_end(summary),
            Display::Lines => {
                if let Some(summary) = summary {
                    println!("{summary}");
                }
                Ok(())
            }
            Display::Quiet => Ok(()),
        }
    }
}

impl MetricsRendererEvaluation for EpochRenderer {
    fn update_test(&mut self, name: EvaluationName, state: MetricState) {
        if let Display::Delegate(inner) = &mut self.display {
            inner.update_test(name, state);
        }
    }

    fn render_test(&mut self, item: EvaluationProgress, progress_indicators: Vec<ProgressType>) {
        if let Display::Delegate(inner) = &mut self.display {
            inner.render_test(item, progress_indicators);
        }
    }
}

impl MetricsRenderer for EpochRenderer {
    fn manual_close(&mut self) {
        if let Display::Delegate(inner) = &mut self.display {
            inner.manual_close();
        }
    }

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id.clone(), definition.name.clone());
        if let Display::Delegate(inner) = &mut self.display {
            inner.register_metric(definition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(epoch: usize, seconds: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            ended: Duration::from_secs_f64(seconds),
            train_loss: Some(0.5),
            train_accuracy: Some(90.0),
            valid_loss: None,
            valid_accuracy: Some(88.126),
        }
    }

    #[test]
    fn the_first_epoch_is_kept_apart_from_the_steady_state() {
        // 100 samples per epoch: the first takes 4 s, the next three 1 s each.
        let records = [ended(1, 4.0), ended(2, 5.0), ended(3, 6.0), ended(4, 7.0)];
        let throughput = Throughput::from_records(&records, 100).expect("epochs ended");
        assert_eq!(throughput.first_epoch, Duration::from_secs(4));
        assert!((throughput.first_epoch_rate - 25.0).abs() < 1e-9);
        let steady = throughput.steady_rate.expect("more than one epoch");
        assert!((steady - 100.0).abs() < 1e-9, "{steady}");
    }

    #[test]
    fn one_epoch_has_no_steady_state_and_none_has_no_throughput() {
        let throughput = Throughput::from_records(&[ended(1, 2.0)], 10).expect("one epoch");
        assert_eq!(throughput.steady_rate, None);
        assert_eq!(Throughput::from_records(&[], 10), None);
    }

    #[test]
    fn means_weigh_each_batch_by_its_count() {
        let mut mean = Mean::default();
        mean.add(&NumericEntry::Aggregated {
            aggregated_value: 1.0,
            count: 3,
        });
        mean.add(&NumericEntry::Value(5.0));
        assert_eq!(mean.value(), Some(2.0));
        assert_eq!(Mean::default().value(), None);
    }

    fn numeric(name: &str, value: f64) -> MetricState {
        use burn::train::metric::{MetricEntry, SerializedEntry};
        let id = MetricId::new(std::sync::Arc::new(name.to_string()));
        let entry = MetricEntry::new(id, SerializedEntry::new(String::new(), String::new()));
        MetricState::Numeric(entry, NumericEntry::Value(value))
    }

    fn progress(epoch: usize) -> TrainingProgress {
        let mut progress = TrainingProgress::none();
        progress.global_progress.items_processed = epoch;
        progress
    }

    #[test]
    fn each_batch_counts_in_the_epoch_its_progress_names() {
        let log = EpochLog::default();
        let mut renderer = EpochRenderer::new(Display::Quiet, "run", 10, 2, log.clone());
        for name in ["Loss", "Accuracy"] {
            let id = MetricId::new(std::sync::Arc::new(name.to_string()));
            renderer.register_metric(MetricDefinition {
                metric_id: id,
                name: name.to_string(),
                description: None,
                attributes: burn::train::metric::MetricAttributes::None,
            });
        }
        // Burn sends a batch's metrics, then its progress: epoch 1 has losses 1 and 3, epoch 2
        // has 10; the first batch of epoch 2 must not count in epoch 1.
        for (loss, epoch) in [(1.0, 1), (3.0, 1), (10.0, 2)] {
            renderer.update_train(numeric("Loss", loss));
            renderer.render_train(progress(epoch), Vec::new());
        }
        renderer.update_valid(numeric("Accuracy", 50.0));
        renderer.render_valid(progress(2), Vec::new());
        renderer.on_train_end(None).expect("no summary to show");
        let records = log.records();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].train_loss, Some(2.0));
        assert_eq!(records[0].valid_accuracy, None);
        assert_eq!(records[1].train_loss, Some(10.0));
        assert_eq!(records[1].valid_accuracy, Some(50.0));
    }

    #[test]
    fn an_epoch_line_is_one_readable_line() {
        let line = epoch_line("bare model", 8, &ended(2, 5.0), Duration::from_secs(4), 100);
        assert_eq!(
            line,
            "bare model: epoch 2/8  train loss 0.5000 acc 90.00%  valid loss - acc 88.13%  \
             100 samples/s  5.0 s"
        );
    }
}
