//! Throughput of `DataParallel` against the bare model and Burn's own multi-device strategy,
//! in one run, as a table: `cargo run --release -p bench --bin throughput [-- --replicas N]
//! [--models conv|mlp]`.
//!
//! Rows, for a compute-bound CNN (about 1M parameters) and a parameter-heavy MLP (about 10M):
//! (a) the bare model on one CPU device; (h) the machine's ceiling: N bare models each
//! running the training step on its share of the batch at once, without an optimizer step,
//! with nothing shared; (i) N independent trainings, the same with an Adam step each; (b)
//! `DataParallel` with one
//! replica there (its overhead); (c) N replicas on the host's device (scaling, N = 2 by
//! default); each on the per-replica training path and on the Keras-style path; (x) N replicas
//! off the host (what moving weights costs); and, through Burn's `Learner`, the bare model,
//! `DataParallel` (also with its template on Flex, whose kernels run the optimizer step on
//! every core), and (d) Burn's multi-device strategy on the same devices with the same global
//! batch. Each replica gets the same rows whatever N is, so the global batch grows with
//! it. The (c) TrainStep rows also print where their steps' time went (`last_step_timings`).
//!
//! Ops run on NdArray's CPU device, whose ops run on the calling thread, so N replicas can
//! use N cores. Every configuration is timed in several rounds, interleaved with the others
//! so that a busy moment of the machine hits all of them alike; the table shows the median
//! round and the spread of the round-by-round ratios.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bench::learner::{ImageBatcher, RandomImages, Silent};
use bench::memory::{self, Counting};
use bench::models::{Classifier, ConvNet, ImageBatch, WideMlp, cross_entropy};
use bench::phases::Phases;
use bench::rounds::{median, ratio_spread};
use burn::backend::Autodiff;
use burn::backend::flex::FlexDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::module::{AutodiffModule, Module, ModuleDisplay};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::train::metric::LossMetric;
use burn::train::{
    ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim,
    SupervisedTraining, TrainStep, TrainingStrategy,
};
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::{DataParallel, ParallelOptimizer, Scatter, ScatterContext};

#[global_allocator]
static ALLOC: Counting = Counting::new();

type B = Autodiff<Dispatch>;

/// What a model needs to be measured here.
trait Measured:
    AutodiffModule<
        B,
        InnerModule: InferenceStep<
            Input = ImageBatch<Dispatch>,
            Output = ClassificationOutput<Dispatch>,
        >,
    > + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
    + Classifier<B>
    + ModuleDisplay
    + core::fmt::Display
    + 'static
{
}

impl Measured for ConvNet<B> {}

impl Measured for WideMlp<B> {}

/// One configuration: a training step to repeat, and what it measured.
struct Config<'a> {
    run: String,
    replicas: usize,
    /// Which row it is compared with: "a" (bare training step), "a'" (bare forward and
    /// backward) or "L-a" (bare model through the Learner).
    baseline: &'static str,
    /// Runs `steps` training steps (or a Learner run) and returns the samples it processed.
    step: Box<dyn FnMut(usize) -> usize + 'a>,
    /// Bytes moved per training step, when the run is a `DataParallel`.
    traffic: Option<Box<dyn Fn() -> u64 + 'a>>,
    /// Where a `TrainStep` row's steps spent their time, when it is one.
    phases: Option<Box<dyn Fn() -> Phases + 'a>>,
    bound: Option<u64>,
    rates: Vec<f64>,
    /// CPU seconds per sample, one per round.
    cpu: Vec<f64>,
    peak_heap: usize,
}

impl<'a> Config<'a> {
    fn new(
        run: impl Into<String>,
        replicas: usize,
        baseline: &'static str,
        step: impl FnMut(usize) -> usize + 'a,
    ) -> Self {
        Self {
            run: run.into(),
            replicas,
            baseline,
            step: Box::new(step),
            traffic: None,
            phases: None,
            bound: None,
            rates: Vec::new(),
            cpu: Vec::new(),
            peak_heap: 0,
        }
    }

