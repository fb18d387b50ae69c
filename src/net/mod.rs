//! Sockets: addresses, connections, the server socket and how it is bound.
//!
//! Below the server control block and the requests; above the platform seam
//! ([`crate::sys`]). Nothing here knows about handlers or the serve loop.

mod address;
mod bind;
mod connection;
mod double;
mod endpoint;
mod ready;
#[cfg(unix)]
mod unix_path;

pub use address::Address;
pub(crate) use bind::{bind_udp, first_bound, listen_tcp, BeforeBind, BindTarget, Bound, OwnedPath, SocketOptions};
pub use connection::{Connection, DatagramSocket};
#[cfg(test)]
pub(crate) use double::tcp_pair;
pub(crate) use double::{test_client, DatagramDouble, StreamDouble};
pub use double::{InMemory, InMemoryDatagram};
pub(crate) use endpoint::{Endpoint, Incoming};
pub(crate) use ready::{
    wait_each_readable, wait_readable, wait_writable, Readiness, Registration, Reported, Station, Waker, Watch,
};
#[cfg(unix)]
pub(crate) use unix_path::bind_path;
