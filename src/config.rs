//! What a builder sets and the engine reads: per-request settings and the hooks of
//! Python's `BaseServer`, with their defaults.

use std::io;
use std::net::Shutdown;
use std::time::Duration;

use crate::error::Error;
use crate::frame::Frame;
use crate::net::{Address, Connection};

/// The default listen backlog: Linux's `SOMAXCONN` since 5.4 (kernels clamp it to
/// their own limit). The accept loop pauses now and then: Linux grows a threaded
/// process's descriptor table at 256, 512, 1024... descriptors and waits out an RCU
/// grace period (5-25 ms) inside that `accept`. A burst fills a backlog of 128 in
/// 2-3 ms, and each connection dropped then waits 1 s for the SYN to be sent again.
pub const DEFAULT_BACKLOG: i32 = 4096;
/// The default size of a stream request's read buffer (Python's `rbufsize` is 8192 too).
pub const DEFAULT_RBUFSIZE: usize = 8192;
/// The default datagram size limit; longer datagrams are truncated, as in Python.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 8192;
/// How long a parked connection may wait for its client's next bytes by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest `max_packet_size` accepted: 16 MiB.
pub(crate) const MAX_PACKET_SIZE_LIMIT: usize = 16 << 20;

pub(crate) type VerifyHook = Box<dyn Fn(&Address) -> bool + Send + Sync>;
pub(crate) type ErrorHook = Box<dyn Fn(&Error, Option<&Address>) + Send + Sync>;
pub(crate) type PlainHook = Box<dyn Fn() + Send + Sync>;
pub(crate) type ConnectionHook = Box<dyn Fn(&Connection) -> io::Result<()> + Send + Sync>;
pub(crate) type AfterBindHook = Box<dyn Fn(&Address) -> io::Result<()> + Send + Sync>;
pub(crate) type RefuseHook = Box<dyn Fn(&Connection, &Address) -> io::Result<()> + Send + Sync>;
pub(crate) type BadMessageHook = Box<dyn Fn(&io::Error, &mut Vec<u8>) -> io::Result<()> + Send + Sync>;

/// What stands between an accepted stream connection and the engine: the fault layer of
/// `testing` (`testing::Faults::around`). A trait here, below the engine, so that the
/// engine calls it without knowing `testing`, which sits above it.
pub(crate) trait Interpose: Send + Sync {
    /// The connection the engine serves in place of `connection`, whose client is
    /// `client`; `None` ends it here (the layer closed or reset it).
    fn stream(&self, connection: Connection, client: &Address) -> Option<Connection>;
}

/// The hooks of Python's `BaseServer`, each optional.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) verify_request: Option<VerifyHook>,
    pub(crate) handle_error: Option<ErrorHook>,
    pub(crate) handle_timeout: Option<PlainHook>,
    pub(crate) service_actions: Option<(Duration, PlainHook)>,
    pub(crate) shutdown_request: Option<ConnectionHook>,
    /// Set: refuse connections beyond the limit (after this hook) instead of waiting.
    pub(crate) refuse_when_full: Option<RefuseHook>,
    pub(crate) after_bind: Option<AfterBindHook>,
    /// Told of every stream connection's changes of state.
    pub(crate) connection_state: Option<crate::request::StateHook>,
}

impl Hooks {
    /// Ends a stream request, after its handler or when `verify_request` turned it
    /// down (Python's `shutdown_request`): the user's hook, or SHUT_WR before the close,
    /// so the client reads end-of-file even if a clone of the socket is still open. The
    /// peer may be gone already; that is no error.
    pub(crate) fn shutdown_request(&self, connection: &Connection) -> io::Result<()> {
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
pub(crate) struct Config {
    pub(crate) rbufsize: usize,
    pub(crate) wbufsize: usize,
    pub(crate) max_packet_size: usize,
    pub(crate) nodelay: bool,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    /// How long a parked connection may wait; `None`: until shutdown.
    pub(crate) idle_timeout: Option<Duration>,
    /// A new connection waits parked for its first bytes before `setup`.
    pub(crate) client_speaks_first: bool,
    /// How messages are delimited: the engine reads a whole one before `handle`.
    pub(crate) frame: Option<Frame>,
    /// What a client whose message breaks the frame is sent before its close.
    pub(crate) bad_message: Option<BadMessageHook>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) shutdown_deadline: Option<Duration>,
    pub(crate) max_connections: Option<usize>,
    #[cfg(feature = "proxy-protocol")]
    pub(crate) proxy_protocol: bool,
    /// How long a peer may take to send its PROXY protocol header.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) proxy_header_timeout: Duration,
    /// The peers whose PROXY headers are read; `None`: every peer's.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) trusted_proxies: Option<Vec<crate::proxy_protocol::IpNet>>,
    /// Serve other peers as direct clients instead of refusing them.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) direct_clients: bool,
    pub(crate) hooks: Hooks,
    /// Set by `testing::Faults::around`: every accepted connection goes through it.
    pub(crate) interpose: Option<std::sync::Arc<dyn Interpose>>,
    /// Time queue waits and exchanges (two clock reads per exchange).
    pub(crate) timings: bool,
}

/// What a connection's peer is to the PROXY protocol, decided from its address alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "proxy-protocol"), allow(dead_code))] // only `Direct` without the feature
pub(crate) enum Peer {
    /// A client of its own: no header is read; `verify_request` judges its address.
    Direct,
    /// A proxy: its header names the client, whom `verify_request` then judges.
    Proxy,
    /// Neither: closed unread, counted as denied.
    Untrusted,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rbufsize: DEFAULT_RBUFSIZE,
            wbufsize: 0,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            nodelay: true,
            read_timeout: None,
            write_timeout: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            client_speaks_first: false,
            frame: None,
            bad_message: None,
            timeout: None,
            shutdown_deadline: None,
            max_connections: None,
            #[cfg(feature = "proxy-protocol")]
            proxy_protocol: false,
            #[cfg(feature = "proxy-protocol")]
            proxy_header_timeout: crate::proxy_protocol::DEFAULT_HEADER_TIMEOUT,
            #[cfg(feature = "proxy-protocol")]
            trusted_proxies: None,
            #[cfg(feature = "proxy-protocol")]
            direct_clients: false,
            hooks: Hooks::default(),
            interpose: None,
            timings: true,
        }
    }
}

impl Config {
    /// What the peer at `peer` is: with the PROXY protocol off, a direct client; on,
    /// a proxy if it is trusted (every peer, without a list of trusted proxies; a Unix
    /// socket's peers always, as the socket file's permissions decide who connects),
    /// otherwise a direct client or refused, as the builder chose.
    pub(crate) fn peer(&self, peer: &Address) -> Peer {
        #[cfg(feature = "proxy-protocol")]
        if self.proxy_protocol {
            let trusted = match (&self.trusted_proxies, peer.as_inet()) {
                (None, _) | (Some(_), None) => true,
                (Some(nets), Some(addr)) => nets.iter().any(|net| net.contains(addr.ip())),
            };
            return match (trusted, self.direct_clients) {
                (true, _) => Peer::Proxy,
                (false, true) => Peer::Direct,
                (false, false) => Peer::Untrusted,
            };
        }
        let _ = peer;
        Peer::Direct
    }
}
