//! A Burn server for `--backend remote`: `cargo run --release -p digits --features remote
//! --bin digits-server -- --port 3000`. Flex (the CPU) behind it.
//!
//! Burn 0.21's server listens on every interface and has no authentication: run it on a
//! trusted network only.

use std::process::ExitCode;

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;

const USAGE: &str = "Usage: digits-server [--port <PORT>]   (default port 3000)";

fn main() -> ExitCode {
    let mut port: u16 = 3000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--port", Some(value)) => match value.parse() {
                Ok(value) => port = value,
                Err(e) => {
                    eprintln!("error: --port needs a port number, got {value:?}: {e}");
                    return ExitCode::from(2);
                }
            },
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("error: unknown option {flag:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "Burn server (Flex, CPU) listening on 0.0.0.0:{port}; connect with ws://<this host>:{port}"
    );
    burn::server::start_websocket::<Flex>(FlexDevice, port);
    ExitCode::SUCCESS
}
