//! Shutdown: from another thread, from inside a handler, before and between serve calls,
//! refusal of new connections, graceful draining, the shutdown deadline, latency, and
//! the absence of idle wakeups.
//!
//! Every serve thread here is spawned by `spawn_serve` (thread name `sd-serve`), except
//! in the `BackgroundServer` tests, which hold `BACKGROUND` so that the one thread named
//! `socketserver-serve` in this process is theirs.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::transport::Transport;
use socketserver::{DatagramRequest, Server, ServerHandle, StreamRequest, TcpServer, UdpServer, UnixStreamServer};
use support::{
    assert_refused, connect, connect_unix, join_within, round_trip, temp_socket_path, threads_named, udp_client,
    wait_until, TIMEOUT,
};

const MODES: [&str; 3] = ["sequential", "threading", "pool"];

/// Serialises the tests that use `serve_in_background`, whose thread name is fixed.
static BACKGROUND: Mutex<()> = Mutex::new(());

fn mode(name: &str) -> Box<dyn Dispatch> {
    match name {
        "sequential" => Box::new(Sequential),
        "threading" => Box::new(Threading::new()),
        "pool" => Box::new(Pool::new(2)),
        other => unreachable!("unknown mode {other}"),
    }
}

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    let (reader, writer) = req.reader_and_writer();
    io::copy(reader, writer).map(drop)
}

fn udp_echo(req: &mut DatagramRequest) -> io::Result<()> {
    let packet = req.packet().to_vec();
    req.reply().extend_from_slice(&packet);
    Ok(())
}

fn echo_server(mode_name: &str) -> Arc<TcpServer> {
    Arc::new(TcpServer::builder("127.0.0.1:0").dispatch(mode(mode_name)).bind(echo).unwrap())
}

/// Runs `serve_forever` on a thread named `name`.
fn spawn_named<T: Transport>(server: &Arc<Server<T>>, name: &str) -> JoinHandle<socketserver::Result<()>> {
    let server = server.clone();
    thread::Builder::new().name(name.to_string()).spawn(move || server.serve_forever()).unwrap()
}

fn spawn_serve<T: Transport>(server: &Arc<Server<T>>) -> JoinHandle<socketserver::Result<()>> {
    spawn_named(server, "sd-serve")
}

/// Spawns a serve thread and waits until the serve call has begun.
fn serve_started<T: Transport>(server: &Arc<Server<T>>) -> JoinHandle<socketserver::Result<()>> {
    let thread = spawn_serve(server);
    let handle = server.handle();
    wait_until(TIMEOUT, "serve_forever to begin", || handle.is_serving() || thread.is_finished());
    assert!(!thread.is_finished(), "serve_forever returned at once: {:?}", thread.join());
    thread
}

/// Calls `shutdown` on a helper thread; fails if it has not returned within `limit`.
/// Returns how long it took.
fn shutdown_within(handle: &ServerHandle, limit: Duration) -> Duration {
    let handle = handle.clone();
    let start = Instant::now();
    let thread = thread::spawn(move || handle.shutdown());
    join_within(thread, limit);
    start.elapsed()
}

fn spawn_shutdown(handle: &ServerHandle) -> JoinHandle<()> {
    let handle = handle.clone();
    thread::spawn(move || handle.shutdown())
}

fn tcp_echo(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let stream = connect(addr);
    round_trip(&stream, message, || stream.shutdown(Shutdown::Write).unwrap())
}

fn udp_echo_once(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let client = udp_client();
    client.send_to(message, addr).unwrap();
    let mut buf = [0; 256];
    let (n, from) = client.recv_from(&mut buf).expect("UDP reply");
    assert_eq!(from, addr, "the reply comes from the server's address");
    buf[..n].to_vec()
}

