//! Faults as a proxy, in process: a [`FaultProxy`] on `127.0.0.1:0` in front of any
//! address, forwarding TCP connections or UDP datagrams through the [`Fault`]s it is
//! given, which can be added and removed while the test runs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::dispatch::Threading;
use crate::net::Watch;
use crate::request::StreamRequest;
use crate::server::{BackgroundServer, TcpServer};
use crate::transport::Tcp;

use super::loops::Loops;

/// How long the proxy waits for the upstream to accept a connection before it resets the
/// client's.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Client addresses a UDP proxy keeps a socket towards the upstream for; past it, the
/// one heard from least recently gives its socket up (a suite whose clients each bind a
/// new socket would otherwise use a descriptor per client for the proxy's life).
const UDP_CLIENTS: usize = 256;

/// Bytes read at a time from a socket.
const CHUNK: usize = 16 * 1024;

/// Bytes a direction of a TCP connection holds (read, not yet written) before the proxy
/// stops reading its source: a slow fault pushes back on the sender, as a slow link does.
const QUEUE_LIMIT: usize = 256 * 1024;

/// How long a datagram held back by [`Fault::reorder`] waits for a later one to overtake
/// it, before it goes anyway.
pub const REORDER_HOLD: Duration = Duration::from_millis(100);

/// Which way through the proxy a [`Fault`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server (what Toxiproxy calls upstream).
    Upstream,
    /// From the server to the client: the default, as in Toxiproxy, since the client is
    /// what a test exercises.
    Downstream,
    /// Both ways.
    Both,
}

impl Direction {
    fn covers(self, upstream: bool) -> bool {
        match self {
            Direction::Upstream => upstream,
            Direction::Downstream => !upstream,
            Direction::Both => true,
        }
    }
}

/// A fault a [`FaultProxy`] applies to what it forwards, each named after the
/// situation it reproduces.
///
/// A fault applies [downstream](Direction::Downstream) (server to client) unless
/// [`upstream`](Fault::upstream) or [`both_ways`](Fault::both_ways) says otherwise, and
/// always unless [`probability`](Fault::probability) says how often: for TCP, per
/// connection (a connection has the fault or not, for its whole life); for UDP, per
/// datagram. The draws come from the proxy's seed ([`FaultProxy::seed`]), so a test
/// sees the same faults on every run.
///
/// | fault | TCP | UDP | reproduces |
/// |---|:-:|:-:|---|
/// | [`latency`](Fault::latency) | ✓ | ✓ | a distant or congested server |
/// | [`bandwidth`](Fault::bandwidth) | ✓ | | a slow link, a large download |
/// | [`slicer`](Fault::slicer) | ✓ | | bytes arriving a few at a time (a read returns part of a message) |
/// | [`limit_data`](Fault::limit_data) | ✓ | | a connection closed mid-message |
/// | [`reset_after_bytes`](Fault::reset_after_bytes), [`reset_after`](Fault::reset_after) | ✓ | | a crashed server, a middlebox dropping the connection (`ConnectionReset`) |
/// | [`timeout`](Fault::timeout) | ✓ | ✓ | a server, or a network, that stops answering |
/// | [`slow_close`](Fault::slow_close) | ✓ | | a peer slow to close |
/// | [`refuse`](Fault::refuse) | ✓ | | a server that is down or restarting |
/// | [`drop_datagrams`](Fault::drop_datagrams) | | ✓ | a lossy network |
/// | [`duplicate`](Fault::duplicate) | | ✓ | a datagram delivered twice |
/// | [`reorder`](Fault::reorder) | | ✓ | datagrams overtaking each other |
/// | [`truncate`](Fault::truncate) | | ✓ | a datagram cut to fit a buffer |
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    kind: Kind,
    direction: Direction,
    probability: f64,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Latency { delay: Duration, jitter: Duration },
    Bandwidth { bytes_per_second: u64 },
    Slicer { size: usize, delay: Duration },
    LimitData { bytes: u64 },
    ResetAfterBytes { bytes: u64 },
    ResetAfter { time: Duration },
    Timeout,
    SlowClose { delay: Duration },
    Refuse,
    DropDatagrams,
    Duplicate,
    Reorder,
    Truncate { len: usize },
}

impl Fault {
    fn new(kind: Kind) -> Fault {
        Fault { kind, direction: Direction::Downstream, probability: 1.0 }
    }

    /// Each piece (TCP: each read's worth of bytes; UDP: each datagram) is delayed by
    /// `delay`, plus or minus up to `jitter`, drawn from the seed. Bytes of a TCP
    /// connection stay in order: a piece never overtakes the one before it.
    pub fn latency(delay: Duration, jitter: Duration) -> Fault {
        Fault::new(Kind::Latency { delay, jitter })
    }

    /// At most `bytes_per_second` go through (TCP), in pieces of 50 ms' worth.
    pub fn bandwidth(bytes_per_second: u64) -> Fault {
        Fault::new(Kind::Bandwidth { bytes_per_second: bytes_per_second.max(1) })
    }

    /// What is read is written on in pieces of `size` bytes, `delay` apart (TCP):
    /// Toxiproxy's slicer.
    pub fn slicer(size: usize, delay: Duration) -> Fault {
        Fault::new(Kind::Slicer { size: size.max(1), delay })
    }

    /// The connection is closed (FIN, both ways) once `bytes` have gone through in this
    /// direction (TCP).
    pub fn limit_data(bytes: u64) -> Fault {
        Fault::new(Kind::LimitData { bytes })
    }

