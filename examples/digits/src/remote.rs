//! `--backend remote` (feature `remote`): the template on a Burn server started in this
//! process, the replicas on the servers given with `--servers`, or on servers started here
//! when none are given.

use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::backend::remote::RemoteDevice;

use crate::options::Options;
use crate::training::JobError;

/// How long a server started here may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The servers started by this process, by port. They run until the process ends.
#[derive(Debug)]
pub struct LocalServers(pub Vec<u16>);

/// Starts a Burn server (Flex behind it) in this process on `port`, or on a free port, and
/// waits until it accepts connections. It listens on every interface (Burn 0.21's choice).
pub fn start_server(port: Option<u16>) -> Result<u16, String> {
    let port = match port {
        Some(port) => port,
        None => TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free port for a server: {e}"))?
            .port(),
    };
    thread::Builder::new()
        .name(format!("burn-server-{port}"))
        .spawn(move || burn::server::start_websocket::<Flex>(FlexDevice, port))
        .map_err(|e| format!("cannot start a server thread: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "the server on port {port} did not start within {START_TIMEOUT:?}"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(port)
}

/// The servers started here, the template's device and the replicas' devices.
pub fn devices(
    options: &Options,
) -> Result<(LocalServers, RemoteDevice, Vec<RemoteDevice>), JobError> {
    let mut started = Vec::new();
    let host_port = start_server(options.host_port)?;
    started.push(host_port);
    // Only this process talks to the servers (tensors move through it), so the template's
    // server is reached on this machine.
    let host = RemoteDevice::new(&format!("ws://127.0.0.1:{host_port}"));
    let replicas = if options.servers.is_empty() {
        let mut replicas = Vec::new();
        for _ in 0..options.cpu_replicas() {
            let port = start_server(None)?;
            started.push(port);
            replicas.push(RemoteDevice::new(&format!("ws://127.0.0.1:{port}")));
        }
        replicas
    } else {
        options
            .servers
            .iter()
            .map(|url| RemoteDevice::new(url))
            .collect()
    };
    crate::training::say(
        options,
        format_args!(
            "remote: template on the server started here, ws://127.0.0.1:{host_port}; {} replica server(s){}",
            replicas.len(),
            if options.servers.is_empty() {
                ", started here"
            } else {
                ""
            }
        ),
    );
    Ok((LocalServers(started), host, replicas))
}
