//! Blocking TCP, UDP and Unix-socket servers in the shape of Python's `socketserver`,
//! without an async runtime.
//!
//! A server is a transport ([`TcpServer`], [`UdpServer`], [`UnixStreamServer`],
//! [`UnixDatagramServer`]) × a dispatch mode ([`Sequential`](dispatch::Sequential),
//! [`Threading`](dispatch::Threading), [`Pool`](dispatch::Pool)) × your
//! [`RequestHandler`], run through one lifecycle: bind, [`serve_forever`](Server::serve_forever)
//! or [`handle_request`](Server::handle_request), [`shutdown`](Server::shutdown) from any
//! thread, [`close`](Server::close) (or drop).
//!
//! # Example
//!
//! An echo server on a free port, served in the background, and a client:
//!
//! ```
//! use std::io::{Read, Write};
//! use socketserver::{dispatch::Threading, TcpServer};
//!
//! let server = TcpServer::builder("127.0.0.1:0")
//!     .dispatch(Threading::new())
//!     .bind(|req| {
//!         std::io::copy(&mut req.reader(), &mut req.writer())?;
//!         Ok(())
//!     })?;
//! let addr = server.local_addr();
//! let background = server.serve_in_background()?;
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"hello")?;
//! client.shutdown(std::net::Shutdown::Write)?;
//! let mut echoed = String::new();
//! client.read_to_string(&mut echoed)?;
//! assert_eq!(echoed, "hello");
//!
//! background.stop()?; // shuts down, joins the thread, closes the server
//! # Ok::<(), socketserver::Error>(())
//! ```
//!
//! # Design
//!
//! - **Blocking I/O, one thread per running request** (or a fixed pool). No runtime.
//!   `unsafe` is denied but in two calls: registering a socket with the poller, and
//!   taking ownership of the descriptors systemd passes (`activation`, Linux).
//! - **No polling.** The server socket is non-blocking; the serve loop takes what it
//!   has and otherwise sleeps in the system's poller (epoll, kqueue, IOCP) with no
//!   timeout, so an idle server makes no wakeups. `shutdown` wakes every serve loop at
//!   once through its poller, on every platform, and gives up a socket the server bound
//!   itself, so new connections are refused; a later `serve_forever` binds the same
//!   address anew, and a socket you passed in serves again (see [`Server`]).
//! - **Bounded.** [`Builder::max_connections`] (in every mode), Threading's `max_threads`
//!   and the pool's size stop accepting at their limit; waiting connections stay in the
//!   kernel backlog (4096 by default), not in an unbounded queue, or are refused with a
//!   short reply ([`Builder::refuse_when_full`]).
//! - **Ready for strangers in one call.** The defaults are Python's (no timeouts, no
//!   connection limit); [`Builder::internet_facing`] sets read and write timeouts, a
//!   connection limit and a PROXY header deadline for a server the internet reaches.
//!   See [Security](#security).
//! - **Errors stay with their request.** A handler error or panic reaches
//!   `handle_error`; the server goes on, and `finish` still runs.
//! - **Handlers are testable without sockets.** [`testing::TestStream`] and
//!   [`testing::TestDatagram`] run a handler over in-memory bytes, through the same
//!   phases a server runs.
//! - **Clients are testable against a misbehaving server.** [`testing::ScriptedServer`]
//!   plays a script of expectations and replies and says where the client deviated;
//!   [`testing::FaultProxy`] puts latency, resets, silence or lost datagrams between a
//!   client and any server.
//! - **One engine in layers.** The platform seam (the wake-up, error classification,
//!   limits), sockets, the control block that requests and handles share (lifecycle,
//!   counts), requests, handlers, the engine (the one serve loop, admission, running a
//!   request), then the builder and the server: each layer uses only those below it,
//!   which `tests/layers.rs` checks.
//!
//! # Python names
//!
//! The [`migration`] guide maps every name of Python's `socketserver`, shows Python's
//! documentation examples beside their Rust versions, and says where this crate differs
//! on purpose. In short:
//!
//! | Python `socketserver` | here |
//! |---|---|
//! | `TCPServer`, `UDPServer` | [`TcpServer`], [`UdpServer`] (sequential by default, as in Python) |
//! | `UnixStreamServer`, `UnixDatagramServer` | [`UnixStreamServer`], [`UnixDatagramServer`] |
//! | `ThreadingMixIn`, `ThreadingTCPServer`, ... | [`dispatch::Threading`], [`ThreadingTcpServer`], [`ThreadingUdpServer`], [`ThreadingUnixStreamServer`], [`ThreadingUnixDatagramServer`] |
//! | (none) | [`dispatch::Pool`]: a fixed worker pool |
//! | overriding `process_request` to run requests elsewhere | an [`Executor`](dispatch::Executor) of your own, given to [`Builder::dispatch`] |
//! | (none) | [`StreamRequest::park`]: a keep-alive connection waits between requests in the server's poller, holding no thread, so a pool of a few workers serves thousands of clients |
//! | `ForkingMixIn` | not offered: forking a multi-threaded process is unsound; use a pool, or processes sharing a port with `reuse_port` |
//! | `BaseRequestHandler`, `StreamRequestHandler`, `DatagramRequestHandler` | [`RequestHandler`] with [`StreamRequest`] or [`DatagramRequest`] |
//! | `setup` / `handle` / `finish` | the same, on [`RequestHandler`] |
//! | `rfile`, `wfile` | [`StreamRequest::reader`], [`StreamRequest::writer`]; for datagrams [`DatagramRequest::packet`], [`DatagramRequest::reply`] |
//! | `request`, `client_address`, `server` | [`StreamRequest::connection`], `client_addr()`, `server()` |
//! | `server_address` | [`Server::local_addr`] |
//! | `serve_forever(poll_interval)` | [`Server::serve_forever`]: no polling |
//! | `shutdown()` | [`Server::shutdown`], [`ServerHandle::shutdown`] |
//! | `handle_request()`, `timeout`, `handle_timeout()` | [`Server::handle_request`], [`Builder::timeout`], [`Builder::handle_timeout`] |
//! | `verify_request`, `handle_error`, `service_actions` | [`Builder::verify_request`], [`Builder::handle_error`], [`Builder::service_actions`] |
//! | `shutdown_request`, `close_request` | [`Builder::shutdown_request`] (default: shut down the write half); the server always closes afterwards |
//! | `server_close()`, `with server:` | [`Server::close`], drop |
//! | `request_queue_size` (5) | [`Builder::backlog`] (4096) |
//! | `allow_reuse_address`, `allow_reuse_port` | [`Builder::reuse_address`], [`Builder::reuse_port`] |
//! | `max_packet_size` | [`Builder::max_packet_size`] |
//! | `rbufsize`, `wbufsize`, `timeout` (stream handler), `disable_nagle_algorithm` | [`Builder::rbufsize`], [`Builder::wbufsize`], [`Builder::read_timeout`], [`Builder::nodelay`] |
//! | `daemon_threads`, `block_on_close` | [`dispatch::Threading::daemon_threads`], [`dispatch::Threading::block_on_close`] |
//! | `bind_and_activate=False`, `server_activate` | bind a socket yourself, then `TcpServer::from_listener` |
//! | `server_bind` override | [`Builder::before_bind`], [`Builder::after_bind`] |
//! | `get_request` override | your own accept loop and [`Server::process_request`] |
//! | `fileno()` | `AsRawFd` for [`Server`] |
//!
//! # Platform-specific behavior
//!
//! Linux, macOS, FreeBSD (and the other BSDs) and Windows, on one wake-up mechanism.
//! Every platform difference lives in one private module (`sys`), as in mio and
//! socket2; the items that exist on some platforms only say so.
//!
//! | | Linux | macOS, FreeBSD | Windows |
//! |---|---|---|---|
//! | TCP, UDP, every dispatch mode, the hooks, limits | yes | yes | yes |
//! | wake-up (shutdown, idle) | epoll | kqueue | IOCP |
//! | Unix stream and datagram sockets, `permissions` | yes | yes | no (no such sockets) |
//! | `shutdown_on_signals` | SIGINT, SIGTERM | SIGINT, SIGTERM | Ctrl-C, Ctrl-Break |
//! | `fileno()` | `AsRawFd` | `AsRawFd` | `AsRawSocket` |
//! | systemd socket activation (`activation`) | yes | no | no |
//! | `reuse_port` | yes | yes | no (an `Unsupported` bind error) |
//! | new connections during a graceful drain | refused at once | refused at once in threading mode; in sequential and pool modes once the running requests end | as macOS |
//! | how CI checks it | the whole suite, real clients, deployment | `cargo check` of the library, all features, warnings denied | the test suite under Wine, and the echo example served to real clients in every mode |
//!
//! # Security
//!
//! Everything read from the network is treated as hostile: the PROXY protocol parser,
//! [`Reader`], the datagram path and the examples' HTTP and RESP parsers are fuzzed
//! (`fuzz/`, run by CI), and PROXY headers are believed only from the proxies the
//! server names (`Builder::trusted_proxies`, feature `proxy-protocol`). The threat
//! model, `SECURITY.md` beside the README, says what a hostile client can and cannot
//! do against the defaults and against [`Builder::internet_facing`], each claim with
//! the test that shows it, and how to report a vulnerability.
//!
//! # Features
//!
//! - **`signals`** (on): `ServerHandle::shutdown_on_signals`, a graceful shutdown on
//!   SIGINT and SIGTERM, on `signal-hook`.
//! - `proxy-protocol` (off): `Builder::proxy_protocol`, `Builder::trusted_proxies` and
//!   the `proxy_protocol` module's parser: the real client address behind haproxy or
//!   nginx, believed only from the proxies named.
//! - `threadpool` (off): `dispatch::ThreadPoolDispatch`, serving through a
//!   `threadpool::ThreadPool` you already own.
//!
//! # Deployment
//!
//! Past one process, scale with what exists: several processes on one port
//! ([`Builder::reuse_port`]), systemd socket activation ([`activation::ListenFds`]), or a
//! load balancer in front (with the PROXY protocol for the client address). Stats for
//! health checks come from [`ServerHandle::stats`].
//!
//! # Logging
//!
//! Handler errors and caught panics go to the `handle_error` hook. Its default logs
//! them with `log::error!` (target `socketserver::server`) when a logger takes errors,
//! and otherwise writes them to stderr, as Python's `handle_error` does, so an error
//! never vanishes; so do the warning that accepting backs off because descriptors ran
//! out and the other error-level messages (requests still running after the shutdown
//! deadline closed their connections, a background server that ended with an error).
//! The rest goes through `log` only: `warn` for a shutdown deadline that passed or a
//! pool that could not start all its workers, `info` for signals and for accepting
//! again after a back-off. Rust's panic hook still prints a handler's panic
//! message to stderr. The `http` example installs a small logger (`--verbose`).
// `unsafe` is denied everywhere but two places, which no safe API can do: registering a
// socket with the poller (`net::ready`), taking ownership of the descriptors systemd
// passes (`activation`).
#![deny(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]
// On docs.rs, each platform-specific item says which platforms have it.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The sealed `Transport` trait's hidden methods take crate-private types on purpose:
// users name the transports but can neither call nor implement those methods.
#![allow(private_interfaces)]