/// Connects repeatedly until a connect is refused; fails after `limit`. Connections
/// that got in before the shutdown took effect are dropped.
fn assert_refused_within(addr: SocketAddr, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return start.elapsed(),
            // A handshake caught by the shutdown half-way is reset; try again.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect to {addr}: unexpected error {e}"),
            Ok(_) => {}
        }
        assert!(start.elapsed() < limit, "new connections to {addr} still accepted {limit:?} after shutdown()");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shutdown_from_another_thread_returns_ok_in_every_mode() {
    for name in MODES {
        let server = echo_server(name);
        let serve = serve_started(&server);
        assert_eq!(tcp_echo(server.local_addr(), b"ping"), b"ping", "{name}: serving before shutdown");
        shutdown_within(&server.handle(), Duration::from_secs(5));
        assert!(!server.handle().is_serving(), "{name}: shutdown() returned before serve_forever ended");
        let result = join_within(serve, Duration::from_secs(5));
        assert!(result.is_ok(), "{name}: serve_forever returned {result:?}");
    }
    // Datagram servers too.
    let udp = Arc::new(UdpServer::bind("127.0.0.1:0", udp_echo).unwrap());
    let serve = serve_started(&udp);
    assert_eq!(udp_echo_once(udp.local_addr(), b"dgram"), b"dgram");
    shutdown_within(&udp.handle(), Duration::from_secs(5));
    assert!(join_within(serve, Duration::from_secs(5)).is_ok());
}

#[test]
fn shutdown_from_inside_a_handler_does_not_deadlock() {
    for name in MODES {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .bind(|req: &mut StreamRequest| {
                    let mut command = String::new();
                    req.reader().read_to_string(&mut command)?;
                    if command == "stop" {
                        // Must only ask: waiting here would wait for this very handler.
                        req.server().shutdown();
                        req.writer().write_all(b"stopping")?;
                    } else {
                        req.writer().write_all(command.as_bytes())?;
                    }
                    Ok(())
                })
                .unwrap(),
        );
        let addr = server.local_addr();
        let serve = serve_started(&server);
        assert_eq!(tcp_echo(addr, b"hello"), b"hello", "{name}");
        assert_eq!(tcp_echo(addr, b"stop"), b"stopping", "{name}: the handler's reply after its shutdown()");
        let result = join_within(serve, Duration::from_secs(5));
        assert!(result.is_ok(), "{name}: serve_forever returned {result:?}");
        assert_refused(addr);
    }
}

/// CPython's test_shutdown (issue #2302): shutdown right after starting the serve
/// thread, which may not have called serve_forever yet, must never hang.
#[test]
fn shutdown_right_after_spawning_never_hangs() {
    let mut threads = Vec::new();
    for i in 0..20 {
        let server = echo_server(MODES[i % MODES.len()]);
        let serve = spawn_serve(&server);
        let stopper = spawn_shutdown(&server.handle());
        threads.push((i, server, serve, stopper));
    }
    for (i, server, serve, stopper) in threads {
        join_within(stopper, Duration::from_secs(10));
        let result = join_within(serve, Duration::from_secs(10));
        assert!(result.is_ok(), "server {i}: serve_forever returned {result:?}");
        assert!(!server.handle().is_serving(), "server {i}");
    }
}

#[test]
fn shutdown_before_serve_forever_returns_promptly_and_so_does_serve_forever() {
    let server = echo_server("sequential");
    let addr = server.local_addr();
    shutdown_within(&server.handle(), Duration::from_secs(2));
    // Connections are refused from the early shutdown on.
    assert_refused(addr);
    let serve = spawn_serve(&server);
    let result = join_within(serve, Duration::from_secs(2));
    assert!(result.is_ok(), "serve_forever after an early shutdown returned {result:?}");
    // The early shutdown was used up by that call: the next one serves.
    let serve = serve_started(&server);
    assert_eq!(tcp_echo(addr, b"again"), b"again");
    shutdown_within(&server.handle(), Duration::from_secs(5));
    assert!(join_within(serve, Duration::from_secs(5)).is_ok());
}

