//! Command-line options of the digits job, parsed with clap.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Which devices the replicas and the template use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Flex's CPU device, repeated once per replica; the template on it too.
    Flex,
    /// NdArray's CPU device, repeated once per replica; the template on it too.
    Ndarray,
    /// Replicas alternating between the NdArray and Flex CPU devices; the template on Flex.
    Mixed,
    /// Replicas on CUDA devices 0..n; the template on the first GPU, or with `--host cpu` on
    /// the Flex CPU device (feature `cuda`).
    Cuda,
    /// Replicas on Burn servers (`--servers`, or servers started in this process), the
    /// template on a server in this process (feature `remote`).
    Remote,
}

/// Where the template lives with `--backend cuda`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostChoice {
    /// The first GPU: the optimizer step runs there and only the other replicas' weights and
    /// gradients move (the faster layout, measured in docs/choosing-the-host.md).
    Gpu,
    /// The Flex CPU device, as Keras's multi_gpu_model: every replica's weights and gradients
    /// cross PCIe every step, and the optimizer step runs on the CPU.
    Cpu,
}

/// How batches are shared among the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitChoice {
    /// Shards that differ by at most one row.
    Even,
    /// Rows in proportion to each replica's measured speed.
    Balanced,
}

/// Which network the job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelChoice {
    /// Two convolutions, a max-pool and two linear layers.
    Plain,
    /// The same with a SyncBatchNorm after the second convolution: statistics over the whole
    /// batch across replicas, so it trains as the bare model does.
    Bn,
}

/// What a training step does when a replica fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailureChoice {
    /// The step fails and the job stops with the replica's error.
    Fail,
    /// The replicas that finished run the failed replica's rows, and the step goes on; a lost
    /// or stalled device is left out of later steps.
    Redistribute,
}

/// How the job reports its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Burn's terminal UI while training (standard output is a terminal).
    Terminal,
    /// One line per epoch (standard output is a pipe or a file).
    Lines,
    /// Nothing but the final table (`--quiet`).
    Quiet,
}

/// Train a small convolutional network on the handwritten digits with DataParallel, then the
/// bare model the same way, and compare them.
#[derive(Debug, Clone, Parser)]
#[command(name = "digits", version, about, long_about = None)]
pub struct Options {
    /// Replica devices: flex or ndarray repeat that CPU device; mixed alternates NdArray and
    /// Flex; cuda takes the first GPUs (needs --features cuda); remote uses Burn servers (needs
    /// --features remote).
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    pub backend: BackendChoice,

    /// With --backend cuda, where the template (the weights and the optimizer step) lives: gpu,
    /// the first GPU, or cpu, the Flex CPU device as Keras's multi_gpu_model [default: gpu].
    #[arg(long, value_enum)]
    pub host: Option<HostChoice>,

    /// The network: plain, or bn (with a SyncBatchNorm).
    #[arg(long, value_enum, default_value_t = ModelChoice::Plain)]
    pub model: ModelChoice,

    /// How batches are shared: even shards, or balanced by each replica's measured speed.
    #[arg(long, value_enum, default_value_t = SplitChoice::Even)]
    pub split: SplitChoice,

    /// What a training step does when a replica fails: fail the job, or run the failed rows
    /// on the other replicas and go on.
    #[arg(long, value_enum, default_value_t = FailureChoice::Fail)]
    pub on_failure: FailureChoice,

    /// Seconds the replicas of a training step may take before the step gives them up as
    /// stalled (an error, or under --on-failure redistribute a lost device).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = seconds)]
    pub step_deadline: f64,

    /// Number of replicas [default: one per CPU core, or with --backend cuda every GPU found].
    #[arg(long)]
    pub replicas: Option<NonZeroUsize>,

    /// Training epochs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: u32,

    /// Global batch size, split across the replicas.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Adam's learning rate: a finite number above zero.
    #[arg(long = "lr", default_value_t = 2e-3, value_parser = learning_rate)]
    pub learning_rate: f64,

    /// Seed of the weights and of the data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Skip training the bare model for comparison.
    #[arg(long)]
    pub no_bare: bool,

    /// Print nothing but the final table.
    #[arg(long, short)]
    pub quiet: bool,

    /// Read the digits from this `.csv.gz` file instead of the copy inside the program.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,

    /// Output directory: checkpoints, metric logs, the program's log, the saved model.
    #[arg(long, default_value = "artifacts/digits")]
    pub artifacts: PathBuf,

    /// With remote: the replicas' servers, ws://host:port each, comma-separated [default:
    /// start --replicas servers in this process].
    #[arg(long, value_delimiter = ',', value_parser = server_url)]
    pub servers: Vec<String>,

    /// With remote: port of the template's server, started in this process [default: any
    /// free port].
    #[arg(long)]
    pub host_port: Option<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Self::parse_from(["digits"])
    }
}

impl Options {
    /// The number of replicas on the CPU: as asked, or one per core.
    pub fn cpu_replicas(&self) -> usize {
        match self.replicas {
            Some(n) => n.get(),
            None => std::thread::available_parallelism().map_or(2, NonZeroUsize::get),
        }
    }

