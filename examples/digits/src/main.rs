//! `cargo run --release -p digits -- --help`

use std::process::ExitCode;

use clap::Parser;
use digits::options::Options;

fn main() -> ExitCode {
    let options = Options::parse();
    if let Err(message) = digits::logging::to_file(&options.artifacts) {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    match digits::training::run(&options) {
        Ok((dp, bare)) => {
            if !options.quiet {
                println!();
            }
            println!("{}", digits::table(&dp, bare.as_ref()));
            ExitCode::SUCCESS
        }
        Err(digits::training::JobError::NoGpu(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(3)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
