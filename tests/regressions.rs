//! Regression tests for the engine fixes of "Engine fixes from review": each test fails
//! without its fix. Serving again right after `shutdown()`, `handle_request` in threaded
//! modes, the timeout and `service_actions` while every slot is busy, daemon requests
//! and the shutdown deadline, a non-blocking listener, sockets the user supplied,
//! `reuse_address(false)` on a second bind, and `close()` from a handler.
//!
//! Handlers that must stay busy block on a [`Gate`] the test opens; every wait has a
//! deadline and every test a watchdog. Not covered: two processes racing for a stale
//! Unix socket path.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::transport::Transport;
use socketserver::{DatagramRequest, Error, Server, StreamRequest, TcpServer, UdpServer, UnixDatagramServer};
use support::{
    assert_refused, connect, join_within, temp_socket_path, udp_client, wait_until, watchdog, within, TIMEOUT,
};

const WATCHDOG: Duration = Duration::from_secs(90);

/// Rounds of "shut down, serve again at once" per transport.
const ROUNDS: usize = 100;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The handler's side of a rendezvous: it says it started, then waits to be released.
struct Gate {
    started: Sender<()>,
    release: Mutex<Receiver<()>>,
}

impl Gate {
    /// Blocks the request until the test releases it (at most [`TIMEOUT`]).
    fn pass(&self) -> io::Result<()> {
        let _ = self.started.send(());
        let released = self.release.lock().unwrap().recv_timeout(TIMEOUT);
        released.map_err(|e| io::Error::new(io::ErrorKind::TimedOut, format!("the test never released: {e}")))
    }
}

/// The test's side of a [`Gate`].
struct Control {
    started: Receiver<()>,
    release: Sender<()>,
}

impl Control {
    fn wait_started(&self, what: &str) {
        if let Err(e) = self.started.recv_timeout(TIMEOUT) {
            panic!("{what}: the handler did not start: {e}");
        }
    }

    fn release(&self) {
        self.release.send(()).expect("the handler is gone");
    }
}

fn gate() -> (Arc<Gate>, Control) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Gate { started: started_tx, release: Mutex::new(release_rx) };
    (Arc::new(gate), Control { started: started_rx, release: release_tx })
}

/// A stream handler that waits at the gate, then writes `reply`.
fn gated(gate: &Arc<Gate>, reply: &'static [u8]) -> impl Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync {
    let gate = gate.clone();
    move |req: &mut StreamRequest| {
        gate.pass()?;
        req.writer().write_all(reply)
    }
}

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    let (reader, writer) = req.reader_and_writer();
    io::copy(reader, writer).map(drop)
}

fn datagram_echo(req: &mut DatagramRequest) -> io::Result<()> {
    let packet = req.packet().to_vec();
    req.reply().extend_from_slice(&packet);
    Ok(())
}

fn tcp_echo(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(message).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    read_all(&mut stream)
}

fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("the reply");
    reply
}

fn udp_echo_once(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let client = udp_client();
    client.send_to(message, addr).unwrap();
    let mut buf = [0; 256];
    let (n, _) = client.recv_from(&mut buf).expect("UDP reply");
    buf[..n].to_vec()
}

/// Runs `f` on a helper thread and hands back a receiver for its result.
fn start<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Receiver<R> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// Runs `serve_forever` on a thread named `name` and waits until the serve call began.
fn serve_started<T: Transport>(server: &Arc<Server<T>>, name: &str) -> JoinHandle<socketserver::Result<()>> {
    let serving = server.clone();
    let thread = thread::Builder::new().name(name.to_string()).spawn(move || serving.serve_forever()).unwrap();
    let handle = server.handle();
    wait_until(TIMEOUT, "serve_forever to begin", || handle.is_serving() || thread.is_finished());
    assert!(!thread.is_finished(), "serve_forever returned at once: {:?}", thread.join());
    thread
}

/// Shuts the server down from a helper thread and joins its serve thread.
fn stop<T: Transport>(server: &Arc<Server<T>>, serve: JoinHandle<socketserver::Result<()>>) {
    let handle = server.handle();
    within(TIMEOUT, move || handle.shutdown());
    let result = join_within(serve, TIMEOUT);
    assert!(result.is_ok(), "serve_forever returned {result:?}");
}

