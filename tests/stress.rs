//! A seeded, reproducible stress test of the engine: many clients with random
//! behaviours (park, pipeline, half-send then stall, trickle, reset while parked, silent,
//! idle past the timeout) against every dispatch mode and stream transport, with and
//! without a frame, some runs stopped in the middle of the traffic (by `stop`, or by a
//! SIGTERM to the process on Unix), some squeezed out of descriptors while clients
//! connect (Linux: the process's descriptor limit lowered to what is open, for a while,
//! so that `accept` fails with `EMFILE`, but for a descriptor freed below the limit).
//! After each run:
//! every request a client sent was answered, in order, or its connection was closed
//! for a reason the client gave (never dropped while the client behaved, never a hang);
//! `finish` ran once per `setup`; the counters are back to zero; no descriptor and no
//! thread is left.
//!
//! `cargo test --test stress` runs a short set of seeds (CI); a longer run is one
//! command: `STRESS_SEEDS=200 cargo test --release --test stress`, and one seed again
//! is `STRESS_SEED=N cargo test --test stress`. A failure names its seed and run.
//!
//! One test in this binary, so that its descriptor and thread counts are its own.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[cfg(unix)]
use socket2::SockAddr;
use socket2::{Domain, Socket, Type};
use socketserver::dispatch::{Dispatch, Pool, Threading};
use socketserver::{Frame, HandlerResult, RequestHandler, StreamRequest, TcpServer};
use support::{bounded_alone, LIMIT, TIMEOUT};

/// How long a parked connection may stay idle in these runs.
const IDLE: Duration = Duration::from_millis(250);
const CLIENTS: usize = 12;

/// A small, seeded generator (xorshift64*): the same seed gives the same run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, most: u64) -> Duration {
        Duration::from_millis(self.below(most + 1))
    }
}

/// What one client does.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// A few lines, one at a time, with pauses shorter than the idle timeout: it parks.
    Park,
    /// Several lines in one write, then their replies.
    Pipeline,
    /// Half a line, a stall, then the rest.
    HalfThenStall,
    /// A line a byte at a time.
    Trickle,
    /// A line, its reply, then a reset while parked.
    ResetWhileParked,
    /// Connects, says nothing, leaves.
    Silent,
    /// A line, its reply, then idle past the timeout: the server closes it.
    IdlePastTimeout,
}

const BEHAVIOURS: [Behaviour; 7] = [
    Behaviour::Park,
    Behaviour::Pipeline,
    Behaviour::HalfThenStall,
    Behaviour::Trickle,
    Behaviour::ResetWhileParked,
    Behaviour::Silent,
    Behaviour::IdlePastTimeout,
];

/// Upper-cases each line, numbered per connection, and parks between lines; counts its
/// phases.
#[derive(Default)]
struct Numbered {
    setups: AtomicUsize,
    finishes: AtomicUsize,
}

impl RequestHandler<StreamRequest> for Numbered {
    fn setup(&self, _: &mut StreamRequest) -> HandlerResult {
        self.setups.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> HandlerResult {
        let mut line = String::new();
        if req.reader().read_line(&mut line)? == 0 || !line.ends_with('\n') {
            return Ok(()); // the client left, or left half a line
        }
        let n = {
            let seen = req.state::<u64>();
            *seen += 1;
            *seen
        };
        write!(req.writer(), "{n}: {}", line.to_uppercase())?;
        req.park();
        Ok(())
    }

    fn finish(&self, _: &mut StreamRequest) -> HandlerResult {
        self.finishes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// How a client's run ended.
#[derive(Debug)]
enum Ended {
    /// Every line it sent was answered, in order.
    Answered,
    /// The server closed the connection, for a reason the client gave it (idle, or a
    /// server that is stopping).
    Closed,
}

/// A stream client: TCP, or a Unix socket.
trait Stream: Read + Write + Send + Sized + 'static {
    fn set_timeout(&self, timeout: Duration);
    fn shut(&self);
    fn reset(self);
}

impl Stream for TcpStream {
    fn set_timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
    }
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn reset(self) {
        let _ = socket2::SockRef::from(&self).set_linger(Some(Duration::ZERO));
    }
}

#[cfg(unix)]
impl Stream for std::os::unix::net::UnixStream {
    fn set_timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
    }
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn reset(self) {}
}

/// Reads one reply line; `Ok(None)` when the server closed the connection.
fn reply<S: Stream>(reader: &mut BufReader<S>) -> io::Result<Option<String>> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) if line.ends_with('\n') => Ok(Some(line)),
        Ok(_) => Ok(None),
        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs one client; fails (with `what`) on a wrong reply, a hang, or a close the client
