//! Whether a Burn server answers for a remote device.

use std::any::Any;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use burn::backend::remote::RemoteDevice;
use burn::tensor::backend::Backend;

/// How long a check waits for a server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a check waits for a server to answer a sync before the server counts as lost.
/// Generous: the check runs on a thread of its own, whose queue on the server is empty, but the
/// server may be busy with other queues.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a check that waits for a sync makes sure the server still accepts connections.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The port of a `ws://` address that names none.
const DEFAULT_PORT: u16 = 80;

/// `Some(Ok(()))` when `device` is a remote device whose server accepts connections,
/// `Some(Err(why))` when it is one that does not, `None` for other devices.
pub(crate) fn accepts_connections(device: &dyn Any) -> Option<Result<(), String>> {
    let device = device.downcast_ref::<RemoteDevice>()?;
    let host_port = host_port(device);
    let addresses = match host_port.to_socket_addrs() {
        Ok(addresses) => addresses.collect::<Vec<_>>(),
        Err(error) => return Some(Err(format!("cannot resolve {host_port}: {error}"))),
    };
    // Burn's server listens on IPv4 only: a name may resolve to an IPv6 address first.
    let mut failures = Vec::new();
    for address in &addresses {
        match TcpStream::connect_timeout(address, CONNECT_TIMEOUT) {
            Ok(_) => return Some(Ok(())),
            Err(error) => failures.push(format!("{address}: {error}")),
        }
    }
    Some(Err(if failures.is_empty() {
        format!("{host_port} resolves to no address")
    } else {
        format!("no Burn server answers at {}", failures.join("; "))
    }))
}

/// `Ok(())` when `device` is not remote, or when its server accepts connections and this
/// process's connection to it still works; `Err(why)` otherwise.
///
/// The second half syncs the device through Burn's client. Either way the device is synced,
/// which also wakes any thread waiting on a connection that was lost: the client then fails
/// every pending request instead of waiting for answers that will not come.
pub(crate) fn probe<B: Backend>(device: &B::Device) -> Result<(), String> {
    let Some(accepts) = accepts_connections(device) else {
        return Ok(());
    };
    if let Err(why) = accepts {
        wake::<B>(device);
        return Err(why);
    }
    sync_within::<B>(device.clone(), SYNC_TIMEOUT)
}

/// Syncs `device` on a thread of its own, waiting at most `limit` for the answer, and less
/// when the server stops accepting connections meanwhile.
///
/// Burn 0.21's client never answers a request whose server died after it was sent: the sync
/// would wait for all of `limit`. So while it waits, the server is checked every
/// [`CHECK_EVERY`], as the watched replica threads' callers do.
fn sync_within<B: Backend>(device: B::Device, limit: Duration) -> Result<(), String> {
    let (sender, receiver) = mpsc::channel();
    let synced = device.clone();
    let started = thread::Builder::new()
        .name("dp-remote-probe".to_string())
        .spawn(move || {
            let _ = sender.send(B::sync(&synced).map_err(|error| one_line(&error.to_string())));
        });
    if let Err(error) = started {
        return Err(format!(
            "could not start a thread to reach the server: {error}"
        ));
    }
    let started_at = Instant::now();
    loop {
        let left = limit.saturating_sub(started_at.elapsed());
        match receiver.recv_timeout(left.min(CHECK_EVERY)) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => {
                return Err(format!("the connection to the server was lost ({error})"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the sync with the server panicked".to_string());
            }
            Err(mpsc::RecvTimeoutError::Timeout) if left <= CHECK_EVERY => {
                return Err(format!("the server did not answer within {limit:?}"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(Err(why)) = accepts_connections(&device) {
                    // The probe's thread waits for good; what else waits on the connection
                    // is woken.
                    wake::<B>(&device);
                    return Err(why);
                }
            }
        }
    }
}

/// Syncs `device` from this thread (which waits for what this thread sent it), and wakes the
/// sync if the server stops accepting connections meanwhile: Burn 0.21's client never answers
/// a request whose server died after it was sent.
pub(crate) fn sync_or_wake<B: Backend>(device: &B::Device) {
    let (done, finished) = mpsc::channel::<()>();
    let watched = device.clone();
    let _ = thread::Builder::new()
        .name("dp-remote-watch".to_string())
        .spawn(move || {
            // Ends when the sync is done (`done` dropped) or the server is gone.
            while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(CHECK_EVERY) {
                if let Some(Err(_)) = accepts_connections(&watched) {
                    wake::<B>(&watched);
                    return;
                }
            }
        });
    let _ = B::sync(device);
    drop(done);
}

/// Wakes whatever waits on `device`'s connection, without waiting for the answer.
pub(crate) fn wake<B: Backend>(device: &B::Device) {
    let device = device.clone();
    let _ = thread::Builder::new()
        .name("dp-remote-wake".to_string())
        .spawn(move || {
            let _ = B::sync(&device);
        });
}

/// `text` with its line breaks and indentation folded into single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `host:port` of a remote device's address, without scheme or path.
fn host_port(device: &RemoteDevice) -> String {
    // `RemoteDevice` keeps its address private; its `Debug` form carries it.
    let text = format!("{device:?}");
    let address = text
        .split("inner: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    let authority = address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    // A port is what follows the last colon, unless that colon is inside an IPv6 literal.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']');
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{DEFAULT_PORT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_device() {
        let cases = [
            ("ws://10.1.2.3:3000", "10.1.2.3:3000"),
            ("ws://machine-a:3000/", "machine-a:3000"),
            ("ws://machine-a:3000/some/path", "machine-a:3000"),
            ("ws://machine-a", "machine-a:80"),
        ];
        for (url, expected) in cases {
            assert_eq!(host_port(&RemoteDevice::new(url)), expected, "{url}");
        }
    }
}
