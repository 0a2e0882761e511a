//! Exactness and throughput of burn-data-parallel on NVIDIA GPUs; `scripts/gpu-check.sh`
//! builds and runs it.
//!
//! Exactness: `DataParallel` with replicas on `[cuda:0, cuda:0]` (template on `cuda:0`), with
//! the template on the CPU and a replica on `cuda:0`, and, with two GPUs or more, with replicas
//! on every GPU; it and the bare model on `cuda:0` are each measured against a float64
//! reference of the same computation on the CPU, and `DataParallel` passes when its error is
//! within twice the bare model's (plus a floor for rounding alone).
//!
//! Throughput, for a compute-bound ConvNet and a parameter-heavy WideMlp: the bare model on
//! `cuda:0` against `DataParallel` with one and two replicas on `cuda:0` (and one on each GPU,
//! with more than one), its template on `cuda:0` and on the CPU, on both paths (the
//! per-replica training step, and the Keras-style forward with one backward). Every
//! configuration first trains until its step time settles (autotuning makes the first steps
//! slow), then all are timed in rounds interleaved with one another, and each row gives the
//! median round and the spread of the round-by-round ratios to the bare model. A second table
//! gives where `DataParallel`'s training steps go, phase by phase (weights to the replica,
//! compute, gradients home, reduction, optimizer step), with each phase waited for.
//!
//! `--cpu` runs the same program with CPU stand-ins (Flex as the CPU, NdArray as the GPUs),
//! which is how CI exercises it. Exit codes: 0 all checks pass, 1 a check fails, 2 bad
//! arguments, 3 no GPU on this machine.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::models::{Classifier, ConvNet, ImageBatch, WideMlp, cross_entropy};
use bench::phases::Phases;
use bench::rounds::{Settle, WarmUp, median, ratio_spread, warm_up};
use burn::backend::flex::FlexDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::train::{ClassificationOutput, TrainStep};
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::{DataParallel, ParallelOptimizer, Scatter, ScatterContext, cuda_devices};
use burn_data_parallel_tests::exactness;

type B = Autodiff<Dispatch>;

/// What a model needs to be measured here.
trait Measured:
    AutodiffModule<B>
    + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
    + Classifier<B>
    + 'static
{
}

impl<M> Measured for M where
    M: AutodiffModule<B>
        + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
        + Classifier<B>
        + 'static
{
}

/// The float64 reference of every exactness check: NdArray on the CPU.
type Exact = Autodiff<NdArray<f64>>;

/// Exactness and throughput of DataParallel on NVIDIA GPUs (or, with --cpu, CPU stand-ins).
#[derive(Debug, clap::Parser)]
#[command(name = "gpu-check", version, about)]
struct Options {
    /// Run with CPU stand-ins: Flex for the CPU, NdArray for two GPUs.
    #[arg(long)]
    cpu: bool,
    /// Timed training steps per configuration and round.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    steps: u32,
    /// Timing rounds, each running every configuration in turn.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
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

/// Which bare-model row a row is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The per-replica training step (`TrainStep`; `try_train_step` for `DataParallel`).
    TrainStep,
    /// The Keras-style path: one forward, a loss on the merged output, one `backward()`.
    Keras,
}

/// One training step of a row; given phases, a `DataParallel` training-step row runs it with
/// synced phases and adds where its time went.
type Step<'a> = Box<dyn FnMut(Option<&mut Phases>) + 'a>;

/// One row of the throughput table: a training step (with its Adam step) to repeat, and what
/// it measured.
struct Row<'a> {
    run: String,
    replicas: usize,
    path: Path,
    step: Step<'a>,
    warm_up: Option<WarmUp>,
    /// Samples per second, one per round.
    rates: Vec<f64>,
    /// Where the steps went, for `DataParallel`'s training-step rows.
    phases: Option<Phases>,
}

impl<'a> Row<'a> {
    fn new(run: String, replicas: usize, path: Path, step: Step<'a>) -> Self {
        Self {
            run,
            replicas,
            path,
            step,
            warm_up: None,
            rates: Vec::new(),
            phases: None,
        }
    }
}

/// Waits for every device's queue: a step has ended when its kernels have run.
fn sync_all(devices: &[DispatchDevice]) {
    for device in devices {
        let _ = B::sync(device);
    }
}

