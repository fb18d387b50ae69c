//! Reliability over real sockets: the server keeps serving, loses nothing and leaks
//! nothing when handlers panic by the thousand, when clients reset, half-close or vanish
//! while the server writes, over a long run of short connections, at shutdown with
//! clients in flight, under a UDP flood, and when request threads cannot be spawned.
//! (Out of descriptors: tests/accept_errors.rs.)
//!
//! Open descriptors and RSS belong to the whole process, so every test runs alone
//! (`bounded_alone`). Threads are counted by the names the tests give them, never in
//! total: libtest starts and ends its own threads while a test runs. Linux only:
//! descriptors, threads and memory are read in /proc.
#![cfg(target_os = "linux")]

mod support;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};
use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::{DatagramRequest, Phase, StreamRequest, TcpServer, UdpServer};
use support::linux::{current_task, rss_kib, task_state};
use support::{
    ask, bounded_alone, connect, echo_line, join_within, open_fds, pattern, round_trip, stop_background, threads_named,
    udp_client, wait_until, within, Mode, Reported, Reports, MODES, TIMEOUT,
};

/// The deadline of each test here; the ignored long soak has its own.
const LIMIT: Duration = Duration::from_secs(120);
const EXPECTED_PANIC: &str = "reliability: a handler panics on purpose";
/// `comm` of the thread `serve_in_background` starts (`socketserver-serve`, cut to 15 bytes).
const SERVE_THREAD: &str = "socketserver-se";

/// Requests per mode in the handler-panic tests.
const PANICS: usize = 10_000;
/// Connect/echo/close cycles per mode in the default soak; the ignored one runs
/// [`LONG_SOAK`].
const SOAK: usize = 5_000;
const LONG_SOAK: usize = 100_000;
/// Cycles before the soak's baselines are taken: thread stacks, malloc arenas and
/// buffers the server needs are allocated by then.
const WARM_UP: usize = 1_000;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Silences the panics these tests cause on purpose (see `support`).
fn quiet_expected_panics() {
    support::quiet_panics_containing(EXPECTED_PANIC);
}

/// Shuts the server down, joins its thread and closes it, all within [`TIMEOUT`].
fn stop<T: socketserver::transport::Transport>(background: socketserver::BackgroundServer<T>) {
    stop_background(background);
}

/// After [`stop`]: no thread of the server is left.
fn assert_no_threads(prefix: &str) {
    assert_eq!(threads_named(prefix), 0, "{prefix}* threads outlived the server");
    assert_eq!(threads_named(SERVE_THREAD), 0, "the serve thread outlived the server");
}

// ---------------------------------------------------------------------------------------
// 2. Ten thousand panicking requests
// ---------------------------------------------------------------------------------------

/// Serves [`PANICS`] requests whose handler panics, then checks that every panic was
/// reported, the threads and descriptors are back where they were, and a normal request
/// is served. `request_threads` is how many `prefix` threads serving leaves.
fn panicking_requests(mode: impl Into<Dispatch>, prefix: &str, request_threads: usize) {
    quiet_expected_panics();
    let fds_before = open_fds();
    let reports = Reports::default();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode)
        .handle_error(reports.hook())
        .bind_handler(|req: &mut StreamRequest| {
            let mut line = String::new();
            req.reader().read_line(&mut line)?;
            if line == "panic\n" {
                panic!("{EXPECTED_PANIC}");
            }
            req.writer().write_all(line.as_bytes())
        })
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let fds_serving = open_fds();

    let started = Instant::now();
    for n in 0..PANICS {
        let reply = ask(addr, b"panic\n");
        assert!(reply.is_empty(), "panicking request {n} got {reply:?}");
    }
    eprintln!("{prefix}: {PANICS} panicking requests in {:?}", started.elapsed());

    wait_until(TIMEOUT, "every panic to be reported", || reports.len() >= PANICS);
    let reported = reports.take_reported();
    let expected = |r: &&Reported| r.is_panic(Phase::Handle, EXPECTED_PANIC);
    let panics = reported.iter().filter(expected).count();
    let others: Vec<_> = reported.iter().filter(|r| !expected(r)).take(10).collect();
    assert_eq!((panics, others.len()), (PANICS, 0), "panics reported, and other reports: {others:?}");
    wait_until(TIMEOUT, "the request threads to settle", || threads_named(prefix) == request_threads);
    assert_eq!(threads_named(SERVE_THREAD), 1);
    wait_until(TIMEOUT, "the server to close every connection", || open_fds() == fds_serving);

    assert_eq!(ask(addr, b"still here\n"), b"still here\n");
    assert_eq!(reports.take(), [], "the normal request reported an error");
    stop(background);
    assert_no_threads(prefix);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}

