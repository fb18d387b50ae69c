//! [`Builder`]: the settings of a server before it binds, and the constructors that
//! make one for each transport (`TcpServer::bind`, `TcpServer::builder`,
//! `from_listener`, ...).

use std::fmt;
use std::io;
use std::marker::PhantomData;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, DEFAULT_BACKLOG, MAX_PACKET_SIZE_LIMIT};
use crate::dispatch::Dispatch;
use crate::engine::{Engine, Rebind};
use crate::error::{Error, Result};
use crate::handle::{Control, Policy};
use crate::handler::sealed::RequestKind;
use crate::handler::{FnHandler, HandlerResult, RequestHandler};
use crate::net::{Address, BeforeBind, BindTarget, Connection, SocketOptions};
use crate::request::{ConnState, ConnectionId, DatagramRequest, StreamRequest};
use crate::server::Server;
use crate::transport::{BindAddress, InetTransport, Tcp, Transport};

/// Why a sequential server cannot refuse when full, and what to use instead.
const SEQUENTIAL_CANNOT_REFUSE: &str = "refuse_when_full needs a thread free to accept while a request runs, and a \
sequential server has only the one running it: use .dispatch(Pool::new(1)) for one request at a time that refuses \
the rest, or Pool::new(n) or Threading";

/// Configures a server before binding it: socket options, dispatch mode, hooks.
///
/// Get one from `TcpServer::builder(addr)` (and the other servers' `builder`), or from
/// `from_listener` / `from_socket` to serve a socket you bound yourself. Every setting
/// has a default, given in its doc: Python's where it has one (no timeouts, no limit on
/// connections), which suits a classroom or a test; a server that strangers reach
/// starts from [`internet_facing`](Builder::internet_facing).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use socketserver::{dispatch::Pool, TcpServer};
///
/// let server = TcpServer::builder("127.0.0.1:0")
///     .backlog(1024)
///     .dispatch(Pool::new(16))
///     .read_timeout(Duration::from_secs(30))
///     .shutdown_deadline(Duration::from_secs(2))
///     .bind(|req| { std::io::copy(&mut req.reader(), &mut std::io::sink())?; Ok(()) })?;
/// assert_ne!(server.local_addr().port(), 0);
/// # Ok::<(), socketserver::Error>(())
/// ```
#[must_use = "a builder does nothing until `bind` is called"]
pub struct Builder<T: Transport> {
    target: BindTarget,
    options: SocketOptions,
    config: Config,
    dispatch: Dispatch,
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
            dispatch: Dispatch::sequential(),
            _transport: PhantomData,
        }
    }

    /// Where requests run: [`Sequential`](crate::dispatch::Sequential) (the default, as
    /// Python's plain servers), [`Threading`](crate::dispatch::Threading),
    /// [`Pool`](crate::dispatch::Pool), an [`Executor`](crate::dispatch::Executor) of
    /// your own, or a [`Dispatch`] made from any of them.
    pub fn dispatch(mut self, dispatch: impl Into<Dispatch>) -> Self {
        self.dispatch = dispatch.into();
        self
    }

    /// How long [`Server::handle_request`] waits for a request before calling the
    /// `handle_timeout` hook (Python's `timeout`). Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// After shutdown, how long running requests may take before their connections are
    /// closed under them (handlers then see end-of-file or errors). A handler that ignores
    /// its closed connection is given one second more, then left running on its thread
    /// and reported: `shutdown` returns (in sequential and pool modes `serve_forever`,
    /// whose threads run the handlers, returns when it does). Default: no limit, as in
    /// Python: shutdown waits for every request.
    ///
    /// # Platform-specific behavior
    ///
    /// On Windows, closing a connection this way does not wake a handler blocked in a
    /// read on it (Winsock's `shutdown` does not), so there the deadline ends only
    /// handlers that read or write again; bound reads with
    /// [`read_timeout`](Builder::read_timeout) as well.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.config.shutdown_deadline = Some(deadline);
        self
    }

    /// Called with each client's address before dispatch (Python's `verify_request`);
    /// `false` closes the connection (after `shutdown_request`, as CPython does) or drops
    /// the datagram, without running the handler. With the PROXY protocol on, it runs
    /// on a proxy's connection once the header has named the real client, on the
    /// request's thread, and sees that client; on a direct client's
    /// (`allow_direct_clients`) it sees the client's own address; a peer refused as
    /// untrusted never reaches it.
    pub fn verify_request(mut self, hook: impl Fn(&Address) -> bool + Send + Sync + 'static) -> Self {
        self.config.hooks.verify_request = Some(Box::new(hook));
        self
    }

    /// Called on every change of a stream connection's state, with its number and its
    /// client's address: [`New`](ConnState::New) when accepted, then
    /// [`Active`](ConnState::Active) and [`Parked`](ConnState::Parked) as its exchanges
    /// run and it waits for the next, and last [`Closed`](ConnState::Closed),
    /// [`Refused`](ConnState::Refused) or [`Denied`](ConnState::Denied) (Go's
    /// `http.Server.ConnState`; Python has no such hook). For logs, gauges of open and
    /// idle connections, or a table of connections keyed by [`ConnectionId`].
    ///
    /// It runs on the thread that moves the connection, so keep it short; one
    /// connection's calls never overlap, and come in order. A panic in it is logged and
    /// the connection goes on. Datagram servers have no connections and never call it.
    ///
    /// # Examples
    ///
    /// A client that sends two lines on one kept-alive connection:
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use std::net::TcpStream;
    /// use std::sync::{Arc, Mutex};
    /// use socketserver::dispatch::Pool;
    /// use socketserver::{ConnState, StreamRequest, TcpServer};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let record = seen.clone();
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .dispatch(Pool::new(2))
    ///     .connection_state(move |_id, _client, state| record.lock().unwrap().push(state))
    ///     .bind(|req: &mut StreamRequest| {
    ///         let mut line = String::new();
    ///         if req.reader().read_line(&mut line)? > 0 {
    ///             req.writer().write_all(line.as_bytes())?;
    ///             req.park(); // wait for the next line with no thread
    ///         }
    ///         Ok(())
    ///     })?;
    /// let addr = server.local_addr();
    /// let server = server.serve_in_background()?;
    ///
    /// let client = TcpStream::connect(addr)?;
    /// let mut reader = BufReader::new(&client);
    /// for line in ["one\n", "two\n"] {
    ///     (&client).write_all(line.as_bytes())?;
    ///     let mut echo = String::new();
    ///     reader.read_line(&mut echo)?;
    /// }
    /// drop(reader);
    /// drop(client);
    /// server.stop()?; // the connection ends, at the latest with the server
    ///
    /// // New, Active, Parked (between the lines, when the second had not come yet:
    /// // usually), Active, Parked, and last Closed.
    /// let states = seen.lock().unwrap().clone();
    /// assert_eq!(states[..2], [ConnState::New, ConnState::Active]);
    /// assert_eq!(states.last(), Some(&ConnState::Closed));
    /// # Ok(())
    /// # }
    /// ```
    pub fn connection_state(
        mut self,
        hook: impl Fn(ConnectionId, &Address, ConnState) + Send + Sync + 'static,
    ) -> Self {
        self.config.hooks.connection_state = Some(Arc::new(hook));
        self
    }

    /// Whether the server times its requests for [`Metrics`](crate::Metrics): how long
    /// each waited to start and how long its exchange took. On by default; off saves the
    /// two clock reads around each exchange and leaves those two histograms empty (the
    /// counters, bytes included, are kept either way, and the moment a request becomes
    /// ready is still read, once per accept or poll).
    pub fn timings(mut self, enabled: bool) -> Self {
        self.config.timings = enabled;
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
    /// through `socket2::SockRef::from(&socket)`. Runs again when the server binds anew
    /// after a shutdown (then under the server's internal lock: do not call the server's
    /// own methods from it). An error fails the bind with [`Error::Bind`].
    ///
    /// # Platform-specific behavior
    ///
    /// The hook gets a `BorrowedFd` on Unix and a `BorrowedSocket` on Windows.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::TcpServer;
    ///
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .before_bind(|socket| {
    ///         socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 16)?;
    ///         Ok(())
    ///     })
    ///     .bind(|req| { req.writer().write_all(b"hi")?; Ok(()) })?;
    /// # drop(server);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    pub fn before_bind(
        mut self,
        hook: impl Fn(std::os::fd::BorrowedFd<'_>) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.options.before_bind = Some(BeforeBind(Arc::new(hook)));
        self
    }

    /// Called with each new server socket before it is bound; see the Unix version of
    /// this method (the hook gets a `BorrowedSocket` here).
    #[cfg(windows)]
    #[cfg_attr(docsrs, doc(cfg(windows)))]
    pub fn before_bind(
        mut self,
        hook: impl Fn(std::os::windows::io::BorrowedSocket<'_>) -> io::Result<()> + Send + Sync + 'static,
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
    /// use socketserver::{Address, TcpServer};
    ///
    /// let bound: Arc<Mutex<Option<Address>>> = Arc::default();
    /// let record = bound.clone();
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .after_bind(move |addr| {
    ///         *record.lock().unwrap() = Some(addr.clone());
    ///         Ok(())
    ///     })
    ///     .bind(|req| { req.writer().write_all(b"hi")?; Ok(()) })?;
    /// assert_eq!(bound.lock().unwrap().as_ref().and_then(Address::as_inet), Some(server.local_addr()));
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn after_bind(mut self, hook: impl Fn(&Address) -> io::Result<()> + Send + Sync + 'static) -> Self {
        self.config.hooks.after_bind = Some(Box::new(hook));
        self
    }

    /// Puts `layer` between each accepted connection and the engine
    /// (`testing::Faults::around`).
    pub(crate) fn interpose(mut self, layer: std::sync::Arc<dyn crate::config::Interpose>) -> Self {
        self.config.interpose = Some(layer);
        self
    }

    /// At most `n` connections (or datagrams being served) at once, in any dispatch
    /// mode, those [parked](StreamRequest::park) between messages included. How many
    /// exchanges run at once is the mode's to bound ([`Threading`]'s `max_threads`, a
    /// [`Pool`]'s workers), parked connections not counted. At the limit the server
    /// stops accepting until a connection ends: further connections wait in the kernel's
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

    /// Binds (and for streams, listens) and returns the server, ready to serve, with a
    /// closure as its handler. The transport says what the closure takes
    /// (`&mut StreamRequest` for TCP and Unix streams, `&mut DatagramRequest` for UDP and
    /// Unix datagrams), so `|req| ...` needs no type annotation; `?` takes any error.
    ///
    /// For a handler type of your own (a [`RequestHandler`] impl, an `Arc` of one, or a
    /// function returning another error type), use [`bind_handler`](Builder::bind_handler).
    ///
    /// # Errors
    /// [`Error::AddrInUse`] when the address is taken (for Unix sockets: a live server
    /// answers at the path); [`Error::Bind`] for any other failure, naming the address.
    /// A failed bind leaks no descriptor.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, Write};
    /// use socketserver::{dispatch::Threading, TcpServer};
    ///
    /// let server = TcpServer::builder("127.0.0.1:0").dispatch(Threading::new()).bind(|req| {
    ///     let mut line = String::new();
    ///     while req.reader().read_line(&mut line)? > 0 {
    ///         let n: u64 = line.trim().parse()?; // a parse error reaches handle_error
    ///         writeln!(req.writer(), "{}", n * 2)?;
    ///         line.clear();
    ///     }
    ///     Ok(())
    /// })?;
    /// # drop(server);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn bind<F>(self, handler: F) -> Result<Server<T>>
    where
        F: Fn(&mut T::Request) -> HandlerResult + Send + Sync + 'static,
    {
        self.bind_handler(FnHandler(handler))
    }

    /// Binds as [`bind`](Builder::bind) does, with any [`RequestHandler`]: a type of your
    /// own, an `Arc` of one (to read its state from outside), or a function or closure
    /// returning `Result<(), E>` for any error type `E`.
    ///
    /// # Errors
    /// As [`bind`](Builder::bind).
    pub fn bind_handler<H>(self, handler: H) -> Result<Server<T>>
    where
        H: RequestHandler<T::Request>,
    {
        // A socket the user passed in is theirs: it stays open across serve calls.
        let reopenable = !matches!(self.target, BindTarget::Existing(_));
        let bound = T::open(self.target, &self.options)?;
        bound.endpoint.set_nonblocking()?;
        let local = bound.endpoint.local_address()?;
        if self.config.hooks.refuse_when_full.is_some() && self.dispatch.is_sequential() {
            if let Some(path) = bound.owned_path {
                path.remove();
            }
            return Err(Error::Bind {
                addr: local.to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, SEQUENTIAL_CANNOT_REFUSE),
            });
        }
        if let Some(hook) = &self.config.hooks.after_bind {
            // Dropping `bound` on error closes the socket; remove a file it created.
            if let Err(source) = hook(&local) {
                if let Some(path) = bound.owned_path {
                    path.remove();
                }
                return Err(Error::Bind { addr: local.to_string(), source });
            }
        }
        let policy = Policy {
            shutdown_deadline: self.config.shutdown_deadline,
            waits_for_requests: self.dispatch.waits_for_requests(),
            reopenable,
            workers: self.dispatch.max_concurrent(),
        };
        let control = Arc::new(Control::new(local, bound, policy));
        let rebind = Rebind { options: self.options, reopen: T::reopen };
        let engine = Engine::new(control, T::Request::erase(handler), self.dispatch, self.config, rebind)?;
        Ok(Server::new(engine))
    }
}

impl<T: Transport<Request = StreamRequest>> Builder<T> {
    /// Settings for a server that strangers can reach, in one call: the defaults follow
    /// Python's `socketserver` (no timeouts, no connection limit), which suits a
    /// classroom and lets one hostile client hold a connection, a thread and a
    /// descriptor forever. This sets:
    ///
    /// | setting | value | what it stops |
    /// |---|---|---|
    /// | [`read_timeout`](Builder::read_timeout) | 30 s | a client that connects and goes silent (slowloris holding each read) |
    /// | [`write_timeout`](Builder::write_timeout) | 30 s | a client that stops reading its replies, so writes block |
    /// | [`max_connections`](Builder::max_connections) | 512 | descriptor and thread exhaustion: past it, connections wait in the backlog (or are refused with [`refuse_when_full`](Builder::refuse_when_full)) |
    /// | [`idle_timeout`](Builder::idle_timeout) | 30 s | a [parked](StreamRequest::park) keep-alive client that never sends its next request holding its place under the limit |
    /// | `proxy_header_timeout` (feature `proxy-protocol`) | 5 s | a peer that never sends its PROXY header |
    ///
    /// Each is an ordinary setting: call the setter after this one to change a value
    /// (a setter called before is overwritten). What it cannot bound is the handler's
    /// own reading: a client that sends a byte every 29 s passes any read timeout. A
    /// server that declares its [`frame`](Builder::frame) is safe from that (it reads a
    /// whole message in the poller, holding no thread, and the idle timeout counts from
    /// the message's first byte); without one, a handler sets a deadline per message
    /// ([`StreamRequest::set_deadline`]) and bounds each line it reads
    /// ([`Reader::read_line_bounded`](crate::Reader::read_line_bounded)).
    /// SECURITY.md, beside the crate's README, lists what a hostile client can and cannot
    /// do with these settings and without them.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use socketserver::{dispatch::Threading, StreamRequest, TcpServer};
    ///
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .internet_facing()
    ///     .read_timeout(Duration::from_secs(10)) // this server's clients are quick
    ///     .dispatch(Threading::new())
    ///     .bind(|req: &mut StreamRequest| {
    ///         std::io::copy(&mut req.reader(), &mut std::io::sink())?;
    ///         Ok(())
    ///     })?;
    /// # drop(server);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn internet_facing(mut self) -> Self {
        self.config.read_timeout = Some(Duration::from_secs(30));
        self.config.write_timeout = Some(Duration::from_secs(30));
        self.config.max_connections = Some(512);
        self.config.idle_timeout = Some(Duration::from_secs(30));
        #[cfg(feature = "proxy-protocol")]
        {
            self.config.proxy_header_timeout = Duration::from_secs(5);
        }
        self
    }

    /// Every connection starts with a PROXY protocol header (v1 or v2), as haproxy's
    /// `send-proxy` and nginx's `proxy_protocol on` send: the server reads it before
    /// `setup`, and the handler's [`client_addr`](StreamRequest::client_addr) is the real
    /// client's, with [`proxy_addr`](StreamRequest::proxy_addr) the proxy's.
    ///
    /// Alone, this trusts every peer: anyone who can connect may claim any address. On
    /// TCP, name the proxies with [`trusted_proxies`](Builder::trusted_proxies), so that
    /// only their headers are read; on a Unix socket, every peer is trusted, and who may
    /// connect is the socket file's [`permissions`](Builder::permissions). A connection
    /// from a trusted peer without a valid header is closed, counted in
    /// [`Stats::bad_proxy_headers`](crate::Stats::bad_proxy_headers) and reported to
    /// `handle_error` as a [`Phase::Setup`](crate::Phase::Setup) error, and the handler
    /// does not run: `InvalidData` ("PROXY protocol: ...") for a malformed
    /// header, `UnexpectedEof` if the connection ends inside it, `TimedOut` if it has not
    /// arrived within [`proxy_header_timeout`](Builder::proxy_header_timeout) (default 10
    /// seconds).
    ///
    /// Which address each hook sees: `verify_request`, the handler
    /// ([`client_addr`](StreamRequest::client_addr)) and errors after the header see the
    /// client the header names (for a `LOCAL` header, such as a health check, the
    /// peer's own); the `refuse_when_full` hook and errors before or in the header see
    /// the peer that connected, the proxy, which the handler also finds in
    /// [`proxy_addr`](StreamRequest::proxy_addr). Feature `proxy-protocol`; see
    /// [`proxy_protocol`](crate::proxy_protocol).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use socketserver::TcpServer;
    ///
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .proxy_protocol(true)
    ///     .bind(|req| {
    ///         let client = req.client_addr().to_string();
    ///         req.writer().write_all(client.as_bytes())?;
    ///         Ok(())
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

    /// How long a peer may take, from the start of its connection, to send the whole
    /// PROXY protocol header; a peer that has not is closed and reported with
    /// `TimedOut`. Default
    /// [`DEFAULT_HEADER_TIMEOUT`](crate::proxy_protocol::DEFAULT_HEADER_TIMEOUT), 10
    /// seconds. A proxy sends its header at once, so a short one (a second) costs a
    /// real proxy nothing, and matters in sequential mode, where a peer that connects
    /// and stays silent holds up every other client until it runs out. Feature
    /// `proxy-protocol`.
    ///
    /// # Panics
    /// Panics if `timeout` is zero.
    #[cfg(feature = "proxy-protocol")]
    pub fn proxy_header_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "a zero PROXY header timeout is not allowed");
        self.config.proxy_header_timeout = timeout;
        self
    }

    /// When the server is full (see [`max_connections`](Builder::max_connections)),
    /// accept each further connection, call `hook` to write a short reply (such as
    /// `"-ERR busy\r\n"` or an HTTP 503), and close it, instead of leaving it to wait in
    /// the backlog. Counted in [`Stats::refused`](crate::Stats::refused).
    ///
    /// The server is full when `max_connections` connections are open (parked ones
    /// included), or when the mode runs as many requests as it may at once
    /// ([`Threading`]'s `max_threads`, a [`Pool`]'s workers).
    ///
    /// The hook runs on the accepting thread, so it must be quick: its writes time out
    /// after 100 ms. Refusing needs a thread free to accept: [`Threading`] always has
    /// one, and a [`Pool`] with this hook keeps one serve loop more than its workers, so
    /// that one is free when `workers` requests run. (New connections start only while
    /// fewer than `workers` requests run; a [parked](crate::StreamRequest::park)
    /// connection whose client sends more may still be served on that loop, so up to
    /// `workers + 1` requests can run at once.)
    ///
    /// # Errors
    ///
    /// A sequential server has no thread to refuse on while its request runs, so `bind`
    /// fails with [`Error::Bind`] ([`InvalidInput`](io::ErrorKind::InvalidInput)) saying
    /// so: use `Pool::new(1)` for one request at a time that refuses the rest.
    ///
    /// # Examples
    ///
    /// Two clients served at once; a third is told so and closed:
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Read, Write};
    /// use std::net::TcpStream;
    /// use socketserver::{dispatch::Pool, TcpServer};
    ///
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .dispatch(Pool::new(2))
    ///     .refuse_when_full(|mut connection, _client| connection.write_all(b"busy\n"))
    ///     .bind(|req| {
    ///         for line in req.reader().lines() {
    ///             writeln!(req.writer(), "{}", line?)?;
    ///         }
    ///         Ok(())
    ///     })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    /// let mut served = Vec::new();
    /// for n in 0..2 {
    ///     let mut client = BufReader::new(TcpStream::connect(addr)?);
    ///     writeln!(client.get_mut(), "hello {n}")?; // its request runs until it leaves
    ///     let mut reply = String::new();
    ///     client.read_line(&mut reply)?;
    ///     served.push(client);
    /// }
    /// let mut third = String::new();
    /// TcpStream::connect(addr)?.read_to_string(&mut third)?;
    /// assert_eq!(third, "busy\n");
    /// drop(served);
    /// background.stop()?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
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
    /// [`DEFAULT_BACKLOG`] (4096, or the system's lower limit); Python's 5 drops connections under bursts.
    #[doc(alias = "request_queue_size")]
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.options.backlog = backlog.min(i32::MAX as u32) as i32;
        self
    }

    /// The read buffer size of each request's [`Reader`](crate::Reader) (Python's
    /// `rbufsize`). Default [`DEFAULT_RBUFSIZE`](crate::DEFAULT_RBUFSIZE) (8192).
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
    /// read through the request's reader that waits longer fails with
    /// [`TimedOut`](io::ErrorKind::TimedOut) ("timed out: the client sent nothing for
    /// 30s"), which ends the request through `handle_error`. Default: none.
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
    /// [`Phase::Respond`](crate::Phase::Respond). Closing itself always follows.
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

    /// How long a [parked](StreamRequest::park) connection may wait for its client's
    /// next bytes before the server closes it (running `finish`); `None` keeps parked
    /// connections until the client leaves or the server shuts down. Default
    /// [`DEFAULT_IDLE_TIMEOUT`](crate::DEFAULT_IDLE_TIMEOUT), 60 s (nginx's keep-alive
    /// timeout is 75 s, Go's `IdleTimeout` none): a client that went away without
    /// closing does not hold its place under `max_connections` for ever.
    ///
    /// Without a [`read_timeout`](Builder::read_timeout), it is also the read timeout
    /// of a connection's exchanges after its first park, so that a client that sends
    /// half a message holds a thread no longer than an idle one holds its place.
    ///
    /// # Panics
    /// Panics if `timeout` is zero.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        assert!(timeout != Some(Duration::ZERO), "a zero idle timeout is not allowed");
        self.config.idle_timeout = timeout;
        self
    }

    /// The client speaks first (HTTP, RESP, most request-reply protocols): a new
    /// connection waits [parked](StreamRequest::park), holding no thread, until its first
    /// bytes arrive, and only then are its PROXY header read and `verify_request`,
    /// `setup` and `handle` run. So a client that connects and says nothing holds no
    /// pool worker (nor the sequential loop) from the others, for up to the idle timeout;
    /// if it leaves or times out before sending anything, none of the handler's methods
    /// run. Default `false`: the handler runs at once, as a server that speaks first
    /// (a greeting, a banner, a chat's welcome) needs.
    ///
    /// Outside the serve loop ([`Server::process_request`](crate::Server::process_request))
    /// a connection starts at once.
    pub fn client_speaks_first(mut self, yes: bool) -> Self {
        self.config.client_speaks_first = yes;
        self
    }

    /// Declares how the protocol's messages are delimited, so that the server reads a
    /// whole message, without blocking and holding no thread, before it runs `handle`:
    /// a client that sends half a message, or trickles it, holds no worker from the
    /// others, and a message longer than the frame's maximum closes its connection with
    /// [`Error::Message`](crate::Error::Message), after the reply of
    /// [`bad_message`](Builder::bad_message) if set. See [`Frame`](crate::Frame). Default:
    /// none (`handle` runs once the first bytes are in, and reads the rest itself).
    ///
    /// Implies [`client_speaks_first`](Builder::client_speaks_first). Outside the serve
    /// loop ([`Server::process_request`](crate::Server::process_request)) a connection
    /// is not framed: it starts at once and its handler reads as without a frame.
    #[doc(alias = "decoder")]
    pub fn frame(mut self, frame: crate::frame::Frame) -> Self {
        self.config.frame = Some(frame);
        self
    }

    /// What to send a client whose message breaks the [frame](Builder::frame) (longer
    /// than its maximum, or refused by its function) before its connection closes: the
    /// hook writes the reply into the buffer it is given, from the error. Redis answers
    /// an over-long request with `-ERR Protocol error`, an HTTP server with `431` or
    /// `400`. Default: nothing is sent; the connection closes with what arrived of the
    /// message unread, which the client sees as a reset.
    ///
    /// The reply is sent without waiting, as much as the socket takes at once (an error
    /// reply is a few bytes; a client that reads nothing gets what fits), so that a
    /// hostile client cannot hold a thread here. What has arrived of the bad message is
    /// then read and dropped (up to 64 KiB, without waiting), so that the close does not
    /// reset the connection before the client reads the reply. That is best effort: a
    /// client that is still sending (the rest of an over-long message, or more messages)
    /// may see the close as a reset, which can discard the reply. Then, as without the
    /// hook, the error goes to [`handle_error`](Builder::handle_error) as
    /// [`Error::Message`](crate::Error::Message), and the connection ends (`finish` runs
    /// if `setup` did). A hook that fails or panics sends nothing (not what it wrote
    /// before failing); that is reported there too, and the connection ends all the
    /// same.
    ///
    /// The error's text names the limit broken, or what a frame function returned or
    /// panicked with; a server for strangers may prefer a fixed reply.
    ///
    /// # Examples
    ///
    /// A line server that says why before it closes:
    ///
    /// ```
    /// use std::io::{BufRead, Read, Write};
    /// use std::net::TcpStream;
    /// use socketserver::{Frame, TcpServer};
    ///
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     .frame(Frame::lines(16))
    ///     .bad_message(|error, reply| writeln!(reply, "ERR {error}"))
    ///     .handle_error(|_, _| {}) // expected here: not logged
    ///     .bind(|req| {
    ///         let mut line = String::new();
    ///         req.reader().read_line(&mut line)?;
    ///         write!(req.writer(), "{line}")?;
    ///         req.park();
    ///         Ok(())
    ///     })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    /// let mut client = TcpStream::connect(addr)?;
    /// client.write_all(b"a line much longer than sixteen bytes\n")?;
    /// let mut reply = String::new();
    /// client.read_to_string(&mut reply)?; // the reply, then the close
    /// assert!(reply.starts_with("ERR "), "{reply}");
    /// background.stop()?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn bad_message(
        mut self,
        hook: impl Fn(&io::Error, &mut Vec<u8>) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.config.bad_message = Some(Box::new(hook));
        self
    }
}

