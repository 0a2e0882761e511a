//! The soak run: 1,000 training steps on each path (the `Learner`'s per-replica step and the
//! Keras-style forward), printing live heap blocks and bytes, resident memory and threads
//! every 100 steps. After warm-up every column must stay flat.
//!
//! `cargo run --release -p bench --bin soak [-- --steps N]`

use std::process::ExitCode;

use bench::memory::{self, Counting};
use bench::models::{ImageBatch, NormNet};
use burn::backend::Autodiff;
use burn::backend::flex::FlexDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::train::ClassificationOutput;
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::DataParallel;

#[global_allocator]
static ALLOC: Counting = Counting::new();

type B = Autodiff<Dispatch>;

/// Growth after warm-up that counts as a leak: the largest sample of the last third above the
/// largest of the first third by more than 2% plus a small absolute slack (allocations in
/// flight at the moment of sampling).
const TOLERATED_GROWTH: f64 = 0.02;
const SLACK_BLOCKS: f64 = 64.0;
const SLACK_BYTES: f64 = 64.0 * 1024.0;
const SLACK_RESIDENT_KIB: f64 = 1024.0;

#[derive(Debug, Clone, Copy)]
struct Sample {
    step: usize,
    blocks: isize,
    bytes: isize,
    resident_kib: u64,
    threads: u64,
}

fn sample(step: usize) -> Sample {
    Sample {
        step,
        blocks: ALLOC.live_blocks(),
        bytes: ALLOC.live_bytes(),
        resident_kib: memory::resident_kib().unwrap_or(0),
        threads: memory::threads().unwrap_or(0),
    }
}

/// Runs `steps` steps of `step`, sampling every `every` steps; returns the samples.
fn soak(steps: usize, every: usize, mut step: impl FnMut(usize)) -> Vec<Sample> {
    let mut samples = Vec::new();
    for i in 1..=steps {
        step(i);
        if i % every == 0 {
            samples.push(sample(i));
        }
    }
    samples
}

fn print(path: &str, samples: &[Sample]) -> bool {
    println!("\n{path}\n");
    println!("| step | live heap blocks | live heap MiB | resident MiB | threads |");
    println!("|---:|---:|---:|---:|---:|");
    for s in samples {
        println!(
            "| {} | {} | {:.2} | {:.1} | {} |",
            s.step,
            s.blocks,
            s.bytes as f64 / 1048576.0,
            s.resident_kib as f64 / 1024.0,
            s.threads
        );
    }
    let third = (samples.len() / 3).max(1);
    let (early, late) = (&samples[..third], &samples[samples.len() - third..]);
    let max = |part: &[Sample], f: fn(&Sample) -> f64| part.iter().map(f).fold(f64::MIN, f64::max);
    let check = |name: &str, f: fn(&Sample) -> f64, slack: f64| {
        let (before, after) = (max(early, f), max(late, f));
        let ok = after <= before * (1.0 + TOLERATED_GROWTH) + slack;
        println!(
            "{name}: largest of the first third {before:.0}, of the last third {after:.0} ({:+.2}%)",
            100.0 * (after - before) / before.max(1.0)
        );
        ok
    };
    let flat = [
        check("live heap blocks", |s| s.blocks as f64, SLACK_BLOCKS),
        check("live heap bytes", |s| s.bytes as f64, SLACK_BYTES),
        check(
            "resident KiB",
            |s| s.resident_kib as f64,
            SLACK_RESIDENT_KIB,
        ),
        check("threads", |s| s.threads as f64, 0.0),
    ]
    .iter()
    .all(|ok| *ok);
    println!("verdict: {}", if flat { "flat" } else { "GROWING" });
    flat
}

/// The soak run: many training steps on both paths, sampling heap, resident memory and
/// threads every 100 steps; fails when any of them grows.
#[derive(Debug, clap::Parser)]
#[command(name = "soak", version, about)]
struct Options {
    /// Steps per path: at least 200, a multiple of 100.
    #[arg(long, default_value_t = 1000, value_parser = steps)]
    steps: usize,
}

fn steps(value: &str) -> Result<usize, String> {
    let steps: usize = value
        .parse()
        .map_err(|e| format!("not a whole number: {e}"))?;
    if steps >= 200 && steps.is_multiple_of(100) {
        Ok(steps)
    } else {
        Err(format!("{steps} is not a multiple of 100 of at least 200"))
    }
}

fn main() -> ExitCode {
    let steps = <Options as clap::Parser>::parse().steps;
    let every = 100;
    let host = DispatchDevice::Flex(FlexDevice);
    let nd = DispatchDevice::NdArray(NdArrayDevice::Cpu);
    let devices = vec![nd.clone(), host.clone(), nd, host.clone()];
    B::seed(&host, 7);
    println!(
        "soak: {steps} steps per path, NormNet (conv + BatchNorm, 16x16 images), batch 30 over 4 replicas \
         alternating NdArray/Flex, template on Flex; the first sample (step {every}) is after warm-up"
    );

    let mut dp =
        DataParallel::new(NormNet::<B>::new(32, &host), devices.clone()).expect("CPU devices");
    let mut optim = AdamConfig::new().init();
    let learner = soak(steps, every, |_| {
        let batch = ImageBatch::<B>::random(30, 3, 16, &host);
        let output = dp.try_train_step(batch).expect("a training step");
        let _: ClassificationOutput<B> = output.item;
        dp = optim.step(1e-3, dp.clone(), output.grads);
    });
    let learner_flat = print("Learner path (per-replica TrainStep, Adam)", &learner);

    let mut dp = DataParallel::new(NormNet::<B>::new(32, &host), devices).expect("CPU devices");
    let mut optim = AdamConfig::new().init();
    let keras = soak(steps, every, |_| {
        let batch = ImageBatch::<B>::random(30, 3, 16, &host);
        let logits = dp.forward(batch.clone(), |model, shard| model.logits(&shard));
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&host)
            .forward(logits, batch.targets);
        let grads = GradientsParams::from_grads(loss.backward(), &dp);
        dp = optim.step(1e-3, dp.clone(), grads);
    });
    let keras_flat = print("Keras-style path (forward, one backward, Adam)", &keras);

    println!(
        "\npeak resident memory of the run: {:.1} MiB; template devices at the end: {:?}",
        memory::peak_resident_kib().unwrap_or(0) as f64 / 1024.0,
        dp.devices()
    );
    if learner_flat && keras_flat {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