    fn median(&self) -> f64 {
        median(&self.rates)
    }
}

/// A training-step loop of the bare model (`TrainStep`).
fn bare_step<'a, M: Measured>(
    model: &M,
    batch: &'a ImageBatch<B>,
) -> impl FnMut(usize) -> usize + 'a {
    bare_loop(model, batch, |bare, batch| {
        TrainStep::step(bare, batch.clone()).grads
    })
}

/// A forward-backward loop of the bare model.
fn bare_forward<'a, M: Measured>(
    model: &M,
    batch: &'a ImageBatch<B>,
) -> impl FnMut(usize) -> usize + 'a {
    bare_loop(model, batch, |bare, batch| {
        GradientsParams::from_grads(
            cross_entropy(bare.logits(batch), batch.targets.clone()).backward(),
            bare,
        )
    })
}

/// A loop of Adam steps on the bare model, with the gradients `grads` gives for the batch.
fn bare_loop<'a, M: Measured>(
    model: &M,
    batch: &'a ImageBatch<B>,
    grads: impl Fn(&M, &ImageBatch<B>) -> GradientsParams + 'a,
) -> impl FnMut(usize) -> usize + 'a {
    let mut bare = model.clone();
    let mut optim = AdamConfig::new().init();
    let n = batch.images.dims()[0];
    move |steps| {
        for _ in 0..steps {
            let step_grads = grads(&bare, batch);
            bare = optim.step(1e-3, bare.clone(), step_grads);
        }
        steps * n
    }
}

/// `copies` independent copies of the bare model, each running the training step on its share
/// of the batch on a thread of its own at once, nothing reduced and nothing shared: without an
/// optimizer step, the machine's own ceiling for (c) (row (h)); with an Adam step of each
/// copy's own when `optimizer`, N independent trainings (row (i)).
fn ceiling<'a, M: Measured>(
    model: &M,
    batch: &'a ImageBatch<B>,
    copies: usize,
    optimizer: bool,
) -> impl FnMut(usize) -> usize + 'a {
    let n = batch.images.dims()[0];
    let device = batch.images.device();
    let shards: Vec<ImageBatch<B>> = (0..copies)
        .map(|index| {
            batch.shard(
                index * n / copies..(index + 1) * n / copies,
                &ScatterContext::new(&device),
            )
        })
        .collect();
    // Copies with leaves of their own: threads must not backward through shared leaves.
    let mut copies: Vec<_> = (0..copies)
        .map(|_| {
            (
                M::from_inner(model.valid()),
                AdamConfig::new().init::<B, M>(),
            )
        })
        .collect();
    move |steps| {
        for _ in 0..steps {
            std::thread::scope(|scope| {
                for ((copy, optim), shard) in copies.iter_mut().zip(&shards) {
                    let shard = shard.clone();
                    scope.spawn(move || {
                        let output = TrainStep::step(copy, shard);
                        if optimizer {
                            *copy = optim.step(1e-3, copy.clone(), output.grads);
                        }
                        output.item.loss.into_scalar()
                    });
                }
            });
        }
        steps * n
    }
}

/// The per-replica training step of `dp` with Adam through `optim`, timed phase by phase.
fn train_step_config<'a, M, O>(
    run: String,
    dp: DataParallel<B, M>,
    mut optim: O,
    batch: &'a ImageBatch<B>,
    bound: u64,
) -> Config<'a>
where
    M: Measured,
    O: Optimizer<DataParallel<B, M>, B> + 'a,
{
    let replicas = dp.replica_devices().len();
    let n = batch.images.dims()[0];
    // The step closure owns the module; the traffic and phase closures read it after the
    // rounds.
    let shared = Rc::new(RefCell::new((dp, 0usize, Phases::default())));
    let (state, traffic, phases) = (shared.clone(), shared.clone(), shared);
    let mut config = Config::new(run, replicas, "a", move |steps| {
        let mut state = state.borrow_mut();
        // The first call is the warm-up step: its phases are not the timed steps'.
        let timed = state.1 > 0;
        for _ in 0..steps {
            let output = state
                .0
                .try_train_step(batch.clone())
                .expect("a training step");
            let timings = state.0.last_step_timings().expect("a step was timed");
            let optimizer = Instant::now();
            state.0 = optim.step(1e-3, state.0.clone(), output.grads);
            if timed {
                state.2.add(&timings, optimizer.elapsed());
            }
        }
        state.1 += steps;
        steps * n
    });
    config.traffic = Some(Box::new(move || {
        let (dp, steps, _) = &*traffic.borrow();
        dp.traffic().total() / (*steps).max(1) as u64
    }));
    config.phases = Some(Box::new(move || phases.borrow().2.clone()));
    config.bound = Some(bound);
    config
}

