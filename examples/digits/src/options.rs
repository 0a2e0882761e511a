//! Command-line options of the digits job.

use std::path::PathBuf;

/// Which devices the replicas and the template use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// NdArray's CPU device, repeated once per replica; the template on it too.
    NdArray,
    /// Flex's CPU device, repeated once per replica; the template on it too.
    Flex,
    /// Replicas alternating between the NdArray and Flex CPU devices; the template on Flex.
    Mixed,
    /// Replicas on CUDA devices 0..n; the template on the Flex CPU device (feature `cuda`).
    Cuda,
    /// Replicas on Burn servers (`--servers`, or servers started in this process), the
    /// template on a server in this process (feature `remote`).
    Remote,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Devices to use.
    pub backend: BackendChoice,
    /// Number of replicas; `None` for the default: one per CPU core, or every GPU found.
    pub replicas: Option<usize>,
    /// Training epochs.
    pub epochs: usize,
    /// Global batch size, split across the replicas.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Seed of the weights and of the data order.
    pub seed: u64,
    /// Also train the bare model on the host, for the comparison table.
    pub bare: bool,
    /// Where checkpoints, logs and the saved model go.
    pub artifacts: PathBuf,
    /// With `--backend remote`: the replicas' servers (`ws://host:port`); none to start local
    /// ones.
    pub servers: Vec<String>,
    /// With `--backend remote`: the port of the server this process starts for the template;
    /// `None` for any free port.
    pub host_port: Option<u16>,
    /// With `--backend remote`: the name or address of this machine that the replicas'
    /// servers reach it by (they download the template's tensors from it).
    pub host_address: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Flex,
            replicas: None,
            epochs: 8,
            batch_size: 64,
            learning_rate: 2e-3,
            seed: 42,
            bare: true,
            artifacts: PathBuf::from("artifacts/digits"),
            servers: Vec::new(),
            host_port: None,
            host_address: "127.0.0.1".to_string(),
        }
    }
}

/// The usage text.
pub const USAGE: &str = "\
Train a small convolutional network on the handwritten digits with DataParallel.

Usage: cargo run --release -p digits -- [options]

Options:
  --backend <flex|ndarray|mixed|cuda|remote>
                                       replica devices (default flex: Flex's CPU device, repeated;
                                       ndarray: NdArray's; mixed: NdArray and Flex alternating;
                                       cuda: the first N GPUs with the template on the CPU, needs
                                       --features cuda; remote: Burn servers, needs
                                       --features remote)
  --servers <URL,URL,...>              with remote: the replicas' servers, ws://host:port each
                                       (default: start --replicas servers in this process)
  --host-port <PORT>                   with remote: port of the template's server, started in
                                       this process (default: any free port)
  --host-address <HOST>                with remote: this machine's name or address as the
                                       replicas' servers reach it (default 127.0.0.1: servers on
                                       this machine only)
  --replicas <N>                       number of replicas (default: one per CPU core, or with
                                       --backend cuda every GPU found)
  --epochs <N>                         training epochs (default 8)
  --batch-size <N>                     global batch size (default 64)
  --lr <F>                             Adam learning rate (default 0.002)
  --seed <N>                           seed of the weights and the data order (default 42)
  --no-bare                            skip training the bare model for comparison
  --artifacts <DIR>                    output directory (default artifacts/digits)
  -h, --help                           print this text";

impl Options {
    /// The number of replicas on the CPU: as asked, or one per core.
    pub fn cpu_replicas(&self) -> usize {
        self.replicas
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Parses `args` (without the program name). `Ok(None)` means help was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>, String> {
        let mut options = Self::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--backend" => {
                    options.backend = match value()?.as_str() {
                        "ndarray" => BackendChoice::NdArray,
                        "flex" => BackendChoice::Flex,
                        "mixed" => BackendChoice::Mixed,
                        "cuda" => BackendChoice::Cuda,
                        "remote" => BackendChoice::Remote,
                        other => {
                            return Err(format!(
                                "unknown backend {other:?}: use ndarray, flex, mixed, cuda or remote"
                            ));
                        }
                    }
                }
                "--replicas" => options.replicas = Some(number(&flag, &value()?)?),
                "--epochs" => options.epochs = number(&flag, &value()?)?,
                "--batch-size" => options.batch_size = number(&flag, &value()?)?,
                "--seed" => options.seed = number(&flag, &value()?)?,
                "--lr" => {
                    options.learning_rate = value()?
                        .parse()
                        .map_err(|e| format!("--lr needs a number: {e}"))?
                }
                "--no-bare" => options.bare = false,
                "--artifacts" => options.artifacts = PathBuf::from(value()?),
                "--servers" => {
                    options.servers = value()?
                        .split(',')
                        .map(str::trim)
                        .filter(|url| !url.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                "--host-port" => options.host_port = Some(number(&flag, &value()?)?),
                "--host-address" => options.host_address = value()?,
                other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
            }
        }
        if options.replicas == Some(0) || options.epochs == 0 || options.batch_size == 0 {
            return Err("--replicas, --epochs and --batch-size must be at least 1".to_string());
        }
        Ok(Some(options))
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| format!("{flag} needs a whole number, got {value:?}: {e}"))
}
