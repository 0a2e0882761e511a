//! The job: train with `DataParallel` through Burn's `Learner`, train the bare model the same
//! way for comparison, evaluate on the held-out test split, save and reload the template.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::backend::flex::FlexDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::data::dataloader::DataLoaderBuilder;
use burn::module::{AutodiffModule, Module};
use burn::optim::AdamConfig;
use burn::record::{CompactRecorder, FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::renderer::tui::TuiMetricsRendererWrapper;
use burn::train::{ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainStep};
use burn::{Dispatch, DispatchDevice};
use burn_data_parallel::{DataParallel, FailurePolicy, Split, Traffic};
use clap::ValueEnum as _;

use crate::data::{self, DigitItem, DigitsBatcher, DigitsDataset};
use crate::model::DigitsNet;
use crate::options::{BackendChoice, FailureChoice, ModelChoice, Options, Progress, SplitChoice};
use crate::progress::{Display, EpochLog, EpochRenderer, Throughput};
use crate::watchdog;

/// The training backend: one type spanning every CPU device (and CUDA with feature `cuda`).
pub type Train = Autodiff<Dispatch>;
/// The inference backend.
pub type Infer = Dispatch;

/// Why the job cannot run.
#[derive(Debug)]
pub enum JobError {
    /// `--backend cuda` on a machine without a GPU, or without the `cuda` feature.
    NoGpu(String),
    /// Anything else.
    Failed(String),
}

impl From<String> for JobError {
    fn from(message: String) -> Self {
        JobError::Failed(message)
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::NoGpu(message) | JobError::Failed(message) => f.write_str(message),
        }
    }
}

/// The host (where the template lives) and the replicas' devices.
pub fn devices(options: &Options) -> Result<(DispatchDevice, Vec<DispatchDevice>), JobError> {
    let nd = DispatchDevice::NdArray(NdArrayDevice::Cpu);
    let flex = DispatchDevice::Flex(FlexDevice);
    let n = options.cpu_replicas();
    Ok(match options.backend {
        BackendChoice::Ndarray => (nd.clone(), vec![nd; n]),
        BackendChoice::Flex => (flex.clone(), vec![flex; n]),
        BackendChoice::Mixed => {
            let devices = (0..n).map(|i| if i % 2 == 0 { nd.clone() } else { flex.clone() });
            (flex.clone(), devices.collect())
        }
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => {
            // Every GPU found, or the first --replicas of them, as Keras's multi_gpu_model.
            let gpus = burn_data_parallel::cuda_devices::<Infer>()
                .map_err(|e| JobError::NoGpu(e.to_string()))?;
            let count = options.replicas.map_or(gpus.len(), |n| n.get());
            if count > gpus.len() {
                return Err(JobError::NoGpu(format!(
                    "--replicas {count} asks for more GPUs than this machine has: {gpus:?}"
                )));
            }
            let gpus: Vec<DispatchDevice> = gpus.into_iter().take(count).collect();
            let host = match options.host.unwrap_or(crate::options::HostChoice::Gpu) {
                crate::options::HostChoice::Gpu => gpus[0].clone(),
                crate::options::HostChoice::Cpu => flex,
            };
            (host, gpus)
        }
        BackendChoice::Remote => {
            return Err(JobError::Failed(
                "the remote devices are set up by `run`, not here".to_string(),
            ));
        }
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Cuda => {
            return Err(JobError::NoGpu(
                "--backend cuda needs the cuda feature: \
                 cargo run --release -p digits --features cuda -- --backend cuda"
                    .to_string(),
            ));
        }
    })
}

/// One training run's figures.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// What ran.
    pub name: String,
    /// Replica count (1 for the bare model).
    pub replicas: usize,
    /// Wall time of the `Learner` run (training and per-epoch validation).
    pub wall: Duration,
    /// Samples processed per second over that run, the first epoch included.
    pub samples_per_second: f64,
    /// The first epoch on its own and the steady state after it, from the epochs' end times.
    pub throughput: Option<Throughput>,
    /// Batches processed in that run, training and validation.
    pub batches: usize,
    /// Accuracy on the held-out test split.
    pub test_accuracy: f64,
    /// Bytes moved between the host and the replicas per batch, training and validation
    /// together, and the model's parameter count (data-parallel runs only).
    pub traffic: Option<(Traffic, usize)>,
    /// The rows each replica gets of a full batch, after training (data-parallel runs only).
    pub split: Option<String>,
}

