//! Transports: where requests come from.
//!
//! Four transports share one serve loop. Each is a marker type ([`Tcp`], [`Udp`],
//! [`UnixStream`], [`UnixDatagram`]) that only knows how to bind its socket; what the
//! socket produces is one of two kinds, a stream connection ([`Connection`]) or a
//! datagram ([`DatagramSocket`]), and everything after that is transport-independent.
//! Stream transports hand a [`StreamRequest`] to the handler,
//! datagram transports a [`DatagramRequest`], so one handler
//! serves TCP and Unix streams alike.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{self, Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net as unix;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;

use crate::error::{Error, Result};
use crate::handler::{AnyHandler, DatagramRequest, RequestHandler, StreamRequest};

mod tcp;
mod udp;
mod unix_socket;

pub use tcp::Tcp;
pub use udp::Udp;
pub(crate) use unix_socket::OwnedPath;
pub use unix_socket::{UnixDatagram, UnixStream};

/// The address of a client or a server: an IP socket address or a Unix socket address.
///
/// Displays as `127.0.0.1:5000`, `[::1]:5000`, a Unix path, or `(unnamed)` for a Unix
/// client socket that was never bound.
#[derive(Clone, Debug)]
pub enum Address {
    /// A TCP or UDP address.
    Inet(SocketAddr),
    /// A Unix-domain socket address.
    Unix(unix::SocketAddr),
}

impl Address {
    /// The IP socket address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            Address::Unix(_) => None,
        }
    }

    /// The filesystem path, if this is a Unix address bound to one.
    pub fn as_pathname(&self) -> Option<&std::path::Path> {
        match self {
            Address::Inet(_) => None,
            Address::Unix(a) => a.as_pathname(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => a.fmt(f),
            Address::Unix(a) => match a.as_pathname() {
                Some(p) => p.display().fmt(f),
                None => f.write_str("(unnamed)"),
            },
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Inet(a)
    }
}

/// One accepted stream connection: TCP or Unix.
///
/// `&Connection` implements [`Read`] and [`Write`], like `&TcpStream`. Handlers usually
/// go through the request's buffered [`Reader`](crate::Reader) and
/// [`Writer`](crate::Writer); the connection is there for socket options (timeouts,
/// `TCP_NODELAY`) and for the peer address.
#[derive(Debug)]
#[non_exhaustive]
pub enum Connection {
    /// A TCP connection.
    Tcp(net::TcpStream),
    /// A Unix stream connection.
    Unix(unix::UnixStream),
}

impl Connection {
    /// Sets the read timeout (`SO_RCVTIMEO`); `None` blocks forever.
    ///
    /// # Errors
    /// An [`Err`] is returned if the zero [`Duration`] is passed, as with std's sockets.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_read_timeout(timeout),
            Connection::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Sets the write timeout (`SO_SNDTIMEO`); `None` blocks forever.
    ///
    /// # Errors
    /// An [`Err`] is returned if the zero [`Duration`] is passed, as with std's sockets.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_write_timeout(timeout),
            Connection::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// Sets `TCP_NODELAY` (Python's `disable_nagle_algorithm`). Does nothing on a Unix
    /// connection, which has no Nagle algorithm.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_nodelay(nodelay),
            Connection::Unix(_) => Ok(()),
        }
    }

    /// A second handle to the same connection (`dup(2)`), for example for another thread
    /// to write to this client, as a chat room's broadcast does.
    ///
    /// The handles share one socket: its timeouts and non-blocking mode (a deadline set
    /// on the request changes them for the clone too), and it stays open until every
    /// handle is dropped; the server's default `shutdown_request` still ends the stream
    /// for the client when the request ends.
    pub fn try_clone(&self) -> io::Result<Connection> {
        match self {
            Connection::Tcp(s) => s.try_clone().map(Connection::Tcp),
            Connection::Unix(s) => s.try_clone().map(Connection::Unix),
        }
    }

    /// Moves the connection in or out of non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_nonblocking(nonblocking),
            Connection::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<Address> {
        match self {
            Connection::Tcp(s) => s.peer_addr().map(Address::Inet),
            Connection::Unix(s) => s.peer_addr().map(Address::Unix),
        }
    }

    /// Shuts down the read half, the write half or both (`shutdown(2)`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.shutdown(how),
            Connection::Unix(s) => s.shutdown(how),
        }
    }

    /// The TCP stream, if this is a TCP connection.
    pub fn as_tcp(&self) -> Option<&net::TcpStream> {
        match self {
            Connection::Tcp(s) => Some(s),
            Connection::Unix(_) => None,
        }
    }

    /// The Unix stream, if this is a Unix connection.
    pub fn as_unix(&self) -> Option<&unix::UnixStream> {
        match self {
            Connection::Unix(s) => Some(s),
            Connection::Tcp(_) => None,
        }
    }
}