#[test]
fn shutdown_while_idle_after_a_serve_is_not_remembered() {
    let server = echo_server("sequential");
    let addr = server.local_addr();
    let serve = serve_started(&server);
    assert_eq!(tcp_echo(addr, b"one"), b"one");
    shutdown_within(&server.handle(), Duration::from_secs(5));
    assert!(join_within(serve, Duration::from_secs(5)).is_ok());

    // Nothing serves now: this shutdown has nothing to stop and returns at once.
    shutdown_within(&server.handle(), Duration::from_secs(2));

    let serve = spawn_serve(&server);
    let handle = server.handle();
    wait_until(TIMEOUT, "the second serve_forever to begin or end", || handle.is_serving() || serve.is_finished());
    assert!(
        !serve.is_finished(),
        "serve_forever returned at once ({:?}): a shutdown() while idle was remembered",
        serve.join()
    );
    assert_eq!(tcp_echo(addr, b"two"), b"two", "the second serve_forever serves");
    shutdown_within(&server.handle(), Duration::from_secs(5));
    assert!(join_within(serve, Duration::from_secs(5)).is_ok());
}

#[test]
fn serve_again_after_shutdown_on_the_same_tcp_address() {
    for name in MODES {
        let server = echo_server(name);
        let addr = server.local_addr();
        for round in 0..3 {
            let serve = serve_started(&server);
            assert_eq!(server.local_addr(), addr, "{name}: round {round}: local_addr changed");
            let message = format!("{name} round {round}");
            assert_eq!(tcp_echo(addr, message.as_bytes()), message.as_bytes(), "{name}: round {round}");
            shutdown_within(&server.handle(), Duration::from_secs(5));
            let result = join_within(serve, Duration::from_secs(5));
            assert!(result.is_ok(), "{name}: round {round}: serve_forever returned {result:?}");
            assert_refused(addr);
        }
    }
}

#[test]
fn serve_again_after_shutdown_on_the_same_tcp_address_without_reuse_address() {
    let server = Arc::new(TcpServer::builder("127.0.0.1:0").reuse_address(false).bind(echo).unwrap());
    let addr = server.local_addr();
    for round in 0..2 {
        let serve = serve_started(&server);
        assert_eq!(tcp_echo(addr, b"no-reuse"), b"no-reuse", "round {round}");
        shutdown_within(&server.handle(), Duration::from_secs(5));
        let result = join_within(serve, Duration::from_secs(5));
        assert!(result.is_ok(), "round {round}: serve_forever returned {result:?}");
    }
}

#[test]
fn serve_again_after_shutdown_on_the_same_unix_path() {
    let path = temp_socket_path("restart");
    let server = Arc::new(UnixStreamServer::bind(&path, echo).unwrap());
    assert_eq!(server.local_addr(), path);
    for round in 0..3 {
        let serve = serve_started(&server);
        assert!(path.exists(), "round {round}: socket file missing while serving");
        let stream = connect_unix(&path);
        let reply = round_trip(&stream, b"unix", || stream.shutdown(Shutdown::Write).unwrap());
        assert_eq!(reply, b"unix", "round {round}");
        shutdown_within(&server.handle(), Duration::from_secs(5));
        let result = join_within(serve, Duration::from_secs(5));
        assert!(result.is_ok(), "round {round}: serve_forever returned {result:?}");
        let refused = std::os::unix::net::UnixStream::connect(&path);
        assert!(refused.is_err(), "round {round}: connect after shutdown succeeded");
    }
    assert_eq!(server.local_addr(), path);
    drop(server);
    assert!(!path.exists(), "closing the server removes its socket file");
}

#[test]
fn serve_again_after_shutdown_on_the_same_udp_address() {
    let server = Arc::new(UdpServer::bind("127.0.0.1:0", udp_echo).unwrap());
    let addr = server.local_addr();
    for round in 0..3 {
        let serve = serve_started(&server);
        assert_eq!(server.local_addr(), addr, "round {round}");
        assert_eq!(udp_echo_once(addr, b"udp"), b"udp", "round {round}");
        shutdown_within(&server.handle(), Duration::from_secs(5));
        let result = join_within(serve, Duration::from_secs(5));
        assert!(result.is_ok(), "round {round}: serve_forever returned {result:?}");
    }
}

