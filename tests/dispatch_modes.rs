//! Where requests run: Sequential serializes, Threading does not (and honours
//! `max_threads`, leaving further connections unaccepted in the backlog), Pool bounds
//! concurrency and survives panics, no request thread outlives the server,
//! `block_on_close(false)`/`daemon_threads(true)` do not wait, and a custom `Executor`
//! is used.
//!
//! Handlers are ordered with a [`Gate`] ("arrived", then wait for a release token),
//! never with sleeps; only negative checks ("has not started") wait a short while. The
//! checks of threads and descriptors read /proc (Linux).

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use socketserver::dispatch::{Dispatch, Executor, Job, Pool, Sequential, Threading};
use socketserver::{BackgroundServer, Error, Phase, StreamRequest, TcpServer};
use support::gate::read_id;
use support::{
    bounded, bounded_alone, connect, descriptors_opened_by, echo_line, join_within, recv, stop_background, wait_until,
    Control, Gate, LIMIT, TIMEOUT,
};

/// Marks the panics these tests cause on purpose, so the panic hook keeps them quiet.
const EXPECTED_PANIC: &str = "dispatch_modes: expected panic";

/// Connects and sends `id\n`.
fn send_id(addr: SocketAddr, id: &str) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(format!("{id}\n").as_bytes()).unwrap();
    stream
}

/// Sends requests `a` and `b`, and waits until both are at the gate at once: neither is
/// released before both arrived, a barrier of two.
fn both_at_the_gate(addr: SocketAddr, control: &Control) -> (TcpStream, TcpStream) {
    let (a, b) = (send_id(addr, "a"), send_id(addr, "b"));
    let mut arrived = [control.expect_arrival("the first request"), control.expect_arrival("the second request")];
    arrived.sort();
    assert_eq!(arrived, ["a", "b"], "requests a and b must run at the same time");
    (a, b)
}

fn expect_done(mut stream: TcpStream, id: &str) {
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap_or_else(|e| panic!("reading the reply to {id}: {e}"));
    assert_eq!(reply, format!("done {id}\n"), "the reply to request {id}");
}

fn line_round_trip(addr: SocketAddr, text: &str) {
    let mut stream = connect(addr);
    stream.write_all(format!("{text}\n").as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, format!("{text}\n"));
}

/// Waits until exactly `n` live threads are named `prefix*`. A freshly spawned thread
/// carries its parent's name until it first runs, so an exact count is awaited, not read
/// once. For `n == 0` the count must then stay 0 on a few more reads.
#[cfg(target_os = "linux")]
fn wait_threads(prefix: &str, n: usize, what: &str) {
    use support::threads_named;
    wait_until(TIMEOUT, &format!("{n} thread(s) named {prefix}*: {what}"), || threads_named(prefix) == n);
    if n == 0 {
        for _ in 0..3 {
            thread::sleep(Duration::from_millis(5));
            assert_eq!(threads_named(prefix), 0, "a {prefix}* thread reappeared: {what}");
        }
    }
}

/// Elsewhere, threads are not counted.
#[cfg(not(target_os = "linux"))]
fn wait_threads(_: &str, _: usize, _: &str) {}

// ---------------------------------------------------------------------------------------
// Concurrency per mode
// ---------------------------------------------------------------------------------------

#[test]
fn sequential_serializes_requests() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server = TcpServer::builder("127.0.0.1:0").dispatch(Sequential).bind(gate.by_id()).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let control = gate.control();

        let a = send_id(addr, "a");
        assert_eq!(control.expect_arrival("request a"), "a");
        let b = send_id(addr, "b");
        control.assert_no_arrival("sequential, while a's handler runs");
        control.release(1);
        expect_done(a, "a");
        assert_eq!(control.expect_arrival("request b, after a ended"), "b");
        control.release(1);
        expect_done(b, "b");
        assert_eq!(control.high_water(), 1, "sequential ran requests at the same time");
        stop_background(background);
    });
}

#[test]
fn threading_runs_requests_concurrently() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server = TcpServer::builder("127.0.0.1:0").dispatch(Threading::new()).bind(gate.by_id()).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let control = gate.control();

        let (a, b) = both_at_the_gate(addr, &control);
        assert_eq!(control.high_water(), 2);
        control.release(2);
        expect_done(a, "a");
        expect_done(b, "b");
        stop_background(background);
    });
}