impl Read for &Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Connection::Tcp(s) => (&*s).read(buf),
            Connection::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Connection::Tcp(s) => (&*s).write(buf),
            Connection::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The server's datagram socket: UDP or Unix datagram.
///
/// A [`DatagramRequest`] gives access to it for sends beyond the
/// reply (Python's `self.socket` in a datagram handler).
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramSocket {
    /// A UDP socket.
    Udp(net::UdpSocket),
    /// A Unix datagram socket.
    Unix(unix::UnixDatagram),
}

impl DatagramSocket {
    /// Sends `buf` to `addr` in one datagram (`sendto(2)`).
    ///
    /// # Errors
    /// Fails if `addr` is of the other family, or is an unnamed Unix socket, which
    /// cannot be sent to.
    pub fn send_to(&self, buf: &[u8], addr: &Address) -> io::Result<usize> {
        match (self, addr) {
            (DatagramSocket::Udp(s), Address::Inet(a)) => s.send_to(buf, a),
            (DatagramSocket::Unix(s), Address::Unix(a)) => match a.as_pathname() {
                Some(path) => s.send_to(buf, path),
                None => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the client's Unix socket is not bound to a path; it cannot be replied to",
                )),
            },
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send to {addr}: address family does not match the socket"),
            )),
        }
    }

    /// The UDP socket, if this is one.
    pub fn as_udp(&self) -> Option<&net::UdpSocket> {
        match self {
            DatagramSocket::Udp(s) => Some(s),
            DatagramSocket::Unix(_) => None,
        }
    }

    /// The Unix datagram socket, if this is one.
    pub fn as_unix(&self) -> Option<&unix::UnixDatagram> {
        match self {
            DatagramSocket::Unix(s) => Some(s),
            DatagramSocket::Udp(_) => None,
        }
    }
}

/// The shortest receive timeout set on a server socket.
const MIN_RECEIVE_TIMEOUT: Duration = Duration::from_millis(1);

/// A bound socket the serve loop receives requests from.
#[derive(Debug)]
pub(crate) enum Endpoint {
    Tcp(net::TcpListener),
    UnixStream(unix::UnixListener),
    Datagram(Arc<DatagramSocket>),
}

/// What one `accept` or `recv_from` produced.
pub(crate) enum Incoming {
    Stream(Connection, Address),
    Datagram(Vec<u8>, Address),
}

/// `recvfrom` on a UDP socket, through rustix rather than std.
///
/// A receive woken by `shutdown(2)` (how the server stops) returns no datagram and no
/// sender. std's `UdpSocket::recv_from` then reads a sender address the kernel never
/// wrote, and in release builds panics on what it finds (Rust 1.95); rustix marks the
/// address unset first and reports it as absent, which becomes an error here.
fn receive_udp(socket: &net::UdpSocket, buf: &mut [u8]) -> io::Result<(usize, Address)> {
    // The first value is what the buffer holds; the second, the datagram's length.
    let (n, _, sender) = rustix::net::recvfrom(socket, &mut *buf, rustix::net::RecvFlags::empty())?;
    match sender.and_then(|sender| SocketAddr::try_from(sender).ok()) {
        Some(sender) => Ok((n, Address::Inet(sender))),
        None => Err(io::Error::new(io::ErrorKind::NotConnected, "no datagram: the socket was shut down")),
    }
}

