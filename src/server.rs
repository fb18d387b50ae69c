//! The public server: [`Server`] and its aliases, and [`BackgroundServer`].
//!
//! A `Server<T>` is a typed face over the engine (which does not know the transport);
//! the constructors and settings are on [`Builder`](crate::Builder).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handle::{ServerHandle, FORCED_CLOSE_GRACE};
use crate::net::{Address, Connection};
use crate::report::log_or_stderr;
use crate::request::StreamRequest;
use crate::transport::{Tcp, Transport, Udp};
#[cfg(unix)]
use crate::transport::{UnixDatagram, UnixStream};

/// A TCP server (Python's `TCPServer`). See [`Server`] for the methods.
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, Read, Write};
/// use socketserver::TcpServer;
///
/// let server = TcpServer::bind("127.0.0.1:0", |req| {
///     let mut line = String::new();
///     req.reader().read_line(&mut line)?;
///     req.writer().write_all(line.to_uppercase().as_bytes())?;
///     Ok(())
/// })?;
/// let addr = server.local_addr();
/// let background = server.serve_in_background()?;
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hello\n")?;
/// let mut reply = String::new();
/// client.read_to_string(&mut reply)?;
/// assert_eq!(reply, "HELLO\n");
///
/// background.stop()?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[doc(alias = "TCPServer")]
pub type TcpServer = Server<Tcp>;
/// A UDP server (Python's `UDPServer`). See [`Server`] for the methods.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::UdpServer;
///
/// let server = UdpServer::bind("127.0.0.1:0", |req| {
///     let upper = req.packet().to_ascii_uppercase();
///     req.reply().write_all(&upper)?;
///     Ok(())
/// })?;
/// let addr = server.local_addr();
/// let background = server.serve_in_background()?;
///
/// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// client.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
/// client.send_to(b"ping", addr)?;
/// let mut buf = [0; 16];
/// let (n, _) = client.recv_from(&mut buf)?;
/// assert_eq!(&buf[..n], b"PING");
///
/// background.stop()?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[doc(alias = "UDPServer")]
pub type UdpServer = Server<Udp>;
/// A Unix stream server (Python's `UnixStreamServer`). See [`Server`] for the methods.
/// Unix only.
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub type UnixStreamServer = Server<UnixStream>;
/// A Unix datagram server (Python's `UnixDatagramServer`). See [`Server`] for the
/// methods. Unix only.
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub type UnixDatagramServer = Server<UnixDatagram>;

/// A server: a bound socket, a handler, a dispatch mode, and the lifecycle of Python's
/// `BaseServer`.
///
/// Use it through its aliases [`TcpServer`], [`UdpServer`], [`UnixStreamServer`] and
/// [`UnixDatagramServer`]. Constructing binds (and for streams, listens); the server is
/// closed when dropped (Python's `with` block): the socket closes, request threads are
/// joined as the dispatch mode says, and a Unix socket file the server created is
/// removed.
///
/// A server is `Sync`: one thread may run [`serve_forever`](Server::serve_forever) while
/// others call [`shutdown`](Server::shutdown) through a [`ServerHandle`].
///
/// # How shutdown works without polling
///
/// The server socket is non-blocking. The serve loop takes what it has and, when it has
/// nothing, waits for the socket to become readable in the system's poller (epoll,
/// kqueue, IOCP) with no timeout (unless a `service_actions` interval or
/// `handle_request`'s timeout asks for one), so an idle server makes no wakeups.
/// `shutdown` sets a flag and wakes every serve loop through its poller: the loops
/// return at once, on every platform, in every mode.
///
/// # What happens to new connections after a shutdown
///
/// A socket the server bound itself is given up at the shutdown: new connections are
/// refused (with `SO_REUSEPORT`, the kernel sends them to the other processes), those
/// waiting in the backlog are reset, and the next serve call binds the same address
/// anew. Between a shutdown and the next serve call the address is therefore free,
/// unlike in Python, where the socket keeps listening (and queueing) until closed.
///
/// When the refusal starts differs by platform:
///
/// | | threading | sequential, pool |
/// |---|---|---|
/// | Linux | at once | at once (the socket is shut down for reading) |
/// | macOS, the BSDs, Windows | at once (the serve loop returns, the socket closes) | once the serve loops return, which run requests themselves: until the running requests end, new connections wait in the backlog |
///
/// A socket you passed in (`from_listener`, `from_socket`, systemd's) is yours and stays
/// open: connections wait in its backlog, and the next serve call serves them. It is
/// closed when the server is closed.
pub struct Server<T: Transport> {
    engine: Arc<Engine>,
    _transport: PhantomData<fn() -> T>,
}