    /// The connection is reset (RST: `ConnectionReset` on the next read or write) once
    /// `bytes` have gone through in this direction, towards where the fault's direction
    /// goes: the client downstream (the default), the server upstream, both with
    /// [`both_ways`](Fault::both_ways); a side not reset sees a close (TCP; around a
    /// Unix stream server, [`Faults`](super::Faults), a close: Unix sockets have no
    /// reset).
    pub fn reset_after_bytes(bytes: u64) -> Fault {
        Fault::new(Kind::ResetAfterBytes { bytes })
    }

    /// The connection is reset `time` after it was accepted, or after the fault was added
    /// if later: towards the client downstream (the default), the server upstream, both
    /// with [`both_ways`](Fault::both_ways) (TCP).
    pub fn reset_after(time: Duration) -> Fault {
        Fault::new(Kind::ResetAfter { time })
    }

    /// Nothing goes through while the fault is on: bytes and datagrams are read and
    /// dropped, the connection stays open. Removing the fault lets what comes next
    /// through.
    pub fn timeout() -> Fault {
        Fault::new(Kind::Timeout)
    }

    /// The end of the stream (the sender's close) is passed on `delay` late (TCP).
    pub fn slow_close(delay: Duration) -> Fault {
        Fault::new(Kind::SlowClose { delay })
    }

    /// New connections are reset as soon as they are accepted, before any byte (TCP): the
    /// client's `connect` may succeed, its first read or write fails with
    /// `ConnectionReset` (or sees the end of the stream on some platforms). Connections
    /// already open go on. The direction does not matter.
    pub fn refuse() -> Fault {
        Fault::new(Kind::Refuse)
    }

    /// Datagrams are dropped (UDP).
    pub fn drop_datagrams() -> Fault {
        Fault::new(Kind::DropDatagrams)
    }

    /// Datagrams are delivered twice (UDP).
    pub fn duplicate() -> Fault {
        Fault::new(Kind::Duplicate)
    }

    /// A datagram is held back until the next one in the same direction has gone (or
    /// [`REORDER_HOLD`] has passed), so the two arrive swapped (UDP).
    pub fn reorder() -> Fault {
        Fault::new(Kind::Reorder)
    }

    /// Datagrams longer than `len` bytes are cut to `len` (UDP).
    pub fn truncate(len: usize) -> Fault {
        Fault::new(Kind::Truncate { len })
    }

    /// Applies from the client to the server.
    pub fn upstream(mut self) -> Fault {
        self.direction = Direction::Upstream;
        self
    }

    /// Applies from the server to the client (the default).
    pub fn downstream(mut self) -> Fault {
        self.direction = Direction::Downstream;
        self
    }

    /// Applies both ways.
    pub fn both_ways(mut self) -> Fault {
        self.direction = Direction::Both;
        self
    }

    /// Applies with this probability, from 0.0 to 1.0 (the default): per connection for
    /// TCP, per datagram for UDP.
    pub fn probability(mut self, probability: f64) -> Fault {
        self.probability = probability;
        self
    }

    fn for_tcp(&self) -> bool {
        !matches!(self.kind, Kind::DropDatagrams | Kind::Duplicate | Kind::Reorder | Kind::Truncate { .. })
    }

    fn for_udp(&self) -> bool {
        matches!(
            self.kind,
            Kind::Latency { .. }
                | Kind::Timeout
                | Kind::DropDatagrams
                | Kind::Duplicate
                | Kind::Reorder
                | Kind::Truncate { .. }
        )
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Latency { .. } => "latency",
            Kind::Bandwidth { .. } => "bandwidth",
            Kind::Slicer { .. } => "slicer",
            Kind::LimitData { .. } => "limit_data",
            Kind::ResetAfterBytes { .. } => "reset_after_bytes",
            Kind::ResetAfter { .. } => "reset_after",
            Kind::Timeout => "timeout",
            Kind::SlowClose { .. } => "slow_close",
            Kind::Refuse => "refuse",
            Kind::DropDatagrams => "drop_datagrams",
            Kind::Duplicate => "duplicate",
            Kind::Reorder => "reorder",
            Kind::Truncate { .. } => "truncate",
        }
    }
}

/// A fault added to a proxy, to remove it with [`FaultProxy::remove`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