impl<T: Transport<Request = DatagramRequest>> Builder<T> {
    /// The largest datagram read; longer ones are truncated to it, as in Python, and
    /// the handler can tell ([`DatagramRequest::truncated`]). Default
    /// [`DEFAULT_MAX_PACKET_SIZE`](crate::DEFAULT_MAX_PACKET_SIZE) (8192).
    ///
    /// # Platform-specific behavior
    ///
    /// On Windows a datagram more than one byte longer than this is dropped and reported
    /// to `handle_error` as an [`Error::Accept`] (`InvalidData`) instead: Windows does not
    /// say who sent a datagram it had to cut. One byte longer is served as truncated
    /// everywhere.
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
    ///
    /// # Platform-specific behavior
    ///
    /// On Windows the option is never set, whatever this says: there `SO_REUSEADDR` lets
    /// a second socket bind a port in use and take its traffic, and a listener binds over
    /// `TIME_WAIT` connections without it (as std's `TcpListener::bind` does).
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

#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
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
    /// use socketserver::UnixStreamServer;
    ///
    /// let path = std::env::temp_dir().join(format!("perm-doc-{}.sock", std::process::id()));
    /// let server = UnixStreamServer::builder(&path)
    ///     .permissions(0o600)
    ///     .bind(|req| { req.writer().write_all(b"hi")?; Ok(()) })?;
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
    /// Reads PROXY protocol headers (turning [`proxy_protocol`](Builder::proxy_protocol)
    /// on) from these peers only: addresses or networks, IPv4 or IPv6, such as
    /// `"10.0.0.0/8".parse::<IpNet>()?` or an `IpAddr` (an IPv4 network also matches a
    /// dual-stack socket's IPv4-mapped peers). This is the check haproxy and nginx
    /// document for their own servers (`set_real_ip_from`): a header is believed only
    /// from the proxy, as anyone else could name any client.
    ///
    /// A connection from any other peer is closed unread, before `verify_request` and
    /// the handler, and counted in [`Stats::denied`](crate::Stats::denied); with
    /// [`allow_direct_clients`](Builder::allow_direct_clients) it is served instead as a
    /// client of its own, with its own address, and whatever it sends, a header
    /// included, is its request's data. Either way a peer that is not trusted never
    /// changes its address. An empty list trusts no one. Calling this again replaces
    /// the list. Feature `proxy-protocol`.
    ///
    /// [`IpNet`]: crate::proxy_protocol::IpNet
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use socketserver::proxy_protocol::IpNet;
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// let server = TcpServer::builder("127.0.0.1:0")
    ///     // The proxies: 10.0.0.0/8, and this machine (which the doctest connects from).
    ///     .trusted_proxies(["10.0.0.0/8".parse::<IpNet>()?, "127.0.0.1".parse()?])
    ///     .bind(|req: &mut StreamRequest| {
    ///         let client = req.client_addr().to_string();
    ///         req.writer().write_all(client.as_bytes())?;
    ///         Ok(())
    ///     })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    /// let mut proxy = std::net::TcpStream::connect(addr)?;
    /// proxy.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n")?;
    /// let mut reply = String::new();
    /// proxy.read_to_string(&mut reply)?;
    /// assert_eq!(reply, "203.0.113.7:51000");
    /// background.stop()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "proxy-protocol")]
    pub fn trusted_proxies<I>(mut self, proxies: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<crate::proxy_protocol::IpNet>,
    {
        self.config.proxy_protocol = true;
        self.config.trusted_proxies = Some(proxies.into_iter().map(Into::into).collect());
        self
    }

    /// With [`trusted_proxies`](Builder::trusted_proxies): whether a connection from a
    /// peer that is not a trusted proxy is served as a direct client (`true`: no header
    /// is read, its address is its own, `verify_request` judges it) or closed unread
    /// (`false`, the default). For a server reached both through its proxies and
    /// directly, such as from inside the network. Feature `proxy-protocol`.
    #[cfg(feature = "proxy-protocol")]
    pub fn allow_direct_clients(mut self, allow: bool) -> Self {
        self.config.direct_clients = allow;
        self
    }

    /// `TCP_NODELAY` on every connection (Python's `disable_nagle_algorithm`). Default:
    /// **on**, unlike Python: a reply written in several pieces (three `write_all`s) is
    /// otherwise held by Nagle's algorithm until the client's delayed ACK, about 40 ms
    /// per round trip. Measured by `cargo run --release -p bench --bin writeln_rtt`
    /// (loopback, one client, a line protocol): three `write_all`s per reply take 48 ms
    /// with it off and 26 µs with it on; a `writeln!` reply, which is one send, takes
    /// 12–35 µs either way. Turn it off for bulk transfers of many small writes, where
    /// fewer, fuller segments matter more than latency.
    #[doc(alias = "disable_nagle_algorithm")]
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.config.nodelay = nodelay;
        self
    }
}

