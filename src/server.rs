//! The engine: one lifecycle and one serve loop for every transport and dispatch mode.
//!
//! Shutdown is described on [`Server`]. Running requests are counted in one place
//! ([`Requests`]); the loop waits on that count for the dispatch mode's concurrency limit
//! (backpressure) and, on shutdown, for the requests to finish, closing their connections
//! when the shutdown deadline passes.

use std::cell::Cell;
use std::fmt;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, ToSocketAddrs};
use std::os::unix::net as unix;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::{io, net};

use parking_lot::{Condvar, Mutex};

use crate::dispatch::{Dispatch, Job, Sequential};
use crate::error::{Error, Phase, Result};
use crate::handler::{AnyHandler, DatagramRequest, RequestHandler, StreamRequest};
use crate::transport::sealed::RequestKind;
use crate::transport::{
    Address, BeforeBind, BindTarget, Bound, Connection, DatagramSocket, Endpoint, Incoming, OwnedPath, SocketOptions,
    Tcp, Transport, Udp, UnixDatagram, UnixStream,
};

/// The default listen backlog. Python's `request_queue_size` is 5, which drops
/// connections under any burst; 128 is the usual `SOMAXCONN`.
pub const DEFAULT_BACKLOG: i32 = 128;
/// The default size of a stream request's read buffer (Python's `rbufsize` is 8192 too).
pub const DEFAULT_RBUFSIZE: usize = 8192;
/// The largest `max_packet_size` accepted: 16 MiB.
const MAX_PACKET_SIZE_LIMIT: usize = 16 << 20;
/// The default datagram size limit; longer datagrams are truncated, as in Python.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 8192;

/// After the shutdown deadline the server closes the connections still open; handlers
/// then see end-of-file or errors. This is how long it waits for them after that.
const FORCED_CLOSE_GRACE: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a client may take to send its PROXY protocol header.
#[cfg(feature = "proxy-protocol")]
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long refusing a connection may block the serve loop on a client that does not read.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// A TCP server (Python's `TCPServer`). See [`Server`] for the methods.
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, Read, Write};
/// use socketserver::{StreamRequest, TcpServer};
///
/// let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
///     let mut line = String::new();
///     req.reader().read_line(&mut line)?;
///     req.writer().write_all(line.to_uppercase().as_bytes())
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
/// use socketserver::{DatagramRequest, UdpServer};
///
/// let server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
///     let upper = req.packet().to_ascii_uppercase();
///     req.reply().write_all(&upper)
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
pub type UnixStreamServer = Server<UnixStream>;
/// A Unix datagram server (Python's `UnixDatagramServer`). See [`Server`] for the methods.
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
/// The serve loop blocks in `accept` or `recvfrom` with no timeout (unless a
/// `service_actions` interval asks for one). `shutdown` sets a flag and calls
/// `shutdown(fd, SHUT_RD)` on the server socket: the blocked call returns at once, and
/// the kernel refuses new connections from that moment, even while a sequential handler
/// is still busy. Connections still waiting in the backlog are reset.
///
/// The socket cannot listen again after that, so the next `serve_forever` binds the same
/// address anew. Between a shutdown and the next serve call the address is therefore
/// free, unlike in Python, where the socket keeps listening (and queueing) until closed.
pub struct Server<T: Transport> {
    shared: Arc<Shared>,
    _transport: PhantomData<fn() -> T>,
}

impl<T: Transport> fmt::Debug for Server<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.shared.local).finish_non_exhaustive()
    }
}

/// A cloneable handle to a server, for other threads and for handlers: read its address,
/// ask it to shut down.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle").field("local_addr", &self.shared.local).finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Stops the server: see [`Server::shutdown`].
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// The address the server is bound to (Python's `server_address`).
    #[doc(alias = "server_address")]
    pub fn local_addr(&self) -> &Address {
        &self.shared.local
    }

    /// Whether `serve_forever` or `handle_request` is running.
    pub fn is_serving(&self) -> bool {
        self.shared.life.lock().phase == LifePhase::Serving
    }

    /// The server's counters: requests running, received, finished, errors, refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| req.writer().write_all(b"hi"))?;
    /// let (addr, handle) = (server.local_addr(), server.handle());
    /// let background = server.serve_in_background()?;
    /// std::net::TcpStream::connect(addr)?.read_to_end(&mut Vec::new())?;
    /// background.stop()?;
    /// let stats = handle.stats();
    /// assert_eq!((stats.received, stats.finished, stats.errors, stats.active), (1, 1, 0, 0));
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let counters = &self.shared.counters;
        let (active, started, finished) = {
            let requests = self.shared.requests.lock();
            (requests.running, requests.started, requests.finished)
        };
        Stats {
            active,
            received: started + counters.untracked.load(Ordering::Relaxed),
            finished,
            errors: counters.errors.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
            denied: counters.denied.load(Ordering::Relaxed),
        }
    }
}

type VerifyHook = Box<dyn Fn(&Address) -> bool + Send + Sync>;
type ErrorHook = Box<dyn Fn(&Error, Option<&Address>) + Send + Sync>;
type PlainHook = Box<dyn Fn() + Send + Sync>;
type ConnectionHook = Box<dyn Fn(&Connection) -> io::Result<()> + Send + Sync>;
type AfterBindHook = Box<dyn Fn(&Address) -> io::Result<()> + Send + Sync>;
type RefuseHook = Box<dyn Fn(&Connection, &Address) -> io::Result<()> + Send + Sync>;

/// The hooks of Python's `BaseServer`, each optional.
#[derive(Default)]
struct Hooks {
    verify_request: Option<VerifyHook>,
    handle_error: Option<ErrorHook>,
    handle_timeout: Option<PlainHook>,
    service_actions: Option<(Duration, PlainHook)>,
    shutdown_request: Option<ConnectionHook>,
    /// Set: refuse connections beyond the limit (after this hook) instead of waiting.
    refuse_when_full: Option<RefuseHook>,
    after_bind: Option<AfterBindHook>,
}

impl Hooks {
    /// Ends a stream request, after its handler or when `verify_request` turned it
    /// down (Python's `shutdown_request`): the user's hook, or SHUT_WR before the close,
    /// so the client reads end-of-file even if a clone of the socket is still open. The
    /// peer may be gone already; that is no error.
    fn shutdown_request(&self, connection: &Connection) -> io::Result<()> {
        match &self.shutdown_request {
            Some(hook) => hook(connection),
            None => {
                let _ = connection.shutdown(Shutdown::Write);
                Ok(())
            }
        }
    }
}

/// Per-request settings, fixed when the server is built.
struct Config {
    rbufsize: usize,
    wbufsize: usize,
    max_packet_size: usize,
    nodelay: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    timeout: Option<Duration>,
    shutdown_deadline: Option<Duration>,
    max_connections: Option<usize>,
    #[cfg(feature = "proxy-protocol")]
    proxy_protocol: bool,
    hooks: Hooks,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rbufsize: DEFAULT_RBUFSIZE,
            wbufsize: 0,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            nodelay: false,
            read_timeout: None,
            write_timeout: None,
            timeout: None,
            shutdown_deadline: None,
            max_connections: None,
            #[cfg(feature = "proxy-protocol")]
            proxy_protocol: false,
            hooks: Hooks::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LifePhase {
    Idle,
    Serving,
    Closed,
}

/// The lifecycle state, behind [`Shared::life`].
struct Life {
    phase: LifePhase,
    /// Bumped each time a serve call ends, so `shutdown` waits for *its* serve only.
    generation: u64,
    /// A serve call has run to its end at least once.
    served: bool,
    /// `shutdown` arrived before the first serve call; that call returns at once.
    stop_pending: bool,
    /// When the running serve must close the connections still open.
    deadline: Option<Instant>,
    /// `None` once the server is closed.
    endpoint: Option<Arc<Endpoint>>,
    /// The endpoint was interrupted and must be bound again before serving.
    interrupted: bool,
    owned_path: Option<OwnedPath>,
}

/// Requests accepted and not yet finished, and the connections among them, so the
/// shutdown deadline can close them.
#[derive(Default)]
struct Requests {
    running: usize,
    /// Places taken by serve loops about to accept, under a connection limit: with
    /// several threads accepting at once, checking the count before a blocking accept
    /// and counting the request after it would let them all past the limit.
    reserved: usize,
    /// Requests counted as running so far, and those that have ended (for `stats`).
    started: u64,
    finished: u64,
    connections: Vec<Option<Arc<Connection>>>,
    free_slots: Vec<usize>,
}

/// What [`ServerHandle::stats`] reads; counted with relaxed atomics, a few per request.
#[derive(Default)]
struct Counters {
    /// Requests turned away before they were counted as running: denied by
    /// `verify_request` or refused when full. (Running and finished requests are counted
    /// in [`Requests`], under the lock the serve loop takes anyway.)
    untracked: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    denied: AtomicU64,
}

/// A server's counters, read with [`ServerHandle::stats`], for logs and health checks.
///
/// Counted since the server was built, across serve calls. Each counter is read on its
/// own, so under load the numbers are close to, but not exactly, one instant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Requests running now.
    pub active: usize,
    /// Connections accepted and datagrams received.
    pub received: u64,
    /// Requests that ended: ran (with or without an error), or could not be
    /// dispatched.
    pub finished: u64,
    /// Errors and caught panics reported to `handle_error`.
    pub errors: u64,
    /// Connections refused because the server was full
    /// ([`Builder::refuse_when_full`]).
    pub refused: u64,
    /// Requests that `verify_request` turned down.
    pub denied: u64,
}