/// Runs the whole job and returns the data-parallel run's report and, when asked for, the
/// bare model's.
pub fn run(options: &Options) -> Result<(RunReport, Option<RunReport>), JobError> {
    if options.host.is_some() && options.backend != BackendChoice::Cuda {
        let backend = options
            .backend
            .to_possible_value()
            .map_or_else(String::new, |value| value.get_name().to_string());
        return Err(JobError::Failed(format!(
            "--host chooses the template's device with --backend cuda only; with --backend \
             {backend} the template is where the backend puts it"
        )));
    }
    #[cfg(feature = "remote")]
    if options.backend == BackendChoice::Remote {
        let (_servers, host, replicas) = crate::remote::devices(options)?;
        return run_on::<Autodiff<burn::backend::RemoteBackend>>(options, host, replicas);
    }
    #[cfg(not(feature = "remote"))]
    if options.backend == BackendChoice::Remote {
        return Err(JobError::Failed(
            "--backend remote needs the remote feature: \
             cargo run --release -p digits --features remote -- --backend remote"
                .to_string(),
        ));
    }
    let (host, replicas) = devices(options)?;
    run_on::<Train>(options, host, replicas)
}

/// The job on backend `B`: the template on `host`, the replicas on `replica_devices`.
fn run_on<B: AutodiffBackend>(
    options: &Options,
    host: B::Device,
    replica_devices: Vec<B::Device>,
) -> Result<(RunReport, Option<RunReport>), JobError> {
    let items = match &options.data {
        Some(path) => data::load(path)?,
        None => data::load_embedded()?,
    };
    let (train_items, test_items) = data::split(items, 0.2, options.seed);
    say(
        options,
        format_args!(
            "digits: {} training and {} test images; template on {host:?}; replicas on {replica_devices:?}",
            train_items.len(),
            test_items.len()
        ),
    );

    B::seed(&host, options.seed);
    let model = DigitsNet::<B>::new(&host, options.model == ModelChoice::Bn);
    let params = model.num_params(); // also creates the lazy weights, so the copy below is equal
    let bare = DigitsNet::<B>::from_inner(model.valid());
    say(options, format_args!("model: {params} parameters"));

    let replicas = replica_devices.len();
    let split = match options.split {
        SplitChoice::Even => Split::Even,
        SplitChoice::Balanced => Split::Balanced,
    };
    let failure_policy = match options.on_failure {
        FailureChoice::Fail => FailurePolicy::Fail,
        FailureChoice::Redistribute => FailurePolicy::Redistribute,
    };
    let dp = DataParallel::new(model, replica_devices)
        .and_then(|dp| dp.with_split(split))
        .map_err(|e| e.to_string())?
        .with_failure_policy(failure_policy)
        .with_step_deadline(Duration::from_secs_f64(options.step_deadline));
    watchdog::start(Duration::from_secs_f64(options.step_deadline));
    watchdog::phase("training the DataParallel");
    let (trained, mut dp_report) = train(
        dp,
        "DataParallel",
        replicas,
        &host,
        options,
        &train_items,
        &test_items,
    )?;
    dp_report.traffic = Some((trained.traffic(), params));
    let lost = trained.lost_devices();
    if !lost.is_empty() {
        say(
            options,
            format_args!("DataParallel lost {lost:?} during training and went on without them"),
        );
    }
    let batch_size = options.batch_size as usize;
    dp_report.split = trained.split_plan(batch_size).ok().map(|plan| {
        let rows: Vec<usize> = plan.shards().iter().map(|rows| rows.len()).collect();
        format!(
            "{:?} split of a {batch_size}-row batch, after training: {rows:?} rows per replica",
            trained.split()
        )
    });

    let bare_report = if options.bare() {
        watchdog::phase("training the bare model");
        let (_, report) = train(
            bare,
            "bare model",
            1,
            &host,
            options,
            &train_items,
            &test_items,
        )?;
        Some(report)
    } else {
        None
    };

    watchdog::phase("saving and reloading the template");
    check_saved_template(trained.into_inner(), &host, options, &test_items)?;
    watchdog::phase("printing the table");
    Ok((dp_report, bare_report))
}

/// Prints a progress message unless `--quiet` asked for the table alone.
pub fn say(options: &Options, message: impl std::fmt::Display) {
    if !options.quiet {
        println!("{message}");
    }
}