impl<T: Transport> Server<T> {
    /// Binds `addr` and serves it with `handler`, with the defaults (sequential
    /// dispatch, and the transport's own below); [`builder`](Server::builder) for any
    /// other setting. The handler's argument is a [`StreamRequest`] for the stream
    /// transports and a [`DatagramRequest`] for the datagram ones.
    ///
    /// | server | `addr` | defaults |
    /// |---|---|---|
    /// | [`TcpServer`](crate::TcpServer) | what [`ToSocketAddrs`](std::net::ToSocketAddrs) takes (`"127.0.0.1:0"`, a `SocketAddr`); port 0 picks a free port, read it with `local_addr` | backlog 4096, `SO_REUSEADDR` on |
    /// | [`UdpServer`](crate::UdpServer) | the same | datagrams up to 8192 bytes, `SO_REUSEADDR` off |
    /// | [`UnixStreamServer`](crate::UnixStreamServer), [`UnixDatagramServer`](crate::UnixDatagramServer) (Unix only) | a path for the socket file | a stale socket file left by a server that died is replaced; closing the server removes the file |
    ///
    /// # Errors
    /// [`Error::AddrInUse`] naming the address (a live server at a Unix path too), or
    /// [`Error::Bind`] (at a Unix path, also for anything that is not a socket, which is
    /// never deleted).
    pub fn bind<A, F>(addr: A, handler: F) -> Result<Self>
    where
        A: BindAddress<T>,
        F: Fn(&mut T::Request) -> HandlerResult + Send + Sync + 'static,
    {
        Self::builder(addr).bind(handler)
    }