    /// Whether to train the bare model too.
    pub fn bare(&self) -> bool {
        !self.no_bare
    }

    /// How progress is shown: `--quiet` wins, else the terminal UI when standard output is a
    /// terminal, and plain lines otherwise.
    pub fn progress(&self, stdout_is_terminal: bool) -> Progress {
        if self.quiet {
            Progress::Quiet
        } else if stdout_is_terminal {
            Progress::Terminal
        } else {
            Progress::Lines
        }
    }
}

fn learning_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value.parse().map_err(|e| format!("not a number: {e}"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(format!("{value} is not a finite number above zero"))
    }
}

fn seconds(value: &str) -> Result<f64, String> {
    let seconds: f64 = value.parse().map_err(|e| format!("not a number: {e}"))?;
    if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 {
        Ok(seconds)
    } else {
        Err(format!(
            "{value} is not a number of seconds above zero (and below a billion)"
        ))
    }
}

fn server_url(value: &str) -> Result<String, String> {
    let url = value.trim();
    match url.strip_prefix("ws://") {
        Some(rest) if !rest.is_empty() => Ok(url.to_string()),
        _ => Err(format!(
            "{value:?} is not a server address of the form ws://host:port"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("digits").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_documented_job() {
        let options = parse(&[]).expect("no arguments are valid");
        assert_eq!(options.backend, BackendChoice::Flex);
        assert_eq!(options.split, SplitChoice::Even);
        assert_eq!(options.epochs, 8);
        assert_eq!(options.batch_size, 64);
        assert_eq!(options.learning_rate, 2e-3);
        assert!(options.bare());
        assert!(options.servers.is_empty());
        assert_eq!(options.progress(true), Progress::Terminal);
        assert_eq!(options.progress(false), Progress::Lines);
    }

    #[test]
    fn the_host_is_chosen_with_the_cuda_backend_only() {
        assert_eq!(parse(&[]).expect("valid").host, None);
        let options = parse(&["--backend", "cuda", "--host", "cpu"]).expect("valid");
        assert_eq!(options.host, Some(HostChoice::Cpu));
        assert!(parse(&["--host", "tpu"]).is_err());
        // Refused before anything runs, with the reason.
        let options = parse(&["--backend", "ndarray", "--host", "gpu"]).expect("parses");
        let error = crate::training::run(&options).expect_err("--host needs --backend cuda");
        assert_eq!(
            error.to_string(),
            "--host chooses the template's device with --backend cuda only; with --backend \
             ndarray the template is where the backend puts it"
        );
    }

    #[test]
    fn every_option_is_read() {
        let options = parse(&[
            "--backend",
            "mixed",
            "--split",
            "balanced",
            "--replicas",
            "3",
            "--epochs",
            "2",
            "--batch-size",
            "10",
            "--lr",
            "0.01",
            "--seed",
            "7",
            "--no-bare",
            "--quiet",
            "--data",
            "here.csv.gz",
            "--artifacts",
            "out",
            "--servers",
            "ws://a:1, ws://b:2",
            "--host-port",
            "3000",
        ])
        .expect("valid options");
        assert_eq!(options.backend, BackendChoice::Mixed);
        assert_eq!(options.split, SplitChoice::Balanced);
        assert_eq!(options.cpu_replicas(), 3);
        assert_eq!(
            (options.epochs, options.batch_size, options.seed),
            (2, 10, 7)
        );
        assert_eq!(options.learning_rate, 0.01);
        assert!(!options.bare());
        assert_eq!(options.progress(true), Progress::Quiet);
        assert_eq!(options.data, Some(PathBuf::from("here.csv.gz")));
        assert_eq!(options.artifacts, PathBuf::from("out"));
        assert_eq!(options.servers, ["ws://a:1", "ws://b:2"]);
        assert_eq!(options.host_port, Some(3000));
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            &["--lr", "nan"][..],
            &["--lr", "inf"],
            &["--lr", "-0.1"],
            &["--lr", "0"],
            &["--lr", "fast"],
            &["--servers", ","],
            &["--servers", "ws://a:1,"],
            &["--servers", "http://a:1"],
            &["--replicas", "0"],
            &["--epochs", "0"],
            &["--batch-size", "0"],
            &["--batch-size", "-3"],
            &["--backend", "tpu"],
            &["--split", "uneven"],
            &["--host-port", "70000"],
            &["--unknown"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?} must be rejected"));
            assert_ne!(
                error.kind(),
                clap::error::ErrorKind::DisplayHelp,
                "{args:?}: {error}"
            );
        }
    }

    #[test]
    fn help_is_generated() {
        let error = parse(&["--help"]).expect_err("help stops parsing");
        assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp);
        let text = error.to_string();
        for flag in ["--backend", "--replicas", "--lr", "--quiet", "--data"] {
            assert!(text.contains(flag), "help lacks {flag}:\n{text}");
        }
    }
}
