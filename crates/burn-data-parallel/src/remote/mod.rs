//! Burn's remote backend (feature `remote`): the Burn 0.21 workarounds behind the remote
//! device kind (`kind/remote.rs`).
//!
//! Four things of Burn 0.21's remote client shape what that kind answers:
//!
//! - `RemoteBackend::device_count` is 1 whatever the servers: a remote device is an address,
//!   available when a server answers there ([`server`]).
//! - Burn's move between two servers has the destination server download the tensor from the
//!   source server, identified by an id that collides when several transfers leave one server
//!   at once; and a destination whose source dies during the download loses its connection to
//!   this process. Every move to a remote device made here goes through this process instead
//!   (`transfer.rs`): read from one server, written to the other.
//! - Once a connection is lost, every later operation on that device panics, dropping a
//!   tensor included. A thread unwinding through such tensors panics again in a destructor,
//!   which aborts the process. Replicas on remote devices therefore train on watched threads
//!   (`run/watched.rs`) that stop, without unwinding, when their server is lost.
//! - The backward pass of the Keras-style forward would run Burn's own moves between servers,
//!   out of this crate's reach, so that path is for inference on remote devices.

pub(crate) mod server;