/// A proxy on `127.0.0.1:0`, in process, in front of any address (a server of this
/// crate, a [`ScriptedServer`](super::ScriptedServer), another process), that applies
/// [`Fault`]s to what it forwards: TCP connections, one upstream connection per client
/// connection, or UDP datagrams, one upstream socket per client address.
///
/// Faults are added and removed while the test runs, and take effect at once, on
/// connections already open too. Every draw (jitter, probability) comes from the seed,
/// 0 unless [`seed`](FaultProxy::seed) says otherwise. The proxy starts and stops in
/// well under a millisecond; dropping it stops it, closing every connection it holds.
///
/// # Examples
///
/// A client's read timeout, tested against a server that stops answering:
///
/// ```
/// use std::io::{BufRead, BufReader, ErrorKind, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
/// use socketserver::testing::{Fault, FaultProxy};
/// use socketserver::TcpServer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TcpServer::bind("127.0.0.1:0", |req| {
///     let mut line = String::new();
///     while req.reader().read_line(&mut line)? > 0 {
///         req.writer().write_all(line.as_bytes())?;
///         req.writer().flush()?;
///         line.clear();
///     }
///     Ok(())
/// })?;
/// let addr = server.local_addr();
/// let _server = server.serve_in_background()?;
///
/// let proxy = FaultProxy::tcp(addr)?;
/// let mut client = TcpStream::connect(proxy.addr())?;
/// client.set_read_timeout(Some(Duration::from_millis(200)))?;
/// let mut reader = BufReader::new(client.try_clone()?);
/// let mut line = String::new();
///
/// client.write_all(b"one\n")?;
/// reader.read_line(&mut line)?;
/// assert_eq!(line, "one\n");
///
/// let silence = proxy.add(Fault::timeout())?; // the answers stop coming
/// client.write_all(b"two\n")?;
/// let error = reader.read_line(&mut line).unwrap_err();
/// assert!(matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
///
/// proxy.remove(silence);
/// client.write_all(b"three\n")?;
/// line.clear();
/// reader.read_line(&mut line)?;
/// assert_eq!(line, "three\n", "what the server said during the timeout was lost");
/// # Ok(())
/// # }
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<Running>,
}

enum Running {
    Tcp(BackgroundServer<Tcp>),
    Udp(JoinHandle<()>),
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults = self.shared.faults.lock();
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("faults", &faults.list.iter().map(|(_, fault, _)| fault).collect::<Vec<_>>())
            .finish()
    }
}

pub(super) struct Shared {
    upstream: SocketAddr,
    udp: bool,
    seed: AtomicU64,
    /// Changed by every `seed()`, even to the same value: the UDP draws start again.
    seed_generation: AtomicU64,
    stopping: AtomicBool,
    faults: Mutex<FaultList>,
    /// The loops to wake when the faults change or the proxy stops (for TCP, one per
    /// connection accepted, numbered in that order).
    loops: Arc<Loops>,
}

#[derive(Default)]
struct FaultList {
    /// Changed by every add and remove, so that a loop reads the list only then.
    version: u64,
    next_id: u64,
    list: Vec<(FaultId, Fault, Instant)>,
}

impl Shared {
    /// A proxy's, or with an unused `upstream`, the faults around a server's connections.
    pub(super) fn new(upstream: SocketAddr, udp: bool) -> Shared {
        Shared {
            upstream,
            udp,
            seed: AtomicU64::new(0),
            seed_generation: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            faults: Mutex::new(FaultList::default()),
            loops: Arc::default(),
        }
    }

    pub(super) fn seed(&self, seed: u64) {
        self.seed.store(seed, Ordering::SeqCst);
        self.seed_generation.fetch_add(1, Ordering::SeqCst);
        let mut faults = self.faults.lock();
        faults.version += 1; // the UDP loop reseeds when it next looks
        drop(faults);
        self.loops.wake_all();
    }

    /// Adds `fault` if it fits the transport (`what`: "proxy forwards", say, for the
    /// error); wakes every loop to apply it.
    pub(super) fn add(&self, fault: Fault, what: &str) -> io::Result<FaultId> {
        let fits = if self.udp { fault.for_udp() } else { fault.for_tcp() };
        if !fits {
            let (this, other) = if self.udp { ("UDP", "TCP") } else { ("TCP", "UDP") };
            let message = format!("{} is a {other} fault, and this {what} {this}", fault.name());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        if !(0.0..=1.0).contains(&fault.probability) {
            let message = format!("a probability is from 0.0 to 1.0, not {}", fault.probability);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let mut faults = self.faults.lock();
        let id = FaultId(faults.next_id);
        faults.next_id += 1;
        faults.version += 1;
        faults.list.push((id, fault, Instant::now()));
        drop(faults);
        self.loops.wake_all();
        Ok(id)
    }

    pub(super) fn remove(&self, id: FaultId) -> bool {
        let mut faults = self.faults.lock();
        let before = faults.list.len();
        faults.list.retain(|(other, _, _)| *other != id);
        let removed = faults.list.len() < before;
        if removed {
            faults.version += 1;
        }
        drop(faults);
        self.loops.wake_all();
        removed
    }

    pub(super) fn clear(&self) {
        let mut faults = self.faults.lock();
        faults.list.clear();
        faults.version += 1;
        drop(faults);
        self.loops.wake_all();
    }

    /// Ends every loop at once: each returns at its next wake, which this is.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.loops.wake_all();
    }

    /// How many connections have been enlisted so far.
    pub(super) fn connections(&self) -> u64 {
        self.loops.enlisted()
    }

    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The faults now, if they changed since `version`.
    fn faults_since(&self, version: &mut Option<u64>) -> Option<Vec<(FaultId, Fault, Instant)>> {
        let faults = self.faults.lock();
        if *version == Some(faults.version) {
            return None;
        }
        *version = Some(faults.version);
        Some(faults.list.clone())
    }
}

impl FaultProxy {
    /// A TCP proxy on `127.0.0.1:0` in front of `upstream`: each connection accepted is
    /// forwarded over a connection of its own to `upstream`, through the faults.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `upstream` resolves to no address; the errors of binding.
    pub fn tcp(upstream: impl ToSocketAddrs) -> io::Result<FaultProxy> {
        let shared = FaultProxy::shared(upstream, false)?;
        let proxy = shared.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            // A connection holds its thread for its life, which a proxy's does anyway.
            .dispatch(Threading::new())
            // A reset must not be preceded by a FIN, which the default hook sends.
            .shutdown_request(|_| Ok(()))
            .bind(move |req: &mut StreamRequest| {
                if let Some(client) = req.connection().as_tcp() {
                    forward_tcp(&proxy, client)?;
                }
                Ok(())
            })
            .map_err(io::Error::from)?;
        let addr = server.local_addr();
        let server = server.serve_in_background().map_err(io::Error::from)?;
        Ok(FaultProxy { addr, shared, running: Some(Running::Tcp(server)) })
    }

