use std::io;
use std::net;
#[cfg(unix)]
use std::os::unix::net as unix;
use std::sync::Arc;

use socket2::SockRef;

use super::{Address, Connection, DatagramSocket};
use crate::sys::{self, RawSocket};

/// A bound socket the serve loop receives requests from. It is non-blocking: the serve
/// loop tries to receive, and waits for readiness ([`Readiness`](super::Readiness)) only
/// when nothing is there.
#[derive(Debug)]
pub(crate) enum Endpoint {
    Tcp(net::TcpListener),
    #[cfg(unix)]
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
    pub(crate) fn sock(&self) -> Option<SockRef<'_>> {
        match self {
            Endpoint::Tcp(l) => Some(SockRef::from(l)),
            #[cfg(unix)]
            Endpoint::UnixStream(l) => Some(SockRef::from(l)),
            Endpoint::Datagram(s) => s.sock(),
        }
    }

    /// Takes the next connection or datagram, without blocking: `WouldBlock` when none is
    /// there. `buf` is the reusable receive buffer; a longer datagram is truncated to it.
    /// An accepted connection is blocking, whatever the platform's accept inherits.
    pub(crate) fn receive(&self, buf: &mut [u8]) -> io::Result<Incoming> {
        match self {
            Endpoint::Tcp(l) => {
                let (stream, addr) = l.accept()?;
                sys::accepted(SockRef::from(&stream))?;
                Ok(Incoming::Stream(Connection::Tcp(stream), Address::Inet(addr)))
            }
            #[cfg(unix)]
            Endpoint::UnixStream(l) => {
                let (stream, addr) = l.accept()?;
                sys::accepted(SockRef::from(&stream))?;
                Ok(Incoming::Stream(Connection::Unix(stream), Address::Unix(addr)))
            }
            Endpoint::Datagram(s) => {
                let (n, addr) = match &**s {
                    DatagramSocket::Udp(s) => sys::recv_from_udp(s, buf).map(|(n, a)| (n, Address::Inet(a)))?,
                    #[cfg(unix)]
                    DatagramSocket::Unix(s) => s.recv_from(buf).map(|(n, a)| (n, Address::Unix(a)))?,
                    DatagramSocket::Memory(_) => return Err(in_memory()),
                };
                Ok(Incoming::Datagram(buf[..n].to_vec(), addr))
            }
        }
    }

    /// Makes the socket refuse new connections where the platform can without closing
    /// it ([`sys::refuse_new_connections`]); it cannot serve again after that.
    pub(crate) fn refuse_new_connections(&self) {
        if let Some(sock) = self.sock() {
            sys::refuse_new_connections(sock);
        }
    }

    /// Puts the socket in non-blocking mode, as the serve loop needs it, whatever mode a
    /// socket passed in by the user was in.
    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        self.sock().ok_or_else(in_memory)?.set_nonblocking(true)
    }

    /// The descriptor or `SOCKET`; `None` for an in-memory socket.
    pub(crate) fn as_raw_socket(&self) -> Option<RawSocket> {
        self.sock().as_ref().map(sys::as_raw_socket)
    }

    pub(crate) fn local_address(&self) -> io::Result<Address> {
        match self {
            Endpoint::Tcp(l) => l.local_addr().map(Address::Inet),
            #[cfg(unix)]
            Endpoint::UnixStream(l) => l.local_addr().map(Address::Unix),
            Endpoint::Datagram(s) => match &**s {
                DatagramSocket::Udp(s) => s.local_addr().map(Address::Inet),
                #[cfg(unix)]
                DatagramSocket::Unix(s) => s.local_addr().map(Address::Unix),
                DatagramSocket::Memory(_) => Err(in_memory()),
            },
        }
    }
}