/// Everything the serve loop, the handlers and the handles share.
struct Shared {
    handler: AnyHandler,
    dispatch: Box<dyn Dispatch>,
    max_concurrent: Option<usize>,
    config: Config,
    options: SocketOptions,
    reopen: fn(&Address, &SocketOptions) -> Result<Bound>,
    /// False for a socket the user supplied: binding it anew would lose their options.
    reopenable: bool,
    local: Address,
    stopping: AtomicBool,
    life: Mutex<Life>,
    life_changed: Condvar,
    requests: Mutex<Requests>,
    requests_changed: Condvar,
    counters: Counters,
}

thread_local! {
    /// The server whose serve loop or handler this thread is running, so `shutdown`
    /// called from inside knows not to wait for itself.
    static CURRENT_SERVER: Cell<usize> = const { Cell::new(0) };
}

/// Shuts the server down if the thread unwinds through it: a copy of the serve loop or
/// the supervisor that panics must not leave the other copies serving.
struct StopOnUnwind<'a>(&'a Shared);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let _current = CurrentServer::enter(self.0);
            self.0.shutdown();
        }
    }
}

/// Marks the current thread as running code of `shared` until dropped.
struct CurrentServer(usize);

impl CurrentServer {
    fn enter(shared: &Shared) -> CurrentServer {
        let previous = CURRENT_SERVER.with(|c| c.replace(shared as *const Shared as usize));
        CurrentServer(previous)
    }

    fn is(shared: &Shared) -> bool {
        CURRENT_SERVER.with(|c| c.get() == shared as *const Shared as usize)
    }
}

impl Drop for CurrentServer {
    fn drop(&mut self) {
        CURRENT_SERVER.with(|c| c.set(self.0));
    }
}

/// One running request. Dropping it (after the request, or with a job that never ran)
/// removes the request from [`Requests`] and wakes whoever waits on the count.
struct Ticket {
    shared: Arc<Shared>,
    slot: Option<usize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut requests = self.shared.requests.lock();
        requests.finished += 1;
        requests.running -= 1;
        if let Some(slot) = self.slot {
            requests.connections[slot] = None;
            requests.free_slots.push(slot);
        }
        drop(requests);
        self.shared.requests_changed.notify_all();
    }
}

/// What a job carries to the thread that runs it.
enum Work {
    Stream(Arc<Connection>, Address),
    Datagram(Vec<u8>, Address, Arc<DatagramSocket>),
}

/// Ends a serve call when dropped, also if a hook panicked through the loop.
struct Serving<'a>(&'a Shared);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        let mut life = self.0.life.lock();
        life.phase = if life.phase == LifePhase::Closed { LifePhase::Closed } else { LifePhase::Idle };
        life.generation += 1;
        life.served = true;
        life.stop_pending = false;
        life.deadline = None;
        drop(life);
        self.0.life_changed.notify_all();
    }
}

/// A place among the running requests, reserved before accepting; given back when
/// dropped unless a request took it over ([`Shared::track`]).
struct Slot<'a>(&'a Shared);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut requests = self.0.requests.lock();
        requests.reserved -= 1;
        drop(requests);
        self.0.requests_changed.notify_all();
    }
}

/// Why [`Shared::wait_for_capacity`] returned.
enum Capacity<'a> {
    /// A request may be accepted: into this reserved place, when the server has a
    /// limit it waits at.
    Free(Option<Slot<'a>>),
    /// The server is shutting down.
    Stopping,
    /// The timer passed while every slot was busy.
    Timer,
}

/// What to do about an error from `accept` or `recvfrom`.
enum AcceptError {
    /// Interrupted by a signal, or a connection reset before it was accepted.
    Retry,
    /// The receive timeout fired.
    Timeout,
    /// Out of descriptors or memory: wait, and try again.
    Exhausted,
    /// The listening socket itself is broken.
    Fatal,
    /// Anything else: report it and go on.
    Other,
}

fn classify(e: &io::Error) -> AcceptError {
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    const EBADF: i32 = 9;
    const EINVAL: i32 = 22;
    const ENOTSOCK: i32 = 88;
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => return AcceptError::Retry,
        // A UDP socket shut down by someone else, outside a shutdown: it will never
        // receive again (as a listener in that state fails with EINVAL).
        io::ErrorKind::NotConnected => return AcceptError::Fatal,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return AcceptError::Timeout,
        _ => {}
    }
    match e.raw_os_error() {
        Some(EMFILE | ENFILE | ENOBUFS | ENOMEM) => AcceptError::Exhausted,
        Some(EBADF | EINVAL | ENOTSOCK) => AcceptError::Fatal,
        _ => AcceptError::Other,
    }
}

impl Shared {
    fn handle(self: &Arc<Self>) -> ServerHandle {
        ServerHandle { shared: self.clone() }
    }

    /// Starts a serve call: `Ok(None)` means a shutdown came first and the call returns
    /// at once. Binds the address again if a previous shutdown interrupted the socket.
    fn begin(&self, forever: bool) -> Result<Option<Arc<Endpoint>>> {
        let mut life = self.life.lock();
        match life.phase {
            LifePhase::Closed => return Err(Error::Closed),
            LifePhase::Serving => return Err(Error::AlreadyServing),
            LifePhase::Idle => {}
        }
        if forever && life.stop_pending {
            life.stop_pending = false;
            life.served = true;
            return Ok(None);
        }
        if life.interrupted {
            if !self.reopenable {
                return Err(Error::Bind {
                    addr: self.local.to_string(),
                    source: io::Error::new(
                        io::ErrorKind::Unsupported,
                        "a server built from a socket you supplied serves until its first shutdown; \
                         build a new server from a new socket to serve again",
                    ),
                });
            }
            // Close the old socket first: an interrupted UDP socket holds its port until
            // closed, and UDP binds without SO_REUSEADDR.
            drop(life.endpoint.take());
            let bound = (self.reopen)(&self.local, &self.options)?;
            // The bind replaced the old socket file, so only the new record counts.
            life.owned_path = bound.owned_path;
            life.endpoint = Some(Arc::new(bound.endpoint));
            life.interrupted = false;
            if let Some(hook) = &self.config.hooks.after_bind {
                if let Err(source) = hook(&self.local) {
                    // As a failed first bind: close the socket, and bind again next time.
                    life.endpoint = None;
                    life.interrupted = true;
                    if let Some(path) = life.owned_path.take() {
                        path.remove();
                    }
                    return Err(Error::Bind { addr: self.local.to_string(), source });
                }
            }
        }
        self.stopping.store(false, Ordering::SeqCst);
        life.phase = LifePhase::Serving;
        Ok(life.endpoint.clone())
    }