/// The bare model on `gpu0`: its `TrainStep` and Adam step, or on the Keras-style path one
/// forward and backward and Adam step, on `batch` moved there each step.
fn bare_row<'a, M: Measured>(
    model: &M,
    path: Path,
    gpu0: &'a DispatchDevice,
    batch: &'a ImageBatch<B>,
) -> Row<'a> {
    let n = batch.images.dims()[0];
    let mut bare = model.clone().fork(gpu0);
    let mut optim = AdamConfig::new().init();
    let step: Step<'a> = Box::new(move |_| {
        let shard = batch.shard(0..n, &ScatterContext::new(gpu0));
        let grads = match path {
            Path::TrainStep => TrainStep::step(&bare, shard).grads,
            Path::Keras => {
                let loss = cross_entropy(bare.logits(&shard), shard.targets);
                GradientsParams::from_grads(loss.backward(), &bare)
            }
        };
        bare = optim.step(1e-3, bare.clone(), grads);
    });
    let label = match path {
        Path::TrainStep => "TrainStep",
        Path::Keras => "forward + backward",
    };
    Row::new(format!("bare model on gpu0, {label}"), 1, path, step)
}

/// `dp`'s per-replica training step and an Adam step through `optim`; given phases, the step
/// runs with synced phases and its phases are added.
fn train_step_row<'a, M, O>(
    run: String,
    dp: DataParallel<B, M>,
    mut optim: O,
    batch: &'a ImageBatch<B>,
) -> Row<'a>
where
    M: Measured,
    O: Optimizer<DataParallel<B, M>, B> + 'a,
{
    let replicas = dp.replica_devices().len();
    let mut dp = Some(dp);
    let step: Step<'a> = Box::new(move |phases| {
        let module = dp.take().expect("the module is put back after each step");
        let module = module.with_synced_phases(phases.is_some());
        let output = module
            .try_train_step(batch.clone())
            .expect("a training step");
        let timings = module.last_step_timings().expect("a step was timed");
        let optimizer = Instant::now();
        let host = module.host().clone();
        let module = optim.step(1e-3, module, output.grads);
        if let Some(phases) = phases {
            let _ = B::sync(&host);
            phases.add(&timings, optimizer.elapsed());
        }
        dp = Some(module);
    });
    let mut row = Row::new(run, replicas, Path::TrainStep, step);
    row.phases = Some(Phases::default());
    row
}

/// `dp` on the Keras-style path: `forward`, the loss on the merged logits on the host, one
/// `backward()`, an Adam step.
fn keras_row<'a, M: Measured>(
    run: String,
    mut dp: DataParallel<B, M>,
    batch: &'a ImageBatch<B>,
) -> Row<'a> {
    let replicas = dp.replica_devices().len();
    let targets = batch.targets.clone().to_device(dp.host());
    let mut optim = AdamConfig::new().init();
    let step: Step<'a> = Box::new(move |_| {
        let logits = dp.forward(batch.clone(), |model, shard| model.logits(&shard));
        let loss = cross_entropy(logits, targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &dp);
        dp = optim.step(1e-3, dp.clone(), grads);
    });
    Row::new(run, replicas, Path::Keras, step)
}

/// How long each row is timed.
struct Plan {
    /// When a row's warm-up has settled. Its `max_time` is the warm-up time of one model's
    /// rows together, shared out evenly among them: within the script's five minutes even when
    /// no row settles.
    settle: Settle,
    rounds: usize,
    steps: usize,
}