/// Trains `model` with the `Learner` (Adam, accuracy and loss, compact checkpoints) and
/// evaluates it on the test split.
fn train<B, M>(
    model: M,
    name: &str,
    replicas: usize,
    host: &B::Device,
    options: &Options,
    train_items: &[DigitItem],
    test_items: &[DigitItem],
) -> Result<(M::InnerModule, RunReport), String>
where
    B: AutodiffBackend,
    M: TrainStep<Input = data::DigitsBatch<B>, Output = ClassificationOutput<B>>
        + AutodiffModule<B>
        + core::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<
            Input = data::DigitsBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    let (epochs, batch_size) = (options.epochs as usize, options.batch_size as usize);
    let train_loader = DataLoaderBuilder::<B, _, _>::new(DigitsBatcher)
        .batch_size(batch_size)
        .shuffle(options.seed)
        .build(DigitsDataset(train_items.to_vec()));
    let test_loader = DataLoaderBuilder::<B::InnerBackend, _, _>::new(DigitsBatcher)
        .batch_size(batch_size)
        .build(DigitsDataset(test_items.to_vec()));
    let dir = options
        .artifacts
        .join(name.replace(' ', "-").to_lowercase());
    // The Learner appends to the logs it finds: start each run from an empty folder.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }

    say(
        options,
        format_args!("\ntraining the {name} for {epochs} epochs ..."),
    );
    let samples_per_epoch = train_items.len() + test_items.len();
    let training = SupervisedTraining::new(&dir, train_loader, test_loader)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_file_checkpointer(CompactRecorder::new())
        .num_epochs(epochs)
        // main() sends log records to a file in the artifacts folder, for every run at once.
        .with_application_logger(None);
    let log = EpochLog::default();
    let display = match options.progress(std::io::stdout().is_terminal()) {
        // The terminal UI puts the process's panic hook back when it closes, which would wait
        // forever after a server is lost mid-step (see docs/scale-out.md): lines instead.
        Progress::Terminal if options.backend != BackendChoice::Remote => Display::Delegate(
            Box::new(TuiMetricsRendererWrapper::new(training.interrupter(), None)),
        ),
        Progress::Terminal | Progress::Lines => Display::Lines,
        Progress::Quiet => Display::Quiet,
    };
    let training = training.renderer(EpochRenderer::new(
        display,
        name,
        samples_per_epoch,
        epochs,
        log.clone(),
    ));
    let start = Instant::now();
    let result = training.launch(Learner::new(
        model,
        AdamConfig::new().init(),
        options.learning_rate,
    ));
    let wall = start.elapsed();

    let processed = epochs * samples_per_epoch;
    let trained = result.model;
    let (test_accuracy, _) = evaluate(&trained, host, test_items);
    let report = RunReport {
        name: name.to_string(),
        replicas,
        wall,
        samples_per_second: processed as f64 / wall.as_secs_f64(),
        throughput: Throughput::from_records(&log.records(), samples_per_epoch),
        batches: epochs
            * (train_items.len().div_ceil(batch_size) + test_items.len().div_ceil(batch_size)),
        test_accuracy,
        traffic: None,
        split: None,
    };
    say(
        options,
        format_args!(
            "{name}: test accuracy {:.2}%, {:.0} samples/s",
            100.0 * report.test_accuracy,
            report.samples_per_second
        ),
    );
    Ok((trained, report))
}

/// Accuracy over `items` and the logits, in item order.
pub fn evaluate<B, M>(model: &M, host: &B::Device, items: &[DigitItem]) -> (f64, Tensor<B, 2>)
where
    B: Backend,
    M: InferenceStep<Input = data::DigitsBatch<B>, Output = ClassificationOutput<B>>,
{
    let batch = burn::data::dataloader::batcher::Batcher::<B, _, _>::batch(
        &DigitsBatcher,
        items.to_vec(),
        host,
    );
    let output = model.step(batch);
    let logits = output.output.to_device(host);
    let predicted: Tensor<B, 1, Int> = logits.clone().argmax(1).squeeze_dim(1);
    let targets = output.targets.to_device(host);
    let correct: i64 = predicted.equal(targets).int().sum().into_scalar().elem();
    (correct as f64 / items.len() as f64, logits)
}

/// Saves the template with a Burn recorder, loads the file into a fresh bare model, and
/// checks that it predicts exactly what the template does.
fn check_saved_template<B: Backend>(
    template: DigitsNet<B>,
    host: &B::Device,
    options: &Options,
    test_items: &[DigitItem],
) -> Result<(), String> {
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let path = options.artifacts.join("digits-model");
    template
        .clone()
        .save_file(&path, &recorder)
        .map_err(|e| format!("cannot save the template: {e}"))?;
    let reloaded = DigitsNet::<B>::new(host, template.normalised())
        .load_file(&path, &recorder, host)
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;

    let (accuracy, expected) = evaluate(&template, host, test_items);
    let (reloaded_accuracy, actual) = evaluate(&reloaded, host, test_items);
    let same = actual.into_data() == expected.into_data();
    say(
        options,
        format_args!(
            "\nsaved the template to {}.mpk; a bare DigitsNet loaded from it predicts {} \
             (test accuracy {:.2}% and {:.2}%)",
            path.display(),
            if same {
                "exactly the same logits"
            } else {
                "DIFFERENT logits"
            },
            100.0 * reloaded_accuracy,
            100.0 * accuracy
        ),
    );
    if same {
        Ok(())
    } else {
        Err("the reloaded model does not predict what the template predicts".to_string())
    }
}