    fn shutdown(&self) {
        let (generation, deadline) = {
            let mut life = self.life.lock();
            match life.phase {
                LifePhase::Closed => return,
                // Between two serve calls there is nothing to stop; remembering it would
                // make the next serve_forever return at once (Python's pitfall).
                LifePhase::Idle if life.served => return,
                // Before the first serve call (a serve thread just spawned): remember it,
                // and refuse connections from now on.
                LifePhase::Idle => {
                    life.stop_pending = true;
                    self.interrupt(&mut life);
                    return;
                }
                LifePhase::Serving => {
                    if !self.stopping.swap(true, Ordering::SeqCst) {
                        life.deadline = self.config.shutdown_deadline.map(|d| Instant::now() + d);
                        self.interrupt(&mut life);
                        // Wake a loop waiting for a free slot or backing off, and a
                        // pool's supervisor.
                        let _requests = self.requests.lock();
                        self.requests_changed.notify_all();
                        self.life_changed.notify_all();
                    }
                    (life.generation, life.deadline)
                }
            }
        };
        if CurrentServer::is(self) {
            return; // called from a handler or hook: waiting here would wait for itself
        }
        if deadline.is_some() && self.dispatch.waits_for_requests() {
            // The serve loop may be running the request itself (sequential mode), so
            // the deadline is enforced from here too.
            self.await_requests(deadline);
        }
        let mut life = self.life.lock();
        while life.phase == LifePhase::Serving && life.generation == generation {
            self.life_changed.wait(&mut life);
        }
    }

    fn interrupt(&self, life: &mut Life) {
        if let Some(endpoint) = &life.endpoint {
            endpoint.interrupt();
            life.interrupted = true;
        }
    }

    /// Waits until no request runs. With a deadline, closes the connections still open
    /// when it passes and waits [`FORCED_CLOSE_GRACE`] more. Returns whether all ended.
    fn await_requests(&self, deadline: Option<Instant>) -> bool {
        let mut requests = self.requests.lock();
        let Some(deadline) = deadline else {
            while requests.running > 0 {
                self.requests_changed.wait(&mut requests);
            }
            return true;
        };
        while requests.running > 0 && !self.requests_changed.wait_until(&mut requests, deadline).timed_out() {}
        if requests.running == 0 {
            return true;
        }
        let open = requests.connections.iter().flatten().count();
        log::warn!(
            "shutdown deadline passed with {} request(s) running; closing {open} connection(s)",
            requests.running
        );
        for connection in requests.connections.iter().flatten() {
            let _ = connection.shutdown(Shutdown::Both);
        }
        let grace = deadline + FORCED_CLOSE_GRACE;
        while requests.running > 0 && !self.requests_changed.wait_until(&mut requests, grace).timed_out() {}
        if requests.running > 0 {
            let message = format!("{} request(s) still running after their connections were closed", requests.running);
            log_or_stderr(log::Level::Error, &message);
        }
        requests.running == 0
    }

