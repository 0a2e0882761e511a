//! Exactness and throughput of burn-data-parallel on NVIDIA GPUs; `scripts/gpu-check.sh`
//! builds and runs it.
//!
//! Exactness: `DataParallel` with replicas on `[cuda:0, cuda:0]` (template on `cuda:0`), with
//! the template on the CPU and a replica on `cuda:0`, and, with two GPUs or more, with replicas
//! on every GPU; it and the bare model on `cuda:0` are each measured against a float64
//! reference of the same computation on the CPU, and `DataParallel` passes when its error is
//! within twice the bare model's (plus a floor for rounding alone). Throughput: training steps
//! per second of the bare model on `cuda:0` and of `DataParallel` on every GPU, with the
//! template on `cuda:0` and on the CPU.
//!
//! `--cpu` runs the same program with CPU stand-ins (Flex as the CPU, NdArray as the GPUs),
//! which is how CI exercises it. Exit codes: 0 all checks pass, 1 a check fails, 2 bad
//! arguments, 3 no GPU on this machine.

use std::process::ExitCode;
use std::time::Instant;

use bench::models::{ConvNet, ImageBatch, WideMlp};
use burn::backend::flex::FlexDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::backend::Backend;
use burn::train::{ClassificationOutput, TrainStep};
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::{DataParallel, cuda_devices};
use burn_data_parallel::{Scatter, ScatterContext};
use burn_data_parallel_tests::exactness;

type B = Autodiff<Dispatch>;

/// The float64 reference of every exactness check: NdArray on the CPU.
type Exact = Autodiff<NdArray<f64>>;

/// Exactness and throughput of DataParallel on NVIDIA GPUs (or, with --cpu, CPU stand-ins).
#[derive(Debug, clap::Parser)]
#[command(name = "gpu-check", version, about)]
struct Options {
    /// Run with CPU stand-ins: Flex for the CPU, NdArray for two GPUs.
    #[arg(long)]
    cpu: bool,
    /// Timed training steps per configuration.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    steps: u32,
}

/// Prints one row per exactness check of `DataParallel` on `host` and `devices`, and of the
/// bare model on `bare_device`, both against the float64 reference; true when every check
/// passed (see [`exactness`] for the criterion).
fn check(
    configuration: &str,
    host: &DispatchDevice,
    devices: &[DispatchDevice],
    bare_device: &DispatchDevice,
) -> bool {
    let mut pass = true;
    for (name, outcome) in
        exactness::all::<B, Exact>(host, devices, bare_device, &NdArrayDevice::Cpu)
    {
        let (bare, data_parallel, verdict) = match outcome {
            Ok(measured) => (
                format!("{:.2e}", measured.bare),
                format!("{:.2e}", measured.data_parallel),
                if measured.pass { "pass" } else { "FAIL" },
            ),
            Err(reason) => ("-".to_string(), reason, "FAIL"),
        };
        pass &= verdict == "pass";
        println!("| {configuration} | {name} | {bare} | {data_parallel} | {verdict} |");
    }
    pass
}

/// Samples per second of `steps` training steps (after one warm-up step) of `step`.
fn throughput(
    batch_size: usize,
    steps: usize,
    devices: &[DispatchDevice],
    mut step: impl FnMut(),
) -> f64 {
    step();
    for device in devices {
        let _ = Dispatch::sync(device);
    }
    let start = Instant::now();
    for _ in 0..steps {
        step();
    }
    for device in devices {
        let _ = Dispatch::sync(device);
    }
    (batch_size * steps) as f64 / start.elapsed().as_secs_f64()
}