    /// A UDP proxy on `127.0.0.1:0` in front of `upstream`: each client address gets a
    /// socket of its own towards `upstream`, and what comes back on it goes to that
    /// client, through the faults.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `upstream` resolves to no address; the errors of binding.
    pub fn udp(upstream: impl ToSocketAddrs) -> io::Result<FaultProxy> {
        let shared = FaultProxy::shared(upstream, true)?;
        let front = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        front.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let mut watch = Watch::new()?;
        let front = watch.insert(front)?;
        watch.arm(front, true, false)?;
        let (_, enlisted) = shared.loops.enlist(watch.waker());
        let proxy = shared.clone();
        let thread = std::thread::Builder::new().name("fault-proxy-udp".into()).spawn(move || {
            let _enlisted = enlisted;
            if let Err(e) = forward_udp(&proxy, watch) {
                log::warn!("socketserver: the UDP fault proxy stopped: {e}");
            }
        })?;
        Ok(FaultProxy { addr, shared, running: Some(Running::Udp(thread)) })
    }

    fn shared(upstream: impl ToSocketAddrs, udp: bool) -> io::Result<Arc<Shared>> {
        let upstream = upstream.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the upstream address resolves to no address")
        })?;
        Ok(Arc::new(Shared::new(upstream, udp)))
    }

    /// The address to point the client at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Sets the seed of the draws (jitter, probability): for TCP, of the connections
    /// accepted from now on; for UDP, the draws start again from it. Draws are made in
    /// the order of what they apply to, one per fault that covers it, so the same seed
    /// and the same list of faults give the same faults to the same traffic: the same
    /// connections (numbered in the order they are accepted), the same datagrams in the
    /// same order. (Adding another fault adds draws, and moves the others.)
    pub fn seed(&self, seed: u64) {
        self.shared.seed(seed);
    }

    /// Adds a fault, at once, to connections already open too.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a fault this proxy's transport has no meaning for (a UDP
    /// fault on a TCP proxy, or the reverse), or a probability outside 0.0 to 1.0.
    pub fn add(&self, fault: Fault) -> io::Result<FaultId> {
        self.shared.add(fault, "proxy forwards")
    }

    /// Removes a fault; `false` if it was not there. What the fault already holds back
    /// (bytes or datagrams delayed by a latency, say) still goes at its time, and what
    /// comes after it on the same connection waits behind it: bytes stay in order.
    pub fn remove(&self, id: FaultId) -> bool {
        self.shared.remove(id)
    }

    /// Removes every fault: from now on the proxy forwards as it is.
    pub fn clear(&self) {
        self.shared.clear();
    }

    /// How many connections (TCP) the proxy has accepted.
    pub fn connections(&self) -> u64 {
        match self.shared.udp {
            true => 0,
            false => self.shared.connections(),
        }
    }

    /// Stops the proxy: every connection it holds is closed, what it holds back is
    /// dropped. Also done on drop.
    ///
    /// # Errors
    ///
    /// The proxy's server did not stop cleanly (a thread left behind, reported).
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> io::Result<()> {
        self.shared.stop();
        match self.running.take() {
            // Every loop returns at the notification; the bound is for a thread that
            // the scheduler has not run yet.
            Some(Running::Tcp(server)) => server.stop_timeout(Duration::from_secs(1)).stop().map_err(io::Error::from),
            Some(Running::Udp(thread)) => {
                thread.join().map_err(|_| io::Error::other("the UDP fault proxy's thread panicked"))
            }
            None => Ok(()),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Err(e) = self.stop_now() {
            log::warn!("socketserver: the fault proxy did not stop cleanly: {e}");
        }
    }
}

/// `at + time`, or a time a century away when that overflows (a fault given
/// `Duration::MAX` to mean "never").
fn later(at: Instant, time: Duration) -> Instant {
    at.checked_add(time).or_else(|| at.checked_add(Duration::from_secs(100 * 365 * 86_400))).unwrap_or(at)
}

/// A small generator (splitmix64): the same seed gives the same draws on every platform.
struct Rng(u64);

impl Rng {
    /// Stream `stream` of `seed`: the seed and the stream number are each mixed before
    /// they are combined, so that two streams are not one sequence shifted (splitmix64
    /// steps by a constant: `seed ^ stream * constant` made stream n+1 stream n one draw
    /// later, and a reply's loss the next request's).
    fn new(seed: u64, stream: u64) -> Rng {
        let mix = |x: u64| Rng(x).next();
        let mut rng = Rng(mix(seed) ^ mix(stream.wrapping_add(0xD1B5_4A32_D192_ED03)).rotate_left(32));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `true` with probability `p` (one draw, whatever `p`).
    fn chance(&mut self, p: f64) -> bool {
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// `delay` plus or minus up to `jitter`, never below zero (one draw if `jitter`).
    fn around(&mut self, delay: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return delay;
        }
        let span = jitter.as_nanos() as u64;
        let offset = self.next() % (2 * span + 1);
        let nanos = delay.as_nanos() as u64 + offset;
        Duration::from_nanos(nanos.saturating_sub(span))
    }
}

/// A stream a TCP fault loop forwards: TCP, or Unix for the faults around a Unix stream
/// server ([`Faults::around`](super::Faults::around)).
#[derive(Debug)]
pub(super) enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    fn sock(&self) -> socket2::SockRef<'_> {
        match self {
            Stream::Tcp(s) => socket2::SockRef::from(s),
            #[cfg(unix)]
            Stream::Unix(s) => socket2::SockRef::from(s),
        }
    }

    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.sock().shutdown(how)
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => (&*s).read(buf),
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => (&*s).write(buf),
        }
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for Stream {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        match self {
            Stream::Tcp(s) => s.as_socket(),
        }
    }
}

