use std::io;
use std::net;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net as unix;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;

use super::{Address, Connection, DatagramSocket};
use crate::sys;

/// A bound socket the serve loop receives requests from.
#[derive(Debug)]
pub(crate) enum Endpoint {
    Tcp(net::TcpListener),
    UnixStream(unix::UnixListener),
    Datagram(Arc<DatagramSocket>),
}

/// What one `accept` or `recv_from` produced.
#[derive(Debug)]
pub(crate) enum Incoming {
    Stream(Connection, Address),
    Datagram(Vec<u8>, Address),
}

impl Incoming {
    pub(crate) fn client(&self) -> &Address {
        match self {
            Incoming::Stream(_, client) | Incoming::Datagram(_, client) => client,
        }
    }

    /// The connection, for a stream request.
    pub(crate) fn connection(&self) -> Option<&Connection> {
        match self {
            Incoming::Stream(connection, _) => Some(connection),
            Incoming::Datagram(..) => None,
        }
    }
}

fn in_memory() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "an in-memory socket cannot serve")
}

impl Endpoint {
    /// The socket; `None` for an in-memory datagram socket, which a server never binds.
    fn sock(&self) -> Option<SockRef<'_>> {
        match self {
            Endpoint::Tcp(l) => Some(SockRef::from(l)),
            Endpoint::UnixStream(l) => Some(SockRef::from(l)),
            Endpoint::Datagram(s) => s.sock(),
        }
    }

    /// Blocks for the next connection or datagram. `buf` is the reusable receive buffer;
    /// a longer datagram is truncated to it.
    pub(crate) fn receive(&self, buf: &mut [u8]) -> io::Result<Incoming> {
        match self {
            Endpoint::Tcp(l) => l.accept().map(|(s, a)| Incoming::Stream(Connection::Tcp(s), Address::Inet(a))),
            Endpoint::UnixStream(l) => l.accept().map(|(s, a)| Incoming::Stream(Connection::Unix(s), Address::Unix(a))),
            Endpoint::Datagram(s) => {
                let (n, addr) = match &**s {
                    DatagramSocket::Udp(s) => sys::recv_from_udp(s, buf).map(|(n, a)| (n, Address::Inet(a)))?,
                    DatagramSocket::Unix(s) => s.recv_from(buf).map(|(n, a)| (n, Address::Unix(a)))?,
                    DatagramSocket::Memory(_) => return Err(in_memory()),
                };
                Ok(Incoming::Datagram(buf[..n].to_vec(), addr))
            }
        }
    }

    /// Wakes every thread blocked in [`Endpoint::receive`] and, for stream sockets, makes
    /// the kernel refuse new connections, without closing the descriptor
    /// ([`sys::wake`]).
    pub(crate) fn interrupt(&self) {
        if let Some(sock) = self.sock() {
            sys::wake(sock);
        }
    }

    /// Puts the socket in blocking mode. A socket passed in by the user may be
    /// non-blocking, which would turn the serve loop into a busy loop.
    pub(crate) fn set_blocking(&self) -> io::Result<()> {
        self.sock().ok_or_else(in_memory)?.set_nonblocking(false)
    }

    /// Sets how long one [`Endpoint::receive`] may block; `None` blocks until a request
    /// or [`Endpoint::interrupt`].
    pub(crate) fn set_receive_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        sys::set_accept_timeout(self.sock().ok_or_else(in_memory)?, timeout)
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.sock().map_or(-1, |sock| sock.as_raw_fd())
    }

    pub(crate) fn local_address(&self) -> io::Result<Address> {
        match self {
            Endpoint::Tcp(l) => l.local_addr().map(Address::Inet),
            Endpoint::UnixStream(l) => l.local_addr().map(Address::Unix),
            Endpoint::Datagram(s) => match &**s {
                DatagramSocket::Udp(s) => s.local_addr().map(Address::Inet),
                DatagramSocket::Unix(s) => s.local_addr().map(Address::Unix),
                DatagramSocket::Memory(_) => Err(in_memory()),
            },
        }
    }
}
