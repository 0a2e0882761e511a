//! Step times of the even split against the self-balancing one (`Split::Balanced`), in one run,
//! as a table: `cargo run --release -p bench --bin balance`.
//!
//! Two setups of two replicas: (s) both on NdArray's CPU device, one made slow on purpose (it
//! sleeps 4 ms per row before its step); (m) the mixed devices of the digits job, NdArray and
//! Flex, whose kernels differ in speed. Each setup trains a small ConvNet with the even and the
//! balanced split, rounds interleaved; the balanced split is given a few steps to measure the
//! replicas first. The table shows the median round and the spread (lowest and highest) of the
//! per-round ratio.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::models::{ConvNet, ImageBatch};
use bench::rounds::median;
use burn::backend::Autodiff;
use burn::backend::flex::FlexDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::module::Module;
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ClassificationOutput, TrainOutput, TrainStep};
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::{DataParallel, Split};

type B = Autodiff<Dispatch>;

/// The steps, rounds and batch size of the run.
#[derive(Debug, clap::Parser)]
#[command(name = "balance", version, about)]
struct Options {
    /// Timed steps per configuration and round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    steps: u32,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

/// A ConvNet whose step sleeps per row when its replica is the second one: a slow device.
#[derive(Module, Debug)]
struct SlowSecond<B: Backend> {
    inner: ConvNet<B>,
}

const DELAY_PER_ROW: Duration = Duration::from_millis(4);

impl<B: AutodiffBackend> TrainStep for SlowSecond<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        if std::thread::current().name() == Some("dp-replica-1") {
            std::thread::sleep(DELAY_PER_ROW * batch.images.dims()[0] as u32);
        }
        TrainStep::step(&self.inner, batch)
    }
}

/// A data-parallel training loop to time.
struct Run<M: burn::module::AutodiffModule<B>> {
    dp: DataParallel<B, M>,
    optim: burn::optim::adaptor::OptimizerAdaptor<burn::optim::Adam, DataParallel<B, M>, B>,
}

fn time_steps<M>(run: &mut Run<M>, batch: &ImageBatch<B>, steps: u32) -> Duration
where
    M: burn::module::AutodiffModule<B>
        + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
        + 'static,
{
    let start = Instant::now();
    for _ in 0..steps {
        let output = run
            .dp
            .try_train_step(batch.clone())
            .expect("a training step");
        run.dp = run.optim.step(1e-3, run.dp.clone(), output.grads);
    }
    start.elapsed() / steps
}

/// Times the even and the balanced split of `model` over `devices`; prints one row each.
fn compare<M>(
    name: &str,
    model: M,
    host: &DispatchDevice,
    devices: Vec<DispatchDevice>,
    options: &Options,
) where
    M: burn::module::AutodiffModule<B>
        + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
        + 'static,
{
    let batch = ImageBatch::<B>::random(64, 3, 8, host);
    let mut runs = [Split::Even, Split::Balanced].map(|split| Run {
        dp: DataParallel::new(model.clone(), devices.clone())
            .expect("CPU devices")
            .with_split(split)
            .expect("a valid split"),
        optim: AdamConfig::new().init(),
    });
    // Warm-up: the balanced split measures the replicas here.
    for run in runs.iter_mut() {
        let _ = time_steps(run, &batch, 4);
    }
    let (mut even, mut balanced, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let e = time_steps(&mut runs[0], &batch, options.steps).as_secs_f64();
        let b = time_steps(&mut runs[1], &batch, options.steps).as_secs_f64();
        even.push(e);
        balanced.push(b);
        ratios.push(e / b);
    }
    let rows = |run: &Run<M>| -> Vec<usize> {
        let plan = run.dp.split_plan(64).expect("a plan");
        plan.shards().iter().map(|rows| rows.len()).collect()
    };
    let (low, high) = (
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    let ratio = median(&ratios);
    println!(
        "| {name} | even | {:?} | {:.1} ms | 1.00x |",
        rows(&runs[0]),
        1e3 * median(&even)
    );
    println!(
        "| {name} | balanced | {:?} | {:.1} ms | {ratio:.2}x ({low:.2}x to {high:.2}x) |",
        rows(&runs[1]),
        1e3 * median(&balanced)
    );
}

fn main() -> ExitCode {
    let options = <Options as clap::Parser>::parse();
    let nd = DispatchDevice::NdArray(NdArrayDevice::Cpu);
    let flex = DispatchDevice::Flex(FlexDevice);
    println!(
        "balance: a ConvNet, batch 64 over 2 replicas, {} steps x {} interleaved rounds; \
         step time and speed-up of the balanced split over the even one (median round, and \
         the lowest and highest round)\n",
        options.steps, options.rounds
    );
    println!("| setup | split | rows per replica | step | speed-up |");
    println!("|---|---|---|---|---|");
    B::seed(&nd, 1);
    let model = SlowSecond {
        inner: ConvNet::<B>::new(32, &nd),
    };
    compare(
        "(s) NdArray x2, replica 1 sleeps 4 ms per row",
        model,
        &nd,
        vec![nd.clone(), nd.clone()],
        &options,
    );
    let model = ConvNet::<B>::new(32, &flex);
    compare(
        "(m) NdArray and Flex (the digits job's mixed devices)",
        model,
        &flex,
        vec![nd, flex.clone()],
        &options,
    );
    ExitCode::SUCCESS
}