#[test]
fn connections_are_refused_at_once_after_shutdown_in_every_mode() {
    for name in MODES {
        let server = echo_server(name);
        let addr = server.local_addr();
        let serve = serve_started(&server);
        assert_eq!(tcp_echo(addr, b"x"), b"x");
        shutdown_within(&server.handle(), Duration::from_secs(5));
        assert_refused(addr);
        assert!(join_within(serve, Duration::from_secs(5)).is_ok(), "{name}");
    }
}

/// A handler whose first request reports it started, then waits for the test to release
/// it and replies "done". Later requests (probe connections that got in before the
/// shutdown) are answered at once. Returns the server, the `started` receiver and the
/// `release` sender.
fn blocking_server(name: &str) -> (Arc<TcpServer>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let release_rx = Mutex::new(release_rx);
    let first = AtomicBool::new(true);
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode(name))
        .bind(move |req: &mut StreamRequest| {
            if !first.swap(false, Ordering::SeqCst) {
                return req.writer().write_all(b"late");
            }
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(TIMEOUT).expect("released by the test");
            req.writer().write_all(b"done")
        })
        .unwrap();
    (Arc::new(server), started_rx, release_tx)
}

#[test]
fn connections_are_refused_at_once_while_a_handler_is_busy() {
    // In sequential mode the serve loop itself is stuck in the handler; the kernel must
    // still refuse new connections as soon as shutdown() is called.
    for name in MODES {
        let (server, started, release) = blocking_server(name);
        let addr = server.local_addr();
        let serve = serve_started(&server);
        let mut client = connect(addr);
        started.recv_timeout(TIMEOUT).expect("the handler started");

        let stopper = spawn_shutdown(&server.handle());
        let took = assert_refused_within(addr, Duration::from_secs(2));
        eprintln!("{name}: refused {took:?} after calling shutdown()");
        // Python semantics: shutdown() waits for the running request.
        assert!(!stopper.is_finished(), "{name}: shutdown() returned while a request was still running");
        assert!(!serve.is_finished(), "{name}: serve_forever returned while a request was still running");

        release.send(()).unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"done", "{name}: the busy client gets its reply");
        join_within(stopper, Duration::from_secs(5));
        let result = join_within(serve, Duration::from_secs(5));
        assert!(result.is_ok(), "{name}: serve_forever returned {result:?}");
    }
}

#[test]
fn running_requests_finish_before_serve_forever_returns() {
    const REPLY_LEN: usize = 256 * 1024;
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let handler_done = Arc::new(AtomicBool::new(false));
    let done = handler_done.clone();
    let first = AtomicBool::new(true);
    let server = Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .bind(move |req: &mut StreamRequest| {
                if !first.swap(false, Ordering::SeqCst) {
                    return req.writer().write_all(b"late"); // a probe connection
                }
                started_tx.lock().unwrap().send(()).unwrap();
                release_rx.lock().unwrap().recv_timeout(TIMEOUT).expect("released by the test");
                req.writer().write_all(&vec![b'r'; REPLY_LEN])?;
                done.store(true, Ordering::SeqCst);
                Ok(())
            })
            .unwrap(),
    );
    let serving = server.clone();
    let done = handler_done.clone();
    let serve = thread::Builder::new()
        .name("sd-serve".into())
        .spawn(move || {
            let result = serving.serve_forever();
            (result, done.load(Ordering::SeqCst))
        })
        .unwrap();
    let mut client = connect(server.local_addr());
    started_rx.recv_timeout(TIMEOUT).expect("the handler started");

    let stopper = spawn_shutdown(&server.handle());
    assert_refused_within(server.local_addr(), Duration::from_secs(2));
    thread::sleep(Duration::from_millis(200));
    assert!(!serve.is_finished(), "serve_forever returned while a request was running");

    release_tx.send(()).unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    assert_eq!(reply.len(), REPLY_LEN, "the client gets its full reply");
    assert!(reply.iter().all(|&b| b == b'r'));
    join_within(stopper, Duration::from_secs(5));
    let (result, finished_first) = join_within(serve, Duration::from_secs(5));
    assert!(result.is_ok(), "serve_forever returned {result:?}");
    assert!(finished_first, "serve_forever returned before the running request finished");
}

