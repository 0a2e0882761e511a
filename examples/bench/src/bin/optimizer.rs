//! The optimizer step of a `DataParallel`, Burn's `OptimizerAdaptor` against this crate's
//! `ParallelOptimizer`, on the same gradients, interleaved round by round:
//! `cargo run --release -p bench --bin optimizer [-- --replicas N]`.
//!
//! Each round makes a training step's gradients (not timed), then times one Adam step of each
//! optimizer on a copy of the same module. The table gives the median time per step and the
//! round-by-round ratio's median and spread, for the 9.6M-parameter WideMlp (one 3000 × 3000
//! weight holds most of it) and the 1M-parameter ConvNet.

use std::process::ExitCode;
use std::time::Instant;

use bench::models::{ConvNet, ImageBatch, WideMlp};
use bench::rounds::median;
use burn::backend::Autodiff;
use burn::backend::ndarray::NdArrayDevice;
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, Optimizer};
use burn::train::{ClassificationOutput, TrainStep};
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::{DataParallel, ParallelOptimizer};

type B = Autodiff<Dispatch>;

#[derive(Debug, clap::Parser)]
struct Options {
    /// Replicas, and so workers the parallel optimizer steps on.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    replicas: u16,
    /// Rounds, each one step of each optimizer.
    #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u16).range(1..=1000))]
    rounds: u16,
}

/// Times both optimizers on `model` over `replicas` NdArray replicas and prints a row.
fn measure<M>(name: &str, model: M, rows: usize, replicas: usize, rounds: usize)
where
    M: AutodiffModule<B>
        + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
        + 'static,
{
    let host = DispatchDevice::NdArray(NdArrayDevice::Cpu);
    let batch = ImageBatch::<B>::random(rows, 3, 8, &host);
    let mut adapted = DataParallel::new(model, vec![host.clone(); replicas]).expect("CPU devices");
    let mut parallel = adapted.clone();
    let mut adaptor = AdamConfig::new().init();
    let mut optimizer = ParallelOptimizer::from_adaptor(AdamConfig::new().init());
    let (mut adaptor_ms, mut parallel_ms, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    // Round 0 is a warm-up: the first step creates the optimizer state.
    for round in 0..=rounds {
        let grads = adapted.try_train_step(batch.clone()).expect("a step").grads;
        let start = Instant::now();
        adapted = adaptor.step(1e-3, adapted, grads);
        let a = start.elapsed().as_secs_f64() * 1e3;
        let grads = parallel
            .try_train_step(batch.clone())
            .expect("a step")
            .grads;
        let start = Instant::now();
        parallel = optimizer.step(1e-3, parallel, grads);
        let p = start.elapsed().as_secs_f64() * 1e3;
        if round > 0 {
            adaptor_ms.push(a);
            parallel_ms.push(p);
            ratios.push(a / p);
        }
    }
    let (low, high) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
    println!(
        "| {name} | {replicas} | {:.1} | {:.1} | {:.2}x | {low:.2}x to {high:.2}x |",
        median(&adaptor_ms),
        median(&parallel_ms),
        median(&ratios)
    );
}

fn main() -> ExitCode {
    let options = <Options as clap::Parser>::parse();
    let (replicas, rounds) = (usize::from(options.replicas), usize::from(options.rounds));
    let host = DispatchDevice::NdArray(NdArrayDevice::Cpu);
    println!(
        "Adam steps on {} CPU cores, {replicas} replicas on {host:?}, {rounds} rounds\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| model | replicas | OptimizerAdaptor, ms | ParallelOptimizer, ms | speed-up (median round) | spread over rounds |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    measure(
        "WideMlp, 9.6M parameters",
        WideMlp::<B>::new(3 * 8 * 8, 3_000, &host),
        16 * replicas,
        replicas,
        rounds,
    );
    measure(
        "ConvNet, 1M parameters",
        ConvNet::<B>::new(104, &host),
        4 * replicas,
        replicas,
        rounds,
    );
    ExitCode::SUCCESS
}