// The modules, in layers: each uses only the modules above it in this list, which
// tests/layers.rs checks (rustfmt.toml keeps the order).
//
// Errors and reports, used everywhere.
mod error;
mod report;
mod frame;
// The platform seam, then sockets: addresses, connections, binding.
mod sys;
mod net;
#[cfg(feature = "proxy-protocol")]
pub mod proxy_protocol;
// The control block (lifecycle, counts, `ServerHandle`), then what handlers see.
mod handle;
mod metrics;
mod request;
mod handler;
pub mod transport;
// Settings and dispatch modes, then the engine: the serve loop, admission, a request's run.
mod config;
pub mod dispatch;
mod engine;
// The public server and its builder, and what stands on them.
mod server;
mod builder;
mod python;
#[cfg(feature = "signals")]
mod signals;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub mod activation;
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub mod restart;
pub mod testing;
pub mod migration;

/// The code of both READMEs, compiled and run as doctests by `cargo test`, so that what a
/// newcomer copies from them works (blocks marked `no_run` serve for ever: compiled only).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The code of README.zh-CN.md, as [`ReadmeDoctests`].
#[cfg(doctest)]
#[doc = include_str!("../README.zh-CN.md")]
pub struct ReadmeZhCnDoctests;

/// The guide's chapters (`guide/`, in English and Chinese), compiled and run as doctests
/// by `cargo test`, as the READMEs are: every snippet a reader copies works.
#[cfg(doctest)]
pub mod guide {
    #[doc = include_str!("../guide/en/01-socket-api.md")]
    pub struct Chapter01En;
    #[doc = include_str!("../guide/zh-CN/01-socket-api.md")]
    pub struct Chapter01ZhCn;
    #[doc = include_str!("../guide/en/02-tcp-and-udp.md")]
    pub struct Chapter02En;
    #[doc = include_str!("../guide/zh-CN/02-tcp-and-udp.md")]
    pub struct Chapter02ZhCn;
    #[doc = include_str!("../guide/en/03-the-socketserver-shape.md")]
    pub struct Chapter03En;
    #[doc = include_str!("../guide/zh-CN/03-the-socketserver-shape.md")]
    pub struct Chapter03ZhCn;
    #[doc = include_str!("../guide/en/04-concurrency.md")]
    pub struct Chapter04En;
    #[doc = include_str!("../guide/zh-CN/04-concurrency.md")]
    pub struct Chapter04ZhCn;
    #[doc = include_str!("../guide/en/05-framing.md")]
    pub struct Chapter05En;
    #[doc = include_str!("../guide/zh-CN/05-framing.md")]
    pub struct Chapter05ZhCn;
    #[doc = include_str!("../guide/en/06-timeouts-and-errors.md")]
    pub struct Chapter06En;
    #[doc = include_str!("../guide/zh-CN/06-timeouts-and-errors.md")]
    pub struct Chapter06ZhCn;
    #[doc = include_str!("../guide/en/07-testing.md")]
    pub struct Chapter07En;
    #[doc = include_str!("../guide/zh-CN/07-testing.md")]
    pub struct Chapter07ZhCn;
    #[doc = include_str!("../guide/en/08-many-connections.md")]
    pub struct Chapter08En;
    #[doc = include_str!("../guide/zh-CN/08-many-connections.md")]
    pub struct Chapter08ZhCn;
    #[doc = include_str!("../guide/en/09-shutting-down.md")]
    pub struct Chapter09En;
    #[doc = include_str!("../guide/zh-CN/09-shutting-down.md")]
    pub struct Chapter09ZhCn;
    #[doc = include_str!("../guide/en/10-deployment.md")]
    pub struct Chapter10En;
    #[doc = include_str!("../guide/zh-CN/10-deployment.md")]
    pub struct Chapter10ZhCn;
    #[doc = include_str!("../guide/en/11-testing-clients.md")]
    pub struct Chapter11En;
    #[doc = include_str!("../guide/zh-CN/11-testing-clients.md")]
    pub struct Chapter11ZhCn;
    #[doc = include_str!("../guide/en/12-operations.md")]
    pub struct Chapter12En;
    #[doc = include_str!("../guide/zh-CN/12-operations.md")]
    pub struct Chapter12ZhCn;
}

pub use builder::Builder;
pub use config::{DEFAULT_BACKLOG, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PACKET_SIZE, DEFAULT_RBUFSIZE};
pub use error::{Error, Phase, Result};
pub use frame::{ByteOrder, Frame};
pub use handle::{ServerHandle, Stats};
pub use handler::{HandlerError, HandlerResult, RequestHandler};
pub use metrics::{Histogram, Metrics};
pub use net::{Address, Connection, DatagramSocket};
pub use python::{ThreadingTcpServer, ThreadingUdpServer};
#[cfg(unix)]
pub use python::{ThreadingUnixDatagramServer, ThreadingUnixStreamServer};
pub use request::{ConnState, ConnectionId, DatagramRequest, Reader, ReaderRef, Reply, StreamRequest, Writer};
pub use server::{BackgroundServer, Server, TcpServer, UdpServer, DEFAULT_STOP_TIMEOUT};
#[cfg(unix)]
pub use server::{UnixDatagramServer, UnixStreamServer};
#[cfg(feature = "signals")]
pub use signals::{SignalShutdown, SIGNAL_SHUTDOWN_DEADLINE};
pub use transport::InetTransport;