/// `DataParallel` configurations over `devices`, template on `host`: the per-replica path and,
/// when `keras`, the Keras-style path.
fn dp_configs<'a, M: Measured>(
    model: &M,
    label: &str,
    host: &DispatchDevice,
    devices: Vec<DispatchDevice>,
    batch: &'a ImageBatch<B>,
    keras: bool,
) -> Vec<Config<'a>> {
    let replicas = devices.len();
    let off_host = devices.iter().filter(|device| *device != host).count() as u64;
    let bound = 2 * off_host * 4 * Module::num_params(model) as u64;
    let n = batch.images.dims()[0];
    let new_dp =
        || DataParallel::new(model.clone().fork(host), devices.clone()).expect("CPU devices");
    let mut configs = vec![
        train_step_config(
            format!("{label}, TrainStep"),
            new_dp(),
            AdamConfig::new().init(),
            batch,
            bound,
        ),
        train_step_config(
            format!("{label}, TrainStep, ParallelOptimizer"),
            new_dp(),
            ParallelOptimizer::from_adaptor(AdamConfig::new().init()),
            batch,
            bound,
        ),
    ];

    if keras {
        let mut dp = new_dp();
        let mut optim = AdamConfig::new().init();
        let mut config = Config::new(
            format!("{label}, forward + backward"),
            replicas,
            "a'",
            move |steps| {
                for _ in 0..steps {
                    let logits = dp.forward(batch.clone(), |m, shard| m.logits(&shard));
                    let grads = GradientsParams::from_grads(
                        cross_entropy(logits, batch.targets.clone()).backward(),
                        &dp,
                    );
                    dp = optim.step(1e-3, dp.clone(), grads);
                }
                steps * n
            },
        );
        config.bound = Some(bound);
        configs.push(config);

        let mut dp = new_dp();
        let mut optim = AdamConfig::new().init();
        let mut config = Config::new(
            format!("{label}, forward_parallel + parallel backward"),
            replicas,
            "a'",
            move |steps| {
                for _ in 0..steps {
                    let (logits, pending) =
                        dp.forward_parallel(batch.clone(), |m, shard| m.logits(&shard));
                    let grads = pending.backward(cross_entropy(logits, batch.targets.clone()));
                    dp = optim.step(1e-3, dp.clone(), grads);
                }
                steps * n
            },
        );
        config.bound = Some(bound);
        configs.push(config);
    }
    configs
}

/// One epoch through the `Learner` over `items` images in batches of `loader_batch`, with
/// `strategy` (the default: one device); returns the images processed.
fn learner_epoch<M, O>(
    model: M,
    optim: O,
    strategy: Option<ExecutionStrategy<B>>,
    loader_batch: usize,
    items: usize,
) -> usize
where
    M: AutodiffModule<
            B,
            InnerModule: InferenceStep<
                Input = ImageBatch<Dispatch>,
                Output = ClassificationOutput<Dispatch>,
            >,
        > + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
        + core::fmt::Display
        + 'static,
    O: Optimizer<M, B> + 'static,
{
    let batcher = ImageBatcher {
        channels: 3,
        side: SIDE,
    };
    let train: Arc<dyn DataLoader<B, ImageBatch<B>>> = DataLoaderBuilder::new(batcher.clone())
        .batch_size(loader_batch)
        .build(RandomImages::new(items, 3, SIDE));
    let valid: Arc<dyn DataLoader<Dispatch, ImageBatch<Dispatch>>> =
        DataLoaderBuilder::new(batcher)
            .batch_size(loader_batch)
            .build(RandomImages::new(loader_batch, 3, SIDE));
    let dir = std::env::temp_dir().join(format!("bdp-throughput-{}", std::process::id()));
    let mut training = SupervisedTraining::new(&dir, train, valid)
        .metric_train_numeric(LossMetric::new())
        .num_epochs(1)
        .renderer(Silent);
    if let Some(strategy) = strategy {
        training = training.with_training_strategy(TrainingStrategy::Default(strategy));
    }
    let _ = training.launch(Learner::new(model, optim, 1e-3));
    let _ = std::fs::remove_dir_all(dir);
    items + loader_batch
}