    /// Waits for a free slot when the dispatch mode has a limit, until shutdown or
    /// `timer` (the handle_request timeout, or the next service_actions call).
    fn wait_for_capacity(&self, timer: Option<Instant>) -> Capacity<'_> {
        // A server that refuses when full must keep accepting in order to refuse.
        let waits = self.config.hooks.refuse_when_full.is_none();
        let mut slot = None;
        if let Some(max) = self.max_concurrent.filter(|_| waits) {
            let mut requests = self.requests.lock();
            while requests.running + requests.reserved >= max && !self.stopping.load(Ordering::SeqCst) {
                match timer {
                    None => self.requests_changed.wait(&mut requests),
                    Some(timer) => {
                        if self.requests_changed.wait_until(&mut requests, timer).timed_out() {
                            return Capacity::Timer;
                        }
                    }
                }
            }
            if !self.stopping.load(Ordering::SeqCst) {
                requests.reserved += 1;
                slot = Some(Slot(self));
            }
        }
        if self.stopping.load(Ordering::SeqCst) {
            Capacity::Stopping
        } else {
            Capacity::Free(slot)
        }
    }

    /// While other threads run the serve loop: calls service_actions at its interval
    /// until shutdown.
    fn supervise(&self, service: Option<&(Duration, PlainHook)>) {
        let _current = CurrentServer::enter(self);
        let _stop = StopOnUnwind(self);
        let mut next = service.map(|(interval, _)| Instant::now() + *interval);
        // Waits on `life_changed`, which shutdown signals, not on `requests_changed`,
        // which every finished request signals.
        let mut life = self.life.lock();
        while !self.stopping.load(Ordering::SeqCst) {
            match (service, next) {
                (Some((interval, hook)), Some(due)) => {
                    if self.life_changed.wait_until(&mut life, due).timed_out() {
                        drop(life);
                        hook();
                        next = Some(Instant::now() + *interval);
                        life = self.life.lock();
                    }
                }
                _ => self.life_changed.wait(&mut life),
            }
        }
        let deadline = life.deadline;
        drop(life);
        // The workers run the requests themselves and cannot return before they end, so
        // the deadline is enforced from here, also when the shutdown came from inside
        // (a handler, a hook, a broken socket), where nobody else waits for it.
        if deadline.is_some() {
            self.await_requests(deadline);
        }
    }

    /// Sleeps `delay` or until a request ends (which frees descriptors) or shutdown.
    fn back_off(&self, delay: Duration) {
        let mut requests = self.requests.lock();
        if !self.stopping.load(Ordering::SeqCst) {
            let _ = self.requests_changed.wait_for(&mut requests, delay);
        }
    }

    fn report(&self, error: &Error, client: Option<&Address>) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        match &self.config.hooks.handle_error {
            Some(hook) => {
                if panic::catch_unwind(AssertUnwindSafe(|| hook(error, client))).is_err() {
                    log_or_stderr(
                        log::Level::Error,
                        &format!("the handle_error hook panicked while reporting: {error}"),
                    );
                }
            }
            // Through `log` when a logger takes errors; otherwise to stderr, as Python's
            // handle_error does, so that an error never vanishes.
            None => match client {
                Some(client) => log_or_stderr(log::Level::Error, &format!("request from {client}: {error}")),
                None => log_or_stderr(log::Level::Error, &error.to_string()),
            },
        }
    }

    /// Runs a hook of the server's own on a request's behalf; its error or panic is
    /// reported to `handle_error` as the request's.
    fn guarded(&self, phase: Phase, client: &Address, hook: impl FnOnce() -> io::Result<()>) {
        let error = match panic::catch_unwind(AssertUnwindSafe(hook)) {
            Ok(Ok(())) => return,
            Ok(Err(source)) => Error::Handler { phase, source },
            Err(payload) => Error::Panic { phase, message: panic_message(&*payload) },
        };
        self.report(&error, Some(client));
    }

    /// Runs `verify_request`: `false` turns the request down, after `shutdown_request`
    /// for a connection (as CPython does, bpo-26309); a panic in the hook counts as
    /// `false` and is reported.
    fn verify(&self, client: &Address, connection: Option<&Connection>) -> bool {
        let Some(verify) = &self.config.hooks.verify_request else { return true };
        match panic::catch_unwind(AssertUnwindSafe(|| verify(client))) {
            Ok(true) => true,
            Ok(false) => {
                self.counters.denied.fetch_add(1, Ordering::Relaxed);
                if let Some(connection) = connection {
                    self.guarded(Phase::Respond, client, || self.config.hooks.shutdown_request(connection));
                }
                false
            }
            Err(payload) => {
                let error = Error::Panic { phase: Phase::Setup, message: panic_message(&*payload) };
                self.report(&error, Some(client));
                false
            }
        }
    }

    /// Whether `verify_request` waits for the PROXY protocol header.
    fn verifies_after_proxy_header(&self) -> bool {
        #[cfg(feature = "proxy-protocol")]
        return self.config.proxy_protocol;
        #[cfg(not(feature = "proxy-protocol"))]
        false
    }

    /// Verifies and dispatches one request. Never fails: problems go to `handle_error`.
    fn process(self: &Arc<Self>, incoming: Incoming, endpoint: &Endpoint, slot: Option<Slot<'_>>) {
        let client = match &incoming {
            Incoming::Stream(_, client) | Incoming::Datagram(_, client) => client,
        };
        // Behind a PROXY protocol proxy the address here is the proxy's: the request is
        // verified once its header names the client (in `run`).
        if !self.verifies_after_proxy_header() && !self.verify(client, incoming.connection()) {
            self.counters.untracked.fetch_add(1, Ordering::Relaxed);
            return; // dropping `incoming` closes the connection, once
        }
        let (work, connection) = match (incoming, endpoint) {
            (Incoming::Stream(connection, client), _) => {
                let connection = Arc::new(connection);
                (Work::Stream(connection.clone(), client), Some(connection))
            }
            (Incoming::Datagram(packet, client), Endpoint::Datagram(socket)) => {
                (Work::Datagram(packet, client, socket.clone()), None)
            }
            (Incoming::Datagram(..), _) => unreachable!("datagram from a stream endpoint"),
        };
        let Some(ticket) = self.track(connection, slot) else {
            if let Work::Stream(connection, client) = work {
                self.refuse(&connection, &client);
            }
            return;
        };
        let client = match &work {
            Work::Stream(_, client) | Work::Datagram(_, client, _) => client.clone(),
        };
        if let Err(e) = self.dispatch.execute(Job::new(move || run(ticket, work))) {
            self.report(&Error::Dispatch(e), Some(&client));
        }
    }

    /// Counts a request as running, in the place `slot` reserved for it if any, or
    /// returns `None` when the server refuses requests beyond its limit and is at it.
    fn track(self: &Arc<Self>, connection: Option<Arc<Connection>>, slot: Option<Slot<'_>>) -> Option<Ticket> {
        let mut requests = self.requests.lock();
        if slot.is_none()
            && self.config.hooks.refuse_when_full.is_some()
            && self.max_concurrent.is_some_and(|max| requests.running >= max)
        {
            return None;
        }
        if let Some(slot) = slot {
            // The place passes to the request: the ticket gives it back.
            std::mem::forget(slot);
            requests.reserved -= 1;
        }
        requests.running += 1;
        requests.started += 1;
        let slot = connection.map(|connection| match requests.free_slots.pop() {
            Some(slot) => {
                requests.connections[slot] = Some(connection);
                slot
            }
            None => {
                requests.connections.push(Some(connection));
                requests.connections.len() - 1
            }
        });
        Some(Ticket { shared: self.clone(), slot })
    }

    /// Turns a connection away when the server is full: the hook may write a short
    /// reply, then the connection is closed, on the serve loop's thread.
    fn refuse(&self, connection: &Connection, client: &Address) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.counters.untracked.fetch_add(1, Ordering::Relaxed);
        let Some(hook) = &self.config.hooks.refuse_when_full else { return };
        // Never let a client that does not read stall the serve loop.
        let _ = connection.set_write_timeout(Some(REFUSE_WRITE_TIMEOUT));
        self.guarded(Phase::Respond, client, || hook(connection, client));
        // Closing with unread bytes makes the kernel send a reset, which can destroy the
        // reply before the client reads it: read what has arrived, then end the stream.
        let _ = connection.shutdown(Shutdown::Write);
        if connection.set_nonblocking(true).is_ok() {
            let mut scratch = [0u8; 4096];
            for _ in 0..16 {
                match (&*connection).read(&mut scratch) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
    }

    fn configure(&self, connection: &Connection) -> io::Result<()> {
        if self.config.nodelay {
            connection.set_nodelay(true)?;
        }
        if self.config.read_timeout.is_some() {
            connection.set_read_timeout(self.config.read_timeout)?;
        }
        if self.config.write_timeout.is_some() {
            connection.set_write_timeout(self.config.write_timeout)?;
        }
        Ok(())
    }

    /// The serve loop shared by `serve_forever` (`once == false`) and `handle_request`.
    /// Returns whether a request was processed.
    fn serve(self: &Arc<Self>, once: bool) -> Result<bool> {
        match self.begin(!once)? {
            Some(endpoint) => self.serve_begun(endpoint, once),
            None => Ok(false),
        }
    }

    /// A serve call that [`Shared::begin`] has started: the receive loop, run once for
    /// `handle_request`, and as the dispatch mode says for `serve_forever` (a pool runs
    /// one copy per worker).
    fn serve_begun(self: &Arc<Self>, endpoint: Arc<Endpoint>, once: bool) -> Result<bool> {
        let _serving = Serving(self);
        // Declared after `_serving` so it is dropped first: the socket must be released
        // before a `shutdown` waiting on `_serving` can start the next serve call.
        let endpoint = endpoint;
        let service = if once { None } else { self.config.hooks.service_actions.as_ref() };
        if once {
            let result = self.receive_loop(&endpoint, true, None);
            if let Err(Error::Accept(_)) = &result {
                // The socket is broken: bind anew on the next call, as serve_forever does.
                let mut life = self.life.lock();
                self.interrupt(&mut life);
            }
            return result;
        }
        // service_actions runs on the thread that called serve_forever: in the loop
        // when that thread runs it, or in `supervise` while other threads do.
        let caller = thread::current().id();
        let outcome: Mutex<Result<bool>> = Mutex::new(Ok(false));
        let serve_loop = || {
            let _stop = StopOnUnwind(self);
            let service = service.filter(|_| thread::current().id() == caller);
            // The loop on the calling thread wakes for service_actions; copies on other
            // threads never do, so the socket's receive timeout is set only here.
            let result = match service {
                Some((interval, _)) => endpoint.set_receive_timeout(Some(*interval)).map_err(Error::from),
                None => Ok(()),
            };
            let result = result.and_then(|()| self.receive_loop(&endpoint, false, service));
            let mut outcome = outcome.lock();
            match result {
                Ok(processed) => {
                    if let Ok(any) = &mut *outcome {
                        *any |= processed;
                    }
                }
                Err(e) => {
                    if outcome.is_ok() {
                        *outcome = Err(e);
                    }
                    drop(outcome);
                    // A broken socket ends every copy, not only this one. Marked as the
                    // server's own thread so `shutdown` does not wait for this serve.
                    let _current = CurrentServer::enter(self);
                    self.shutdown();
                }
            }
        };
        self.dispatch.run_serve_loop(&serve_loop, &|| self.supervise(service));
        // serve_forever waits for what it started, unless the mode says not to.
        if self.dispatch.waits_for_requests() {
            let deadline = self.life.lock().deadline;
            self.await_requests(deadline);
        }
        outcome.into_inner()
    }

    /// Receives and dispatches requests until shutdown (or, with `once`, one request or
    /// the `handle_request` timeout). Returns whether a request was processed.
    fn receive_loop(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        once: bool,
        service: Option<&(Duration, PlainHook)>,
    ) -> Result<bool> {
        let _current = CurrentServer::enter(self);
        let mut buffer = match &**endpoint {
            // One byte more than the limit: a datagram that fills it was longer, which the
            // request then reports (`DatagramRequest::truncated`) instead of hiding.
            Endpoint::Datagram(_) => vec![0; self.config.max_packet_size.saturating_add(1)],
            _ => Vec::new(),
        };
        // When the loop must act without a request: the handle_request timeout, or the
        // next service_actions call.
        let mut timer = match service {
            Some((interval, _)) => Some(Instant::now() + *interval),
            None if once => self.config.timeout.map(|t| Instant::now() + t),
            None => None,
        };
        let mut backoff: Option<Duration> = None;
        let mut processed = false;
        loop {
            let capacity = self.wait_for_capacity(timer);
            if matches!(capacity, Capacity::Stopping) {
                break;
            }
            let now = Instant::now();
            if timer.is_some_and(|due| due <= now) {
                match service {
                    Some((interval, hook)) => {
                        hook();
                        // Counted from the hook's end, and then on to `receive`: a hook
                        // slower than its interval must not starve the requests.
                        timer = Some(Instant::now() + *interval);
                    }
                    None => {
                        if let Some(hook) = &self.config.hooks.handle_timeout {
                            hook();
                        }
                        break;
                    }
                }
            }
            let slot = match capacity {
                Capacity::Free(slot) => slot,
                Capacity::Timer | Capacity::Stopping => continue,
            };
            if once {
                endpoint.set_receive_timeout(timer.map(|due| due.saturating_duration_since(now)))?;
            }
            let received = endpoint.receive(&mut buffer);
            let stopping = self.stopping.load(Ordering::SeqCst);
            match received {
                // What an interrupted Unix datagram socket returns (UDP returns an error).
                Ok(Incoming::Datagram(packet, _)) if stopping && packet.is_empty() => break,
                Ok(incoming) => {
                    if backoff.take().is_some() {
                        log::info!("accepting again");
                    }
                    self.process(incoming, endpoint, slot);
                    processed = true;
                    if once {
                        break;
                    }
                }
                Err(_) if stopping => break,
                Err(e) => match classify(&e) {
                    AcceptError::Retry | AcceptError::Timeout => {}
                    AcceptError::Exhausted => {
                        let delay = backoff.map_or(BACKOFF_START, |d| (d * 2).min(BACKOFF_MAX));
                        if backoff.is_none() {
                            log_or_stderr(
                                log::Level::Warn,
                                &format!("accept failed: {e}; backing off until resources free up"),
                            );
                        }
                        backoff = Some(delay);
                        self.back_off(delay);
                    }
                    AcceptError::Fatal => return Err(Error::Accept(e)),
                    AcceptError::Other => self.report(&Error::Accept(e), None),
                },
            }
        }
        Ok(processed)
    }

    fn close(&self) {
        if CurrentServer::is(self) {
            // From a handler or hook: closing would wait for this very request. Stop
            // serving; the close itself happens when the server is dropped.
            self.shutdown();
            return;
        }
        let owned_path = loop {
            self.shutdown();
            let mut life = self.life.lock();
            match life.phase {
                LifePhase::Closed => return,
                // A serve call started on another thread since `shutdown` returned.
                LifePhase::Serving => continue,
                LifePhase::Idle => {}
            }
            life.phase = LifePhase::Closed;
            life.endpoint = None;
            break life.owned_path.take();
        };
        // Requests started by handle_request in a threaded mode may still run.
        let drained = !self.dispatch.waits_for_requests()
            || self.await_requests(self.config.shutdown_deadline.map(|d| Instant::now() + d));
        if drained {
            self.dispatch.close();
        } else {
            log_or_stderr(log::Level::Error, "closing the server without joining request threads that did not end");
        }
        if let Some(path) = owned_path {
            path.remove();
        }
    }
}

