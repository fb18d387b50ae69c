//! The seam where an in-memory stand-in takes a socket's place, so that a handler can be
//! unit-tested without sockets. The stand-ins themselves are in [`crate::testing`]: the
//! socket layer knows only what it asks of them.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::time::Duration;

use super::Address;

/// The address in-memory requests come from unless a test gives another:
/// `127.0.0.1:49152`, the first port of the dynamic range.
pub(crate) fn test_client() -> Address {
    Address::Inet(SocketAddr::from((Ipv4Addr::LOCALHOST, 49152)))
}

/// What a [`Connection`](super::Connection) asks of an in-memory stream.
pub(crate) trait StreamDouble: fmt::Debug + Send + Sync {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    fn shutdown(&self, how: Shutdown);
    fn peer_addr(&self) -> Address;
    /// Another handle to the same stream, as `try_clone` gives for a socket.
    fn duplicate(&self) -> Box<dyn StreamDouble>;
}

/// What a [`DatagramSocket`](super::DatagramSocket) asks of an in-memory socket.
pub(crate) trait DatagramDouble: fmt::Debug + Send + Sync {
    fn send_to(&self, buf: &[u8], addr: &Address) -> usize;
}

/// What [`Connection::Memory`](super::Connection::Memory) holds: an in-memory connection,
/// made by [`testing::TestStream`](crate::testing::TestStream), which gives the test the
/// [`MemoryStream`](crate::testing::MemoryStream) behind it to read what the handler
/// wrote. Opaque: nothing of it is public but its `Debug`.
pub struct InMemory(pub(crate) Box<dyn StreamDouble>);

impl fmt::Debug for InMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl InMemory {
    /// Timeouts are accepted and ignored, but a zero duration is refused as std refuses it.
    pub(crate) fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot set a 0 duration timeout"));
        }
        Ok(())
    }
}

/// What [`DatagramSocket::Memory`](super::DatagramSocket::Memory) holds: an in-memory
/// socket, made by [`testing::TestDatagram`](crate::testing::TestDatagram), which gives
/// the test the [`MemorySocket`](crate::testing::MemorySocket) behind it to read what was
/// sent. Opaque: nothing of it is public but its `Debug`.
pub struct InMemoryDatagram(pub(crate) Box<dyn DatagramDouble>);

impl fmt::Debug for InMemoryDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A connected pair of TCP streams on loopback, for the unit tests of the layers above
/// that need a connection: real sockets, as every test here uses.
#[cfg(test)]
pub(crate) fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (server, client)
}