#[test]
fn shutdown_deadline_closes_connections_of_stuck_requests() {
    for name in MODES {
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (outcome_tx, outcome_rx) = mpsc::channel::<io::Result<usize>>();
        let (started_tx, outcome_tx) = (Mutex::new(started_tx), Mutex::new(outcome_tx));
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .shutdown_deadline(Duration::from_millis(300))
                .bind(move |req: &mut StreamRequest| {
                    started_tx.lock().unwrap().send(()).unwrap();
                    // The client never sends end-of-file: only the forced close ends this.
                    let mut data = Vec::new();
                    let outcome = req.reader().read_to_end(&mut data);
                    outcome_tx.lock().unwrap().send(outcome).unwrap();
                    Ok(())
                })
                .unwrap(),
        );
        let serve = serve_started(&server);
        let mut client = connect(server.local_addr());
        client.write_all(b"partial request").unwrap();
        started_rx.recv_timeout(TIMEOUT).expect("the handler started");

        let took = shutdown_within(&server.handle(), Duration::from_secs(5));
        eprintln!("{name}: shutdown with a stuck request took {took:?}");
        assert!(took >= Duration::from_millis(300), "{name}: shutdown returned before the deadline ({took:?})");
        let outcome = outcome_rx.recv_timeout(TIMEOUT).expect("the handler's read ended");
        match outcome {
            Ok(n) => assert_eq!(n, b"partial request".len(), "{name}: the handler reads what was sent, then EOF"),
            Err(e) => eprintln!("{name}: the handler's read failed: {e}"),
        }
        let mut rest = Vec::new();
        match client.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{name}: unexpected data {rest:?}"),
            Err(e) => assert!(
                matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe),
                "{name}: client read: {e}"
            ),
        }
        let result = join_within(serve, Duration::from_secs(5));
        assert!(result.is_ok(), "{name}: serve_forever returned {result:?}");
    }
}

#[test]
fn without_a_deadline_shutdown_waits_for_the_request() {
    for name in ["sequential", "threading"] {
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let started_tx = Mutex::new(started_tx);
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .bind(move |req: &mut StreamRequest| {
                    started_tx.lock().unwrap().send(()).unwrap();
                    let mut data = Vec::new();
                    req.reader().read_to_end(&mut data)?;
                    req.writer().write_all(&data)
                })
                .unwrap(),
        );
        let serve = serve_started(&server);
        let mut client = connect(server.local_addr());
        client.write_all(b"slow").unwrap();
        started_rx.recv_timeout(TIMEOUT).expect("the handler started");

        let stopper = spawn_shutdown(&server.handle());
        thread::sleep(Duration::from_millis(500));
        assert!(!stopper.is_finished(), "{name}: shutdown() without a deadline did not wait for the request");

        client.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"slow", "{name}: the request completes normally");
        join_within(stopper, Duration::from_secs(5));
        assert!(join_within(serve, Duration::from_secs(5)).is_ok(), "{name}");
    }
}

#[test]
fn idle_shutdown_takes_effect_at_once() {
    // Measured, not asserted tightly: the bound only catches a poll-interval design.
    for name in MODES {
        let server = echo_server(name);
        let serve = serve_started(&server);
        assert_eq!(tcp_echo(server.local_addr(), b"warm"), b"warm");
        let start = Instant::now();
        shutdown_within(&server.handle(), Duration::from_secs(5));
        join_within(serve, Duration::from_secs(5)).unwrap();
        let took = start.elapsed();
        eprintln!("{name}: idle shutdown took {took:?}");
        assert!(took < Duration::from_secs(2), "{name}: idle shutdown took {took:?}");
    }
    let udp = Arc::new(UdpServer::bind("127.0.0.1:0", udp_echo).unwrap());
    let serve = serve_started(&udp);
    assert_eq!(udp_echo_once(udp.local_addr(), b"warm"), b"warm");
    let start = Instant::now();
    shutdown_within(&udp.handle(), Duration::from_secs(5));
    join_within(serve, Duration::from_secs(5)).unwrap();
    let took = start.elapsed();
    eprintln!("udp: idle shutdown took {took:?}");
    assert!(took < Duration::from_secs(2), "udp: idle shutdown took {took:?}");
}

