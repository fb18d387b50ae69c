//! Faults around a server's own connections, without a proxy: [`Faults::around`] puts
//! the fault loop of [`FaultProxy`](super::FaultProxy) between each connection a stream
//! server accepts and the server, inside the server's process, on its own address.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::fault::{reset_on_close, Link, Shared, Stream};
use super::{Fault, FaultId};
use crate::builder::Builder;
use crate::config::Interpose;
use crate::net::{Address, Connection};
use crate::request::StreamRequest;
use crate::transport::Transport;

/// Faults applied to the connections of a server of this crate, on the server's own
/// address: the [`Fault`]s of a [`FaultProxy`](super::FaultProxy), for tests of a
/// server rather than of a client.
///
/// [`around`](Faults::around) sets it on a TCP or Unix stream server's builder. Each
/// connection the server accepts then goes through a fault loop of its own thread before
/// the server sees it: the client talks to the server's address, `client_addr()` is
/// the client's, and what the server does with the connection (framing, parking, its
/// timeouts, `verify_request`) is what it does without faults. Upstream faults act on
/// what the client sends, downstream ones on what the server answers (the default), as
/// through a proxy; they can be added and removed while the server runs, and every draw
/// comes from the seed.
///
/// What differs from serving the client directly:
/// - the server's socket for the connection is one end of a local pair (loopback TCP
///   for a TCP server, a Unix socket pair for a Unix one), so its `peer_addr` and
///   `local_addr` are that pair's;
/// - the pair and the loop buffer more: a server writing to a client that reads nothing
///   gets about twice as far (the socket pair's buffers, and up to 256 KiB per
///   direction in the loop) before its `write_timeout`;
/// - a [`Fault::refuse`] resets the client before `verify_request` sees it;
/// - on a Unix stream server a reset is a close: Unix sockets have no reset.
///
/// UDP servers are not covered: put a [`FaultProxy::udp`](super::FaultProxy::udp) in
/// front of them.
///
/// Each connection's fault loop runs on a thread of its own, for the connection's life:
/// this is a tool for tests, not for serving. A loop ends when both ends of its
/// connection have closed, a fault ends the connection, a write fails, or the `Faults`
/// is dropped: a server's `stop` closes its end, and the loop waits for the client's
/// (as a half-closed connection would). Dropping the `Faults` asks every loop to end at
/// once (what they hold back is lost; the threads end a moment later), closes its
/// private listener, and later connections are served without faults.
///
/// # Examples
///
/// A server that reads a line per message gets it in pieces of three bytes, and still
/// answers whole lines:
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
/// use socketserver::testing::{Fault, Faults};
/// use socketserver::{Frame, StreamRequest, TcpServer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let faults = Faults::new();
/// faults.add(Fault::slicer(3, Duration::from_millis(1)).upstream())?;
/// let server = faults
///     .around(TcpServer::builder("127.0.0.1:0"))
///     .frame(Frame::lines(1024))
///     .bind(|req: &mut StreamRequest| {
///         let mut line = String::new();
///         req.reader().read_line(&mut line)?;
///         write!(req.writer(), "got {}", line)?;
///         Ok(())
///     })?;
/// let addr = server.local_addr();
/// let _server = server.serve_in_background()?;
///
/// let mut client = TcpStream::connect(addr)?;
/// client.set_read_timeout(Some(Duration::from_secs(5)))?;
/// client.write_all(b"hello, sliced world\n")?;
/// let mut answer = String::new();
/// BufReader::new(&client).read_line(&mut answer)?;
/// assert_eq!(answer, "got hello, sliced world\n");
/// assert_eq!(faults.connections(), 1);
/// # Ok(())
/// # }
/// ```
pub struct Faults {
    shared: Arc<Shared>,
    pairs: Arc<Pairs>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults").field("connections", &self.shared.connections()).finish_non_exhaustive()
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults::new()
    }
}

impl Faults {
    /// No faults yet, seed 0.
    pub fn new() -> Faults {
        // The upstream address is a proxy's; a layer has none.
        let unused = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Faults { shared: Arc::new(Shared::new(unused, false)), pairs: Arc::default() }
    }

    /// Sets these faults around every connection the server built by `builder` accepts
    /// (also those given to [`process_request`](crate::Server::process_request)). One
    /// `Faults` may be set on several servers; they share its faults and its seed.
    pub fn around<T: Transport<Request = StreamRequest>>(&self, builder: Builder<T>) -> Builder<T> {
        builder.interpose(Arc::new(Layer { shared: self.shared.clone(), pairs: self.pairs.clone() }))
    }