impl<T: Transport> fmt::Debug for Server<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("local_addr", self.engine.control().local()).finish_non_exhaustive()
    }
}

impl<T: Transport> Server<T> {
    /// A server over a built engine; see [`Builder::bind`](crate::Builder::bind).
    pub(crate) fn new(engine: Engine) -> Server<T> {
        Server { engine: Arc::new(engine), _transport: PhantomData }
    }
}

impl<T: Transport> Server<T> {
    /// Serves requests until [`shutdown`](Server::shutdown) (Python's `serve_forever`).
    ///
    /// Waits in the server's readiness poller (epoll, kqueue, IOCP) for connections or
    /// datagrams, and for the next messages of [parked](crate::StreamRequest::park)
    /// connections, with no timeout and no polling: an idle server makes no wakeups.
    /// When shutdown is asked for, the poller's waker ends the wait at once: it stops
    /// accepting, closes the parked connections (after answering those whose next message
    /// has arrived, and giving a new connection accepted less than a second ago the rest
    /// of that second for its first message, with `client_speaks_first` or a frame),
    /// waits for the running requests (see
    /// [`Builder::shutdown_deadline`](crate::Builder::shutdown_deadline)) and returns `Ok(())`.
    /// In sequential and pool modes the requests run on the serve loops' threads, this
    /// one's included: a handler that ignores its closed connection past the deadline
    /// holds `serve_forever` until it returns, while [`shutdown`](Server::shutdown) and
    /// [`BackgroundServer::stop`] return within their bounds, leaving it running and
    /// reported (and a stop by signal ends the process, see
    /// [`ServerHandle::shutdown_on_signals`](crate::ServerHandle::shutdown_on_signals)).
    ///
    /// A `shutdown` that arrived before the first call (for example right after
    /// spawning the thread that calls this) makes this call return at once. It may be
    /// called again after it returns; it binds the same address again.
    ///
    /// # Errors
    /// [`Error::AlreadyServing`] if another serve call runs, [`Error::Closed`] after
    /// [`close`](Server::close), [`Error::AddrInUse`] if the address could not be bound
    /// again, and [`Error::Accept`] if the listening socket itself broke.
    ///
    /// # Python
    /// There is no `poll_interval`: shutdown takes effect at once instead of within 0.5 s.
    pub fn serve_forever(&self) -> Result<()> {
        self.engine.serve(false).map(drop)
    }

    /// Waits for one request and dispatches it (Python's `handle_request`).
    ///
    /// Honours [`Builder::timeout`](crate::Builder::timeout): if no request arrives in time (or no slot frees up
    /// in a mode with a limit), the `handle_timeout` hook runs and this returns
    /// `Ok(false)`. Returns `Ok(true)` once a request was dispatched (in threading and
    /// pool modes it may still be running).
    ///
    /// # Python
    /// As in Python, `shutdown` does not concern `handle_request`, except that a
    /// `shutdown` while it waits makes it return `Ok(false)`.
    ///
    /// # Errors
    /// As [`serve_forever`](Server::serve_forever).
    pub fn handle_request(&self) -> Result<bool> {
        self.engine.serve(true)
    }

    /// Stops serving (Python's `shutdown`). Callable from any thread, including from a
    /// handler, and before `serve_forever` has started.
    ///
    /// New connections are refused at once, in every mode. `serve_forever` then returns
    /// once running requests finish, or once [`Builder::shutdown_deadline`](crate::Builder::shutdown_deadline) passes and
    /// their connections are closed. Called from outside the server, this waits for that
    /// return, like Python's; called from a handler or hook, it only asks, since waiting
    /// would wait for itself. A call while nothing serves, after a serve has ended, does
    /// nothing.
    pub fn shutdown(&self) {
        self.engine.control().shutdown();
    }