/// Side of the images: small enough for NdArray's convolutions to finish in time.
const SIDE: usize = 8;

struct Plan {
    /// Rows per replica; the global batch is this times `replicas`.
    per_replica: usize,
    /// Replicas of the (c), (x), (h) and Learner rows.
    replicas: usize,
    steps: usize,
    rounds: usize,
}

fn measure<M: Measured>(
    name: &str,
    model: M,
    host: &DispatchDevice,
    other: &DispatchDevice,
    plan: &Plan,
) {
    let r = plan.replicas;
    let global = plan.per_replica * r;
    B::seed(host, 3);
    let batch = ImageBatch::<B>::random(global, 3, SIDE, host);
    let batch_off = ImageBatch {
        images: batch.images.clone().to_device(other),
        targets: batch.targets.clone().to_device(other),
    };
    let items = global * plan.steps;

    let mut configs = vec![
        Config::new(
            "(a) bare model, TrainStep",
            1,
            "a",
            bare_step(&model, &batch),
        ),
        Config::new(
            "(a') bare model, forward + backward",
            1,
            "a'",
            bare_forward(&model, &batch),
        ),
    ];
    configs.push(Config::new(
        format!("(h) {r} bare steps on a share of the batch each, at once, no optimizer step"),
        r,
        "a",
        ceiling(&model, &batch, r, false),
    ));
    configs.push(Config::new(
        format!("(i) {r} independent trainings: as (h), each with an Adam step of its own"),
        r,
        "a",
        ceiling(&model, &batch, r, true),
    ));
    configs.extend(dp_configs(
        &model,
        "(b) DataParallel, 1 replica on the host",
        host,
        vec![host.clone()],
        &batch,
        true,
    ));
    configs.extend(dp_configs(
        &model,
        &format!("(c) DataParallel, {r} replicas on the host's device"),
        host,
        vec![host.clone(); r],
        &batch,
        true,
    ));
    configs.extend(dp_configs(
        &model,
        &format!("(x) DataParallel, {r} replicas off the host"),
        other,
        vec![host.clone(); r],
        &batch_off,
        false,
    ));
    let (m1, m2, m3) = (model.clone(), model.clone(), model.clone());
    let (h2, h3) = (host.clone(), host.clone());
    let per_device = plan.per_replica;
    configs.push(Config::new(
        "(L-a) Learner, bare model",
        1,
        "L-a",
        move |_| learner_epoch(m1.clone(), AdamConfig::new().init(), None, global, items),
    ));
    configs.push(Config::new(
        "(L-c) Learner, DataParallel",
        r,
        "L-a",
        move |_| {
            let dp = DataParallel::new(m2.clone(), vec![h2.clone(); r]).expect("CPU devices");
            learner_epoch(dp, AdamConfig::new().init(), None, global, items)
        },
    ));
    // The Learner's optimizer step on the workers, every parameter (and Adam's large ones by
    // rows) at once.
    let (m5, h5) = (model.clone(), host.clone());
    configs.push(Config::new(
        "(L-p) Learner, DataParallel, ParallelOptimizer",
        r,
        "L-a",
        move |_| {
            let dp = DataParallel::new(m5.clone(), vec![h5.clone(); r]).expect("CPU devices");
            let optim = ParallelOptimizer::from_adaptor(AdamConfig::new().init());
            learner_epoch(dp, optim, None, global, items)
        },
    ));
    // The template, and so the Learner's optimizer step, on Flex, whose kernels use every
    // core; the replicas stay on NdArray.
    let (m4, h4, o4) = (model.clone(), host.clone(), other.clone());
    configs.push(Config::new(
        "(L-x) Learner, DataParallel, template on Flex",
        r,
        "L-a",
        move |_| {
            let dp =
                DataParallel::new(m4.clone().fork(&o4), vec![h4.clone(); r]).expect("CPU devices");
            learner_epoch(dp, AdamConfig::new().init(), None, global, items)
        },
    ));
    configs.push(Config::new(
        "(L-d) Learner, Burn's multi-device strategy",
        r,
        "L-a",
        move |_| {
            let strategy = ExecutionStrategy::MultiDevice(
                vec![h3.clone(); r],
                MultiDeviceOptim::OptimMainDevice,
            );
            learner_epoch(
                m3.clone(),
                AdamConfig::new().init(),
                Some(strategy),
                per_device,
                items,
            )
        },
    ));

    // One warm-up step each, then the rounds, interleaved.
    for config in &mut configs {
        if !config.run.starts_with("(L") {
            (config.step)(1);
        }
    }
    for _ in 0..plan.rounds {
        for config in &mut configs {
            ALLOC.reset_peak();
            let cpu_start = memory::cpu_seconds().unwrap_or(0.0);
            let start = Instant::now();
            let samples = (config.step)(plan.steps);
            let rate = samples as f64 / start.elapsed().as_secs_f64();
            let cpu = memory::cpu_seconds().unwrap_or(0.0) - cpu_start;
            config.rates.push(rate);
            config.cpu.push(cpu / samples as f64);
            config.peak_heap = config.peak_heap.max(ALLOC.peak_bytes());
        }
    }

    println!(
        "\n### {name}: {} parameters, global batch {}, {} steps x {} rounds\n",
        Module::num_params(&model),
        global,
        plan.steps,
        plan.rounds
    );
    println!(
        "| run | replicas | samples/s | against | spread over rounds | CPU time per sample, against | bytes moved per step | lower bound | peak heap MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let find = |name: &str| {
        configs
            .iter()
            .find(|c| c.run.starts_with(&format!("({name})")))
    };
    for config in &configs {
        let (rate, cpu) = (config.median(), median(&config.cpu));
        let base = find(config.baseline);
        let (base_rate, base_cpu) = base.map_or((1.0, 1.0), |c| (c.median(), median(&c.cpu)));
        let (low, high) = base.map_or((1.0, 1.0), |base| ratio_spread(&config.rates, &base.rates));
        let bytes = config
            .traffic
            .as_ref()
            .map_or("-".to_string(), |t| format!("{:.1} MB", t() as f64 / 1e6));
        let bound = config
            .bound
            .map_or("-".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6));
        println!(
            "| {} | {} | {:.1} | {:.3}x ({}) | {:.3}x to {:.3}x | {:.3}x | {} | {} | {:.1} |",
            config.run,
            config.replicas,
            rate,
            rate / base_rate,
            config.baseline,
            low,
            high,
            cpu / base_cpu,
            bytes,
            bound,
            config.peak_heap as f64 / 1048576.0
        );
    }
    let ratio = |name: &str, over: &str| match (find(name), find(over)) {
        (Some(row), Some(base)) => row.median() / base.median(),
        _ => f64::NAN,
    };
    let (ceiling, independent) = (ratio("h", "a"), ratio("i", "a"));
    println!(
        "\nAt {r} replicas: the machine's ceiling (h) is {ceiling:.3}x the bare model; {r} \
         independent trainings (i) reach {independent:.3}x. Shares of (h), then of (i):"
    );
    let share = |name: &str, over: &str| {
        let row = ratio(name, over);
        format!(
            "{row:.3}x, {:.0}% of (h), {:.0}% of (i)",
            100.0 * row / ceiling,
            100.0 * row / independent
        )
    };
    // The rows with the parallel optimizer follow the adaptor's, under the same label.
    let parallel = |name: &str| {
        let row = configs.iter().find(|c| {
            c.run.starts_with(&format!("({name})")) && c.run.contains("ParallelOptimizer")
        });
        let base = find("a").map_or(f64::NAN, Config::median);
        let ratio = row.map_or(f64::NAN, |row| row.median() / base);
        format!(
            "{ratio:.3}x, {:.0}% of (h), {:.0}% of (i)",
            100.0 * ratio / ceiling,
            100.0 * ratio / independent
        )
    };
    println!("- (c) TrainStep: {}", share("c", "a"));
    println!("- (c) TrainStep, ParallelOptimizer: {}", parallel("c"));
    println!("- (L-c) Learner: {}", share("L-c", "L-a"));
    println!(
        "- (L-p) Learner, ParallelOptimizer: {}",
        share("L-p", "L-a")
    );
    println!("- (L-x) Learner, template on Flex: {}", share("L-x", "L-a"));
    println!(
        "- through the Learner, against Burn's multi-device strategy (L-d): (L-c) {:.3}x, (L-p) \
         {:.3}x, (L-x) {:.3}x",
        ratio("L-c", "L-d"),
        ratio("L-p", "L-d"),
        ratio("L-x", "L-d"),
    );

    println!(
        "\nWhere a TrainStep row's step goes, mean over its timed steps (`last_step_timings`), \
         in ms; the optimizer step is the caller's, after the step:\n"
    );
    println!("| run | {} |", Phases::HEADER);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for config in &configs {
        if let Some(phases) = &config.phases {
            println!("| {} | {} |", config.run, phases().row());
        }
    }
}