#[test]
fn ten_thousand_panics_in_sequential_mode() {
    bounded_alone(LIMIT, || {
        // No request threads: the serve thread runs every request.
        panicking_requests(Sequential, "rl-panic-seq", 0);
    });
}

#[test]
fn ten_thousand_panics_in_threading_mode() {
    bounded_alone(LIMIT, || {
        // Without keep-alive every request thread ends with its request.
        let mode = Threading::new().keep_alive(Duration::ZERO).thread_name("rl-panic-thr");
        panicking_requests(mode, "rl-panic-thr", 0);
    });
}

#[test]
fn ten_thousand_panics_in_pool_mode() {
    bounded_alone(LIMIT, || {
        panicking_requests(Pool::new(3).thread_name("rl-panic-pool"), "rl-panic-pool", 3);
    });
}

// ---------------------------------------------------------------------------------------
// 3. Clients that reset, half-close, or vanish while the server writes
// ---------------------------------------------------------------------------------------

/// What the `flood` command writes: more than the client's and the server's socket
/// buffers hold (`tcp_wmem` allows a send buffer of 4 MiB at most).
const FLOOD: usize = 8 << 20;

/// How far the `flood` command got, and its thread, for the test to watch.
#[derive(Default)]
struct Flood {
    written: AtomicUsize,
    task: Mutex<Option<PathBuf>>,
}

impl Flood {
    /// Whether the handler wrote something and now sleeps: its only blocking call then
    /// is the write.
    fn blocked_writing(&self) -> bool {
        let task = self.task.lock().unwrap().clone();
        self.written.load(Ordering::SeqCst) > 0 && task.is_some_and(|task| task_state(&task) == Some('S'))
    }
}

/// A handler whose first line says what to do: `echo` (until end-of-file), `collect`
/// (read to end-of-file, then send it all back) or `flood` ([`FLOOD`] bytes).
fn commands(flood: Arc<Flood>) -> impl Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync + 'static {
    move |req: &mut StreamRequest| {
        let mut command = String::new();
        req.reader().read_line(&mut command)?;
        match command.as_str() {
            "echo\n" => {
                let (reader, writer) = req.reader_and_writer();
                io::copy(reader, writer).map(drop)
            }
            "collect\n" => {
                let mut all = Vec::new();
                req.reader().read_to_end(&mut all)?;
                req.writer().write_all(&all)
            }
            "flood\n" => {
                *flood.task.lock().unwrap() = Some(current_task());
                let chunk = vec![b'f'; 64 * 1024];
                let mut written = 0;
                while written < FLOOD {
                    let n = req.writer().write(&chunk)?;
                    written += n;
                    flood.written.fetch_add(n, Ordering::SeqCst);
                }
                Ok(())
            }
            other => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown command {other:?}"))),
        }
    }
}