    /// A handle for other threads: [`ServerHandle::shutdown`] and the address.
    pub fn handle(&self) -> ServerHandle {
        self.engine.handle()
    }

    /// The address the server is bound to: the real port after binding port 0, or the
    /// socket path (Python's `server_address`).
    #[doc(alias = "server_address")]
    pub fn local_addr(&self) -> T::Addr {
        T::typed_addr(self.engine.control().local())
    }

    /// Closes the server (Python's `server_close`): shuts it down, closes the socket,
    /// waits for requests and joins threads as the dispatch mode says, and removes the
    /// Unix socket file this server created. Dropping the server does the same; calling
    /// it twice does nothing the second time. Called from one of this server's own
    /// handlers, it only shuts the server down, since waiting there would wait for
    /// itself; the close happens on drop. (If that drop, of the last reference, also
    /// happens in a handler, threads are not joined and a Unix socket file stays.)
    #[doc(alias = "server_close")]
    pub fn close(&self) {
        self.engine.close();
    }

    /// Runs `serve_forever` on a new thread and returns a guard that stops it.
    ///
    /// For test harnesses: bind to `127.0.0.1:0`, read [`local_addr`](Server::local_addr),
    /// serve in the background; [`BackgroundServer::stop`] or dropping the guard shuts
    /// the server down, joins the thread and closes the server, leaving nothing running.
    ///
    /// The serve call begins before this returns, so a `stop` right after it can never
    /// be mistaken for a shutdown between two serve calls.
    ///
    /// # Errors
    /// As [`serve_forever`](Server::serve_forever), and [`Error::Io`] if the thread
    /// cannot be spawned.
    pub fn serve_in_background(self) -> Result<BackgroundServer<T>> {
        let call = self.engine.begin(true)?;
        let server = Arc::new(self);
        let engine = server.engine.clone();
        // If the thread cannot start, the closure is dropped with the call in it, which
        // ends the serve call no thread runs.
        // Says when the serve call has returned (or the thread unwound), so that a stop
        // waits for it within a bound and never joins a thread still serving.
        let (ended, done) = crossbeam_channel::bounded::<()>(1);
        let spawned = thread::Builder::new().name("socketserver-serve".to_string()).spawn(move || {
            let result = match call {
                Some(call) => engine.serve_call(call, false).map(drop),
                None => Ok(()),
            };
            let _ = ended.send(());
            result
        });
        match spawned {
            Ok(thread) => {
                Ok(BackgroundServer { server, thread: Some((thread, done)), stop_timeout: DEFAULT_STOP_TIMEOUT })
            }
            Err(e) => Err(Error::Io(e)),
        }
    }
}

impl<T: Transport<Request = StreamRequest>> Server<T> {
    /// Runs a connection you obtained yourself through the server: `verify_request`,
    /// the connection limit, the dispatch mode, the handler and the hooks, as if the
    /// serve loop had accepted it (Python's `process_request`).
    ///
    /// This is how to replace accepting (Python's `get_request`): accept from a socket
    /// of your own, take connections from another process, or connect out instead of
    /// listening, as `idlelib` does. It returns once the request is dispatched; in a
    /// waiting mode at its limit it first waits for a free slot, and a server that
    /// refuses when full refuses it here (counted in [`Stats::refused`](crate::Stats::refused)). Errors of the
    /// request go to `handle_error`, as always.
    ///
    /// Beside a running `serve_forever` it takes its turn under the same limits as the
    /// connections the serve loop accepts: in a sequential server it waits until no
    /// exchange runs, so that one request runs at a time whichever way it came in.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Server::close); the connection is then closed.
    ///
    /// # Examples
    ///
    /// A server that serves a connection it made itself, outward:
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::{Connection, TcpServer};
    ///
    /// let peer = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let server = TcpServer::bind("127.0.0.1:0", |req| { req.writer().write_all(b"hello\n")?; Ok(()) })?;
    /// let outward = std::net::TcpStream::connect(peer.local_addr()?)?;
    /// let client_addr = outward.peer_addr()?.into();
    /// server.process_request(Connection::Tcp(outward), client_addr)?;
    ///
    /// let (stream, _) = peer.accept()?;
    /// let mut line = String::new();
    /// BufReader::new(stream).read_line(&mut line)?;
    /// assert_eq!(line, "hello\n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "get_request")]
    pub fn process_request(&self, connection: Connection, client: Address) -> Result<()> {
        self.engine.process_request(connection, client)
    }
}

