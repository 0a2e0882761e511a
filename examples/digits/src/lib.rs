//! The main job of burn-data-parallel: a small convolutional network trained on the UCI
//! handwritten digits with `DataParallel` through Burn's `Learner`, compared with the bare
//! model trained the same way on one device.

pub mod data;
pub mod logging;
pub mod model;
pub mod options;
pub mod progress;
#[cfg(feature = "remote")]
pub mod remote;
pub mod training;
pub mod watchdog;

use training::RunReport;

/// The comparison table of the runs, as Markdown: the first epoch (kernel compilation,
/// autotuning and first-touch allocations land there) apart from the steady state over the
/// epochs after it; speed-ups compare steady states with the bare model's.
pub fn table(dp: &RunReport, bare: Option<&RunReport>) -> String {
    let mut lines = vec![
        "| run | replicas | first epoch | samples/s, first epoch | samples/s, epochs 2.. | speed-up, epochs 2.. | test accuracy | wall |".to_string(),
        "|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let steady = |report: &RunReport| report.throughput.and_then(|t| t.steady_rate);
    let base = bare.and_then(steady);
    for report in bare.into_iter().chain([dp]) {
        let rate = steady(report);
        let speedup = match (rate, base) {
            (Some(rate), Some(base)) => format!("{:.2}x", rate / base),
            _ => "-".to_string(),
        };
        let (first, first_rate) = report.throughput.map_or_else(
            || ("-".to_string(), "-".to_string()),
            |t| {
                (
                    format!("{:.1} s", t.first_epoch.as_secs_f64()),
                    format!("{:.0}", t.first_epoch_rate),
                )
            },
        );
        lines.push(format!(
            "| {} | {} | {first} | {first_rate} | {} | {speedup} | {:.2}% | {:.1} s |",
            report.name,
            report.replicas,
            rate.map_or_else(|| "-".to_string(), |r| format!("{r:.0}")),
            100.0 * report.test_accuracy,
            report.wall.as_secs_f64()
        ));
    }
    if let Some((traffic, params)) = dp.traffic {
        let batches = dp.batches.max(1) as f64;
        lines.push(String::new());
        lines.push(format!(
            "DataParallel moved {:.2} MB per batch between the host and the replicas \
             ({:.2} MB to the replicas, {:.2} MB back); the model has {params} parameters, \
             {:.2} MB as f32",
            traffic.total() as f64 / batches / 1e6,
            traffic.to_replicas as f64 / batches / 1e6,
            traffic.to_host as f64 / batches / 1e6,
            params as f64 * 4.0 / 1e6
        ));
    }
    if let Some(split) = &dp.split {
        lines.push(format!("DataParallel: {split}"));
    }
    lines.join("\n")
}