/// Was: the tests checked only that no third handler started, so a serve loop that
/// accepted before waiting for a thread (holding the connection in memory) passed. The
/// third connection must stay unaccepted in the backlog: the server holds no descriptor
/// for it (counted in /proc on Linux, with nothing else in this binary running).
#[test]
fn threading_max_threads_holds_extra_connections_in_the_backlog() {
    bounded_alone(LIMIT, || {
        let gate = Gate::new();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new().max_threads(2).thread_name("tq-max"))
            .bind(gate.by_id())
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let control = gate.control();

        let (a, b) = both_at_the_gate(addr, &control);
        let (c, opened) = descriptors_opened_by(|| {
            let c = send_id(addr, "c");
            control.assert_no_arrival("max_threads(2) with two requests running");
            c
        });
        if let Some(opened) = opened {
            assert_eq!(
                opened, 1,
                "the server accepted the third connection at max_threads (a descriptor more than the client's own): \
                 it must wait in the backlog, unaccepted"
            );
        }
        wait_threads("tq-max", 2, "only two request threads may exist");
        control.release(1);
        assert_eq!(control.expect_arrival("request c, once a slot is free"), "c");
        control.release(2);
        expect_done(a, "a");
        expect_done(b, "b");
        expect_done(c, "c");
        assert_eq!(control.high_water(), 2);
        assert_eq!(control.passed(), 3, "every request must be served");
        stop_background(background);
    });
}

/// Serves `clients` requests through `dispatch`, a mode of two workers, and checks that
/// exactly two run at once, the rest wait, and every request runs exactly once. Returns
/// the running server for checks of its threads.
fn assert_two_at_a_time(
    dispatch: impl Into<Dispatch>,
    clients: usize,
    what: &str,
) -> BackgroundServer<socketserver::transport::Tcp> {
    let gate = Gate::new();
    let server = TcpServer::builder("127.0.0.1:0").dispatch(dispatch).bind(gate.by_id()).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let control = gate.control();

    let ids: Vec<String> = (0..clients).map(|n| format!("c{n}")).collect();
    let streams: Vec<TcpStream> = ids.iter().map(|id| send_id(addr, id)).collect();
    let mut started = vec![control.expect_arrival("the first request"), control.expect_arrival("the second request")];
    control.assert_no_arrival(&format!("{what} with two requests running"));
    for n in 2..clients {
        control.release(1);
        started.push(control.expect_arrival(&format!("request number {n}, once a worker is free")));
    }
    control.release(2);
    for (stream, id) in streams.into_iter().zip(&ids) {
        expect_done(stream, id);
    }
    started.sort();
    assert_eq!(started, ids, "{what}: every queued request must run exactly once");
    assert_eq!(control.high_water(), 2, "{what} must run exactly two requests at once at its peak");
    background
}

#[test]
fn pool_bounds_concurrency_and_serves_the_queue() {
    bounded(LIMIT, || {
        let background = assert_two_at_a_time(Pool::new(2).thread_name("tq-bound"), 6, "Pool(2)");
        wait_threads("tq-bound", 2, "Pool(2) has two workers");
        stop_background(background);
    });
}

#[test]
fn pool_survives_panicking_requests() {
    support::quiet_panics_containing(EXPECTED_PANIC);
    bounded(LIMIT, || {
        let gate = Gate::new();
        let panics = Arc::new(AtomicUsize::new(0));
        let other_errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let (hook_panics, hook_other) = (panics.clone(), other_errors.clone());
        let handler_gate = gate.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Pool::new(2).thread_name("tq-panic"))
            .handle_error(move |e, _| match e {
                Error::Panic { phase: Phase::Handle, message } if message.contains(EXPECTED_PANIC) => {
                    hook_panics.fetch_add(1, Ordering::SeqCst);
                }
                other => hook_other.lock().unwrap().push(other.to_string()),
            })
            .bind_handler(move |req: &mut StreamRequest| {
                let id = read_id(req)?;
                if id == "panic" {
                    panic!("{EXPECTED_PANIC}");
                }
                handler_gate.pass(id.clone())?;
                req.writer().write_all(format!("done {id}\n").as_bytes())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let control = gate.control();

        for n in 0..20 {
            let mut stream = connect(addr);
            stream.write_all(b"panic\n").unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap_or_else(|e| panic!("panicking request {n}: {e}"));
            assert!(rest.is_empty());
        }
        wait_until(TIMEOUT, "20 panics reported", || panics.load(Ordering::SeqCst) == 20);
        wait_threads("tq-panic", 2, "the pool must still have its two workers");

        let (a, b) = both_at_the_gate(addr, &control); // both workers still run requests at once
        control.release(2);
        expect_done(a, "a");
        expect_done(b, "b");
        stop_background(background);
        assert_eq!(panics.load(Ordering::SeqCst), 20, "handle_error must see exactly 20 panics");
        assert!(other_errors.lock().unwrap().is_empty(), "unexpected errors: {:?}", other_errors.lock().unwrap());
    });
}

// ---------------------------------------------------------------------------------------
// Threads after close (Linux: counted in /proc)
// ---------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[test]
fn threading_leaves_no_thread_after_close() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new().thread_name("tq-thcl"))
            .bind(gate.by_id())
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let control = gate.control();

        let a = send_id(addr, "a");
        let b = send_id(addr, "b");
        control.expect_arrival("the first request");
        control.expect_arrival("the second request");
        wait_threads("tq-thcl", 2, "two requests running");
        // block_on_close (the default): stop waits for the running requests.
        let stopper = thread::spawn(move || background.stop());
        thread::sleep(support::NEGATIVE_WAIT);
        assert!(!stopper.is_finished(), "stop() returned while requests were running with block_on_close");
        control.release(2);
        join_within(stopper, TIMEOUT).unwrap();
        expect_done(a, "a");
        expect_done(b, "b");
        wait_threads("tq-thcl", 0, "after stop");
    });
}