/// Runs one request on whatever thread the dispatch mode chose.
fn run(ticket: Ticket, work: Work) {
    let shared = &ticket.shared;
    let _current = CurrentServer::enter(shared);
    match (work, &shared.handler) {
        (Work::Stream(connection, client), AnyHandler::Stream(handler)) => {
            if let Err(e) = shared.configure(&connection) {
                shared.report(&Error::Io(e), Some(&client));
                return;
            }
            let mut request = StreamRequest::new(
                connection,
                client,
                shared.handle(),
                shared.config.rbufsize,
                shared.config.wbufsize,
                (shared.config.read_timeout, shared.config.write_timeout),
            );
            #[cfg(feature = "proxy-protocol")]
            if shared.config.proxy_protocol {
                if let Err(source) = request.read_proxy_header(PROXY_HEADER_TIMEOUT) {
                    shared.report(&Error::Handler { phase: Phase::Setup, source }, Some(request.client_addr()));
                    return;
                }
                if !shared.verify(request.client_addr(), Some(request.connection())) {
                    return;
                }
            }
            run_phases(shared, &**handler, &mut request);
        }
        (Work::Datagram(packet, client, socket), AnyHandler::Datagram(handler)) => {
            let mut request =
                DatagramRequest::new(packet, shared.config.max_packet_size, client, socket, shared.handle());
            run_phases(shared, &**handler, &mut request);
        }
        _ => unreachable!("the transport fixes the handler's request type"),
    }
}

/// What the phase runner needs from a request type.
trait Phases {
    fn client(&self) -> &Address;
    /// The server's last step for the request, after `finish`.
    fn respond(&mut self, hooks: &Hooks) -> io::Result<()>;
}

impl Phases for StreamRequest {
    fn client(&self) -> &Address {
        self.client_addr()
    }

    fn respond(&mut self, hooks: &Hooks) -> io::Result<()> {
        self.flush_writer()?;
        hooks.shutdown_request(self.connection())
    }
}

impl Phases for DatagramRequest {
    fn client(&self) -> &Address {
        self.client_addr()
    }

    fn respond(&mut self, _: &Hooks) -> io::Result<()> {
        DatagramRequest::respond(self)
    }
}

/// setup, handle, finish, respond: each caught and reported on its own, so a failing
/// `handle` still gets its `finish`.
fn run_phases<R: Phases + 'static>(shared: &Shared, handler: &dyn RequestHandler<R>, request: &mut R) {
    let step = |request: &mut R, phase: Phase, f: &dyn Fn(&mut R) -> io::Result<()>| -> bool {
        let error = match panic::catch_unwind(AssertUnwindSafe(|| f(request))) {
            Ok(Ok(())) => return true,
            Ok(Err(source)) => Error::Handler { phase, source },
            Err(payload) => Error::Panic { phase, message: panic_message(&*payload) },
        };
        shared.report(&error, Some(request.client()));
        false
    };
    if !step(request, Phase::Setup, &|r| handler.setup(r)) {
        return;
    }
    step(request, Phase::Handle, &|r| handler.handle(r));
    step(request, Phase::Finish, &|r| handler.finish(r));
    step(request, Phase::Respond, &|r| r.respond(&shared.config.hooks));
}

/// Logs `message`, or writes it to stderr when no logger takes that level: for what an
/// operator must see even without a logger (request errors, running out of descriptors).
fn log_or_stderr(level: log::Level, message: &str) {
    if log::log_enabled!(level) {
        log::log!(level, "{message}");
    } else {
        // Not eprintln!, which panics when stderr is a closed pipe: a report must never
        // take the server down.
        let mut stderr = io::stderr().lock();
        let _ = writeln!(stderr, "socketserver: {message}");
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic with a non-string payload)".to_string()
    }
}

impl<T: Transport> Server<T> {
    /// Serves requests until [`shutdown`](Server::shutdown) (Python's `serve_forever`).
    ///
    /// Blocks in `accept`/`recvfrom` with no timeout and no polling: an idle server makes
    /// no wakeups. When shutdown is asked for, it stops accepting at once, waits for the
    /// running requests (see [`Builder::shutdown_deadline`]) and returns `Ok(())`.
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
        self.shared.serve(false).map(drop)
    }

    /// Waits for one request and dispatches it (Python's `handle_request`).
    ///
    /// Honours [`Builder::timeout`]: if no request arrives in time (or no slot frees up
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
        self.shared.serve(true)
    }

    /// Stops serving (Python's `shutdown`). Callable from any thread, including from a
    /// handler, and before `serve_forever` has started.
    ///
    /// New connections are refused at once, in every mode. `serve_forever` then returns
    /// once running requests finish, or once [`Builder::shutdown_deadline`] passes and
    /// their connections are closed. Called from outside the server, this waits for that
    /// return, like Python's; called from a handler or hook, it only asks, since waiting
    /// would wait for itself. A call while nothing serves, after a serve has ended, does
    /// nothing.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// A handle for other threads: [`ServerHandle::shutdown`] and the address.
    pub fn handle(&self) -> ServerHandle {
        self.shared.handle()
    }

    /// The address the server is bound to: the real port after binding port 0, or the
    /// socket path (Python's `server_address`).
    #[doc(alias = "server_address")]
    pub fn local_addr(&self) -> T::Addr {
        T::typed_addr(&self.shared.local)
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
        self.shared.close();
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
        let endpoint = self.shared.begin(true)?;
        let begun = endpoint.is_some();
        let server = Arc::new(self);
        let serving = server.clone();
        let spawned = thread::Builder::new().name("socketserver-serve".to_string()).spawn(move || match endpoint {
            Some(endpoint) => serving.shared.serve_begun(endpoint, false).map(drop),
            None => Ok(()),
        });
        match spawned {
            Ok(thread) => Ok(BackgroundServer { server, thread: Some(thread) }),
            Err(e) => {
                if begun {
                    drop(Serving(&server.shared)); // end the serve call no thread runs
                }
                Err(Error::Io(e))
            }
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
    /// refuses when full refuses it here (counted in [`Stats::refused`]). Errors of the
    /// request go to `handle_error`, as always.
    ///
    /// Use it instead of `serve_forever`, not beside it: under a limit, a running serve
    /// loop holds a place while it waits in `accept`, so in a sequential server (a limit
    /// of one) this call would wait for that loop to serve a client first.
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
    /// use socketserver::{Connection, StreamRequest, TcpServer};
    ///
    /// let peer = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| req.writer().write_all(b"hello\n"))?;
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
        let endpoint = self.shared.life.lock().endpoint.clone().ok_or(Error::Closed)?;
        let slot = match self.shared.wait_for_capacity(None) {
            Capacity::Free(slot) => slot,
            Capacity::Stopping | Capacity::Timer => None,
        };
        self.shared.process(Incoming::Stream(connection, client), &endpoint, slot);
        Ok(())
    }
}

