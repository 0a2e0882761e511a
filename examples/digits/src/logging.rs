//! Where log records go: a file in the artifacts folder, never the terminal.
//!
//! Burn's `Learner` installs a file logger per run, and Burn's server installs one that prints
//! every INFO record (each tensor transfer) to standard output when none is installed yet. One
//! process-wide logger, installed first, takes both places.

use std::path::Path;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// The log file's name inside the artifacts folder.
pub const LOG_FILE: &str = "digits.log";

/// Sends every INFO (and more severe) record of the process to `artifacts/digits.log`.
pub fn to_file(artifacts: &Path) -> Result<(), String> {
    std::fs::create_dir_all(artifacts)
        .map_err(|e| format!("cannot create {}: {e}", artifacts.display()))?;
    let path = artifacts.join(LOG_FILE);
    let file = std::fs::File::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .with_filter(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}