#[cfg(target_os = "linux")]
#[test]
fn pool_leaves_no_thread_after_close() {
    bounded(LIMIT, || {
        let server =
            TcpServer::builder("127.0.0.1:0").dispatch(Pool::new(3).thread_name("tq-plcl")).bind(echo_line).unwrap();
        let addr = server.local_addr();
        assert_eq!(support::threads_named("tq-plcl"), 0, "workers start with serve_forever");
        let background = server.serve_in_background().unwrap();
        for n in 0..5 {
            line_round_trip(addr, &format!("line {n}"));
        }
        wait_threads("tq-plcl", 3, "the idle pool keeps its three workers while serving");
        stop_background(background);
        wait_threads("tq-plcl", 0, "after stop");
    });
}

#[cfg(target_os = "linux")]
#[test]
fn server_close_without_background_joins_pool_workers() {
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0").dispatch(Pool::new(2).thread_name("tq-own")).bind(echo_line).unwrap(),
        );
        let addr = server.local_addr();
        let serve = support::spawn_serve(&server, "tq-own-serve");
        line_round_trip(addr, "one");
        wait_threads("tq-own", 3, "two workers and the serve thread");
        server.shutdown();
        join_within(serve, TIMEOUT).unwrap();
        server.close();
        wait_threads("tq-own", 0, "after close");
    });
}

#[cfg(target_os = "linux")]
#[test]
fn threading_reaps_finished_threads() {
    bounded(LIMIT, || {
        // Without keep-alive every request has a new thread, so reaping is what keeps the
        // count down.
        let mode = Threading::new().thread_name("tq-reap").keep_alive(Duration::ZERO);
        let server = TcpServer::builder("127.0.0.1:0").dispatch(mode).bind(echo_line).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        for n in 0..50 {
            line_round_trip(addr, &format!("request {n}"));
        }
        let live = support::threads_named("tq-reap");
        assert!(live <= 2, "{live} request threads alive after 50 finished requests");
        stop_background(background);
        wait_threads("tq-reap", 0, "after stop");
    });
}

/// The names of the threads that ran 20 one-at-a-time requests in `mode`.
fn threads_serving_a_burst(mode: Threading) -> std::collections::HashSet<String> {
    let names = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let seen = names.clone();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode)
        .bind(move |req: &mut StreamRequest| {
            seen.lock().unwrap().insert(thread::current().name().unwrap_or("?").to_string());
            echo_line(req)
        })
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    for n in 0..20 {
        line_round_trip(addr, &format!("burst {n}"));
    }
    stop_background(background);
    names.lock().unwrap().clone()
}

/// A thread whose request ended takes the next one instead of a new thread being
/// spawned; with `keep_alive(ZERO)` every request gets a new thread, as in Python.
#[test]
fn threading_reuses_idle_threads_within_keep_alive() {
    bounded(LIMIT, || {
        let reused = threads_serving_a_burst(Threading::new().thread_name("tq-keep").keep_alive(TIMEOUT));
        // A request can arrive before the previous thread is back waiting, so a few new
        // threads may still be spawned; without reuse there would be 20.
        assert!(reused.len() < 10, "20 one-at-a-time requests ran on {} threads: {reused:?}", reused.len());
        let fresh = threads_serving_a_burst(Threading::new().thread_name("tq-fresh").keep_alive(Duration::ZERO));
        assert_eq!(fresh.len(), 20, "without keep-alive each request has a thread of its own");
        wait_threads("tq-keep", 0, "idle threads end when the server closes");
    });
}