/// Drops the last reference to a server on a helper thread; the drop must complete.
fn drop_within<T: Transport>(server: Arc<Server<T>>) {
    within(TIMEOUT, move || {
        let server = Arc::try_unwrap(server).expect("the test holds the last reference to the server");
        drop(server);
    });
}

/// Sends `message` until the echo comes back (each try waits 50 ms for it): the server
/// socket may not be bound yet when this starts.
fn udp_until_echoed(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0; 256];
    while Instant::now() < deadline {
        let _ = client.send_to(message, addr);
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            if &buf[..n] == message {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no echo of {:?} from {addr} within {TIMEOUT:?}", String::from_utf8_lossy(message));
}

/// As [`udp_until_echoed`], from a Unix datagram client bound at `client_path`.
fn unix_until_echoed(server: &Path, client_path: &Path, message: &[u8]) -> Vec<u8> {
    let client = UnixDatagram::bind(client_path).unwrap();
    client.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0; 256];
    while Instant::now() < deadline {
        if client.send_to(message, server).is_err() {
            // Not bound again yet (refused, or no file for a moment).
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        if let Ok(n) = client.recv(&mut buf) {
            if &buf[..n] == message {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no echo of {:?} from {} within {TIMEOUT:?}", String::from_utf8_lossy(message), server.display());
}

/// Connects until the server accepts (it may not listen yet), then echoes `message`.
fn tcp_until_echoed(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(TIMEOUT)).unwrap();
                stream.write_all(message).unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                return read_all(&mut stream);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("connect to {addr}: {e}"),
        }
    }
    panic!("{addr} did not accept within {TIMEOUT:?}");
}

/// A client that waits for `go`, then runs `exchange`: started before `shutdown()` so
/// that nothing but a channel send separates `shutdown()` from the next serve call.
fn client_on_signal(exchange: impl FnOnce() -> Vec<u8> + Send + 'static) -> (Sender<()>, JoinHandle<Vec<u8>>) {
    let (go, wait) = mpsc::channel::<()>();
    let client = thread::spawn(move || {
        wait.recv_timeout(TIMEOUT).expect("the signal to start");
        exchange()
    });
    (go, client)
}

/// Threads that keep every core busy until dropped. The bug of test 1 shows only when
/// the serve thread is preempted between waking `shutdown()` and releasing its socket;
/// with every core busy, a wake-up often preempts the waker.
struct BusyCores {
    running: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn busy_cores() -> BusyCores {
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    let running = Arc::new(AtomicBool::new(true));
    let threads = (0..(2 * cores).min(16))
        .map(|_| {
            let running = running.clone();
            thread::spawn(move || {
                while running.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    BusyCores { running, threads }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The CPU time the one thread named `name` has used: from `schedstat` (nanoseconds),
/// or `stat` (clock ticks, 10 ms each on Linux) where the kernel has no schedstat.
fn cpu_time_of(name: &str) -> Duration {
    let dir = support::thread_dir(name);
    if let Ok(schedstat) = std::fs::read_to_string(dir.join("schedstat")) {
        let ns: u64 = schedstat.split_whitespace().next().unwrap().parse().unwrap();
        return Duration::from_nanos(ns);
    }
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

// ---------------------------------------------------------------------------------------
// 1. Serving again right after shutdown()
// ---------------------------------------------------------------------------------------

/// `shutdown()` returns once `serve_forever` has returned; the old socket must already
/// be closed by then, so a serve call made at once (without joining the serve thread)
/// binds the address instead of failing with `AddrInUse`.
///
/// The bug was a race (the serve thread dropped its socket just after waking
/// `shutdown()`), so this repeats the sequence, with every core kept busy to widen the
/// window. It shows on a socket bound again without `SO_REUSEADDR`: a TCP server with
/// `reuse_address(false)` (the default TCP one binds over its old listener regardless).
/// Datagram servers keep their socket across shutdown; they are here as guards.
#[test]
fn serving_again_right_after_shutdown_finds_the_address_free() {
    let _watchdog = watchdog("serving_again_right_after_shutdown_finds_the_address_free", WATCHDOG);
    let _busy = busy_cores();

    // UDP.
    let udp = Arc::new(UdpServer::builder("127.0.0.1:0").timeout(TIMEOUT).bind(datagram_echo).unwrap());
    let addr = udp.local_addr();
    for round in 0..ROUNDS {
        let serve = serve_started(&udp, "rg-again-udp");
        let message = format!("udp {round}").into_bytes();
        let expected = message.clone();
        let (go, client) = client_on_signal(move || udp_until_echoed(addr, &message));
        udp.shutdown();
        go.send(()).unwrap();
        let handled = udp.handle_request();
        assert!(matches!(handled, Ok(true)), "udp round {round}: handle_request right after shutdown: {handled:?}");
        assert_eq!(join_within(client, TIMEOUT), expected, "udp round {round}");
        let result = join_within(serve, TIMEOUT);
        assert!(result.is_ok(), "udp round {round}: serve_forever returned {result:?}");
    }

    // A Unix datagram server.
    let path = temp_socket_path("rg-again");
    let unix = Arc::new(UnixDatagramServer::builder(&path).timeout(TIMEOUT).bind(datagram_echo).unwrap());
    for round in 0..ROUNDS {
        let serve = serve_started(&unix, "rg-again-unix");
        let message = format!("unix {round}").into_bytes();
        let expected = message.clone();
        let server_path = path.clone();
        let client_path = temp_socket_path("rg-again-client");
        let client_file = client_path.clone();
        let (go, client) = client_on_signal(move || unix_until_echoed(&server_path, &client_path, &message));
        unix.shutdown();
        go.send(()).unwrap();
        let handled = unix.handle_request();
        assert!(matches!(handled, Ok(true)), "unix round {round}: handle_request right after shutdown: {handled:?}");
        assert_eq!(join_within(client, TIMEOUT), expected, "unix round {round}");
        let _ = std::fs::remove_file(&client_file);
        let result = join_within(serve, TIMEOUT);
        assert!(result.is_ok(), "unix round {round}: serve_forever returned {result:?}");
    }
    drop_within(unix);
    assert!(!path.exists(), "closing the Unix datagram server left its socket file");

    // TCP without SO_REUSEADDR: the old listener, shut down but still open, holds the
    // port. The client closes first, so no TIME_WAIT is left on the server's port.
    let tcp = Arc::new(TcpServer::builder("127.0.0.1:0").reuse_address(false).timeout(TIMEOUT).bind(echo).unwrap());
    let addr = tcp.local_addr();
    for round in 0..ROUNDS {
        let serve = serve_started(&tcp, "rg-again-tcp");
        let message = format!("tcp {round}").into_bytes();
        let expected = message.clone();
        let (go, client) = client_on_signal(move || tcp_until_echoed(addr, &message));
        tcp.shutdown();
        go.send(()).unwrap();
        let handled = tcp.handle_request();
        assert!(matches!(handled, Ok(true)), "tcp round {round}: handle_request right after shutdown: {handled:?}");
        assert_eq!(join_within(client, TIMEOUT), expected, "tcp round {round}");
        let result = join_within(serve, TIMEOUT);
        assert!(result.is_ok(), "tcp round {round}: serve_forever returned {result:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. handle_request returns once its request is dispatched
// ---------------------------------------------------------------------------------------

#[test]
fn handle_request_returns_while_its_request_still_runs_in_threading_and_pool() {
    let _watchdog = watchdog("handle_request_returns_while_its_request_still_runs_in_threading_and_pool", WATCHDOG);
    let modes: [(&str, Box<dyn Dispatch>); 2] =
        [("threading", Box::new(Threading::new())), ("pool", Box::new(Pool::new(2)))];
    for (name, mode) in modes {
        let (gate, control) = gate();
        let server = Arc::new(TcpServer::builder("127.0.0.1:0").dispatch(mode).bind(gated(&gate, b"done")).unwrap());
        let mut client = connect(server.local_addr());
        let serving = server.clone();
        let handled = start(move || serving.handle_request());
        control.wait_started(name);
        // The handler is blocked until released below: handle_request must not wait for it.
        match handled.recv_timeout(TIMEOUT) {
            Ok(result) => assert!(matches!(result, Ok(true)), "{name}: handle_request returned {result:?}"),
            Err(_) => panic!("{name}: handle_request did not return while its request was still running"),
        }
        control.release();
        assert_eq!(read_all(&mut client), b"done", "{name}: the client's reply");
        drop_within(server);
    }
}

// ---------------------------------------------------------------------------------------
// 3. handle_request's timeout while every slot is busy
// ---------------------------------------------------------------------------------------

#[test]
fn handle_request_timeout_is_honoured_while_every_slot_is_busy() {
    let _watchdog = watchdog("handle_request_timeout_is_honoured_while_every_slot_is_busy", WATCHDOG);
    let modes: [(&str, Box<dyn Dispatch>); 2] = [
        ("threading max_threads(1)", Box::new(Threading::new().max_threads(1).block_on_close(false))),
        ("pool of 1", Box::new(Pool::new(1))),
    ];
    for (name, mode) in modes {
        let (gate, control) = gate();
        let timeouts = Arc::new(AtomicUsize::new(0));
        let counted = timeouts.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode)
                .timeout(Duration::from_millis(200))
                .handle_timeout(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                })
                .bind(gated(&gate, b"done"))
                .unwrap(),
        );
        let addr = server.local_addr();

        // The first request takes the only slot and stays there.
        let mut first = connect(addr);
        let serving = server.clone();
        let handled = start(move || serving.handle_request());
        control.wait_started(name);
        match handled.recv_timeout(TIMEOUT) {
            Ok(result) => assert!(matches!(result, Ok(true)), "{name}: the first handle_request returned {result:?}"),
            Err(_) => panic!("{name}: the first handle_request did not return while its request ran"),
        }

        // A second client waits in the backlog; with no free slot, handle_request must
        // give up after its timeout rather than wait for the slot (or take the client).
        let mut second = connect(addr);
        let serving = server.clone();
        let handled = start(move || serving.handle_request());
        match handled.recv_timeout(Duration::from_secs(3)) {
            Ok(result) => {
                assert!(matches!(result, Ok(false)), "{name}: handle_request at capacity returned {result:?}")
            }
            Err(_) => {
                control.release();
                panic!("{name}: handle_request at capacity ignored its 200 ms timeout (still waiting after 3 s)");
            }
        }
        assert_eq!(timeouts.load(Ordering::SeqCst), 1, "{name}: handle_timeout calls");

        // Release the first request; the second client is then served.
        control.release();
        assert_eq!(read_all(&mut first), b"done", "{name}: the first client's reply");
        let serving = server.clone();
        let served_second = start(move || {
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                if serving.handle_request()? {
                    return Ok(true);
                }
            }
            Ok(false)
        });
        control.wait_started(name);
        control.release();
        let result: socketserver::Result<bool> = served_second.recv_timeout(TIMEOUT).expect("handle_request returns");
        assert!(matches!(result, Ok(true)), "{name}: serving the second client: {result:?}");
        assert_eq!(read_all(&mut second), b"done", "{name}: the second client's reply");
        drop_within(server);
    }
}

// ---------------------------------------------------------------------------------------
// 4. service_actions while every slot is busy
// ---------------------------------------------------------------------------------------

#[test]
fn service_actions_runs_while_every_worker_is_busy() {
    let _watchdog = watchdog("service_actions_runs_while_every_worker_is_busy", WATCHDOG);
    let (gate, control) = gate();
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let server = Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .dispatch(Pool::new(1))
            .service_actions(Duration::from_millis(50), move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
            .bind(gated(&gate, b"done"))
            .unwrap(),
    );
    let serve = serve_started(&server, "rg-service");
    let mut client = connect(server.local_addr());
    control.wait_started("the long request");
    let before = calls.load(Ordering::SeqCst);
    // The only worker is blocked until released below.
    wait_until(TIMEOUT, "service_actions to run 3 more times while the pool is full", || {
        calls.load(Ordering::SeqCst) >= before + 3
    });
    control.release();
    assert_eq!(read_all(&mut client), b"done");
    stop(&server, serve);
    drop_within(server);
}

// ---------------------------------------------------------------------------------------
// 5. shutdown() with daemon threads and a deadline
// ---------------------------------------------------------------------------------------

/// Daemon requests are not waited for, so the shutdown deadline does not apply to them:
/// `shutdown()` must neither wait for the request nor close its connection.
#[test]
fn shutdown_with_a_deadline_leaves_daemon_requests_and_their_connections_alone() {
    let _watchdog = watchdog("shutdown_with_a_deadline_leaves_daemon_requests_and_their_connections_alone", WATCHDOG);
    let (gate, control) = gate();
    let server = Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new().daemon_threads(true))
            .shutdown_deadline(Duration::from_millis(300))
            .bind(gated(&gate, b"late"))
            .unwrap(),
    );
    let serve = serve_started(&server, "rg-daemon");
    let mut client = connect(server.local_addr());
    control.wait_started("the daemon request");
    // The handler is still blocked: shutdown() returns without it.
    stop(&server, serve);
    // The connection is still open: no end-of-file within a few hundred ms.
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0; 1];
    match client.read(&mut byte) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        other => panic!("the daemon request's connection was closed by shutdown(): read returned {other:?}"),
    }
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Released after shutdown() returned, the handler still reaches its client.
    control.release();
    assert_eq!(read_all(&mut client), b"late", "the daemon handler's reply after shutdown");
    drop_within(server);
}

// ---------------------------------------------------------------------------------------
// 6. A non-blocking listener from the user
// ---------------------------------------------------------------------------------------

#[test]
fn a_non_blocking_listener_from_the_user_does_not_spin() {
    let _watchdog = watchdog("a_non_blocking_listener_from_the_user_does_not_spin", WATCHDOG);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(TcpServer::from_listener(listener).bind(echo).unwrap());
    let serve = serve_started(&server, "rg-nonblock");
    assert_eq!(tcp_echo(addr, b"warm up"), b"warm up");
    thread::sleep(Duration::from_millis(100));
    let switches = support::context_switches_of("rg-nonblock");
    let cpu = cpu_time_of("rg-nonblock");
    thread::sleep(Duration::from_millis(500));
    let woke = support::context_switches_of("rg-nonblock") - switches;
    let busy = cpu_time_of("rg-nonblock") - cpu;
    eprintln!("non-blocking listener: {woke} wakeups and {busy:?} of CPU in 500 ms idle");
    // A spinning loop retries accept() without sleeping: few voluntary switches, but
    // the CPU time gives it away. A blocked thread uses none.
    assert!(woke <= 2, "the idle serve thread woke {woke} times in 500 ms");
    assert!(busy < Duration::from_millis(50), "the idle serve thread used {busy:?} of CPU in 500 ms");
    assert_eq!(tcp_echo(addr, b"still served"), b"still served");
    stop(&server, serve);
    drop_within(server);
}

// ---------------------------------------------------------------------------------------
// 7. A socket the user supplied is never replaced by a fresh bind
// ---------------------------------------------------------------------------------------

/// A listener the user supplied cannot listen again after shutdown: a second serve call
/// must fail with `Error::Bind` naming it, not bind a fresh socket without the user's
/// options. The builder sets a handle_request timeout so that a server that does bind
/// again returns instead of waiting forever.
fn assert_second_serve_is_a_bind_error(server: &Arc<TcpServer>, addr: SocketAddr) {
    let serving = server.clone();
    let second = start(move || serving.serve_forever());
    match second.recv_timeout(TIMEOUT) {
        Ok(Err(Error::Bind { addr: shown, source })) => {
            let message = Error::Bind { addr: shown, source }.to_string();
            assert!(message.contains(&addr.to_string()), "the error does not name {addr}: {message}");
            assert!(message.contains("socket you supplied"), "the error does not explain: {message}");
        }
        Ok(other) => panic!("a second serve_forever returned {other:?}; expected Error::Bind"),
        Err(_) => {
            within(TIMEOUT, {
                let handle = server.handle();
                move || handle.shutdown()
            });
            panic!("a second serve_forever bound a new socket and served");
        }
    }
    let serving = server.clone();
    let result = within(TIMEOUT, move || serving.handle_request());
    assert!(matches!(result, Err(Error::Bind { .. })), "a later handle_request returned {result:?}");
}

#[test]
fn a_supplied_socket_is_never_replaced_by_a_fresh_bind() {
    let _watchdog = watchdog("a_supplied_socket_is_never_replaced_by_a_fresh_bind", WATCHDOG);

    // TCP: the listener serves once; then serving again is an error.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tcp = Arc::new(TcpServer::from_listener(listener).timeout(Duration::from_millis(300)).bind(echo).unwrap());
    let serve = serve_started(&tcp, "rg-supplied-tcp");
    assert_eq!(tcp_echo(addr, b"yours"), b"yours");
    stop(&tcp, serve);
    assert_second_serve_is_a_bind_error(&tcp, addr);
    // Nothing listens there any more: no socket was bound behind the user's back.
    assert_refused(addr);
    drop_within(tcp);

    // UDP: the same. The first serve call serves the user's socket, as the option set
    // on it shows (a fresh socket would have the default TTL, 64); the second is an
    // error, not a fresh socket.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_ttl(42).unwrap();
    let addr = socket.local_addr().unwrap();
    let (ttl_tx, ttls) = mpsc::channel();
    let ttl_tx = Mutex::new(ttl_tx);
    let udp = Arc::new(
        UdpServer::from_socket(socket)
            .bind(move |req: &mut DatagramRequest| {
                let _ = ttl_tx.lock().unwrap().send(req.socket().as_udp().expect("a UDP socket").ttl()?);
                datagram_echo(req)
            })
            .unwrap(),
    );
    let serve = serve_started(&udp, "rg-supplied-udp");
    assert_eq!(udp_echo_once(addr, b"yours"), b"yours");
    let ttl = ttls.recv_timeout(TIMEOUT).expect("the handler reports the TTL");
    assert_eq!(ttl, 42, "the serve call does not serve the socket the user supplied");
    stop(&udp, serve);
    match udp.serve_forever() {
        Err(Error::Bind { source, .. }) => {
            assert!(source.to_string().contains("socket you supplied"), "unexpected message: {source}")
        }
        other => panic!("a second serve of a supplied UDP socket returned {other:?}, not Error::Bind"),
    }
    drop_within(udp);
}

// ---------------------------------------------------------------------------------------
// 8. reuse_address(false) when binding again
// ---------------------------------------------------------------------------------------

/// The socket a second serve call binds must carry the builder's `reuse_address`, not a
/// forced `SO_REUSEADDR`. Observed on the accepted connection, which inherits the
/// option from its listener (Linux copies the listener's `sk_reuse` into the child).
///
/// The client closes first, so no TIME_WAIT lingers on the server's port: with
/// `reuse_address(false)` that would (rightly) make the second bind fail.
#[test]
fn reuse_address_false_is_respected_when_serving_again() {
    let _watchdog = watchdog("reuse_address_false_is_respected_when_serving_again", WATCHDOG);
    for reuse in [false, true] {
        let name = format!("reuse_address({reuse})");
        let (seen_tx, seen) = mpsc::channel();
        let seen_tx = Mutex::new(seen_tx);
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .reuse_address(reuse)
                .bind(move |req: &mut StreamRequest| {
                    let stream = req.connection().as_tcp().expect("a TCP connection");
                    let _ = seen_tx.lock().unwrap().send(socket2::SockRef::from(stream).reuse_address()?);
                    io::copy(req.reader(), &mut io::sink()).map(drop)
                })
                .unwrap(),
        );
        let addr = server.local_addr();
        for serve_call in ["first", "second"] {
            let serve = serve_started(&server, "rg-reuse");
            let client = connect(addr);
            let option = seen.recv_timeout(TIMEOUT).expect("the handler reports SO_REUSEADDR");
            drop(client);
            assert_eq!(option, reuse, "{name}: SO_REUSEADDR of the socket bound by the {serve_call} serve call");
            stop(&server, serve);
        }
        drop_within(server);
    }
}

// ---------------------------------------------------------------------------------------
// 9. close() from a handler of the same server
// ---------------------------------------------------------------------------------------

#[test]
fn close_from_a_handler_of_the_same_server_does_not_deadlock() {
    let _watchdog = watchdog("close_from_a_handler_of_the_same_server_does_not_deadlock", WATCHDOG);
    let modes: [(&str, Box<dyn Dispatch>); 2] =
        [("sequential", Box::new(Sequential)), ("threading", Box::new(Threading::new()))];
    for (name, mode) in modes {
        // The handler reaches its own server through a weak reference: a strong one
        // would keep the server alive forever.
        let own: Arc<OnceLock<Weak<TcpServer>>> = Arc::new(OnceLock::new());
        let in_handler = own.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode)
                .bind(move |req: &mut StreamRequest| {
                    let mut command = String::new();
                    req.reader().read_to_string(&mut command)?;
                    if command == "close" {
                        let server = in_handler.get().and_then(Weak::upgrade).expect("the server");
                        server.close();
                        req.writer().write_all(b"closing")?;
                    } else {
                        req.writer().write_all(command.as_bytes())?;
                    }
                    Ok(())
                })
                .unwrap(),
        );
        own.set(Arc::downgrade(&server)).unwrap();
        let addr = server.local_addr();
        let serve = serve_started(&server, "rg-close");
        assert_eq!(tcp_echo(addr, b"hello"), b"hello", "{name}");
        assert_eq!(tcp_echo(addr, b"close"), b"closing", "{name}: the handler's reply after its close()");
        let result = join_within(serve, TIMEOUT);
        assert!(result.is_ok(), "{name}: serve_forever returned {result:?}");
        assert_refused(addr);
        drop_within(server);
        assert_refused(addr);
    }
}