impl Incoming {
    /// The connection, for a stream request.
    pub(crate) fn connection(&self) -> Option<&Connection> {
        match self {
            Incoming::Stream(connection, _) => Some(connection),
            Incoming::Datagram(..) => None,
        }
    }
}

impl Endpoint {
    fn sock(&self) -> SockRef<'_> {
        match self {
            Endpoint::Tcp(l) => SockRef::from(l),
            Endpoint::UnixStream(l) => SockRef::from(l),
            Endpoint::Datagram(s) => match &**s {
                DatagramSocket::Udp(s) => SockRef::from(s),
                DatagramSocket::Unix(s) => SockRef::from(s),
            },
        }
    }

    /// Blocks for the next connection or datagram. `buf` is the reusable receive buffer
    /// of `max_packet_size` bytes; a longer datagram is truncated to it.
    pub(crate) fn receive(&self, buf: &mut [u8]) -> io::Result<Incoming> {
        match self {
            Endpoint::Tcp(l) => l.accept().map(|(s, a)| Incoming::Stream(Connection::Tcp(s), Address::Inet(a))),
            Endpoint::UnixStream(l) => l.accept().map(|(s, a)| Incoming::Stream(Connection::Unix(s), Address::Unix(a))),
            Endpoint::Datagram(s) => {
                let (n, addr) = match &**s {
                    DatagramSocket::Udp(s) => receive_udp(s, buf)?,
                    DatagramSocket::Unix(s) => s.recv_from(buf).map(|(n, a)| (n, Address::Unix(a)))?,
                };
                Ok(Incoming::Datagram(buf[..n].to_vec(), addr))
            }
        }
    }

    /// Wakes a thread blocked in [`Endpoint::receive`] and, for stream sockets, makes the
    /// kernel refuse new connections, without closing the descriptor.
    ///
    /// This is `shutdown(fd, SHUT_RD)` on the server socket. On Linux it makes a blocked
    /// `accept` fail with `EINVAL` and a blocked `recvfrom` return, and a listening
    /// socket answers new connections with a reset. One system call, no wakeup pipe and
    /// no polling; the price is that the socket cannot listen again, so the next
    /// `serve_forever` binds a fresh one (see `Shared::rebind`).
    pub(crate) fn interrupt(&self) {
        // For an unconnected datagram socket Linux answers ENOTCONN but still wakes the
        // receiver ("a hack to wake up other listeners" in inet_shutdown), so the result
        // carries no information here.
        let _ = self.sock().shutdown(Shutdown::Read);
    }

    /// Puts the socket in blocking mode. A socket passed in by the user may be
    /// non-blocking, which would turn the serve loop into a busy loop.
    pub(crate) fn set_blocking(&self) -> io::Result<()> {
        self.sock().set_nonblocking(false)
    }

    /// Sets how long one [`Endpoint::receive`] may block (`SO_RCVTIMEO`, which Linux also
    /// applies to `accept`); `None` blocks until a request or [`Endpoint::interrupt`].
    pub(crate) fn set_receive_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        // SO_RCVTIMEO has microsecond resolution and zero means "no timeout": a
        // sub-microsecond remainder would turn into blocking forever.
        self.sock().set_read_timeout(timeout.map(|t| t.max(MIN_RECEIVE_TIMEOUT)))
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.sock().as_raw_fd()
    }

    pub(crate) fn local_address(&self) -> io::Result<Address> {
        match self {
            Endpoint::Tcp(l) => l.local_addr().map(Address::Inet),
            Endpoint::UnixStream(l) => l.local_addr().map(Address::Unix),
            Endpoint::Datagram(s) => match &**s {
                DatagramSocket::Udp(s) => s.local_addr().map(Address::Inet),
                DatagramSocket::Unix(s) => s.local_addr().map(Address::Unix),
            },
        }
    }
}