/// gave no reason for.
fn client<S: Stream>(stream: S, behaviour: Behaviour, mut rng: Rng, stopping: bool, what: &str) -> Ended {
    stream.set_timeout(TIMEOUT);
    let mut reader = BufReader::new(stream);
    let mut answered = 0u64;
    let mut ask = |reader: &mut BufReader<S>, lines: &[String], pieces: &mut dyn FnMut(&mut S, &[u8])| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        pieces(reader.get_mut(), text.as_bytes());
        for line in lines {
            match reply(reader) {
                Ok(Some(got)) => {
                    answered += 1;
                    assert_eq!(got, format!("{answered}: {}\n", line.to_uppercase()), "{what}: a reply out of order");
                }
                Ok(None) => return false,
                Err(e) => panic!("{what}: no reply to {line:?} within {TIMEOUT:?}: {e} (a hang)"),
            }
        }
        true
    };
    let mut whole = |s: &mut S, bytes: &[u8]| {
        let _ = s.write_all(bytes);
    };
    let word = |n: u64| format!("w{n}-{}", "x".repeat((n % 7) as usize));
    let gave_reason;
    let ok = match behaviour {
        Behaviour::Park => {
            gave_reason = false;
            (0..1 + rng.below(4)).all(|n| {
                thread::sleep(rng.millis(IDLE.as_millis() as u64 / 3));
                ask(&mut reader, &[word(n)], &mut whole)
            })
        }
        Behaviour::Pipeline => {
            gave_reason = false;
            let lines: Vec<String> = (0..2 + rng.below(6)).map(word).collect();
            ask(&mut reader, &lines, &mut whole)
        }
        Behaviour::HalfThenStall => {
            // A stall longer than the idle timeout may be closed (a frame counts the
            // idle time from the message's first byte; without one, the read times out).
            let stall = rng.millis(IDLE.as_millis() as u64 * 2);
            gave_reason = stall >= IDLE / 2;
            let mut halves = |s: &mut S, bytes: &[u8]| {
                let (a, b) = bytes.split_at(bytes.len() / 2);
                let _ = s.write_all(a);
                thread::sleep(stall);
                let _ = s.write_all(b);
            };
            ask(&mut reader, &[word(3)], &mut halves)
        }
        Behaviour::Trickle => {
            gave_reason = false;
            let mut bytewise = |s: &mut S, bytes: &[u8]| {
                for byte in bytes {
                    let _ = s.write_all(&[*byte]);
                    thread::sleep(Duration::from_millis(2));
                }
            };
            ask(&mut reader, &[word(5)], &mut bytewise)
        }
        Behaviour::ResetWhileParked => {
            let answered = ask(&mut reader, &[word(1)], &mut whole);
            thread::sleep(rng.millis(20));
            reader.into_inner().reset();
            return if answered { Ended::Answered } else { Ended::Closed };
        }
        Behaviour::Silent => {
            thread::sleep(rng.millis(IDLE.as_millis() as u64 / 2));
            return Ended::Answered;
        }
        Behaviour::IdlePastTimeout => {
            ask(&mut reader, &[word(2)], &mut whole);
            thread::sleep(IDLE * 3);
            // The server has closed it: end-of-file (or a reset), never a hang.
            match reply(&mut reader) {
                Ok(None) => {}
                other => panic!("{what}: a connection idle past the timeout was kept: {other:?}"),
            }
            return Ended::Closed;
        }
    };
    if !ok {
        assert!(gave_reason || stopping, "{what}: {behaviour:?}: the server closed a connection that behaved");
        return Ended::Closed;
    }
    reader.get_ref().shut();
    Ended::Answered
}

/// The server's settings for a run.
fn configure<T: socketserver::transport::Transport<Request = StreamRequest>>(
    builder: socketserver::Builder<T>,
    dispatch: Dispatch,
    framed: bool,
    speaks_first: bool,
) -> socketserver::Builder<T> {
    let builder = builder.dispatch(dispatch).idle_timeout(Some(IDLE)).handle_error(|_, _| {});
    if framed {
        builder.frame(Frame::lines(256))
    } else {
        builder.client_speaks_first(speaks_first)
    }
}