/// Runs `scenario` against a [`commands`] server in `mode`, then checks that nothing
/// more was reported, the server closed every connection, serves the next client, and
/// leaves no thread or descriptor behind.
fn survives(mode: Mode, prefix: &str, scenario: impl FnOnce(SocketAddr, &Flood, &Reports)) {
    let fds_before = open_fds();
    let reports = Reports::default();
    let flood = Arc::new(Flood::default());
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode.named(prefix))
        .handle_error(reports.hook())
        .bind_handler(commands(flood.clone()))
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let fds_serving = open_fds();

    scenario(addr, &flood, &reports);

    wait_until(TIMEOUT, "the server to close every connection", || open_fds() == fds_serving);
    let client = connect(addr);
    let reply = round_trip(&client, b"echo\nthe next client", || client.shutdown(Shutdown::Write).unwrap());
    assert_eq!(reply, b"the next client", "{mode:?}: the next client was not served");
    drop(client);
    assert_eq!(reports.take(), [], "{mode:?}: unexpected reports");
    assert_eq!(threads_named(SERVE_THREAD), 1, "{mode:?}: the serve thread is gone");
    stop(background);
    assert_no_threads(prefix);
    assert_eq!(open_fds(), fds_before, "{mode:?}: descriptors leaked");
}

/// A client resets (SO_LINGER 0, then close) while its echo is in flight: the handler
/// fails with the reset, reported once, and the server goes on.
#[test]
fn clients_that_reset_mid_stream_are_reported_and_forgotten() {
    bounded_alone(LIMIT, || {
        const RESETS: usize = 20;
        for mode in MODES {
            survives(mode, "rl-reset", |addr, _, reports| {
                let chunk = pattern(16 * 1024);
                for n in 0..RESETS {
                    let mut client = connect(addr);
                    client.write_all(b"echo\n").unwrap();
                    client.write_all(&chunk).unwrap();
                    let mut back = vec![0; chunk.len()];
                    client.read_exact(&mut back).unwrap();
                    assert_eq!(back, chunk);
                    client.write_all(&chunk).unwrap();
                    SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
                    drop(client);
                    wait_until(TIMEOUT, "the reset to be reported", || reports.len() > n);
                }
                let reported = reports.take_reported();
                assert_eq!(reported.len(), RESETS, "{mode:?}: one report per reset: {reported:?}");
                assert!(reported.iter().all(Reported::is_peer_gone), "{mode:?}: {reported:?}");
            });
        }
    });
}

/// A client that shuts down its write half still gets the whole reply, which the
/// server writes only after that end-of-file.
#[test]
fn half_closed_clients_get_the_whole_reply() {
    bounded_alone(LIMIT, || {
        let payload = pattern(1 << 20);
        for mode in MODES {
            survives(mode, "rl-half", |addr, _, _| {
                for _ in 0..5 {
                    let client = connect(addr);
                    let mut message = b"collect\n".to_vec();
                    message.extend_from_slice(&payload);
                    let reply = round_trip(&client, &message, || client.shutdown(Shutdown::Write).unwrap());
                    assert!(reply == payload, "{mode:?}: {} bytes back instead of {}", reply.len(), payload.len());
                }
            });
        }
    });
}