    /// Adds a fault, at once, to connections already open too.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a UDP fault, or a probability outside 0.0 to 1.0.
    pub fn add(&self, fault: Fault) -> io::Result<FaultId> {
        self.shared.add(fault, "server serves")
    }

    /// Removes a fault; `false` if it was not there. What it already holds back still
    /// goes at its time, and bytes stay in order.
    pub fn remove(&self, id: FaultId) -> bool {
        self.shared.remove(id)
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.shared.clear();
    }

    /// Sets the seed of the draws (jitter, probability) for the connections accepted
    /// from now on: the same seed, faults and order of connections give the same faults.
    pub fn seed(&self, seed: u64) {
        self.shared.seed(seed);
    }

    /// How many connections these faults have taken, refused ones included. They are
    /// numbered in this order for the seed: the order they are admitted, which with a
    /// pool of several workers may differ from the order they connected.
    pub fn connections(&self) -> u64 {
        self.shared.connections()
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        self.shared.stop();
        self.pairs.close();
    }
}

/// What a server's builder holds: the faults, shared with the [`Faults`] handle.
struct Layer {
    shared: Arc<Shared>,
    pairs: Arc<Pairs>,
}

impl Interpose for Layer {
    fn stream(&self, connection: Connection, _client: &Address) -> Option<Connection> {
        if self.shared.stopping() || matches!(connection, Connection::Memory(_)) {
            return Some(connection);
        }
        match self.wrap(connection) {
            Ok(wrapped) => wrapped,
            Err(e) => {
                log::warn!("socketserver: the faults around a connection could not be set up: {e}; connection closed");
                None
            }
        }
    }
}

impl Layer {
    /// The server's end of a pair whose other end a fault loop of its own thread joins
    /// to `connection`; `None` when a fault refuses the connection.
    fn wrap(&self, connection: Connection) -> io::Result<Option<Connection>> {
        let link = Link::new(&self.shared)?;
        let (client, loop_end, server_end) = match connection {
            Connection::Tcp(client) => {
                if link.refuses() {
                    reset_on_close(socket2::SockRef::from(&client));
                    return Ok(None);
                }
                let (near, far) = self.pairs.tcp()?;
                // The server's end is left as the server sets it (`Builder::nodelay`).
                for socket in [&client, &near] {
                    socket.set_nodelay(true)?;
                }
                (Stream::Tcp(client), Stream::Tcp(near), Connection::Tcp(far))
            }
            #[cfg(unix)]
            Connection::Unix(client) => {
                if link.refuses() {
                    return Ok(None); // a Unix stream has no reset: a close
                }
                let (near, far) = std::os::unix::net::UnixStream::pair()?;
                (Stream::Unix(client), Stream::Unix(near), Connection::Unix(far))
            }
            Connection::Memory(_) => unreachable!("in-memory connections pass unfaulted"),
        };
        let shared = self.shared.clone();
        std::thread::Builder::new().name("fault-layer".into()).spawn(move || {
            if let Err(e) = link.forward(&shared, client, loop_end, None) {
                log::warn!("socketserver: a connection's fault loop stopped: {e}");
            }
        })?;
        Ok(Some(server_end))
    }
}

/// Makes loopback TCP pairs through one listener of its own, opened at the first and
/// closed with the [`Faults`].
#[derive(Default)]
struct Pairs {
    listener: Mutex<Option<TcpListener>>,
}

/// How long making a pair may take: a listener whose backlog strangers filled is drained
/// first, so this is only for a machine that stalls.
const PAIR_WITHIN: Duration = Duration::from_secs(1);

impl Pairs {
    /// A connected pair: (the end that connected, the end accepted). One at a time. The
    /// listener does not block: strangers that found its port are accepted and closed
    /// before the connect (so that a backlog they filled has room) and after it, until
    /// the accepted end is the one that connected.
    fn tcp(&self) -> io::Result<(TcpStream, TcpStream)> {
        let mut listener = self.listener.lock();
        if listener.is_none() {
            let opened = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            opened.set_nonblocking(true)?;
            *listener = Some(opened);
        }
        let listener = listener.as_ref().ok_or_else(|| io::Error::other("the faults were dropped"))?;
        while listener.accept().is_ok() {} // strangers, closed
        let near = TcpStream::connect_timeout(&listener.local_addr()?, PAIR_WITHIN)?;
        let ours = near.local_addr()?;
        let deadline = Instant::now() + PAIR_WITHIN;
        loop {
            match listener.accept() {
                Ok((far, from)) if from == ours => {
                    far.set_nonblocking(false)?;
                    return Ok((near, far));
                }
                Ok(_) => {} // a stranger, closed
                // The connect has completed, so ours is queued: this is a stall.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn close(&self) {
        *self.listener.lock() = None;
    }
}