/// A mode by name, made anew for each run.
type ModeMaker = (&'static str, fn() -> Dispatch);

fn modes() -> [ModeMaker; 3] {
    [
        ("sequential", Dispatch::sequential),
        ("threading", || Threading::new().max_threads(4).into()),
        ("pool", || Pool::new(3).into()),
    ]
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Once every client is done, with nothing left running or parked.
    AtTheEnd,
    /// `BackgroundServer::stop` in the middle of the traffic.
    Early,
    /// SIGTERM to the process in the middle of the traffic, heard through
    /// `shutdown_on_signals`; then `stop` joins what is left.
    Signal,
}

/// A stop of some sort for one run in four; a signal only where the crate hears them.
fn pick_stop(rng: &mut Rng) -> Stop {
    match rng.below(8) {
        0 | 1 if cfg!(all(unix, feature = "signals")) => Stop::Signal,
        0 | 1 => Stop::Early,
        2 | 3 => Stop::Early,
        _ => Stop::AtTheEnd,
    }
}

/// While it lives, the process can open hardly any more descriptors (Linux): its soft
/// limit is lowered to what is open now (a descriptor freed below the limit can still be
/// taken, once). Dropping it gives the limit back.
#[cfg(target_os = "linux")]
struct Squeeze(rustix::process::Rlimit);

#[cfg(target_os = "linux")]
impl Squeeze {
    fn start() -> Squeeze {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let before = getrlimit(Resource::Nofile);
        // Less the one that reading /proc/self/fd held while counting.
        let open = support::linux::open_fds() as u64 - 1;
        setrlimit(Resource::Nofile, Rlimit { current: Some(open), maximum: before.maximum }).unwrap();
        Squeeze(before)
    }
}

#[cfg(target_os = "linux")]
impl Drop for Squeeze {
    fn drop(&mut self) {
        let before = rustix::process::Rlimit { current: self.0.current, maximum: self.0.maximum };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, before).unwrap();
    }
}