/// Throughput of DataParallel against the bare model and Burn's multi-device strategy, on CPU
/// devices: prints one table per model.
#[derive(Debug, clap::Parser)]
#[command(name = "throughput", version, about)]
struct Options {
    /// One round of few steps: for trying the program, not for figures.
    #[arg(long)]
    quick: bool,
    /// Replicas (and bare copies for the ceiling, and devices for Burn's strategy) in the
    /// rows that scale; each replica gets 16 ConvNet rows or 64 WideMlp rows of the batch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    replicas: u16,
    /// The models to measure.
    #[arg(long, value_enum, default_value_t = Models::Both)]
    models: Models,
}

/// Which models a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Models {
    /// The compute-bound ConvNet, then the parameter-heavy WideMlp.
    Both,
    /// The ConvNet alone.
    Conv,
    /// The WideMlp alone.
    Mlp,
}

fn main() -> ExitCode {
    let options = <Options as clap::Parser>::parse();
    let (quick, replicas) = (options.quick, usize::from(options.replicas));
    let host = DispatchDevice::NdArray(NdArrayDevice::Cpu);
    let other = DispatchDevice::Flex(FlexDevice);
    println!(
        "throughput on {} CPU cores, {replicas} replicas; ops on {host:?}, one thread each; the \
         (x) rows keep the template on {other:?}{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if quick {
            "; quick run (one round, few steps): for trying the program, not for figures"
        } else {
            ""
        }
    );
    let (conv_steps, mlp_steps, rounds) = if quick { (1, 1, 1) } else { (2, 3, 5) };
    let conv = Plan {
        per_replica: if quick { 8 } else { 16 },
        replicas,
        steps: conv_steps,
        rounds,
    };
    let mlp = Plan {
        per_replica: if quick { 32 } else { 64 },
        replicas,
        steps: mlp_steps,
        rounds,
    };
    if options.models != Models::Mlp {
        measure(
            "Compute-bound ConvNet",
            ConvNet::<B>::new(104, &host),
            &host,
            &other,
            &conv,
        );
    }
    if options.models != Models::Conv {
        measure(
            "Parameter-heavy WideMlp",
            WideMlp::<B>::new(3 * SIDE * SIDE, 3_000, &host),
            &host,
            &other,
            &mlp,
        );
    }
    ExitCode::SUCCESS
}