/// One row of the throughput table per setup, for `model`.
fn measure<M>(
    name: &str,
    model: M,
    batch: ImageBatch<B>,
    cpu: &DispatchDevice,
    gpus: &[DispatchDevice],
    steps: usize,
) where
    M: AutodiffModule<B>
        + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
        + 'static,
{
    let n = batch.images.dims()[0];
    let gpu0 = &gpus[0];
    let mut optim = AdamConfig::new().init();
    let mut bare = model.clone().fork(gpu0);
    let base = throughput(n, steps, &gpus[..1], || {
        let output = TrainStep::step(&bare, batch.clone().shard(0..n, &ScatterContext::new(gpu0)));
        bare = optim.step(1e-3, bare.clone(), output.grads);
    });
    println!("| {name} | bare model on {gpu0:?} | 1 | {base:.0} | 1.00x |");
    for (host, label) in [
        (gpu0, "template on the first GPU"),
        (cpu, "template on the CPU"),
    ] {
        let mut dp = DataParallel::new(model.clone(), gpus.to_vec())
            .expect("devices listed by the driver")
            .with_host(host.clone());
        let mut optim = AdamConfig::new().init();
        let rate = throughput(n, steps, gpus, || {
            let output = dp.try_train_step(batch.clone()).expect("a training step");
            dp = optim.step(1e-3, dp.clone(), output.grads);
        });
        println!(
            "| {name} | DataParallel, {label} | {} | {rate:.0} | {:.2}x |",
            gpus.len(),
            rate / base
        );
    }
}

fn main() -> ExitCode {
    let options = <Options as clap::Parser>::parse();
    let cpu = DispatchDevice::Flex(FlexDevice);
    let gpus = if options.cpu {
        println!("gpu-check --cpu: CPU stand-ins, Flex for the CPU and NdArray for two GPUs");
        vec![DispatchDevice::NdArray(NdArrayDevice::Cpu); 2]
    } else {
        match cuda_devices::<Dispatch>() {
            Ok(gpus) => gpus,
            Err(error) => {
                eprintln!(
                    "gpu-check: {error}; nothing to check here (--cpu runs the CPU stand-ins)"
                );
                return ExitCode::from(3);
            }
        }
    };
    let gpu0 = gpus[0].clone();
    println!("GPUs: {gpus:?}\n");

    println!(
        "Each check against a float64 reference on the CPU: the largest error, relative to the \
         quantity's largest magnitude, of the bare model on gpu0 and of DataParallel; a check \
         passes when, quantity by quantity, DataParallel's error is within {} times the bare \
         model's plus {:e}.\n",
        exactness::FACTOR,
        exactness::FLOOR
    );
    println!(
        "| configuration | check | bare model vs float64 | DataParallel vs float64 | verdict |"
    );
    println!("|---|---|---|---|---|");
    let mut pass = check(
        "replicas [gpu0, gpu0], template on gpu0",
        &gpu0,
        &[gpu0.clone(), gpu0.clone()],
        &gpu0,
    );
    pass &= check(
        "template on the CPU, replica on gpu0",
        &cpu,
        std::slice::from_ref(&gpu0),
        &gpu0,
    );
    if gpus.len() > 1 {
        pass &= check(
            "replicas on every GPU, template on the CPU",
            &cpu,
            &gpus,
            &gpu0,
        );
    }

    println!("\n| model | run | replicas | samples/s | against bare |");
    println!("|---|---|---|---|---|");
    B::seed(&cpu, 1);
    // The CPU stand-ins run small models for a few steps: they check the program, not speed.
    let (per_gpu, steps, conv_width, mlp_width) = if options.cpu {
        (4, 2, 8, 64)
    } else {
        (256, options.steps as usize, 104, 2_600)
    };
    let batch = ImageBatch::<B>::random(per_gpu * gpus.len(), 3, 16, &cpu);
    let conv = ConvNet::<B>::new(conv_width, &cpu);
    let mlp = WideMlp::<B>::new(3 * 16 * 16, mlp_width, &cpu);
    let conv_name = format!("ConvNet ({} params)", conv.num_params());
    let mlp_name = format!("WideMlp ({} params)", mlp.num_params());
    measure(&conv_name, conv, batch.clone(), &cpu, &gpus, steps);
    measure(&mlp_name, mlp, batch, &cpu, &gpus, steps);

    if pass {
        println!("\nevery exactness check passed");
        ExitCode::SUCCESS
    } else {
        println!("\nan exactness check FAILED");
        ExitCode::FAILURE
    }
}
