//! The load generator: every echoed byte checked, a fixed warmup and then a measured
//! window. Two ways to drive the clients ([`Client`]): a blocking thread per connection
//! (or client socket), and, for persistent TCP connections by the hundred, a few threads
//! driving them by readiness (`events`).

mod events;

pub use events::REPLY_TIMEOUT;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::server::{ServerProcess, Target};
use crate::sys;

/// A log-bucketed latency histogram in nanoseconds: exact below 128 ns, then 64 buckets
/// per power of two (under 1.6 % relative error), fixed size whatever the count.
#[derive(Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const SUB: u64 = 64;
const BUCKETS: usize = 128 + 58 * SUB as usize;

impl Histogram {
    pub fn new() -> Histogram {
        Histogram { buckets: vec![0; BUCKETS], count: 0 }
    }

    fn index(ns: u64) -> usize {
        if ns < 2 * SUB {
            return ns as usize;
        }
        let shift = 63 - ns.leading_zeros() as u64 - 6; // ns >> shift is in [64, 128)
        let index = 128 + (shift - 1) * SUB + ((ns >> shift) - SUB);
        (index as usize).min(BUCKETS - 1)
    }

    /// The middle of bucket `index`, in nanoseconds.
    fn value(index: usize) -> f64 {
        if index < 2 * SUB as usize {
            return index as f64;
        }
        let i = index as u64 - 128;
        let shift = i / SUB + 1;
        let low = (SUB + i % SUB) << shift;
        low as f64 + ((1u64 << shift) as f64 - 1.0) / 2.0
    }

    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1) in microseconds, `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::value(index) / 1000.0);
            }
        }
        None
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Workload {
    /// Persistent stream connections, `msg`-byte echo after echo.
    Persistent { msg: usize },
    /// Connect, one `msg`-byte echo, close; repeated.
    ConnectPerRequest { msg: usize },
    /// One `msg`-byte datagram at a time per client socket.
    Datagram { msg: usize },
}

/// How the clients of a load scenario are driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// A blocking thread per connection (or per client socket).
    Threads,
    /// Event-driven: `LoadConfig::client_threads` threads, each driving its share of the
    /// connections by readiness, one request in flight per connection. Persistent TCP only.
    Events,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::Threads => "threads",
            Client::Events => "events",
        }
    }

    /// Whether this client can drive `workload` (over TCP if `tcp`).
    pub fn fits(self, workload: Workload, tcp: bool) -> bool {
        match self {
            Client::Threads => true,
            Client::Events => tcp && matches!(workload, Workload::Persistent { .. }),
        }
    }

    /// How a table describes it, for `conns` connections.
    pub fn describe(self, conns: usize, threads: usize) -> String {
        match self {
            Client::Threads => format!("a blocking thread per connection ({conns} client threads)"),
            Client::Events => format!(
                "event-driven: {} client thread(s) driving the {conns} connections by readiness (`polling`), one request in flight on each",
                threads.clamp(1, conns.max(1))
            ),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    pub conns: usize,
    pub workload: Workload,
    pub client: Client,
    /// Threads of the event-driven client.
    pub client_threads: usize,
    pub warmup: Duration,
    pub window: Duration,
}

/// One measured window against one server.
#[derive(Clone)]
pub struct Measurement {
    pub req_per_s: f64,
    pub hist: Histogram,
    /// Wrong bytes, failed connects, resets, ... inside the window (lost datagrams included).
    pub errors: u64,
    /// Datagrams with no reply within the client's timeout.
    pub lost: u64,
    /// Connections that completed no request in the window.
    pub starved: usize,
    /// Event-driven client: connections given up in the window after no connect or no
    /// echo for `events::REPLY_TIMEOUT` (they are starved too unless served before).
    pub timed_out: usize,
    /// Event-driven client: connections not opened yet when the window ended, because the
    /// server answered new ones too slowly for the ramp (they are starved too).
    pub unopened: usize,
    pub cpu_us_per_req: Option<f64>,
    pub first_error: Option<String>,
    /// Client threads still blocked 3 s after the window (released by killing the server).
    pub hung: usize,
    /// Lines the server wrote to stderr up to the end of the window (not the teardown's).
    pub log_lines: usize,
    pub first_log_line: Option<String>,
}

/// How long a UDP client waits for a reply before counting the datagram as lost.
const UDP_TIMEOUT: Duration = Duration::from_millis(200);
/// A blocked stream read never outlives this, whatever happens.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of random pattern; a request's payload is a slice of it at a moving offset.
const PATTERN_SLACK: usize = 4093;

fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..64 * 1024 + PATTERN_SLACK + 16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

struct Shared {
    t0: Instant,
    t1: Instant,
    stop: AtomicBool,
    errors: AtomicU64,
    lost: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Clones of the persistent client sockets, shut down when the window ends so that
    /// no client stays blocked on a server that never serves it.
    closers: Mutex<Vec<Closer>>,
}

enum Closer {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Shared {
    fn live(&self, at: Instant) -> bool {
        at < self.t1 && !self.stop.load(Ordering::Relaxed)
    }

    /// Counts an error, unless it happened after the window (when sockets are torn down).
    fn error(&self, at: Instant, what: impl FnOnce() -> String) {
        if self.live(at) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap();
            if first.is_none() {
                *first = Some(what());
            }
        }
    }
}

struct ThreadResult {
    hist: Histogram,
    /// Connections of this thread that completed no request in the window.
    starved: usize,
    timed_out: usize,
    unopened: usize,
}

impl ThreadResult {
    fn new() -> ThreadResult {
        ThreadResult { hist: Histogram::new(), starved: 0, timed_out: 0, unopened: 0 }
    }

    fn done(&mut self, shared: &Shared, start: Instant, end: Instant) {
        if start >= shared.t0 && end <= shared.t1 {
            self.hist.record(end - start);
        }
    }
}

fn connect_tcp(addr: SocketAddr, shared: &Shared) -> io::Result<TcpStream> {
    let left = shared.t1.saturating_duration_since(Instant::now());
    let stream = TcpStream::connect_timeout(&addr, left + Duration::from_secs(1))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Echo after echo on one connection until the window ends.
fn persistent<S: Read + Write>(mut stream: S, id: usize, msg: usize, shared: &Shared) -> ThreadResult {
    let mut result = ThreadResult::new();
    let pattern = pattern();
    let mut buf = vec![0u8; msg];
    let mut offset = id * 7919 % PATTERN_SLACK;
    loop {
        let start = Instant::now();
        if !shared.live(start) {
            break;
        }
        offset = (offset + 1) % PATTERN_SLACK;
        let payload = &pattern[offset..offset + msg];
        let outcome = stream.write_all(payload).and_then(|()| stream.read_exact(&mut buf));
        let end = Instant::now();
        if let Err(e) = outcome {
            shared.error(end, || format!("echo: {e}"));
            break;
        }
        if buf != payload {
            let at = buf.iter().zip(payload).position(|(a, b)| a != b).unwrap_or(0);
            shared.error(end, || format!("wrong byte at {at} of a {msg}-byte echo"));
            break;
        }
        result.done(shared, start, end);
    }
    result
}

fn persistent_tcp(addr: SocketAddr, id: usize, msg: usize, shared: &Shared) -> ThreadResult {
    let stream = match connect_tcp(addr, shared) {
        Ok(stream) => stream,
        Err(e) => {
            shared.error(Instant::now(), || format!("connect: {e}"));
            return ThreadResult::new();
        }
    };
    let _ = stream.set_read_timeout(Some(SAFETY_TIMEOUT));
    if let Ok(clone) = stream.try_clone() {
        shared.closers.lock().unwrap().push(Closer::Tcp(clone));
    }
    persistent(stream, id, msg, shared)
}

fn persistent_unix(path: &PathBuf, id: usize, msg: usize, shared: &Shared) -> ThreadResult {
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) => {
            shared.error(Instant::now(), || format!("connect: {e}"));
            return ThreadResult::new();
        }
    };
    let _ = stream.set_read_timeout(Some(SAFETY_TIMEOUT));
    if let Ok(clone) = stream.try_clone() {
        shared.closers.lock().unwrap().push(Closer::Unix(clone));
    }
    persistent(stream, id, msg, shared)
}

/// Connect, one echo, close, until the window ends.
fn connect_per_request(addr: SocketAddr, id: usize, msg: usize, shared: &Shared) -> ThreadResult {
    let mut result = ThreadResult::new();
    let pattern = pattern();
    let mut buf = vec![0u8; msg];
    let mut offset = id * 7919 % PATTERN_SLACK;
    loop {
        let start = Instant::now();
        if !shared.live(start) {
            break;
        }
        offset = (offset + 1) % PATTERN_SLACK;
        let payload = &pattern[offset..offset + msg];
        let outcome = connect_tcp(addr, shared).and_then(|mut stream| {
            stream.write_all(payload)?;
            stream.read_exact(&mut buf)
        });
        let end = Instant::now();
        if let Err(e) = outcome {
            shared.error(end, || format!("connect/echo: {e}"));
            // A refused or reset connection: try again, without spinning.
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        if buf != payload {
            shared.error(end, || format!("wrong bytes in a {msg}-byte echo"));
            continue;
        }
        result.done(shared, start, end);
    }
    result
}

/// One datagram in flight at a time; its first 8 bytes are a sequence number, so a late
/// reply to an earlier (lost) datagram is recognised and skipped.
fn datagrams(addr: SocketAddr, id: usize, msg: usize, shared: &Shared) -> ThreadResult {
    let mut result = ThreadResult::new();
    let socket = match UdpSocket::bind("127.0.0.1:0").and_then(|s| s.connect(addr).map(|()| s)) {
        Ok(socket) => socket,
        Err(e) => {
            shared.error(Instant::now(), || format!("udp socket: {e}"));
            return result;
        }
    };
    let _ = socket.set_read_timeout(Some(UDP_TIMEOUT));
    let pattern = pattern();
    let msg = msg.max(8);
    let mut payload = vec![0u8; msg];
    let mut buf = vec![0u8; msg + 64];
    let mut seq = (id as u64) << 40;
    'requests: loop {
        let start = Instant::now();
        if !shared.live(start) {
            break;
        }
        seq += 1;
        let offset = (seq as usize) % PATTERN_SLACK;
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        payload[8..].copy_from_slice(&pattern[offset..offset + msg - 8]);
        if let Err(e) = socket.send(&payload) {
            shared.error(Instant::now(), || format!("send: {e}"));
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let got = u64::from_le_bytes(buf[..8.min(n)].try_into().unwrap_or([0; 8]));
                    if n >= 8 && got < seq && got >> 40 == seq >> 40 {
                        continue; // a late reply to a datagram already counted as lost
                    }
                    let end = Instant::now();
                    if buf[..n] != payload[..] {
                        shared.error(end, || format!("wrong reply: {n} bytes, sequence {got} for {seq}"));
                        continue 'requests;
                    }
                    result.done(shared, start, end);
                    continue 'requests;
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let now = Instant::now();
                    if shared.live(now) {
                        shared.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.error(now, || format!("no reply within {} ms", UDP_TIMEOUT.as_millis()));
                    continue 'requests;
                }
                Err(e) => {
                    let now = Instant::now();
                    shared.error(now, || format!("recv: {e}"));
                    thread::sleep(Duration::from_millis(1));
                    continue 'requests;
                }
            }
        }
    }
    result
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// A client thread and the number of connections it drives.
type Handle = (thread::JoinHandle<ThreadResult>, usize);

fn spawn_clients(server: &ServerProcess, config: &LoadConfig, begin: Instant, shared: &Arc<Shared>) -> Vec<Handle> {
    match (config.client, config.workload, &server.target) {
        (Client::Events, Workload::Persistent { msg }, Target::Tcp(addr)) => {
            spawn_event_clients(*addr, msg, config.conns, config.client_threads, begin, shared)
        }
        _ => spawn_thread_clients(server, config, begin, shared),
    }
}

/// `threads` threads (at most one per connection), connection `id` on thread `id % threads`.
fn spawn_event_clients(
    addr: SocketAddr,
    msg: usize,
    conns: usize,
    threads: usize,
    begin: Instant,
    shared: &Arc<Shared>,
) -> Vec<Handle> {
    let threads = threads.clamp(1, conns.max(1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let ids: Vec<usize> = (t..conns).step_by(threads).collect();
        let owned = ids.len();
        let thread_shared = Arc::clone(shared);
        let spawned = thread::Builder::new().name(format!("client-events-{t}")).spawn(move || {
            sleep_until(begin);
            events::persistent_tcp(addr, &ids, msg, threads, &thread_shared)
        });
        match spawned {
            Ok(handle) => handles.push((handle, owned)),
            Err(e) => shared.error(Instant::now(), || format!("spawning a client thread: {e}")),
        }
    }
    handles
}

fn spawn_thread_clients(
    server: &ServerProcess,
    config: &LoadConfig,
    begin: Instant,
    shared: &Arc<Shared>,
) -> Vec<Handle> {
    let mut handles = Vec::with_capacity(config.conns);
    for id in 0..config.conns {
        let thread_shared = Arc::clone(shared);
        let target = server.target.clone();
        let workload = config.workload;
        let spawned = thread::Builder::new().name(format!("client-{id}")).stack_size(256 * 1024).spawn(move || {
            let shared = thread_shared;
            sleep_until(begin);
            let mut result = match (workload, &target) {
                (Workload::Persistent { msg }, Target::Tcp(addr)) => persistent_tcp(*addr, id, msg, &shared),
                (Workload::Persistent { msg }, Target::Unix(path)) => persistent_unix(path, id, msg, &shared),
                (Workload::ConnectPerRequest { msg }, Target::Tcp(addr)) => {
                    connect_per_request(*addr, id, msg, &shared)
                }
                (Workload::Datagram { msg }, Target::Udp(addr)) => datagrams(*addr, id, msg, &shared),
                _ => {
                    shared.error(Instant::now(), || format!("workload {workload:?} does not fit {target:?}"));
                    ThreadResult::new()
                }
            };
            result.starved = usize::from(result.hist.count() == 0);
            result
        });
        match spawned {
            Ok(handle) => handles.push((handle, 1)),
            Err(e) => shared.error(Instant::now(), || format!("spawning a client thread: {e}")),
        }
    }
    handles
}

/// Runs `config` against `server` and measures the window.
pub fn run(server: &mut ServerProcess, config: &LoadConfig) -> Measurement {
    let begin = Instant::now() + Duration::from_millis(20);
    let t0 = begin + config.warmup;
    let t1 = t0 + config.window;
    let shared = Arc::new(Shared {
        t0,
        t1,
        stop: AtomicBool::new(false),
        errors: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        first_error: Mutex::new(None),
        closers: Mutex::new(Vec::new()),
    });
    // Client threads inherit the spawning thread's CPU binding.
    let handles = sys::pinned(sys::client_cpus(), || spawn_clients(server, config, begin, &shared));

    sleep_until(t0);
    let cpu0 = server.cpu_ticks();
    sleep_until(t1);
    let cpu1 = server.cpu_ticks();
    let (log_lines, first_log_line) = server.log_summary();
    shared.stop.store(true, Ordering::Relaxed);
    for closer in shared.closers.lock().unwrap().iter() {
        let _ = match closer {
            Closer::Tcp(s) => s.shutdown(Shutdown::Both),
            Closer::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while handles.iter().any(|(h, _)| !h.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let hung = handles.iter().filter(|(h, _)| !h.is_finished()).count();
    if hung > 0 {
        // A client blocked in connect or read on a server that will never answer: killing
        // the server releases it.
        server.kill();
    }

    let mut hist = Histogram::new();
    // The connections of a client thread that could not even be spawned never got served.
    let mut starved = config.conns - handles.iter().map(|(_, owned)| owned).sum::<usize>();
    let (mut timed_out, mut unopened) = (0, 0);
    for (handle, owned) in handles {
        match handle.join() {
            Ok(result) => {
                starved += result.starved;
                timed_out += result.timed_out;
                unopened += result.unopened;
                hist.merge(&result.hist);
            }
            Err(_) => starved += owned,
        }
    }
    let requests = hist.count();
    let cpu_us_per_req = match (cpu0, cpu1) {
        (Some(a), Some(b)) if requests > 0 => Some((b.saturating_sub(a)) as f64 * sys::us_per_tick() / requests as f64),
        _ => None,
    };
    let first_error = shared.first_error.lock().unwrap().take();
    Measurement {
        req_per_s: requests as f64 / config.window.as_secs_f64(),
        hist,
        errors: shared.errors.load(Ordering::Relaxed),
        lost: shared.lost.load(Ordering::Relaxed),
        starved,
        timed_out,
        unopened,
        cpu_us_per_req,
        first_error,
        hung,
        log_lines,
        first_log_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_round_trip_within_two_percent() {
        for ns in [0u64, 1, 127, 128, 129, 255, 256, 1000, 20_000, 1_234_567, 50_000_000_000] {
            let v = Histogram::value(Histogram::index(ns));
            assert!((v - ns as f64).abs() <= ns as f64 * 0.016 + 0.5, "{ns} -> {v}");
        }
        let mut last = 0;
        for ns in (0..2_000_000u64).step_by(97) {
            let i = Histogram::index(ns);
            assert!(i >= last);
            last = i;
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5).unwrap();
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((p50 - 500.0).abs() < 10.0, "{p50}");
        assert!((p99 - 990.0).abs() < 20.0, "{p99}");
    }
}