/// The server socket's descriptor (Python's `fileno()`), to wait for readiness in an
/// event loop of your own and then call [`Server::handle_request`], which will not block
/// for long when the socket is readable.
///
/// The descriptor changes when a serve call binds anew after a shutdown, and is `-1`
/// once the server is closed: ask again rather than keeping it. (For the same reason
/// there is no `AsFd`: a borrow could outlive the socket it names.)
impl<T: Transport> std::os::fd::AsRawFd for Server<T> {
    #[doc(alias = "fileno")]
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.shared.life.lock().endpoint.as_ref().map_or(-1, |endpoint| endpoint.as_raw_fd())
    }
}

impl<T: Transport> Drop for Server<T> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// A server running `serve_forever` on its own thread; see
/// [`Server::serve_in_background`]. Dropping it stops the server and joins the thread.
pub struct BackgroundServer<T: Transport> {
    server: Arc<Server<T>>,
    thread: Option<JoinHandle<Result<()>>>,
}

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

    /// Shuts the server down, joins its thread, closes it, and returns what
    /// `serve_forever` returned.
    ///
    /// # Errors
    /// The error `serve_forever` returned, if any.
    ///
    /// # Panics
    /// Panics with the same payload if the serve thread panicked (a hook panicked).
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.server.shutdown();
        let result = thread.join().unwrap_or_else(|payload| panic::resume_unwind(payload));
        self.server.close();
        result
    }
}

impl<T: Transport> Drop for BackgroundServer<T> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.server.shutdown();
            return;
        }
        if let Err(e) = self.finish() {
            log_or_stderr(log::Level::Error, &format!("background server ended with an error: {e}"));
        }
    }
}

/// Configures a server before binding it: socket options, dispatch mode, hooks.
///
/// Get one from `TcpServer::builder(addr)` (and the other servers' `builder`), or from
/// `from_listener` / `from_socket` to serve a socket you bound yourself. Every setting
/// has a safe default, given in its doc.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use socketserver::{dispatch::Pool, StreamRequest, TcpServer};
///
/// let server = TcpServer::builder("127.0.0.1:0")
///     .backlog(1024)
///     .dispatch(Pool::new(16))
///     .read_timeout(Duration::from_secs(30))
///     .shutdown_deadline(Duration::from_secs(2))
///     .bind(|req: &mut StreamRequest| std::io::copy(req.reader(), &mut std::io::sink()).map(drop))?;
/// assert_ne!(server.local_addr().port(), 0);
/// # Ok::<(), socketserver::Error>(())
/// ```
#[must_use = "a builder does nothing until `bind` is called"]
pub struct Builder<T: Transport> {
    target: BindTarget,
    options: SocketOptions,
    config: Config,
    dispatch: Box<dyn Dispatch>,
    _transport: PhantomData<fn() -> T>,
}

impl<T: Transport> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder").field("target", &self.target).field("options", &self.options).finish_non_exhaustive()
    }
}

impl<T: Transport> Builder<T> {
    fn new(target: BindTarget) -> Self {
        Builder {
            target,
            options: SocketOptions { backlog: DEFAULT_BACKLOG, ..SocketOptions::default() },
            config: Config::default(),
            dispatch: Box::new(Sequential),
            _transport: PhantomData,
        }
    }

    /// Where requests run: [`Sequential`](crate::dispatch::Sequential) (the default, as
    /// Python's plain servers), [`Threading`](crate::dispatch::Threading),
    /// [`Pool`](crate::dispatch::Pool), or a [`Dispatch`] of your own.
    pub fn dispatch(mut self, dispatch: impl Dispatch) -> Self {
        self.dispatch = Box::new(dispatch);
        self
    }