// ---------------------------------------------------------------------------------------
// Shutdown of datagram servers that share a port or lost their path
// ---------------------------------------------------------------------------------------

/// Servers in one SO_REUSEPORT group must each stop, and serve again. (A wakeup sent to
/// the shared address would reach an arbitrary member of the group.)
#[test]
fn udp_servers_sharing_a_port_each_stop_and_serve_again() {
    let _watchdog = watchdog("udp_servers_sharing_a_port_each_stop_and_serve_again", WATCHDOG);
    let first = Arc::new(UdpServer::builder("127.0.0.1:0").reuse_port(true).bind(datagram_echo).unwrap());
    let addr = first.local_addr();
    let second = Arc::new(UdpServer::builder(addr).reuse_port(true).bind(datagram_echo).unwrap());
    for round in 0..3 {
        let serving = [serve_started(&first, "rg-reuse-a"), serve_started(&second, "rg-reuse-b")];
        assert_eq!(udp_until_echoed(addr, b"shared"), b"shared", "round {round}: the group echoes");
        let [a, b] = serving;
        stop(&first, a);
        stop(&second, b);
    }
    drop_within(first);
    drop_within(second);
}

/// A Unix datagram server whose path was taken over by another socket stops all the
/// same, sends nothing to the stranger there, and leaves the stranger's file alone.
#[test]
fn unix_datagram_server_stops_after_its_path_is_taken_over() {
    let _watchdog = watchdog("unix_datagram_server_stops_after_its_path_is_taken_over", WATCHDOG);
    let path = temp_socket_path("rg-takeover");
    let server = Arc::new(UnixDatagramServer::bind(&path, datagram_echo).unwrap());
    let serving = serve_started(&server, "rg-takeover");
    std::fs::remove_file(&path).unwrap();
    let stranger = UnixDatagram::bind(&path).unwrap();
    stranger.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    stop(&server, serving);
    let mut buf = [0; 16];
    assert!(stranger.recv_from(&mut buf).is_err(), "the stranger at the path received a datagram from the server");
    drop_within(server);
    assert!(path.exists(), "closing the server removed a socket file it does not own");
    let _ = std::fs::remove_file(&path);
}

/// A `service_actions` hook slower than its interval must not starve the requests: the
/// next call is counted from the end of the last one, and the loop receives in between.
#[test]
fn a_slow_service_actions_hook_does_not_starve_requests() {
    let _watchdog = watchdog("a_slow_service_actions_hook_does_not_starve_requests", WATCHDOG);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let server = Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .service_actions(Duration::from_millis(20), move || {
                counted.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(30));
            })
            .bind(echo)
            .unwrap(),
    );
    let addr = server.local_addr();
    let serve = serve_started(&server, "rg-slow-service");
    wait_until(TIMEOUT, "the slow hook to run", || calls.load(Ordering::SeqCst) >= 2);
    for n in 0..3 {
        assert_eq!(tcp_echo(addr, b"starved?"), b"starved?", "request {n} while the hook keeps running");
    }
    stop(&server, serve);
    drop_within(server);
}
