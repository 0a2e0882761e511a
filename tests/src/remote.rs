//! Burn servers started inside the test process, on 127.0.0.1, for the remote backend's tests.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::backend::remote::RemoteDevice;
use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::Mlp;
use crate::learner::ClassBatch;

/// Every port handed to a server of this process: never handed out twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port that the OS says is free and that no server of this process was ever given.
///
/// Burn's server binds its port itself, so the port must be freed before it starts. Tests run
/// in parallel threads: without this record, the OS could hand the port just freed here to
/// another test's server before this one binds it, and both would talk to one server.
fn unused_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// One Burn server (Flex behind it) on its own Tokio runtime, so that it can be stopped alone.
pub struct Server {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let port = unused_port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .enable_time()
            .build()
            .expect("a Tokio runtime");
        runtime.spawn(burn::server::start_websocket_async::<Flex>(
            Default::default(),
            port,
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the server on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            runtime: Some(runtime),
        }
    }

    /// The remote device this server is.
    pub fn device(&self) -> RemoteDevice {
        RemoteDevice::new(&format!("ws://127.0.0.1:{}", self.port))
    }

    /// Stops the server: its listener and connections close, and its port is free again.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `body` on its own thread and fails the test if it takes longer than `limit`.
pub fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)));
    });
    match receiver.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("timed out after {limit:?}"),
    }
}

/// When [`StopsItsServer`] stops a doomed server, in a replica's step on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Before the replica's forward pass.
    AtStart,
    /// After its backward pass: its gradients are on the server, about to move to the host.
    AfterBackward,
}

/// Servers that [`StopsItsServer`] stops in a replica's step on their device, and when.
static DOOMED: Mutex<Vec<(Server, Stop)>> = Mutex::new(Vec::new());

/// Stops `server` at `when` in the first step of a replica of [`StopsItsServer`] on its device.
pub fn doom(server: Server, when: Stop) {
    DOOMED
        .lock()
        .expect("the doomed servers")
        .push((server, when));
}

/// Stops the doomed server of `device`, if it was doomed for `now`.
fn stop_if_doomed(device: &str, now: Stop) {
    let mut doomed = DOOMED.lock().expect("the doomed servers");
    if let Some(found) = doomed
        .iter()
        .position(|(server, when)| *when == now && format!("{:?}", server.device()) == device)
    {
        doomed.remove(found).0.stop();
    }
}

/// [`Mlp`]'s classification step, during which the replica's own server is stopped if it was
/// given to [`doom`]: the server is lost in the middle of the replica's step.
#[derive(Module, Debug)]
pub struct StopsItsServer<B: burn::tensor::backend::Backend> {
    /// The model.
    pub inner: Mlp<B>,
}

impl<B: AutodiffBackend> TrainStep for StopsItsServer<B> {
    type Input = ClassBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let device = format!("{:?}", batch.features.device());
        stop_if_doomed(&device, Stop::AtStart);
        let item = self.inner.classify(batch);
        let grads = item.loss.backward();
        // The backward pass ran on the server: Burn's client sends operations lazily.
        let _ = B::sync(&item.loss.device());
        stop_if_doomed(&device, Stop::AfterBackward);
        TrainOutput::new(self, grads, item)
    }
}

impl<B: burn::tensor::backend::Backend> InferenceStep for StopsItsServer<B> {
    type Input = ClassBatch<B>;
    type Output = ClassificationOutput<B>;

    /// [`Mlp`]'s classification, preceded by stopping the replica's own server if it was given
    /// to [`doom`] (at [`Stop::AtStart`]).
    fn step(&self, batch: Self::Input) -> Self::Output {
        stop_if_doomed(&format!("{:?}", batch.features.device()), Stop::AtStart);
        self.inner.classify(batch)
    }
}