/// The server socket's descriptor (Python's `fileno()`), to wait for readiness in an
/// event loop of your own and then call [`Server::handle_request`], which will not block
/// for long when the socket is readable. Unix; `AsRawSocket` on Windows.
///
/// The descriptor changes when a serve call binds anew after a shutdown, and is `-1`
/// between a shutdown and that call and once the server is closed: ask again rather
/// than keeping it. (For the same reason there is no `AsFd`: a borrow could outlive the
/// socket it names.)
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
impl<T: Transport> std::os::fd::AsRawFd for Server<T> {
    #[doc(alias = "fileno")]
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.engine.control().endpoint().and_then(|endpoint| endpoint.as_raw_socket()).unwrap_or(-1)
    }
}

/// The server socket's `SOCKET` (Python's `fileno()`); see the Unix `AsRawFd`. It is
/// `INVALID_SOCKET` (`!0`) between a shutdown and the next serve call and once the server
/// is closed. Windows only.
#[cfg(windows)]
#[cfg_attr(docsrs, doc(cfg(windows)))]
impl<T: Transport> std::os::windows::io::AsRawSocket for Server<T> {
    #[doc(alias = "fileno")]
    fn as_raw_socket(&self) -> std::os::windows::io::RawSocket {
        self.engine.control().endpoint().and_then(|endpoint| endpoint.as_raw_socket()).unwrap_or(!0)
    }
}

impl<T: Transport> Drop for Server<T> {
    fn drop(&mut self) {
        self.engine.close();
    }
}

/// A server running `serve_forever` on its own thread; see
/// [`Server::serve_in_background`]. Dropping it stops the server and joins the thread.
pub struct BackgroundServer<T: Transport> {
    server: Arc<Server<T>>,
    /// The serve thread, and what says it has ended.
    thread: Option<(JoinHandle<Result<()>>, crossbeam_channel::Receiver<()>)>,
    stop_timeout: Duration,
}

/// How long [`BackgroundServer::stop`] and dropping a [`BackgroundServer`] let running
/// requests take before their connections are closed: 1 second.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(1);

impl<T: Transport> fmt::Debug for BackgroundServer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundServer").field("server", &self.server).finish_non_exhaustive()
    }
}

impl<T: Transport> BackgroundServer<T> {
    /// The server's address.
    pub fn local_addr(&self) -> T::Addr {
        self.server.local_addr()
    }

