//! What a handler receives: a stream connection ([`StreamRequest`], with its [`Reader`]
//! and [`Writer`]) or a datagram ([`DatagramRequest`]).
//!
//! A request needs a connection (or a datagram socket) and a [`ServerHandle`], never a
//! server: [`crate::testing`] builds them over in-memory bytes.
//!
//! [`ServerHandle`]: crate::ServerHandle

mod datagram;
mod io;
mod states;
mod stream;

pub use datagram::{DatagramRequest, Reply};
pub use io::{Reader, ReaderRef, Writer};
pub(crate) use states::{report_state, StateHook, States};
pub use states::{ConnState, ConnectionId};
pub(crate) use stream::Pumped;
pub use stream::StreamRequest;