    /// As `bind`, with any [`RequestHandler`] (see [`Builder::bind_handler`]).
    ///
    /// # Errors
    /// As `bind`.
    pub fn bind_handler<A, H>(addr: A, handler: H) -> Result<Self>
    where
        A: BindAddress<T>,
        H: RequestHandler<T::Request>,
    {
        Self::builder(addr).bind_handler(handler)
    }

    /// A [`Builder`] for a server on `addr` (an address or a path, as for
    /// [`bind`](Server::bind)).
    pub fn builder<A: BindAddress<T>>(addr: A) -> Builder<T> {
        Builder::new(addr.target())
    }
}

impl<T: Transport<Request = StreamRequest>> Server<T> {
    /// A [`Builder`] that serves a listener you created, bound and set listening
    /// yourself (Python's `bind_and_activate=False`): a `TcpListener` for
    /// [`TcpServer`](crate::TcpServer), a `UnixListener` for
    /// [`UnixStreamServer`](crate::UnixStreamServer). For socket options this crate
    /// does not set, or a descriptor inherited from a parent (`OwnedFd` converts into
    /// either). Socket options on the builder do not apply to it; it is put in
    /// non-blocking mode, which the serve loop needs.
    ///
    /// The listener is yours: a shutdown does not close it, so the server serves it
    /// again at the next serve call, and connections that arrive in between wait in its
    /// backlog (the server closes it when it is closed, and never removes a Unix
    /// listener's socket file). A socket the server bound itself is closed at a shutdown
    /// instead, and bound anew (see [`Server`]).
    pub fn from_listener(listener: impl Into<T::Socket>) -> Builder<T> {
        Builder::new(BindTarget::Existing(T::existing(listener.into())))
    }
}

impl<T: Transport<Request = DatagramRequest>> Server<T> {
    /// A [`Builder`] that serves a datagram socket you bound yourself: a `UdpSocket` for
    /// [`UdpServer`](crate::UdpServer), a `UnixDatagram` for
    /// [`UnixDatagramServer`](crate::UnixDatagramServer). Socket options on the builder
    /// do not apply to it; it is put in non-blocking mode. It is yours, as
    /// [`from_listener`](Server::from_listener) explains: it serves again after a
    /// shutdown, and a Unix socket's file is never removed.
    pub fn from_socket(socket: impl Into<T::Socket>) -> Builder<T> {
        Builder::new(BindTarget::Existing(T::existing(socket.into())))
    }
}