    /// A handle to the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// How long `stop` and drop let running requests take before their connections are
    /// closed under them (handlers then read end-of-file); default
    /// [`DEFAULT_STOP_TIMEOUT`] (1 s). A shorter
    /// [`Builder::shutdown_deadline`](crate::Builder::shutdown_deadline) still counts.
    /// A request that does not end within a second after that (a handler that ignores
    /// its connection: it sleeps, or computes) is not waited for: `stop` returns an
    /// error saying so, and its thread is left to end on its own.
    ///
    /// # Platform-specific behavior
    ///
    /// On Windows, closing a connection does not wake a read blocked on it in another
    /// thread (as for [`Builder::shutdown_deadline`](crate::Builder::shutdown_deadline)):
    /// a handler blocked reading from a client that sends nothing is then left running
    /// until its read timeout, so set one ([`Builder::read_timeout`](crate::Builder::read_timeout)).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Shuts the server down, joins its thread, closes it, and returns what
    /// `serve_forever` returned. Never waits longer than
    /// [`stop_timeout`](BackgroundServer::stop_timeout) (1 s by default) and one second
    /// more: requests still running after `stop_timeout` have their connections closed,
    /// so a client the test still holds cannot keep it waiting, and a request that still
    /// runs a second later is left behind on its thread, reported, not waited for.
    ///
    /// # Errors
    /// The error `serve_forever` returned, if any; [`Error::Io`] of kind
    /// [`TimedOut`](std::io::ErrorKind::TimedOut) when requests were left running (the
    /// server is then closed when they end).
    ///
    /// # Panics
    /// Panics with the same payload if the serve thread panicked (a hook panicked).
    ///
    /// # Examples
    ///
    /// A handler that ignores its connection does not hold the stop:
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use socketserver::TcpServer;
    ///
    /// let server = TcpServer::bind("127.0.0.1:0", |_req| {
    ///     std::thread::sleep(Duration::from_secs(5)); // deaf to its socket
    ///     Ok(())
    /// })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?.stop_timeout(Duration::from_millis(100));
    /// let _client = std::net::TcpStream::connect(addr)?;
    /// std::thread::sleep(Duration::from_millis(100)); // the handler has begun
    /// let start = Instant::now();
    /// let stopped = background.stop();
    /// assert!(start.elapsed() < Duration::from_secs(3));
    /// assert_eq!(stopped.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        let Some((thread, done)) = self.thread.take() else {
            return Ok(());
        };
        // One instant for every wait below, so that the bound is not spent twice, and
        // every wait bounded by it: the shutdown is only asked for here, and the
        // deadline enforced from here too (a sequential loop runs the request itself).
        let deadline = Instant::now() + self.stop_timeout;
        let engine = &self.server.engine;
        engine.control().shutdown_within(Some(self.stop_timeout), false);
        if engine.waits_for_requests() {
            engine.control().await_requests(Some(deadline));
        }
        let left_behind = |running: usize| {
            let message = format!(
                "the server did not stop within {:?}: {running} request(s) still running on threads left behind \
                 (a handler that ignores its connection)",
                self.stop_timeout + FORCED_CLOSE_GRACE
            );
            Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, message)))
        };
        match done.recv_deadline(deadline + FORCED_CLOSE_GRACE) {
            // Ended (or unwound, which drops the sender): the join is at once.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let result = thread.join().unwrap_or_else(|payload| panic::resume_unwind(payload));
                engine.close_by(Some(deadline));
                // A thread per request: the serve call has ended, a request may not have
                // (unless the mode does not wait for them: daemon threads, as Python's).
                let running = engine.control().stats().active;
                if running > 0 && result.is_ok() && engine.waits_for_requests() {
                    return left_behind(running);
                }
                result
            }
            Err(RecvTimeoutError::Timeout) => {
                // A thread of its own waits for the serve thread and then lets go of the
                // server, which closes it when its requests end; nobody here waits.
                let server = self.server.clone();
                let reaper = move || {
                    let _ = thread.join();
                    drop(server);
                };
                if thread::Builder::new().name("socketserver-stop".to_string()).spawn(reaper).is_err() {
                    std::mem::forget(self.server.clone()); // no thread to close it on: leak it
                }
                let left = left_behind(engine.control().stats().active);
                if let Err(e) = &left {
                    log_or_stderr(log::Level::Error, &format!("{e}; the server closes when they end"));
                }
                left
            }
        }
    }
}

/// Stops the server as [`BackgroundServer::stop`] does, within its `stop_timeout`.
/// While the thread is panicking (a failed assertion in a test), it does not wait at
/// all: it closes the running requests' connections at once and leaves joining the
/// serve thread to a thread of its own, so the panic goes on to fail the test.
impl<T: Transport> Drop for BackgroundServer<T> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.server.engine.control().shutdown_within(Some(Duration::ZERO), false);
            let (server, thread, limit) = (self.server.clone(), self.thread.take(), self.stop_timeout);
            let cleanup = move || {
                if let Some((thread, _)) = thread {
                    let _ = thread.join();
                }
                server.engine.close_by(Some(Instant::now() + limit));
            };
            if thread::Builder::new().name("socketserver-stop".to_string()).spawn(cleanup).is_err() {
                // No thread to close it on: leak the server rather than wait here.
                std::mem::forget(self.server.clone());
            }
            return;
        }
        if let Err(e) = self.finish() {
            log_or_stderr(log::Level::Error, &format!("background server ended with an error: {e}"));
        }
    }
}