/// Squeezes the process out of descriptors for `hold`, on a thread of its own; joining
/// the thread gives them back. (Nothing on other platforms.)
fn squeeze_for(hold: Duration) -> thread::JoinHandle<()> {
    #[cfg(target_os = "linux")]
    {
        let squeeze = Squeeze::start();
        thread::spawn(move || {
            thread::sleep(hold);
            drop(squeeze);
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        thread::spawn(move || {
            let _ = hold;
        })
    }
}

/// Sends SIGTERM to this process (which the server listens for).
fn sigterm() {
    #[cfg(all(unix, feature = "signals"))]
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
}

/// One run: a server, `CLIENTS` clients with random behaviours, maybe a stop in the
/// middle, maybe a squeeze; then the checks.
fn run(seed: u64, mode: usize, transport: &str, framed: bool) {
    let mut rng = Rng::new(seed);
    let (mode_name, dispatch) = modes()[mode];
    let stop = pick_stop(&mut rng);
    let stop_early = stop != Stop::AtTheEnd;
    let squeeze = cfg!(target_os = "linux") && rng.below(3) == 0;
    let what = format!("seed {seed}, {mode_name}, {transport}, framed {framed}, stop {stop:?}, squeeze {squeeze}");
    let handler = Arc::new(Numbered::default());
    let speaks_first = rng.below(2) == 0;
    let fds_before = open_fds();
    let behaviours: Vec<(Behaviour, Rng)> =
        (0..CLIENTS).map(|_| (BEHAVIOURS[rng.below(BEHAVIOURS.len() as u64) as usize], Rng::new(rng.next()))).collect();
    let stop_after = rng.millis(400);
    let hold = rng.millis(300);
    type StopServer = Box<dyn FnOnce() -> socketserver::Result<()>>;
    type Connect = Box<dyn Fn(Socket) -> Box<dyn FnOnce(Behaviour, Rng) -> Ended + Send>>;
    let (stats_handle, background, connect, domain): (_, StopServer, Connect, _) = match transport {
        "tcp" => {
            let server = configure(TcpServer::builder("127.0.0.1:0"), dispatch(), framed, speaks_first)
                .bind_handler(handler.clone())
                .unwrap();
            let addr: SocketAddr = server.local_addr();
            let handle = server.handle();
            let what = what.clone();
            let connect = move |socket: Socket| -> Box<dyn FnOnce(Behaviour, Rng) -> Ended + Send> {
                socket.connect(&addr.into()).unwrap();
                let stream = TcpStream::from(socket);
                let what = what.clone();
                Box::new(move |b, r| client(stream, b, r, stop_early, &what))
            };
            let background = server.serve_in_background().unwrap();
            (handle, Box::new(move || background.stop()), Box::new(connect), Domain::IPV4)
        }
        #[cfg(unix)]
        _ => {
            let path = support::temp_socket_path("stress");
            let server = configure(socketserver::UnixStreamServer::builder(&path), dispatch(), framed, speaks_first)
                .bind_handler(handler.clone())
                .unwrap();
            let handle = server.handle();
            let what = what.clone();
            let connect = move |socket: Socket| -> Box<dyn FnOnce(Behaviour, Rng) -> Ended + Send> {
                socket.connect(&SockAddr::unix(&path).unwrap()).unwrap();
                let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(socket));
                let what = what.clone();
                Box::new(move |b, r| client(stream, b, r, stop_early, &what))
            };
            let background = server.serve_in_background().unwrap();
            (handle, Box::new(move || background.stop()), Box::new(connect), Domain::UNIX)
        }
        #[cfg(not(unix))]
        other => unreachable!("no {other} transport here"),
    };
    #[cfg(all(unix, feature = "signals"))]
    let _signals = (stop == Stop::Signal).then(|| stats_handle.shutdown_on_signals().unwrap());
    // The clients' sockets are made before a squeeze: connecting takes no descriptor on
    // the client's side, accepting takes one on the server's.
    let sockets: Vec<Socket> = (0..CLIENTS).map(|_| Socket::new(domain, Type::STREAM, None).unwrap()).collect();
    let squeezed = squeeze.then(|| squeeze_for(hold));
    let clients: Vec<_> = behaviours
        .into_iter()
        .zip(sockets)
        .map(|((behaviour, rng), socket)| {
            let run = connect(socket);
            thread::spawn(move || (behaviour, run(behaviour, rng)))
        })
        .collect();
    let background = match stop {
        Stop::AtTheEnd => Some(background),
        Stop::Early => {
            thread::sleep(stop_after);
            background().unwrap_or_else(|e| panic!("{what}: stop: {e}"));
            None
        }
        Stop::Signal => {
            thread::sleep(stop_after);
            sigterm();
            // The signal shuts the server down; `stop` then joins its thread.
            let deadline = Instant::now() + TIMEOUT;
            while stats_handle.is_serving() {
                assert!(Instant::now() < deadline, "{what}: SIGTERM did not shut the server down");
                thread::sleep(Duration::from_millis(5));
            }
            background().unwrap_or_else(|e| panic!("{what}: stop after SIGTERM: {e}"));
            None
        }
    };
    if let Some(squeezed) = squeezed {
        squeezed.join().unwrap();
    }
    // The listener's own descriptors are not the server's: gone before they are counted.
    #[cfg(all(unix, feature = "signals"))]
    drop(_signals);
    for client in clients {
        let (behaviour, ended) = client.join().unwrap_or_else(|_| panic!("{what}: a client failed (above)"));
        if let (false, Ended::Closed, Behaviour::Park | Behaviour::Pipeline | Behaviour::Trickle) =
            (stop_early, &ended, behaviour)
        {
            panic!("{what}: {behaviour:?} was closed");
        }
    }
    if let Some(background) = background {
        // Everything the clients did has ended: nothing runs, nothing is parked.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let stats = stats_handle.stats();
            if (stats.active, stats.parked) == (0, 0) {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: left running or parked: {stats:?}");
            thread::sleep(Duration::from_millis(10));
        }
        background().unwrap_or_else(|e| panic!("{what}: stop: {e}"));
    }
    let stats = stats_handle.stats();
    assert_eq!((stats.active, stats.parked), (0, 0), "{what}: counters after the stop: {stats:?}");
    let (setups, finishes) = (handler.setups.load(Ordering::SeqCst), handler.finishes.load(Ordering::SeqCst));
    assert_eq!(setups, finishes, "{what}: finish once per setup");
    // The server's descriptors are closed once it is (the clients' with their threads).
    if let (Some(before), Some(after)) = (fds_before, open_fds()) {
        assert!(after <= before, "{what}: {} descriptor(s) left open", after - before);
    }
}

fn open_fds() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        Some(support::linux::open_fds())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn threads() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir("/proc/self/task").ok().map(|dir| dir.count())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[test]
fn random_clients_against_every_mode_and_stream_transport() {
    let seeds: Vec<u64> = match (std::env::var("STRESS_SEED"), std::env::var("STRESS_SEEDS")) {
        (Ok(one), _) => vec![one.parse().expect("STRESS_SEED is a number")],
        (_, Ok(n)) => (1..=n.parse().expect("STRESS_SEEDS is a number")).collect(),
        _ => (1..=4).collect(),
    };
    bounded_alone(LIMIT * seeds.len() as u32, move || {
        let threads_before = threads();
        let transports: &[&str] = if cfg!(unix) { &["tcp", "unix"] } else { &["tcp"] };
        for &seed in &seeds {
            for mode in 0..modes().len() {
                for (t, transport) in transports.iter().enumerate() {
                    let framed = (seed + mode as u64 + t as u64) % 2 == 0;
                    run(seed * 100 + mode as u64 * 10 + t as u64, mode, transport, framed);
                }
            }
        }
        // Every thread the servers started has been joined (a few may still be on their
        // way out after a join: wait for them, bounded).
        if let Some(before) = threads_before {
            let deadline = Instant::now() + TIMEOUT;
            while threads().unwrap() > before {
                assert!(Instant::now() < deadline, "{} thread(s) left", threads().unwrap() - before);
                thread::sleep(Duration::from_millis(10));
            }
        }
    });
}
