use std::io::{self, Read, Write};
use std::net::{self, Shutdown};
#[cfg(unix)]
use std::os::unix::net as unix;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::{Address, InMemory, InMemoryDatagram};

/// One accepted stream connection: TCP, Unix, or in memory for tests.
///
/// `Connection` and `&Connection` implement [`Read`] and [`Write`], like `TcpStream`
/// and `&TcpStream`, so a clone kept for a broadcast writes with `conn.write_all(..)`.
/// Handlers usually
/// go through the request's buffered [`Reader`](crate::Reader) and
/// [`Writer`](crate::Writer); the connection is there for socket options (timeouts,
/// `TCP_NODELAY`) and for the peer address.
#[derive(Debug)]
#[non_exhaustive]
pub enum Connection {
    /// A TCP connection.
    Tcp(net::TcpStream),
    /// A Unix stream connection. Unix only.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    Unix(unix::UnixStream),
    /// An in-memory connection, for unit tests of handlers without sockets
    /// ([`testing::TestStream`](crate::testing::TestStream)). Its socket options are
    /// accepted and do nothing.
    Memory(InMemory),
}

impl Connection {
    /// Sets the read timeout (`SO_RCVTIMEO`); `None` blocks forever.
    ///
    /// # Errors
    /// An [`Err`] is returned if the zero [`Duration`] is passed, as with std's sockets.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_read_timeout(timeout),
            #[cfg(unix)]
            Connection::Unix(s) => s.set_read_timeout(timeout),
            Connection::Memory(s) => s.set_timeout(timeout),
        }
    }

    /// Sets the write timeout (`SO_SNDTIMEO`); `None` blocks forever.
    ///
    /// # Errors
    /// An [`Err`] is returned if the zero [`Duration`] is passed, as with std's sockets.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_write_timeout(timeout),
            #[cfg(unix)]
            Connection::Unix(s) => s.set_write_timeout(timeout),
            Connection::Memory(s) => s.set_timeout(timeout),
        }
    }

    /// Sets `TCP_NODELAY` (Python's `disable_nagle_algorithm`). Does nothing on a Unix
    /// or in-memory connection, which has no Nagle algorithm.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_nodelay(nodelay),
            _ => Ok(()),
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
            #[cfg(unix)]
            Connection::Unix(s) => s.try_clone().map(Connection::Unix),
            Connection::Memory(s) => Ok(Connection::Memory(InMemory(s.0.duplicate()))),
        }
    }

    /// Moves the connection in or out of non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_nonblocking(nonblocking),
            #[cfg(unix)]
            Connection::Unix(s) => s.set_nonblocking(nonblocking),
            Connection::Memory(_) => Ok(()),
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<Address> {
        match self {
            Connection::Tcp(s) => s.peer_addr().map(Address::Inet),
            #[cfg(unix)]
            Connection::Unix(s) => s.peer_addr().map(Address::Unix),
            Connection::Memory(s) => Ok(s.0.peer_addr()),
        }
    }

    /// Shuts down the read half, the write half or both (`shutdown(2)`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.shutdown(how),
            #[cfg(unix)]
            Connection::Unix(s) => s.shutdown(how),
            Connection::Memory(s) => {
                s.0.shutdown(how);
                Ok(())
            }
        }
    }

    /// The TCP stream, if this is a TCP connection.
    pub fn as_tcp(&self) -> Option<&net::TcpStream> {
        match self {
            Connection::Tcp(s) => Some(s),
            _ => None,
        }
    }

    /// The Unix stream, if this is a Unix connection. Unix only.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    pub fn as_unix(&self) -> Option<&unix::UnixStream> {
        match self {
            Connection::Unix(s) => Some(s),
            _ => None,
        }
    }
}

impl Connection {
    /// The socket, for the poller a parked connection waits in; `None` in memory.
    pub(crate) fn sock(&self) -> Option<SockRef<'_>> {
        match self {
            Connection::Tcp(s) => Some(SockRef::from(s)),
            #[cfg(unix)]
            Connection::Unix(s) => Some(SockRef::from(s)),
            Connection::Memory(_) => None,
        }
    }

    /// Reads what has arrived without waiting for more: `WouldBlock` when nothing has.
    /// The connection stays blocking for the handler. (In memory, a plain read.)
    pub(crate) fn read_available(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.sock() {
            Some(socket) => crate::sys::recv_nonblocking(&socket, buf),
            None => (&*self).read(buf),
        }
    }

    /// Writes what the connection takes now, without waiting: `WouldBlock` when the
    /// client's window is full. (In memory, a plain write.)
    pub(crate) fn write_available(&self, buf: &[u8]) -> io::Result<usize> {
        match self.sock() {
            Some(socket) => crate::sys::send_nonblocking(&socket, buf),
            None => (&*self).write(buf),
        }
    }

    /// Waits until bytes, the end of the stream or an error wait to be read, at most
    /// until `deadline`: whether they do. In memory, at once: whatever the client sent
    /// is there already.
    pub(crate) fn wait_input(&self, deadline: Instant) -> bool {
        match self.sock() {
            // Without a descriptor for the wait's poller: what is there now.
            Some(socket) => super::wait_readable(&socket, deadline).unwrap_or_else(|_| self.has_input()),
            None => true,
        }
    }

    /// Whether bytes, the end of the stream or an error wait to be read, looked at
    /// without blocking and without reading them (a peek). For the rare look at a
    /// parked connection whose idle time ran out: it costs three system calls.
    pub(crate) fn has_input(&self) -> bool {
        let Some(socket) = self.sock() else { return false };
        if socket.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [std::mem::MaybeUninit::uninit(); 1];
        let peeked = socket.peek(&mut byte);
        let _ = socket.set_nonblocking(false);
        !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl Read for &Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Connection::Tcp(s) => (&*s).read(buf),
            #[cfg(unix)]
            Connection::Unix(s) => (&*s).read(buf),
            Connection::Memory(s) => s.0.read(buf),
        }
    }
}

