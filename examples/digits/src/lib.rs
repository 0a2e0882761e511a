//! The main job of burn-data-parallel: a small convolutional network trained on the UCI
//! handwritten digits with `DataParallel` through Burn's `Learner`, compared with the bare
//! model trained the same way on one device.

pub mod data;
pub mod model;
pub mod options;
#[cfg(feature = "remote")]
pub mod remote;
pub mod training;

use training::RunReport;

/// Prints the comparison table of the runs.
pub fn print_table(dp: &RunReport, bare: Option<&RunReport>) {
    println!("\n| run | replicas | samples/s | speed-up | test accuracy | wall |");
    println!("|---|---|---|---|---|---|");
    let base = bare.map(|b| b.samples_per_second);
    for report in bare.into_iter().chain([dp]) {
        let speedup = base.map_or_else(
            || "-".to_string(),
            |b| format!("{:.2}x", report.samples_per_second / b),
        );
        println!(
            "| {} | {} | {:.0} | {} | {:.2}% | {:.1} s |",
            report.name,
            report.replicas,
            report.samples_per_second,
            speedup,
            100.0 * report.test_accuracy,
            report.wall.as_secs_f64()
        );
    }
    if let Some((traffic, params)) = dp.traffic {
        let batches = dp.batches.max(1) as f64;
        println!(
            "\nDataParallel moved {:.2} MB per batch between the host and the replicas \
             ({:.2} MB to the replicas, {:.2} MB back); the model has {params} parameters, \
             {:.2} MB as f32",
            traffic.total() as f64 / batches / 1e6,
            traffic.to_replicas as f64 / batches / 1e6,
            traffic.to_host as f64 / batches / 1e6,
            params as f64 * 4.0 / 1e6
        );
    }
}