/// The throughput table and the phase table of `model`: the bare model on the first GPU
/// against `DataParallel` with one replica and two on it, and one on every GPU, template on
/// the first GPU and on the CPU, on both paths; every row warmed up until its step time
/// settles, then timed in rounds interleaved with the others.
fn measure<M: Measured>(
    name: &str,
    model: M,
    batch: ImageBatch<B>,
    cpu: &DispatchDevice,
    gpus: &[DispatchDevice],
    plan: &Plan,
) {
    let n = batch.images.dims()[0];
    let gpu0 = &gpus[0];
    let mut every: Vec<DispatchDevice> = gpus.to_vec();
    every.push(cpu.clone());

    let mut replica_sets = vec![
        ("1 replica on gpu0".to_string(), vec![gpu0.clone()]),
        ("2 replicas on gpu0".to_string(), vec![gpu0.clone(); 2]),
    ];
    if gpus.iter().any(|gpu| gpu != gpu0) {
        replica_sets.push((
            format!("1 replica on each of {} GPUs", gpus.len()),
            gpus.to_vec(),
        ));
    }
    let mut rows = vec![
        bare_row(&model, Path::TrainStep, gpu0, &batch),
        bare_row(&model, Path::Keras, gpu0, &batch),
    ];
    for (replicas, devices) in &replica_sets {
        for (host, template) in [(gpu0, "template on gpu0"), (cpu, "template on the CPU")] {
            let new_dp = || {
                DataParallel::new(model.clone(), devices.clone())
                    .expect("devices listed by the driver")
                    .with_host(host.clone())
            };
            let label = format!("DataParallel, {replicas}, {template}");
            rows.push(train_step_row(
                format!("{label}, TrainStep"),
                new_dp(),
                AdamConfig::new().init(),
                &batch,
            ));
            if host == cpu {
                // The host's optimizer step on the module's workers, every parameter at once.
                rows.push(train_step_row(
                    format!("{label}, TrainStep, ParallelOptimizer"),
                    new_dp(),
                    ParallelOptimizer::from_adaptor(AdamConfig::new().init()),
                    &batch,
                ));
            }
            rows.push(keras_row(
                format!("{label}, forward + backward"),
                new_dp(),
                &batch,
            ));
        }
    }

    let settle = Settle {
        max_time: plan.settle.max_time / rows.len() as u32,
        ..plan.settle
    };
    for row in &mut rows {
        let step = &mut row.step;
        row.warm_up = Some(warm_up(&settle, || {
            step(None);
            sync_all(&every);
        }));
    }
    for _ in 0..plan.rounds {
        for row in &mut rows {
            sync_all(&every);
            let start = Instant::now();
            for _ in 0..plan.steps {
                (row.step)(None);
            }
            sync_all(&every);
            let rate = (n * plan.steps) as f64 / start.elapsed().as_secs_f64();
            row.rates.push(rate);
        }
    }
    for row in &mut rows {
        if let Some(mut phases) = row.phases.take() {
            for _ in 0..plan.steps {
                (row.step)(Some(&mut phases));
            }
            row.phases = Some(phases);
        }
    }

    println!(
        "\n### {name}: {} parameters, global batch {n}; warm-up until the step time settles, \
         then {} rounds of {} steps, interleaved\n",
        Module::num_params(&model),
        plan.rounds,
        plan.steps
    );
    println!(
        "| run | replicas | warm-up steps | samples/s (median round) | against the bare model | \
         spread over rounds |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let bare = |path: Path| {
        rows.iter()
            .find(|row| row.run.starts_with("bare") && row.path == path)
            .expect("both bare rows")
    };
    for row in &rows {
        let base = bare(row.path);
        let (low, high) = ratio_spread(&row.rates, &base.rates);
        let warm = row.warm_up.map_or("-".to_string(), |warm| {
            format!(
                "{}{}",
                warm.steps,
                if warm.settled { "" } else { " (unsettled)" }
            )
        });
        println!(
            "| {} | {} | {warm} | {:.1} | {:.3}x | {low:.3}x to {high:.3}x |",
            row.run,
            row.replicas,
            median(&row.rates),
            median(&row.rates) / median(&base.rates),
        );
    }
    println!(
        "\nWhere DataParallel's training steps go ({} steps after the rounds, with synced \
         phases: each phase's work waited for before the next), mean ms per step:\n",
        plan.steps
    );
    println!("| run | {} |", Phases::HEADER);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        if let Some(phases) = &row.phases {
            println!("| {} | {} |", row.run, phases.row());
        }
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

    B::seed(&cpu, 1);
    // The CPU stand-ins run small models for a few steps: they check the program, not speed.
    // (rows per GPU, image side, ConvNet width, WideMlp width, timing)
    let (per_gpu, side, conv_width, mlp_width, plan) = if options.cpu {
        let settle = Settle {
            window: 2,
            tolerance: 0.5,
            max_steps: 2,
            max_time: Duration::from_secs(20),
        };
        let plan = Plan {
            settle,
            rounds: 2,
            steps: 1,
        };
        (4, 8, 8, 64, plan)
    } else {
        let settle = Settle {
            window: 5,
            tolerance: 0.1,
            max_steps: 100,
            max_time: Duration::from_secs(45),
        };
        let plan = Plan {
            settle,
            rounds: options.rounds as usize,
            steps: options.steps as usize,
        };
        (256, 16, 104, 2_600, plan)
    };
    let batch = ImageBatch::<B>::random(per_gpu * gpus.len(), 3, side, &cpu);
    let conv = ConvNet::<B>::new(conv_width, &cpu);
    let mlp = WideMlp::<B>::new(3 * side * side, mlp_width, &cpu);
    measure("ConvNet", conv, batch.clone(), &cpu, &gpus, &plan);
    measure("WideMlp", mlp, batch, &cpu, &gpus, &plan);

    if pass {
        println!("\nevery exactness check passed");
        ExitCode::SUCCESS
    } else {
        println!("\nan exactness check FAILED");
        ExitCode::FAILURE
    }
}