    /// How long [`Server::handle_request`] waits for a request before calling the
    /// `handle_timeout` hook (Python's `timeout`). Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// After shutdown, how long running requests may take before their connections are
    /// closed under them (handlers then see end-of-file or errors). Default: no limit,
    /// as in Python: shutdown waits for every request.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.config.shutdown_deadline = Some(deadline);
        self
    }

    /// Called with each client's address before dispatch (Python's `verify_request`);
    /// `false` closes the connection (after `shutdown_request`, as CPython does) or drops
    /// the datagram, without running the handler. With the PROXY protocol on, it runs
    /// once the header has named the real client, on the request's thread.
    pub fn verify_request(mut self, hook: impl Fn(&Address) -> bool + Send + Sync + 'static) -> Self {
        self.config.hooks.verify_request = Some(Box::new(hook));
        self
    }

    /// Called for every error and caught panic of a request, with the client's address
    /// when there is one (Python's `handle_error`). The default logs it with
    /// `log::error!` when a logger takes errors, and writes it to stderr otherwise (as
    /// Python does), so an error never vanishes. The server goes on serving either way.
    pub fn handle_error(mut self, hook: impl Fn(&Error, Option<&Address>) + Send + Sync + 'static) -> Self {
        self.config.hooks.handle_error = Some(Box::new(hook));
        self
    }

    /// Called when [`Server::handle_request`] times out (Python's `handle_timeout`), on
    /// the calling thread; a panic in it unwinds out of `handle_request`.
    pub fn handle_timeout(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.config.hooks.handle_timeout = Some(Box::new(hook));
        self
    }

    /// Called by `serve_forever` about every `interval` (Python's `service_actions`,
    /// which Python calls every `poll_interval`). Only with this hook set does the idle
    /// serve loop wake up at all, once per interval. It runs on the serve loop's thread;
    /// a panic in it ends `serve_forever` by unwinding, as an exception would in Python.
    ///
    /// # Panics
    /// Panics if `interval` is zero.
    pub fn service_actions(mut self, interval: Duration, hook: impl Fn() + Send + Sync + 'static) -> Self {
        assert!(!interval.is_zero(), "the service_actions interval must not be zero");
        self.config.hooks.service_actions = Some((interval, Box::new(hook)));
        self
    }

    /// Called with each new server socket before it is bound (part of what overriding
    /// Python's `server_bind` does): set options that must precede bind and that the
    /// builder does not offer, such as `SO_RCVBUF` or `SO_BINDTODEVICE`, for example
    /// through `socket2::SockRef::from(&fd)`. Runs again when the server binds anew after
    /// a shutdown (then under the server's internal lock: do not call the server's own
    /// methods from it). An error fails the bind with [`Error::Bind`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .before_bind(|fd| {
    ///         assert!(fd.as_raw_fd() >= 0); // e.g. socket2::SockRef::from(&fd).set_recv_buffer_size(1 << 20)
    ///         Ok(())
    ///     })
    ///     .bind(|req: &mut StreamRequest| req.writer().write_all(b"hi"))?;
    /// # drop(server);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn before_bind(
        mut self,
        hook: impl Fn(std::os::fd::BorrowedFd<'_>) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.options.before_bind = Some(BeforeBind(Arc::new(hook)));
        self
    }

    /// Called with the real address once the socket is bound (and for streams,
    /// listening): what overriding Python's `server_bind` to read `server_address` does,
    /// as `http.server` does for its `server_name` and `server_port`. With port 0 this is
    /// the port the system picked. Runs again each time the server binds anew after a
    /// shutdown. An error fails the bind with [`Error::Bind`] and closes the socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::sync::{Arc, Mutex};
    /// use socketserver::{Address, StreamRequest, TcpServer};
    ///
    /// let bound: Arc<Mutex<Option<Address>>> = Arc::default();
    /// let record = bound.clone();
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .after_bind(move |addr| {
    ///         *record.lock().unwrap() = Some(addr.clone());
    ///         Ok(())
    ///     })
    ///     .bind(|req: &mut StreamRequest| req.writer().write_all(b"hi"))?;
    /// assert_eq!(bound.lock().unwrap().as_ref().and_then(Address::as_inet), Some(server.local_addr()));
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn after_bind(mut self, hook: impl Fn(&Address) -> io::Result<()> + Send + Sync + 'static) -> Self {
        self.config.hooks.after_bind = Some(Box::new(hook));
        self
    }

    /// At most `n` requests run at once, in any dispatch mode (with [`Threading`]'s
    /// `max_threads` or a [`Pool`], the smaller limit counts). At the limit the server
    /// stops accepting until a request ends: further connections wait in the kernel's
    /// backlog and datagrams in the socket's buffer, never in a queue in memory. For
    /// streams, [`refuse_when_full`](Builder::refuse_when_full) turns them away instead.
    ///
    /// [`Threading`]: crate::dispatch::Threading
    /// [`Pool`]: crate::dispatch::Pool
    ///
    /// # Panics
    /// Panics if `n` is zero.
    pub fn max_connections(mut self, n: usize) -> Self {
        assert!(n > 0, "max_connections must be at least 1");
        self.config.max_connections = Some(n);
        self
    }

    /// Binds (and for streams, listens) and returns the server, ready to serve.
    ///
    /// # Errors
    /// [`Error::AddrInUse`] when the address is taken (for Unix sockets: a live server
    /// answers at the path); [`Error::Bind`] for any other failure, naming the address.
    /// A failed bind leaks no descriptor.
    pub fn bind<H>(self, handler: H) -> Result<Server<T>>
    where
        H: RequestHandler<T::Request>,
    {
        let reopenable = !matches!(self.target, BindTarget::Existing(_));
        let bound = T::open(self.target, &self.options)?;
        bound.endpoint.set_blocking()?;
        let local = bound.endpoint.local_address()?;
        if let Some(hook) = &self.config.hooks.after_bind {
            // Dropping `bound` on error closes the socket; remove a file it created.
            if let Err(source) = hook(&local) {
                if let Some(path) = bound.owned_path {
                    path.remove();
                }
                return Err(Error::Bind { addr: local.to_string(), source });
            }
        }
        let max_concurrent = match (self.dispatch.max_concurrent(), self.config.max_connections) {
            (Some(mode), Some(limit)) => Some(mode.min(limit)),
            (mode, limit) => mode.or(limit),
        };
        let shared = Shared {
            handler: T::Request::erase(handler),
            dispatch: self.dispatch,
            max_concurrent,
            config: self.config,
            options: self.options,
            reopen: T::reopen,
            reopenable,
            local,
            stopping: AtomicBool::new(false),
            life: Mutex::new(Life {
                phase: LifePhase::Idle,
                generation: 0,
                served: false,
                stop_pending: false,
                deadline: None,
                endpoint: Some(Arc::new(bound.endpoint)),
                interrupted: false,
                owned_path: bound.owned_path,
            }),
            life_changed: Condvar::new(),
            requests: Mutex::new(Requests::default()),
            requests_changed: Condvar::new(),
            counters: Counters::default(),
        };
        Ok(Server { shared: Arc::new(shared), _transport: PhantomData })
    }
}

impl<T: Transport<Request = StreamRequest>> Builder<T> {
    /// Every connection starts with a PROXY protocol header (v1 or v2), as haproxy's
    /// `send-proxy` and nginx's `proxy_protocol on` send: the server reads it before
    /// `setup`, and the handler's [`client_addr`](StreamRequest::client_addr) is the real
    /// client's, with [`proxy_addr`](StreamRequest::proxy_addr) the proxy's.
    ///
    /// Only turn this on behind a proxy that always sends the header: anyone who can
    /// connect directly could otherwise claim any address. A connection without a valid
    /// header is closed and reported to `handle_error` as a [`Phase::Setup`] error, and
    /// the handler does not run: `InvalidData` ("PROXY protocol: ...") for a malformed
    /// header, `UnexpectedEof` if the connection ends inside it, `TimedOut` if it has not
    /// arrived within 10 seconds. `verify_request` then sees the real client; the
    /// `refuse_when_full` hook and errors before the header see the proxy. Feature
    /// `proxy-protocol`; see [`proxy_protocol`](crate::proxy_protocol).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .proxy_protocol(true)
    ///     .bind(|req: &mut StreamRequest| {
    ///         let client = req.client_addr().to_string();
    ///         req.writer().write_all(client.as_bytes())
    ///     })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    /// let mut proxy = std::net::TcpStream::connect(addr)?;
    /// proxy.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n")?;
    /// let mut reply = String::new();
    /// proxy.read_to_string(&mut reply)?;
    /// assert_eq!(reply, "203.0.113.7:51000");
    /// background.stop()?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    #[cfg(feature = "proxy-protocol")]
    pub fn proxy_protocol(mut self, enabled: bool) -> Self {
        self.config.proxy_protocol = enabled;
        self
    }

    /// When the server is full (see [`max_connections`](Builder::max_connections)),
    /// accept each further connection, call `hook` to write a short reply (such as
    /// `"-ERR busy\r\n"` or an HTTP 503), and close it, instead of leaving it to wait in
    /// the backlog. Counted in [`Stats::refused`].
    ///
    /// The hook runs on the accepting thread, so it must be quick: its writes time out
    /// after 100 ms. Refusing needs a thread free to accept, which [`Threading`] always
    /// has; a [`Pool`] refuses only with `max_connections` below its size, and a
    /// sequential server never does.
    ///
    /// [`Threading`]: crate::dispatch::Threading
    /// [`Pool`]: crate::dispatch::Pool
    pub fn refuse_when_full(
        mut self,
        hook: impl Fn(&Connection, &Address) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.config.hooks.refuse_when_full = Some(Box::new(hook));
        self
    }

    /// The listen backlog (Python's `request_queue_size`). Default
    /// [`DEFAULT_BACKLOG`] (128); Python's 5 drops connections under bursts.
    #[doc(alias = "request_queue_size")]
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.options.backlog = backlog.min(i32::MAX as u32) as i32;
        self
    }

    /// The read buffer size of each request's [`Reader`](crate::Reader) (Python's
    /// `rbufsize`). Default [`DEFAULT_RBUFSIZE`] (8192).
    pub fn rbufsize(mut self, bytes: usize) -> Self {
        self.config.rbufsize = bytes;
        self
    }

    /// The write buffer size of each request's [`Writer`](crate::Writer) (Python's
    /// `wbufsize`). Default 0: unbuffered, every write is sent at once.
    pub fn wbufsize(mut self, bytes: usize) -> Self {
        self.config.wbufsize = bytes;
        self
    }

    /// A read timeout on every connection (Python's `StreamRequestHandler.timeout`): a
    /// read that waits longer fails with `WouldBlock`/`TimedOut`, which ends the request
    /// through `handle_error`. Default: none.
    ///
    /// # Panics
    /// Panics if `timeout` is zero.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "a zero read timeout is not allowed");
        self.config.read_timeout = Some(timeout);
        self
    }

    /// Replaces what the server does to a connection after `finish` and the flush,
    /// just before closing it (Python's `shutdown_request`), and to a connection that
    /// `verify_request` turned down. The default shuts down the write half, so the
    /// client reads end-of-file; an error is reported to `handle_error` with
    /// [`Phase::Respond`]. Closing itself always follows.
    #[doc(alias = "close_request")]
    pub fn shutdown_request(mut self, hook: impl Fn(&Connection) -> io::Result<()> + Send + Sync + 'static) -> Self {
        self.config.hooks.shutdown_request = Some(Box::new(hook));
        self
    }

    /// A write timeout on every connection. Default: none.
    ///
    /// # Panics
    /// Panics if `timeout` is zero.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "a zero write timeout is not allowed");
        self.config.write_timeout = Some(timeout);
        self
    }
}

impl<T: Transport<Request = DatagramRequest>> Builder<T> {
    /// The largest datagram read; longer ones are truncated to it, as in Python, and
    /// the handler can tell ([`DatagramRequest::truncated`]). Default
    /// [`DEFAULT_MAX_PACKET_SIZE`] (8192).
    ///
    /// # Panics
    /// Panics if `bytes` is zero or above 16 MiB (a buffer of that size is allocated per
    /// receiving thread; no datagram is that long).
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "max_packet_size must be at least 1");
        assert!(bytes <= MAX_PACKET_SIZE_LIMIT, "max_packet_size must be at most {MAX_PACKET_SIZE_LIMIT} bytes");
        self.config.max_packet_size = bytes;
        self
    }
}

/// Transports over IP: [`Tcp`] and [`Udp`].
pub trait InetTransport: Transport {}
impl InetTransport for Tcp {}
impl InetTransport for Udp {}