impl Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Connection::Tcp(s) => (&*s).write(buf),
            #[cfg(unix)]
            Connection::Unix(s) => (&*s).write(buf),
            Connection::Memory(s) => s.0.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// As `&Connection`: reading and writing need no `&mut` of the connection itself.
impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

/// As `&Connection`.
impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The server's datagram socket: UDP, Unix datagram, or in memory for tests.
///
/// A [`DatagramRequest`](crate::DatagramRequest) gives access to it for sends beyond the
/// reply (Python's `self.socket` in a datagram handler).
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramSocket {
    /// A UDP socket.
    Udp(net::UdpSocket),
    /// A Unix datagram socket. Unix only.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    Unix(unix::UnixDatagram),
    /// An in-memory socket that records what is sent, for unit tests of handlers
    /// without sockets ([`testing::TestDatagram`](crate::testing::TestDatagram)).
    Memory(InMemoryDatagram),
}

/// How long a datagram send waits for room in a full send buffer before it fails.
pub(crate) const DATAGRAM_SEND_WAIT: Duration = Duration::from_secs(1);

impl DatagramSocket {
    /// Sends `buf` to `addr` in one datagram (`sendto(2)`).
    ///
    /// The server's socket is non-blocking, as its serve loop needs; a send that finds
    /// no room waits for it, as a blocking socket would, for at most 1 s, and then fails
    /// with `WouldBlock`. (Rare on Linux; Wine's Windows sockets say "would block" to a
    /// send while another thread waits for the socket to be readable, which lost 28 of
    /// 1,600 echo replies before this wait.)
    ///
    /// The first wait is in a poller, until the socket has room. Where a poller cannot
    /// tell (a Unix datagram socket whose peer's queue is full reports room all the same,
    /// and so does Wine), the next tries come after pauses doubling from 1 ms, about ten
    /// in the second: a client that does not read holds this send, never a spinning core.
    ///
    /// # Errors
    /// Fails if `addr` is of the other family, or is an unnamed Unix socket, which
    /// cannot be sent to, or if there is no room to send within the wait above.
    pub fn send_to(&self, buf: &[u8], addr: &Address) -> io::Result<usize> {
        let mut deadline = None;
        let mut pause = None;
        loop {
            match self.send_to_now(buf, addr) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let Some(socket) = self.sock() else { return Err(e) };
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + DATAGRAM_SEND_WAIT);
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(e);
                    }
                    match pause {
                        // First, until the poller says there is room (a poller that cannot
                        // be made, out of descriptors, leaves the pauses below).
                        None => {
                            if let Ok(false) = super::wait_writable(&socket, deadline) {
                                return Err(e);
                            }
                            pause = Some(Duration::from_millis(1));
                        }
                        Some(wait) => {
                            std::thread::sleep(wait.min(deadline - now));
                            pause = Some(wait * 2);
                        }
                    }
                }
                sent => return sent,
            }
        }
    }

    /// One `sendto`, without waiting for room.
    fn send_to_now(&self, buf: &[u8], addr: &Address) -> io::Result<usize> {
        match (self, addr) {
            (DatagramSocket::Udp(s), Address::Inet(a)) => s.send_to(buf, a),
            #[cfg(unix)]
            (DatagramSocket::Unix(s), Address::Unix(a)) => match a.as_pathname() {
                Some(path) => s.send_to(buf, path),
                None => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the client's Unix socket is not bound to a path; it cannot be replied to",
                )),
            },
            (DatagramSocket::Memory(s), addr) => Ok(s.0.send_to(buf, addr)),
            #[cfg(unix)]
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
            _ => None,
        }
    }

    /// The Unix datagram socket, if this is one. Unix only.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    pub fn as_unix(&self) -> Option<&unix::UnixDatagram> {
        match self {
            DatagramSocket::Unix(s) => Some(s),
            _ => None,
        }
    }

    /// The socket, for options this type does not offer; `None` in memory.
    pub(crate) fn sock(&self) -> Option<SockRef<'_>> {
        match self {
            DatagramSocket::Udp(s) => Some(SockRef::from(s)),
            #[cfg(unix)]
            DatagramSocket::Unix(s) => Some(SockRef::from(s)),
            DatagramSocket::Memory(_) => None,
        }
    }
}
