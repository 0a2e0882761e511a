//! `cargo run --release -p digits -- --help`

use std::process::ExitCode;

use digits::options::{Options, USAGE};

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match digits::training::run(&options) {
        Ok((dp, bare)) => {
            digits::print_table(&dp, bare.as_ref());
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