/// A client with a tiny receive buffer asks for 8 MiB, never reads, and goes away while
/// the handler is blocked writing: the write fails, is reported, and the server goes on.
#[test]
fn a_client_vanishing_while_the_server_is_blocked_writing_is_reported() {
    bounded_alone(LIMIT, || {
        for mode in MODES {
            survives(mode, "rl-vanish", |addr, flood, reports| {
                let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                // Set before connecting, so the window the client advertises stays small.
                socket.set_recv_buffer_size(1024).unwrap();
                socket.connect_timeout(&addr.into(), TIMEOUT).unwrap();
                let mut client = TcpStream::from(socket);
                client.write_all(b"flood\n").unwrap();
                wait_until(TIMEOUT, "the handler to block in write", || flood.blocked_writing());
                drop(client); // unread data: the kernel resets the connection
                wait_until(TIMEOUT, "the failed write to be reported", || reports.len() == 1);
                let reported = reports.take_reported();
                assert!(reported[0].is_peer_gone(), "{mode:?}: {reported:?}");
                let written = flood.written.load(Ordering::SeqCst);
                assert!(written < FLOOD, "{mode:?}: the handler wrote all {written} bytes; it never blocked");
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// 4. Soak: connect, echo, close
// ---------------------------------------------------------------------------------------

/// Runs `cycles` connect/echo/close cycles, one client at a time, and checks that
/// threads stay few, and descriptors and RSS come back to their level after warm-up.
/// `max_threads` bounds the `prefix` threads at any sample.
fn soak(mode: impl Into<Dispatch>, prefix: &str, cycles: usize, max_threads: usize) {
    let fds_before = open_fds();
    let reports = Reports::default();
    let server = TcpServer::builder("127.0.0.1:0").dispatch(mode).handle_error(reports.hook()).bind(echo_line).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let fds_serving = open_fds();

    let cycle = |n: usize| {
        let message = format!("cycle {n}\n");
        assert_eq!(ask(addr, message.as_bytes()), message.as_bytes());
    };
    let started = Instant::now();
    (0..WARM_UP).for_each(cycle);
    wait_until(TIMEOUT, "descriptors back after warm-up", || open_fds() == fds_serving);
    let rss_warm = rss_kib();
    let mut most_threads = 0;
    for n in WARM_UP..cycles {
        cycle(n);
        if n % 128 == 0 {
            most_threads = most_threads.max(threads_named(prefix));
        }
    }
    eprintln!("{prefix}: {cycles} cycles in {:?}", started.elapsed());
    wait_until(TIMEOUT, "descriptors back after the soak", || open_fds() == fds_serving);
    let growth = rss_kib().saturating_sub(rss_warm);
    eprintln!("{prefix}: RSS {rss_warm} KiB after warm-up, grew {growth} KiB; at most {most_threads} threads");
    assert!(growth < 1024, "RSS grew by {growth} KiB over {} cycles after warm-up", cycles - WARM_UP);
    assert!(most_threads <= max_threads, "{most_threads} {prefix}* threads at once, serving one client at a time");
    assert_eq!(reports.take(), []);
    stop(background);
    assert_no_threads(prefix);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}

/// Serving one client at a time, a thread or two is running or kept alive; more would
/// mean threads pile up.
const SOAK_THREADS: usize = 8;

#[test]
fn soak_threading() {
    bounded_alone(LIMIT, || {
        soak(Threading::new().thread_name("rl-soak-thr"), "rl-soak-thr", SOAK, SOAK_THREADS);
    });
}

#[test]
fn soak_pool() {
    bounded_alone(LIMIT, || {
        soak(Pool::new(4).thread_name("rl-soak-pool"), "rl-soak-pool", SOAK, 4);
    });
}

#[test]
#[ignore = "long soak: 100,000 cycles per mode, about 20 s in debug"]
fn long_soak_threading_and_pool() {
    bounded_alone(Duration::from_secs(1200), || {
        soak(Threading::new().thread_name("rl-soak-thr"), "rl-soak-thr", LONG_SOAK, SOAK_THREADS);
        soak(Pool::new(4).thread_name("rl-soak-pool"), "rl-soak-pool", LONG_SOAK, 4);
    });
}

// ---------------------------------------------------------------------------------------
// 5. Graceful shutdown with 32 clients in flight
// ---------------------------------------------------------------------------------------

const IN_FLIGHT: usize = 32;
const DEADLINE: Duration = Duration::from_secs(2);

/// How a client's exchange ended.
#[derive(Debug)]
enum Outcome {
    /// End-of-file after these bytes.
    Closed(Vec<u8>),
    /// An error after this many bytes.
    Failed(usize, io::ErrorKind),
}

fn read_outcome(client: &mut TcpStream) -> Outcome {
    let mut got = Vec::new();
    let mut buf = [0; 8192];
    loop {
        match client.read(&mut buf) {
            Ok(0) => return Outcome::Closed(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Outcome::Failed(got.len(), e.kind()),
        }
    }
}

/// The reply to client `id`: long enough to arrive in several segments.
fn slow_reply(id: &str) -> Vec<u8> {
    format!("reply to {id}\n").repeat(2000).into_bytes()
}

/// 32 clients connect and send; the server (`running` requests at once) is shut down
/// with a 2 s deadline while they wait. Every client is accounted for: a handler that
/// started delivered its whole reply (or, past the deadline, a clean close), a client
/// never accepted was reset, and none hangs.
fn shutdown_with_clients_in_flight(mode: impl Into<Dispatch>, prefix: &str, running: usize) {
    let started = Arc::new(Mutex::new(Vec::<String>::new()));
    let reports = Reports::default();
    let handler_started = started.clone();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode)
        .shutdown_deadline(DEADLINE)
        .handle_error(reports.hook())
        .bind_handler(move |req: &mut StreamRequest| {
            let mut id = String::new();
            req.reader().read_line(&mut id)?;
            let id = id.trim_end().to_string();
            handler_started.lock().unwrap().push(id.clone());
            thread::sleep(Duration::from_millis(50));
            req.writer().write_all(&slow_reply(&id))
        })
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();

    let (sent_tx, sent) = mpsc::channel();
    let clients: Vec<JoinHandle<Outcome>> = (0..IN_FLIGHT)
        .map(|n| {
            let sent = sent_tx.clone();
            thread::spawn(move || {
                let mut client = connect(addr);
                client.write_all(format!("{n}\n").as_bytes()).unwrap();
                sent.send(()).unwrap();
                read_outcome(&mut client)
            })
        })
        .collect();
    for _ in 0..IN_FLIGHT {
        sent.recv_timeout(TIMEOUT).expect("every client connects and sends");
    }
    wait_until(TIMEOUT, "the requests to start", || started.lock().unwrap().len() >= running);

    let handle = background.handle();
    let shutting_down = Instant::now();
    within(TIMEOUT, move || handle.shutdown());
    let took = shutting_down.elapsed();
    let outcomes: Vec<Outcome> = clients.into_iter().map(|client| join_within(client, TIMEOUT)).collect();
    stop(background);

    let started = started.lock().unwrap().clone();
    let (mut full, mut cut, mut reset) = (0, 0, 0);
    for (n, outcome) in outcomes.iter().enumerate() {
        let accepted = started.contains(&n.to_string());
        match outcome {
            Outcome::Closed(reply) if accepted && *reply == slow_reply(&n.to_string()) => full += 1,
            // Past the deadline the server closes running requests' connections.
            Outcome::Closed(_) if accepted && took >= DEADLINE => cut += 1,
            // The kernel resets connections still in the backlog at shutdown.
            Outcome::Failed(0, io::ErrorKind::ConnectionReset) if !accepted => reset += 1,
            Outcome::Closed(reply) => {
                panic!("client {n} (accepted: {accepted}) closed after {} bytes, shutdown took {took:?}", reply.len())
            }
            Outcome::Failed(bytes, kind) => {
                panic!("client {n} (accepted: {accepted}) failed after {bytes} bytes: {kind:?}")
            }
        }
    }
    eprintln!("{prefix}: {full} full replies, {cut} cut at the deadline, {reset} reset; shutdown took {took:?}");
    assert_eq!(full + cut, started.len());
    assert!(started.len() >= running, "{} requests started, {running} were running at shutdown", started.len());
    if took < DEADLINE {
        assert_eq!(reports.take(), [], "requests that ended in time reported errors");
    }
    assert_no_threads(prefix);
}

#[test]
fn shutdown_accounts_for_every_client_in_flight_threading() {
    bounded_alone(LIMIT, || {
        // Every client has a thread of its own, so all 32 are running when shutdown comes.
        shutdown_with_clients_in_flight(Threading::new().thread_name("rl-drain-thr"), "rl-drain-thr", IN_FLIGHT);
    });
}

#[test]
fn shutdown_accounts_for_every_client_in_flight_pool() {
    bounded_alone(LIMIT, || {
        // Four run; the other 28 wait in the backlog.
        shutdown_with_clients_in_flight(Pool::new(4).thread_name("rl-drain-pool"), "rl-drain-pool", 4);
    });
}

// ---------------------------------------------------------------------------------------
// 6. UDP flood
// ---------------------------------------------------------------------------------------

const FLOODERS: usize = 64;
const FLOOD_DATAGRAMS: usize = 20_000;
/// Answers the probe must get while the flood goes on.
const ANSWERS_DURING: usize = 5;
/// How long a flood may go on waiting for the probe's answers.
const FLOOD_LIMIT: Duration = Duration::from_secs(30);

/// Sends `message` once and waits up to `wait` for its echo, skipping late echoes of
/// earlier messages.
fn ask_udp(probe: &UdpSocket, addr: SocketAddr, message: &[u8], wait: Duration) -> bool {
    probe.send_to(message, addr).unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        probe.set_read_timeout(Some(left)).unwrap();
        match probe.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == message => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return false,
            Err(e) => panic!("probe: {e}"),
        }
    }
}

/// Sends at least `datagrams` from the flooders in turn, never reading their replies,
/// and goes on until the probe, asking meanwhile, had `answers` echoes. Returns the
/// datagrams sent.
fn flood(
    flooders: &Arc<Vec<UdpSocket>>,
    addr: SocketAddr,
    datagrams: usize,
    probe: &UdpSocket,
    answers: usize,
) -> usize {
    let answered = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (flooders, answered) = (flooders.clone(), answered.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + FLOOD_LIMIT;
            let payload = [b'x'; 64];
            let mut sent = 0;
            while sent < datagrams || answered.load(Ordering::SeqCst) < answers {
                assert!(
                    Instant::now() < deadline,
                    "the probe got {} of {answers} answers during a flood of {FLOOD_LIMIT:?}",
                    answered.load(Ordering::SeqCst)
                );
                flooders[sent % flooders.len()].send_to(&payload, addr).unwrap();
                sent += 1;
            }
            sent
        })
    };
    for n in 0.. {
        if sender.is_finished() {
            break;
        }
        if ask_udp(probe, addr, format!("probe {n}").as_bytes(), Duration::from_millis(100)) {
            answered.fetch_add(1, Ordering::SeqCst);
        }
    }
    join_within(sender, TIMEOUT)
}

/// 64 sockets send 20,000 datagrams without reading a reply; a well-behaved client
/// still gets answers during and after, and memory stays bounded.
fn udp_flood(mode: impl Into<Dispatch>, prefix: &str) {
    let fds_before = open_fds();
    let reports = Reports::default();
    let server = UdpServer::builder("127.0.0.1:0")
        .dispatch(mode)
        .handle_error(reports.hook())
        .bind_handler(|req: &mut DatagramRequest| {
            let packet = req.packet().to_vec();
            req.reply().write_all(&packet)
        })
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let flooders: Arc<Vec<UdpSocket>> =
        Arc::new((0..FLOODERS).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect());
    let probe = udp_client();

    // A first, smaller flood allocates what the server and this test need, so that the
    // measured one shows growth, not first use.
    flood(&flooders, addr, FLOOD_DATAGRAMS / 10, &probe, 1);
    let rss_before = rss_kib();
    let started = Instant::now();
    let sent = flood(&flooders, addr, FLOOD_DATAGRAMS, &probe, ANSWERS_DURING);
    let growth = rss_kib().saturating_sub(rss_before);
    eprintln!("{prefix}: {sent} datagrams in {:?}; RSS grew {growth} KiB", started.elapsed());
    assert!(growth < 4 * 1024, "RSS grew by {growth} KiB during the flood");

    let after = Instant::now() + TIMEOUT;
    let mut n = 0;
    while !ask_udp(&probe, addr, format!("after {n}").as_bytes(), Duration::from_millis(200)) {
        assert!(Instant::now() < after, "no answer after the flood");
        n += 1;
    }
    assert_eq!(reports.take(), [], "the flood caused reported errors");
    stop(background);
    drop((flooders, probe));
    assert_no_threads(prefix);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}

#[test]
fn udp_flood_pool() {
    bounded_alone(LIMIT, || {
        udp_flood(Pool::new(2).thread_name("rl-flood-pool"), "rl-flood-pool");
    });
}

#[test]
fn udp_flood_sequential() {
    bounded_alone(LIMIT, || {
        udp_flood(Sequential, "rl-flood-seq");
    });
}

// ---------------------------------------------------------------------------------------
// 7. Threads that cannot be spawned
// ---------------------------------------------------------------------------------------

/// A stack no system can map: every spawn fails (`EAGAIN` from `pthread_create`).
const UNMAPPABLE_STACK: usize = usize::MAX / 2;

/// Serves three clients that each send a line, and returns what each read before the
/// server closed, with the reports and the number of handler runs. Checks that the
/// serve loop outlived them, shuts down, and leaks no thread or descriptor.
fn three_clients(mode: impl Into<Dispatch>, prefix: &str) -> (Vec<Outcome>, Vec<Reported>, usize) {
    let fds_before = open_fds();
    let reports = Reports::default();
    let ran = Arc::new(AtomicUsize::new(0));
    let handler_ran = ran.clone();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode)
        .handle_error(reports.hook())
        .bind(move |req: &mut StreamRequest| {
            handler_ran.fetch_add(1, Ordering::SeqCst);
            echo_line(req)
        })
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let fds_serving = open_fds();

    let mut outcomes = Vec::new();
    for n in 1..=3 {
        let mut client = connect(addr);
        client.write_all(b"hello\n").unwrap();
        outcomes.push(read_outcome(&mut client));
        // A failed dispatch is reported after the connection is dropped.
        wait_until(TIMEOUT, "the request to be served or reported", || reports.len() + ran.load(Ordering::SeqCst) >= n);
    }
    assert_eq!(threads_named(prefix), 0, "a {prefix}* thread exists after all");
    assert!(background.handle().is_serving(), "the serve loop ended");
    wait_until(TIMEOUT, "the server to close every connection", || open_fds() == fds_serving);
    stop(background);
    assert_no_threads(prefix);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
    (outcomes, reports.take_reported(), ran.load(Ordering::SeqCst))
}

/// Every request thread fails to spawn: nothing is served, but each connection is
/// closed at once, `handle_error` gets `Error::Dispatch`, and the serve loop goes on
/// and shuts down.
#[test]
fn failed_thread_spawns_close_the_connection_and_are_reported() {
    bounded_alone(LIMIT, || {
        let mode = Threading::new().stack_size(UNMAPPABLE_STACK).thread_name("rl-spawn-thr");
        let (outcomes, reported, ran) = three_clients(mode, "rl-spawn-thr");
        for (n, outcome) in outcomes.iter().enumerate() {
            // The server closes with the line unread, so the kernel may reset instead.
            let closed = matches!(outcome, Outcome::Closed(reply) if reply.is_empty())
                || matches!(outcome, Outcome::Failed(0, io::ErrorKind::ConnectionReset));
            assert!(closed, "client {n}: {outcome:?}; expected a close without a reply");
        }
        assert_eq!(reported.len(), 3, "{reported:?}");
        assert!(reported.iter().all(|r| matches!(r, Reported::Dispatch(_))), "{reported:?}");
        assert_eq!(ran, 0, "a handler ran without a thread");
    });
}

/// A pool none of whose workers can start serves on the thread that called
/// `serve_forever` instead (src/dispatch/pool.rs), and still shuts down.
#[test]
fn a_pool_whose_workers_cannot_start_serves_on_the_calling_thread() {
    bounded_alone(LIMIT, || {
        let mode = Pool::new(2).stack_size(UNMAPPABLE_STACK).thread_name("rl-spawn-pool");
        let (outcomes, reported, ran) = three_clients(mode, "rl-spawn-pool");
        for (n, outcome) in outcomes.iter().enumerate() {
            assert!(matches!(outcome, Outcome::Closed(reply) if reply == b"hello\n"), "client {n}: {outcome:?}");
        }
        assert_eq!(reported, [], "nothing to report when the calling thread serves");
        assert_eq!(ran, 3);
    });
}