/// Serves on a thread named `name`, waits for it to sit idle in accept/recvfrom, and
/// returns how many times it woke up during 500 ms of idleness.
fn idle_wakeups<T: Transport>(server: &Arc<Server<T>>, name: &str, warm_up: impl FnOnce()) -> u64 {
    let serve = spawn_named(server, name);
    let handle = server.handle();
    wait_until(TIMEOUT, "serve_forever to begin", || handle.is_serving());
    warm_up(); // one request served: the loop is past its setup
    thread::sleep(Duration::from_millis(100));
    let before = support::context_switches_of(name);
    thread::sleep(Duration::from_millis(500));
    let after = support::context_switches_of(name);
    shutdown_within(&handle, Duration::from_secs(5));
    assert!(join_within(serve, Duration::from_secs(5)).is_ok());
    after - before
}

#[test]
fn an_idle_server_makes_no_wakeups() {
    let tcp = echo_server("sequential");
    let addr = tcp.local_addr();
    let woke = idle_wakeups(&tcp, "idle-probe", || assert_eq!(tcp_echo(addr, b"w"), b"w"));
    eprintln!("tcp: {woke} wakeups in 500 ms idle");
    assert!(woke <= 2, "the idle TCP serve thread woke {woke} times in 500 ms");

    let udp = Arc::new(UdpServer::bind("127.0.0.1:0", udp_echo).unwrap());
    let addr = udp.local_addr();
    let woke = idle_wakeups(&udp, "idle-probe-udp", || assert_eq!(udp_echo_once(addr, b"w"), b"w"));
    eprintln!("udp: {woke} wakeups in 500 ms idle");
    assert!(woke <= 2, "the idle UDP serve thread woke {woke} times in 500 ms");
    // A joined thread may linger in /proc for a moment after pthread_join returns.
    wait_until(Duration::from_secs(2), "the probe serve threads to be gone", || threads_named("idle-probe") == 0);
}

#[test]
fn background_server_stop_joins_and_returns_ok() {
    let _serial = BACKGROUND.lock().unwrap_or_else(|e| e.into_inner());
    let server =
        TcpServer::builder("127.0.0.1:0").dispatch(Threading::new().thread_name("bg-stop")).bind(echo).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    assert_eq!(background.local_addr(), addr);
    assert_eq!(tcp_echo(addr, b"bg"), b"bg");
    assert_eq!(threads_named("socketserver-se"), 1, "one background serve thread");

    let stopper = thread::spawn(move || background.stop());
    let result = join_within(stopper, Duration::from_secs(5));
    assert!(result.is_ok(), "stop() returned {result:?}");
    assert_refused(addr);
    wait_until(Duration::from_secs(2), "the serve thread to be gone", || threads_named("socketserver-se") == 0);
    wait_until(Duration::from_secs(2), "the request threads to be gone", || threads_named("bg-stop") == 0);
}

#[test]
fn dropping_a_background_server_stops_it() {
    let _serial = BACKGROUND.lock().unwrap_or_else(|e| e.into_inner());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(Threading::new().thread_name("bg-drop"))
        .bind(move |req: &mut StreamRequest| {
            count.fetch_add(1, Ordering::SeqCst);
            echo(req)
        })
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    assert_eq!(tcp_echo(addr, b"bg"), b"bg");
    assert_eq!(served.load(Ordering::SeqCst), 1);

    let dropper = thread::spawn(move || drop(background));
    join_within(dropper, Duration::from_secs(5));
    assert_refused(addr);
    wait_until(Duration::from_secs(2), "the serve thread to be gone", || threads_named("socketserver-se") == 0);
    wait_until(Duration::from_secs(2), "the request threads to be gone", || threads_named("bg-drop") == 0);
}