/// `stop()` must return while a handler is still blocked; the handler then finishes.
fn stop_does_not_wait(mode: Threading, prefix: &str) {
    let gate = Gate::new();
    let server = TcpServer::builder("127.0.0.1:0").dispatch(mode).bind(gate.by_id()).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let control = gate.control();
    let a = send_id(addr, "a");
    control.expect_arrival("request a");
    let stopper = thread::spawn(move || background.stop());
    let stopped = join_within(stopper, TIMEOUT);
    assert!(stopped.is_ok(), "{prefix}: stop failed: {stopped:?}");
    wait_threads(prefix, 1, "the blocked handler is still running after stop");
    control.release(1);
    expect_done(a, "a");
    wait_threads(prefix, 0, "the released handler's thread ends");
}

#[test]
fn block_on_close_false_does_not_wait_for_requests() {
    bounded(LIMIT, || stop_does_not_wait(Threading::new().block_on_close(false).thread_name("tq-nblk"), "tq-nblk"));
}

#[test]
fn daemon_threads_do_not_block_stop() {
    bounded(LIMIT, || stop_does_not_wait(Threading::new().daemon_threads(true).thread_name("tq-dmn"), "tq-dmn"));
}

// ---------------------------------------------------------------------------------------
// A custom Executor
// ---------------------------------------------------------------------------------------

/// Runs every job on a new, unnamed thread, counting executions and closes.
struct SpawnCounting {
    executed: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Executor for SpawnCounting {
    fn execute(&self, job: Job) -> io::Result<()> {
        self.executed.fetch_add(1, Ordering::SeqCst);
        thread::Builder::new().spawn(move || job.run()).map(drop)
    }

    fn close(&self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn custom_dispatch_is_used() {
    bounded(LIMIT, || {
        let executed = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (names_tx, names) = mpsc::channel::<Option<String>>();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(SpawnCounting { executed: executed.clone(), closed: closed.clone() })
            .bind(move |req: &mut StreamRequest| {
                let _ = names_tx.send(thread::current().name().map(str::to_string));
                echo_line(req)
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        for n in 0..5 {
            line_round_trip(addr, &format!("custom {n}"));
            let name = recv(&names, "the handler to run");
            assert_eq!(name, None, "request {n} ran on {name:?}, not on the custom mode's unnamed thread");
        }
        assert_eq!(executed.load(Ordering::SeqCst), 5, "every request must go through the custom Executor");
        assert_eq!(closed.load(Ordering::SeqCst), 0);
        stop_background(background);
        assert_eq!(closed.load(Ordering::SeqCst), 1, "closing the server must call Executor::close once");
    });
}

#[cfg(feature = "threadpool")]
#[test]
fn threadpool_dispatch_bounds_concurrency_and_serves_all() {
    use socketserver::dispatch::ThreadPoolDispatch;

    bounded(LIMIT, || {
        let pool = threadpool::ThreadPool::with_name("tq-tpd".into(), 2);
        let background = assert_two_at_a_time(ThreadPoolDispatch::new(pool), 4, "a ThreadPool of 2");
        stop_background(background);
        wait_threads("tq-tpd", 0, "once the server is gone");
    });
}

// ---------------------------------------------------------------------------------------
// Dispatch, the one type over the modes
// ---------------------------------------------------------------------------------------

/// Counts the requests it runs, on threads of its own, and says it runs two at once.
#[derive(Default)]
struct TwoAtOnce(Arc<AtomicUsize>);

impl Executor for TwoAtOnce {
    fn execute(&self, job: Job) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        thread::Builder::new().spawn(move || job.run()).map(drop)
    }

    fn max_concurrent(&self) -> Option<usize> {
        Some(2)
    }
}

#[test]
fn every_dispatch_made_at_run_time_serves_and_says_its_limit() {
    bounded(LIMIT, || {
        let ran = Arc::new(AtomicUsize::new(0));
        let modes: [(&str, Dispatch, Option<usize>); 6] = [
            ("Dispatch::sequential()", Dispatch::sequential(), Some(1)),
            ("Dispatch::threading()", Dispatch::threading(), None),
            ("Dispatch::pool(3)", Dispatch::pool(3), Some(3)),
            ("Threading::max_threads(5).into()", Threading::new().max_threads(5).into(), Some(5)),
            ("Dispatch::default()", Dispatch::default(), Some(1)),
            ("Dispatch::custom(..)", Dispatch::custom(TwoAtOnce(ran.clone())), Some(2)),
        ];
        for (name, dispatch, limit) in modes {
            assert_eq!(dispatch.max_concurrent(), limit, "{name}: its limit");
            let server = TcpServer::builder("127.0.0.1:0").dispatch(dispatch).bind(echo_line).unwrap();
            let addr = server.local_addr();
            let background = server.serve_in_background().unwrap();
            line_round_trip(addr, name);
            stop_background(background);
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the custom executor ran its one request");
    });
}
