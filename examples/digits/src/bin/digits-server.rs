//! A Burn server for `--backend remote`: `cargo run --release -p digits --features remote
//! --bin digits-server -- --port 3000`. Flex (the CPU) behind it.
//!
//! Burn 0.21's server listens on every interface and has no authentication: run it on a
//! trusted network only.

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use clap::Parser;

/// A Burn server (Flex, the CPU, behind it) for the digits job's `--backend remote`. It
/// listens on every interface with no authentication: trusted networks only.
#[derive(Debug, Parser)]
#[command(name = "digits-server", version, about)]
struct Options {
    /// The port to listen on.
    #[arg(long, default_value_t = 3000)]
    port: u16,
}

fn main() {
    let options = Options::parse();
    let port = options.port;
    println!(
        "Burn server (Flex, CPU) listening on 0.0.0.0:{port}; connect with ws://<this host>:{port}"
    );
    burn::server::start_websocket::<Flex>(FlexDevice, port);
}