/// The socket reset on close: linger zero, so that its last close sends RST.
pub(super) fn reset_on_close(socket: socket2::SockRef<'_>) {
    let _ = socket.set_linger(Some(Duration::ZERO));
}

/// One direction of a TCP connection: what was read from `from` and waits, each piece
/// until its time, to be written to `to`.
struct Pipe {
    upstream: bool,
    from: usize,
    to: usize,
    queue: VecDeque<(Instant, Vec<u8>)>,
    queued: usize,
    /// Written of the first piece.
    offset: usize,
    /// Not before this may the next piece go (order, bandwidth).
    floor: Instant,
    /// Bytes let through, for the limits.
    passed: u64,
    /// When the source ended.
    ended: Option<Instant>,
    /// The destination's write side is shut.
    shut: bool,
    /// The last write would block: wait until the destination has room.
    blocked: bool,
    /// Once the queue is written: end the connection (limit_data, reset_after_bytes).
    then: Option<End>,
    rng: Rng,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Close,
    /// A reset towards the client, the server or both: where the fault's direction goes.
    Reset {
        client: bool,
        server: bool,
    },
}

impl End {
    /// The stronger of two ends: a reset over a close, and the sides of two resets
    /// together.
    fn and(self, other: End) -> End {
        match (self, other) {
            (End::Reset { client: a, server: b }, End::Reset { client: c, server: d }) => {
                End::Reset { client: a || c, server: b || d }
            }
            (End::Reset { .. }, End::Close) => self,
            (End::Close, _) => other,
        }
    }
}

/// How a TCP connection's loop ended.
enum Outcome {
    Closed,
    /// The connection is reset towards the client, the server or both (the other side,
    /// if any, is closed): where a reset fault's direction points, or towards the server
    /// when the client failed, and towards the client when the server did.
    Reset {
        client: bool,
        server: bool,
    },
}

impl Outcome {
    /// A reset towards where the faults of `upstream` (from the client to the server),
    /// or else downstream, go.
    fn reset_towards(upstream: bool) -> Outcome {
        Outcome::Reset { client: !upstream, server: upstream }
    }
}

impl Pipe {
    fn new(upstream: bool, from: usize, to: usize, rng: Rng) -> Pipe {
        Pipe {
            upstream,
            from,
            to,
            queue: VecDeque::new(),
            queued: 0,
            offset: 0,
            floor: Instant::now(),
            passed: 0,
            ended: None,
            shut: false,
            blocked: false,
            then: None,
            rng,
        }
    }

    fn wants_to_read(&self) -> bool {
        self.ended.is_none() && self.then.is_none() && self.queued < QUEUE_LIMIT
    }