/// Socket options applied when the server socket is created, before bind and listen.
#[derive(Clone, Debug, Default)]
pub(crate) struct SocketOptions {
    pub(crate) backlog: i32,
    pub(crate) reuse_address: Option<bool>,
    pub(crate) reuse_port: bool,
    pub(crate) only_v6: Option<bool>,
    /// Permission bits for a Unix socket file.
    pub(crate) mode: Option<u32>,
    pub(crate) before_bind: Option<BeforeBind>,
}

/// The user's hook that runs on a new server socket before it is bound.
#[derive(Clone)]
pub(crate) struct BeforeBind(pub(crate) Arc<dyn Fn(BorrowedFd<'_>) -> io::Result<()> + Send + Sync>);

impl fmt::Debug for BeforeBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BeforeBind")
    }
}

impl SocketOptions {
    /// Runs the `before_bind` hook, if any, on a socket about to be bound.
    pub(crate) fn before_bind(&self, socket: &socket2::Socket) -> io::Result<()> {
        match &self.before_bind {
            Some(hook) => (hook.0)(socket.as_fd()),
            None => Ok(()),
        }
    }
}

/// What a builder was asked to bind, kept so that the same address can be bound again.
#[derive(Debug)]
pub(crate) enum BindTarget {
    /// Addresses to try in order, and the text the user gave (for error messages).
    Inet(io::Result<Vec<SocketAddr>>, String),
    Path(PathBuf),
    /// A socket the user bound (and for streams, set listening) themselves.
    Existing(Endpoint),
}

/// A freshly bound server socket.
pub(crate) struct Bound {
    pub(crate) endpoint: Endpoint,
    /// The Unix socket file this server created, to remove on close.
    pub(crate) owned_path: Option<OwnedPath>,
}

pub(crate) mod sealed {
    use super::*;

    /// The transport-specific half of [`Transport`]: binding, and the handler's request
    /// type. Sealed: the serve loop relies on the four endpoints it knows.
    pub trait Sealed {
        /// The address type `local_addr` returns.
        type Addr: Clone + fmt::Debug + Send + Sync + 'static;
        /// Binds `target` with `options`.
        fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound>;
        /// Binds again the address an earlier `open` reported as `local`.
        fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound>;
        /// Converts the bound address to [`Sealed::Addr`].
        fn typed_addr(local: &Address) -> Self::Addr;
    }

    /// A request type: [`StreamRequest`] or [`DatagramRequest`].
    pub trait RequestKind: Sized + 'static {
        /// Erases a handler into the form the serve loop stores.
        fn erase<H: RequestHandler<Self>>(handler: H) -> AnyHandler;
    }
}

/// A kind of socket a server can listen on: [`Tcp`], [`Udp`], [`UnixStream`] or
/// [`UnixDatagram`].
///
/// This trait is sealed; it exists so that [`Server`](crate::Server) can be written
/// once for all four (`TcpServer` is `Server<Tcp>`).
pub trait Transport: sealed::Sealed + Send + Sync + Sized + 'static {
    /// The request type handlers of this transport receive:
    /// [`StreamRequest`] or [`DatagramRequest`].
    type Request: sealed::RequestKind;
}

impl sealed::RequestKind for StreamRequest {
    fn erase<H: RequestHandler<StreamRequest>>(handler: H) -> AnyHandler {
        AnyHandler::Stream(Arc::new(handler))
    }
}

impl sealed::RequestKind for DatagramRequest {
    fn erase<H: RequestHandler<DatagramRequest>>(handler: H) -> AnyHandler {
        AnyHandler::Datagram(Arc::new(handler))
    }
}

/// Attaches the address to an I/O error from binding, naming "in use" when it is.
pub(crate) fn bind_error(addr: impl fmt::Display, source: io::Error) -> Error {
    let addr = addr.to_string();
    if source.kind() == io::ErrorKind::AddrInUse {
        Error::AddrInUse { addr, source }
    } else {
        Error::Bind { addr, source }
    }
}
