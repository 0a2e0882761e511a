//! Burn's remote backend (feature `remote`): the Burn 0.21 workarounds behind the remote
//! device kind (`kind/remote.rs`).
//!
//! Four things of Burn 0.21's remote client shape what that kind answers:
//!
//! - `RemoteBackend::device_count` is 1 whatever the servers: a remote device is an address,
//!   available when a server answers there ([`server`]).
//! - A server-to-server transfer is identified by an id that collides when several transfers
//!   leave one server at once, and the receiving side then waits forever. Every move to a
//!   remote device made here goes one tensor at a time ([`transfer`]).
//! - Once a connection is lost, every later operation on that device panics, dropping a
//!   tensor included. A thread unwinding through such tensors panics again in a destructor,
//!   which aborts the process. Replicas on remote devices therefore train on watched threads
//!   (`run/watched.rs`) that stop, without unwinding, when their server is lost.
//! - The backward pass of the Keras-style forward would run Burn's own transfers, out of this
//!   crate's reach, so that path is for inference on remote devices.

pub(crate) mod server;
pub(crate) mod transfer;