    /// Reads what the source has, while there is room, and lets it through the faults.
    fn read(&mut self, watch: &Watch<Stream>, buf: &mut [u8], faults: &[&Fault]) -> io::Result<()> {
        while self.wants_to_read() {
            match watch.get(self.from).read(buf) {
                Ok(0) => self.ended = Some(Instant::now()),
                Ok(n) => self.pass(&buf[..n], faults, Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn pass(&mut self, mut bytes: &[u8], faults: &[&Fault], now: Instant) {
        let mine = || faults.iter().filter(|f| f.direction.covers(self.upstream));
        if mine().any(|f| f.kind == Kind::Timeout) {
            return;
        }
        for fault in mine() {
            let (limit, end) = match fault.kind {
                Kind::LimitData { bytes } => (bytes, End::Close),
                Kind::ResetAfterBytes { bytes } => {
                    let towards =
                        End::Reset { client: fault.direction.covers(false), server: fault.direction.covers(true) };
                    (bytes, towards)
                }
                _ => continue,
            };
            let room = limit.saturating_sub(self.passed);
            if bytes.len() as u64 >= room {
                bytes = &bytes[..room as usize];
                self.then = Some(self.then.map_or(end, |then| then.and(end)));
            }
        }
        self.passed += bytes.len() as u64;
        let mut at = now;
        let (mut size, mut gap, mut rate) = (usize::MAX, Duration::ZERO, None);
        for fault in mine() {
            match fault.kind {
                Kind::Latency { delay, jitter } => at = later(at, self.rng.around(delay, jitter)),
                Kind::Slicer { size: s, delay } => (size, gap) = (size.min(s), gap.max(delay)),
                Kind::Bandwidth { bytes_per_second } => {
                    rate = Some(rate.map_or(bytes_per_second, |r: u64| r.min(bytes_per_second)))
                }
                _ => {}
            }
        }
        if let Some(rate) = rate {
            // In pieces of 50 ms at the rate, so that the bytes arrive spread over the
            // time they take, not in one piece followed by a pause.
            size = size.min((rate / 20).max(1) as usize);
        }
        for piece in bytes.chunks(size) {
            let go = at.max(self.floor);
            self.floor = match rate {
                Some(rate) => later(go, Duration::from_secs_f64(piece.len() as f64 / rate as f64)),
                // The slicer's gap holds across reads too: the next read's first piece
                // waits for it as well.
                None => later(go, gap),
            };
            self.queue.push_back((go, piece.to_vec()));
            self.queued += piece.len();
            at = later(go, gap);
        }
    }

    /// Writes the pieces whose time has come, while the destination takes them.
    fn write(&mut self, watch: &Watch<Stream>, now: Instant) -> io::Result<()> {
        self.blocked = false;
        while let Some((at, piece)) = self.queue.front() {
            if *at > now {
                break;
            }
            match watch.get(self.to).write(&piece[self.offset..]) {
                Ok(n) => {
                    self.offset += n;
                    if self.offset == piece.len() {
                        self.queued -= piece.len();
                        self.offset = 0;
                        self.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// When this direction next has something to do on its own (a piece to write, a
    /// close to pass on), or `None` if it waits for a socket.
    fn next_time(&self, slow_close: Option<Duration>) -> Option<Instant> {
        if self.blocked {
            return None;
        }
        match self.queue.front() {
            Some((at, _)) => Some(*at),
            None if !self.shut && self.then.is_none() => self.ended.map(|at| later(at, slow_close.unwrap_or_default())),
            None => None,
        }
    }
}

/// Forwards one TCP connection, on the thread the proxy's server gave it, until either
/// side closes, a fault ends it or the proxy stops.
///
/// The loop reads and writes the client through a handle of its own (`try_clone`); a
/// reset is set on `original`, the server's handle, too, whichever closes last (Wine
/// keeps linger per handle).
fn forward_tcp(shared: &Arc<Shared>, original: &TcpStream) -> io::Result<()> {
    let client = original.try_clone()?;
    let link = Link::new(shared)?;
    if link.refuses() || shared.stopping() {
        reset_on_close(socket2::SockRef::from(original));
        return Ok(());
    }
    let server = match TcpStream::connect_timeout(&shared.upstream, CONNECT_WITHIN) {
        Ok(server) => server,
        Err(e) => {
            log::warn!("socketserver: the fault proxy could not reach {}: {e}", shared.upstream);
            reset_on_close(socket2::SockRef::from(original));
            return Ok(());
        }
    };
    for socket in [&client, &server] {
        socket.set_nodelay(true)?;
    }
    link.forward(shared, Stream::Tcp(client), Stream::Tcp(server), Some(socket2::SockRef::from(original)))
}

/// One connection's loop before it forwards: its poller, its number among the
/// connections, and the faults drawn for it.
pub(super) struct Link {
    watch: Watch<Stream>,
    _enlisted: super::loops::Enlisted,
    seed: u64,
    number: u64,
    decide: Rng,
    decided: HashMap<FaultId, bool>,
    version: Option<u64>,
    list: Vec<(FaultId, Fault, Instant)>,
    active: Vec<(Fault, Instant)>,
    accepted: Instant,
}

impl Link {
    /// Enlists a new connection's loop (which numbers it) and draws its faults.
    pub(super) fn new(shared: &Arc<Shared>) -> io::Result<Link> {
        let watch = Watch::new()?;
        let (number, enlisted) = shared.loops.enlist(watch.waker());
        let seed = shared.seed.load(Ordering::SeqCst);
        let mut link = Link {
            watch,
            _enlisted: enlisted,
            seed,
            number,
            decide: Rng::new(seed, 3 * number),
            decided: HashMap::new(),
            version: None,
            list: Vec::new(),
            active: Vec::new(),
            accepted: Instant::now(),
        };
        link.refresh(shared);
        Ok(link)
    }

    /// Reads the list of faults if it changed, and which of them this connection has.
    fn refresh(&mut self, shared: &Shared) {
        let Some(now) = shared.faults_since(&mut self.version) else { return };
        self.list = now;
        self.active.clear();
        for (id, fault, added) in &self.list {
            let decide = &mut self.decide;
            if *self.decided.entry(*id).or_insert_with(|| decide.chance(fault.probability)) {
                self.active.push((fault.clone(), *added));
            }
        }
    }

    /// Whether this connection is refused ([`Fault::refuse`]).
    pub(super) fn refuses(&self) -> bool {
        self.active.iter().any(|(f, _)| f.kind == Kind::Refuse)
    }

    /// Forwards between `client` and `server` until either side closes, a fault ends
    /// the connection or the faults stop. A reset of the client is set on `also` too,
    /// another handle of the client's socket.
    pub(super) fn forward(
        mut self,
        shared: &Arc<Shared>,
        client: Stream,
        server: Stream,
        also: Option<socket2::SockRef<'_>>,
    ) -> io::Result<()> {
        for socket in [&client, &server] {
            socket.sock().set_nonblocking(true)?;
        }
        let (seed, number, accepted) = (self.seed, self.number, self.accepted);
        let client = self.watch.insert(client)?;
        let server = self.watch.insert(server)?;
        let mut pipes = [
            Pipe::new(true, client, server, Rng::new(seed, 3 * number + 1)),
            Pipe::new(false, server, client, Rng::new(seed, 3 * number + 2)),
        ];
        let mut buf = vec![0; CHUNK];
        let mut ready = Vec::new();
        // What each socket is armed for now (`None`: disarmed, its event having fired).
        let mut armed: [Option<(bool, bool)>; 2] = [None, None];
        let outcome = loop {
            if shared.stopping() {
                break Outcome::Closed;
            }
            self.refresh(shared);
            let faults: Vec<&Fault> = self.active.iter().map(|(f, _)| f).collect();
            let reset_at = self
                .active
                .iter()
                .filter_map(|(f, added)| match f.kind {
                    Kind::ResetAfter { time } => Some(later(accepted.max(*added), time)),
                    _ => None,
                })
                .min();
            // Err: the key of the socket that failed.
            let step = (|| -> Result<Option<Outcome>, usize> {
                for pipe in &mut pipes {
                    pipe.read(&self.watch, &mut buf, &faults).map_err(|_| pipe.from)?;
                }
                let now = Instant::now();
                if reset_at.is_some_and(|at| at <= now) {
                    // Towards every side a due `reset_after` points to.
                    let (mut client, mut server) = (false, false);
                    for (fault, added) in &self.active {
                        if let Kind::ResetAfter { time } = fault.kind {
                            if later(accepted.max(*added), time) <= now {
                                client |= fault.direction.covers(false);
                                server |= fault.direction.covers(true);
                            }
                        }
                    }
                    return Ok(Some(Outcome::Reset { client, server }));
                }
                for pipe in &mut pipes {
                    pipe.write(&self.watch, now).map_err(|_| pipe.to)?;
                    if !pipe.queue.is_empty() {
                        continue;
                    }
                    match pipe.then {
                        Some(End::Close) => return Ok(Some(Outcome::Closed)),
                        Some(End::Reset { client, server }) => return Ok(Some(Outcome::Reset { client, server })),
                        None => {}
                    }
                    let slow = slow_close(&faults, pipe.upstream);
                    if let Some(ended) = pipe.ended {
                        if !pipe.shut && later(ended, slow) <= now {
                            let _ = self.watch.get(pipe.to).shutdown(std::net::Shutdown::Write);
                            pipe.shut = true;
                        }
                    }
                }
                if pipes.iter().all(|p| p.shut) {
                    return Ok(Some(Outcome::Closed));
                }
                Ok(None)
            })();
            match step {
                Ok(Some(outcome)) => break outcome,
                Ok(None) => {}
                // The other side sees a reset, as it would without the proxy: the client when
                // the server failed, the server when the client did (a crashed client's
                // upload must not look complete to the server).
                Err(failed) if failed == client => break Outcome::reset_towards(true),
                Err(_) => break Outcome::reset_towards(false),
            }
            let mut deadline = reset_at;
            for pipe in &pipes {
                let next = pipe.next_time(Some(slow_close(&faults, pipe.upstream)));
                deadline = match (deadline, next) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            let interest = |key: usize| {
                let reading = pipes.iter().any(|p| p.from == key && p.wants_to_read());
                let writing = pipes.iter().any(|p| p.to == key && p.blocked);
                (reading, writing)
            };
            for key in [client, server] {
                let wanted = interest(key);
                // Armed only for what is wanted, and only when that changed: a socket whose
                // event fired is disarmed (oneshot) and stays so while nothing is asked of
                // it. Arming it for nothing would not do: epoll reports a reset or a hang-up
                // whatever the interest, and the loop would wake for it again and again.
                if wanted != (false, false) && armed[key] != Some(wanted) {
                    self.watch.arm(key, wanted.0, wanted.1)?;
                    armed[key] = Some(wanted);
                }
            }
            ready.clear();
            self.watch.wait(deadline, &mut ready)?;
            for key in &ready {
                armed[*key] = None;
            }
        };
        if let Outcome::Reset { client: towards_client, server: towards_server } = outcome {
            if towards_client {
                reset_on_close(self.watch.get(client).sock());
                if let Some(also) = also {
                    reset_on_close(also);
                }
            }
            if towards_server {
                reset_on_close(self.watch.get(server).sock());
            }
        }
        Ok(())
    }
}

fn slow_close(faults: &[&Fault], upstream: bool) -> Duration {
    faults
        .iter()
        .filter(|f| f.direction.covers(upstream))
        .filter_map(|f| match f.kind {
            Kind::SlowClose { delay } => Some(delay),
            _ => None,
        })
        .max()
        .unwrap_or_default()
}

/// A datagram waiting for its time: `(when, order, socket key, to)`, then the bytes.
type Timed = Reverse<(Instant, u64, usize, Option<SocketAddr>, Vec<u8>)>;

/// A datagram held back by `reorder`: `(until, socket key, to, bytes)`.
type Held = (Instant, usize, Option<SocketAddr>, Vec<u8>);

/// Forwards datagrams both ways until the proxy stops: key 0 is the clients' socket,
/// each other key a client's socket towards the upstream.
fn forward_udp(shared: &Arc<Shared>, mut watch: Watch<UdpSocket>) -> io::Result<()> {
    const FRONT: usize = 0;
    let mut clients: HashMap<SocketAddr, usize> = HashMap::new();
    let mut addresses: HashMap<usize, SocketAddr> = HashMap::new();
    // When each client's socket last carried a datagram from its client.
    let mut used: HashMap<usize, Instant> = HashMap::new();
    let mut version = None;
    let mut faults: Vec<Fault> = Vec::new();
    let mut seed = None;
    let mut rngs = [Rng::new(0, 0), Rng::new(0, 1)];
    let mut queue: BinaryHeap<Timed> = BinaryHeap::new();
    let mut order = 0u64;
    // Held back by `reorder`, per direction.
    let mut held: [Option<Held>; 2] = [None, None];
    let mut buf = vec![0; 64 * 1024];
    let mut ready = Vec::new();
    // The address of the sockets towards the upstream: loopback for a loopback
    // upstream (a test's), so that nothing listens beyond the machine.
    let local = shared.upstream.ip().is_loopback();
    let upstream_any: SocketAddr = match shared.upstream {
        SocketAddr::V4(_) if local => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) if local => (Ipv6Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    loop {
        if shared.stopping() {
            return Ok(());
        }
        if let Some(now) = shared.faults_since(&mut version) {
            faults = now.into_iter().map(|(_, fault, _)| fault).collect();
            let generation = shared.seed_generation.load(Ordering::SeqCst);
            if seed != Some(generation) {
                seed = Some(generation);
                let current = shared.seed.load(Ordering::SeqCst);
                rngs = [Rng::new(current, 0), Rng::new(current, 1)];
            }
        }
        for key in ready.drain(..) {
            // A client's socket may have been given up in this same batch.
            while let Some(socket) = watch.try_get(key) {
                let (n, from) = match socket.recv_from(&mut buf) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error for an earlier datagram, an interrupted call: go on.
                    Err(_) => continue,
                };
                let (upstream, out, to) = if key == FRONT {
                    let out = match clients.get(&from) {
                        Some(out) => *out,
                        None => {
                            if clients.len() >= UDP_CLIENTS {
                                // The client heard from least recently gives its socket up.
                                let oldest = used.iter().min_by_key(|(_, at)| **at).map(|(key, _)| *key);
                                if let Some(oldest) = oldest {
                                    watch.remove(oldest);
                                    used.remove(&oldest);
                                    if let Some(addr) = addresses.remove(&oldest) {
                                        clients.remove(&addr);
                                    }
                                }
                            }
                            let opened = UdpSocket::bind(upstream_any).and_then(|socket| {
                                socket.connect(shared.upstream)?;
                                socket.set_nonblocking(true)?;
                                let out = watch.insert(socket)?;
                                watch.arm(out, true, false)?;
                                Ok(out)
                            });
                            match opened {
                                Ok(out) => {
                                    clients.insert(from, out);
                                    addresses.insert(out, from);
                                    out
                                }
                                Err(e) => {
                                    // This datagram is lost (out of descriptors, say); the
                                    // proxy goes on for the others.
                                    log::warn!(
                                        "socketserver: the UDP fault proxy could not open a socket for {from}: {e}"
                                    );
                                    continue;
                                }
                            }
                        }
                    };
                    used.insert(out, Instant::now());
                    (true, out, None)
                } else {
                    (false, FRONT, addresses.get(&key).copied())
                };
                let rng = &mut rngs[usize::from(!upstream)];
                let mine: Vec<(&Fault, bool)> = faults
                    .iter()
                    .filter(|f| f.direction.covers(upstream))
                    .map(|f| (f, rng.chance(f.probability)))
                    .filter(|(_, on)| *on)
                    .collect();
                if mine.iter().any(|(f, _)| matches!(f.kind, Kind::Timeout | Kind::DropDatagrams)) {
                    continue;
                }
                let mut bytes = buf[..n].to_vec();
                let now = Instant::now();
                let mut at = now;
                let mut copies = 1;
                let mut hold = false;
                for (fault, _) in &mine {
                    match fault.kind {
                        Kind::Truncate { len } => bytes.truncate(len),
                        Kind::Duplicate => copies = 2,
                        Kind::Latency { delay, jitter } => at = later(at, rng.around(delay, jitter)),
                        Kind::Reorder => hold = true,
                        _ => {}
                    }
                }
                let side = usize::from(!upstream);
                if hold && held[side].is_none() {
                    held[side] = Some((at + REORDER_HOLD, out, to, bytes));
                    continue;
                }
                for _ in 0..copies {
                    order += 1;
                    queue.push(Reverse((at, order, out, to, bytes.clone())));
                }
                if let Some((_, out, to, bytes)) = held[side].take() {
                    order += 1;
                    queue.push(Reverse((at, order, out, to, bytes)));
                }
            }
            if watch.try_get(key).is_some() {
                watch.arm(key, true, false)?;
            }
        }
        let now = Instant::now();
        for slot in &mut held {
            if slot.as_ref().is_some_and(|(until, ..)| *until <= now) {
                let (until, out, to, bytes) = slot.take().expect("looked at above");
                order += 1;
                queue.push(Reverse((until, order, out, to, bytes)));
            }
        }
        while queue.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
            let Reverse((_, _, out, to, bytes)) = queue.pop().expect("peeked");
            // Lost if it cannot go now: UDP promises no more.
            let _ = match to {
                Some(to) => watch.get(out).send_to(&bytes, to),
                None => match watch.try_get(out) {
                    Some(socket) => socket.send(&bytes),
                    None => continue, // its client's socket was given up
                },
            };
        }
        let next_sent = queue.peek().map(|Reverse((at, ..))| *at);
        let next_held = held.iter().flatten().map(|(until, ..)| *until).min();
        let deadline = match (next_sent, next_held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        watch.wait(deadline, &mut ready)?;
    }
}