impl<T: InetTransport> Builder<T> {
    /// `SO_REUSEADDR` (Python's `allow_reuse_address`). Default: on for TCP, so a
    /// restarted server can bind while old connections sit in `TIME_WAIT`; off for UDP,
    /// where it would let a second server share the port.
    ///
    /// A server binds anew for each serve call after a shutdown (see [`Server`]); with
    /// this off, that bind fails with [`Error::AddrInUse`] while the port is still held:
    /// for TCP by connections the server closed first (`TIME_WAIT`, about a minute), for
    /// UDP by a request still running with `daemon_threads` and replying through the
    /// old socket.
    #[doc(alias = "allow_reuse_address")]
    pub fn reuse_address(mut self, reuse: bool) -> Self {
        self.options.reuse_address = Some(reuse);
        self
    }

    /// `SO_REUSEPORT` (Python's `allow_reuse_port`): several processes may bind the same
    /// port and the kernel spreads connections among them. Default: off.
    #[doc(alias = "allow_reuse_port")]
    pub fn reuse_port(mut self, reuse: bool) -> Self {
        self.options.reuse_port = reuse;
        self
    }

    /// `IPV6_V6ONLY` for an IPv6 address: `true` serves IPv6 only, `false` also IPv4
    /// (as mapped addresses). Default: the system's (on Linux, `false`).
    pub fn only_v6(mut self, only_v6: bool) -> Self {
        self.options.only_v6 = Some(only_v6);
        self
    }
}

impl<T: Transport<Addr = PathBuf>> Builder<T> {
    /// The permission bits of the socket file, such as `0o660` to let only the owner
    /// and group connect. Set right after bind, before a stream socket listens, so no
    /// client connects under the default bits (which follow the process's umask); a
    /// datagram socket can receive in the instant between bind and this change. Also
    /// applied when the server binds anew after a shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::unix::fs::PermissionsExt;
    /// use socketserver::{StreamRequest, UnixStreamServer};
    ///
    /// let path = std::env::temp_dir().join(format!("perm-doc-{}.sock", std::process::id()));
    /// let server = UnixStreamServer::builder(&path)
    ///     .permissions(0o600)
    ///     .bind(|req: &mut StreamRequest| req.writer().write_all(b"hi"))?;
    /// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    /// drop(server); // removes the socket file
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn permissions(mut self, mode: u32) -> Self {
        self.options.mode = Some(mode);
        self
    }
}

impl Builder<Tcp> {
    /// `TCP_NODELAY` on every connection (Python's `disable_nagle_algorithm`). Default: off.
    #[doc(alias = "disable_nagle_algorithm")]
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.config.nodelay = nodelay;
        self
    }
}

/// The text of an address for error messages: `"127.0.0.1:80"` without the quotes.
fn addr_text(addr: &impl fmt::Debug) -> String {
    format!("{addr:?}").trim_matches('"').to_string()
}

fn inet_target<A: ToSocketAddrs + fmt::Debug>(addr: A) -> BindTarget {
    BindTarget::Inet(addr.to_socket_addrs().map(Iterator::collect), addr_text(&addr))
}

impl Server<Tcp> {
    /// Binds and listens on `addr` with the defaults: sequential dispatch, backlog 128,
    /// `SO_REUSEADDR` on. Port 0 picks a free port; read it with `local_addr`.
    ///
    /// # Errors
    /// [`Error::AddrInUse`] naming the address, or [`Error::Bind`].
    pub fn bind<A, H>(addr: A, handler: H) -> Result<Self>
    where
        A: ToSocketAddrs + fmt::Debug,
        H: RequestHandler<StreamRequest>,
    {
        Self::builder(addr).bind(handler)
    }

    /// A [`Builder`] for a TCP server on `addr`.
    pub fn builder<A: ToSocketAddrs + fmt::Debug>(addr: A) -> Builder<Tcp> {
        Builder::new(inet_target(addr))
    }

    /// A [`Builder`] that serves a listener you created, bound and set listening
    /// yourself (Python's `bind_and_activate=False`): for socket options this crate
    /// does not set, or a descriptor inherited from a parent (`OwnedFd` converts into a
    /// `TcpListener`). Socket options on the builder do not apply to it; it is put in
    /// blocking mode.
    ///
    /// Shutdown makes the listener refuse connections for good, so such a server serves
    /// until its first shutdown; a later serve call fails with [`Error::Bind`].
    pub fn from_listener(listener: impl Into<net::TcpListener>) -> Builder<Tcp> {
        Builder::new(BindTarget::Existing(Endpoint::Tcp(listener.into())))
    }
}

impl Server<Udp> {
    /// Binds a UDP socket on `addr` with the defaults: sequential dispatch, datagrams
    /// up to 8192 bytes, `SO_REUSEADDR` off.
    ///
    /// # Errors
    /// [`Error::AddrInUse`] naming the address, or [`Error::Bind`].
    pub fn bind<A, H>(addr: A, handler: H) -> Result<Self>
    where
        A: ToSocketAddrs + fmt::Debug,
        H: RequestHandler<DatagramRequest>,
    {
        Self::builder(addr).bind(handler)
    }

    /// A [`Builder`] for a UDP server on `addr`.
    pub fn builder<A: ToSocketAddrs + fmt::Debug>(addr: A) -> Builder<Udp> {
        Builder::new(inet_target(addr))
    }

    /// A [`Builder`] that serves a UDP socket you bound yourself. Socket options on the
    /// builder do not apply to it; it is put in blocking mode.
    ///
    /// It serves until its first shutdown, as [`TcpServer::from_listener`] explains.
    pub fn from_socket(socket: impl Into<net::UdpSocket>) -> Builder<Udp> {
        let socket = DatagramSocket::Udp(socket.into());
        Builder::new(BindTarget::Existing(Endpoint::Datagram(Arc::new(socket))))
    }
}

impl Server<UnixStream> {
    /// Binds and listens on the socket file `path`.
    ///
    /// A stale socket file left by a server that died is replaced; a live server at the
    /// path is [`Error::AddrInUse`]; anything that is not a socket is [`Error::Bind`]
    /// and is never deleted. Closing the server removes the file.
    ///
    /// # Errors
    /// As above.
    pub fn bind<P, H>(path: P, handler: H) -> Result<Self>
    where
        P: AsRef<Path>,
        H: RequestHandler<StreamRequest>,
    {
        Self::builder(path).bind(handler)
    }

    /// A [`Builder`] for a Unix stream server at `path`.
    pub fn builder<P: AsRef<Path>>(path: P) -> Builder<UnixStream> {
        Builder::new(BindTarget::Path(PathBuf::from(path.as_ref())))
    }

    /// A [`Builder`] that serves a Unix listener you created. Its socket file is yours:
    /// closing the server does not remove it.
    ///
    /// It serves until its first shutdown, as [`TcpServer::from_listener`] explains.
    pub fn from_listener(listener: impl Into<unix::UnixListener>) -> Builder<UnixStream> {
        Builder::new(BindTarget::Existing(Endpoint::UnixStream(listener.into())))
    }
}

impl Server<UnixDatagram> {
    /// Binds a Unix datagram socket at `path`; stale files are handled as by
    /// [`UnixStreamServer::bind`](Server::<UnixStream>::bind).
    ///
    /// # Errors
    /// [`Error::AddrInUse`] or [`Error::Bind`].
    pub fn bind<P, H>(path: P, handler: H) -> Result<Self>
    where
        P: AsRef<Path>,
        H: RequestHandler<DatagramRequest>,
    {
        Self::builder(path).bind(handler)
    }

    /// A [`Builder`] for a Unix datagram server at `path`.
    pub fn builder<P: AsRef<Path>>(path: P) -> Builder<UnixDatagram> {
        Builder::new(BindTarget::Path(PathBuf::from(path.as_ref())))
    }

    /// A [`Builder`] that serves a Unix datagram socket you bound. Its socket file is
    /// yours: closing the server does not remove it.
    ///
    /// It serves until its first shutdown, as [`TcpServer::from_listener`] explains.
    pub fn from_socket(socket: impl Into<unix::UnixDatagram>) -> Builder<UnixDatagram> {
        let socket = DatagramSocket::Unix(socket.into());
        Builder::new(BindTarget::Existing(Endpoint::Datagram(Arc::new(socket))))
    }
}
