//! Handler phases and server hooks: setup/handle/finish order, errors and panics reaching
//! handle_error, verify_request, service_actions, handler state, and UDP errors.

mod support;

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::transport::Transport;
use socketserver::{
    Address, DatagramRequest, Error, Phase, RequestHandler, Server, StreamRequest, TcpServer, UdpServer,
};
use support::{connect, join_within, udp_client, wait_until, TIMEOUT};

const MODES: [&str; 3] = ["sequential", "threading", "pool"];

fn mode(name: &str) -> Box<dyn Dispatch> {
    match name {
        "sequential" => Box::new(Sequential),
        "threading" => Box::new(Threading::new()),
        "pool" => Box::new(Pool::new(2)),
        other => unreachable!("unknown mode {other}"),
    }
}

fn spawn_named<T: Transport>(server: &Arc<Server<T>>, name: &str) -> JoinHandle<socketserver::Result<()>> {
    let server = server.clone();
    thread::Builder::new().name(name.to_string()).spawn(move || server.serve_forever()).unwrap()
}

fn serve<T: Transport>(server: &Arc<Server<T>>) -> JoinHandle<socketserver::Result<()>> {
    spawn_named(server, "hk-serve")
}

fn stop<T: Transport>(server: &Arc<Server<T>>, serve: JoinHandle<socketserver::Result<()>>) {
    let handle = server.handle();
    join_within(thread::spawn(move || handle.shutdown()), Duration::from_secs(5));
    let result = join_within(serve, Duration::from_secs(5));
    assert!(result.is_ok(), "serve_forever returned {result:?}");
}

/// What `handle_error` received, in a comparable form.
#[derive(Debug, Clone, PartialEq)]
enum Reported {
    Handler(Phase, String),
    Panic(Phase, String),
    Other(String),
}

type Reports = Arc<Mutex<Vec<(Option<SocketAddr>, Reported)>>>;

fn recording_hook(reports: &Reports) -> impl Fn(&Error, Option<&Address>) + Send + Sync + 'static {
    let reports = reports.clone();
    move |error: &Error, client: Option<&Address>| {
        let reported = match error {
            Error::Handler { phase, source } => Reported::Handler(*phase, source.to_string()),
            Error::Panic { phase, message } => Reported::Panic(*phase, message.clone()),
            other => Reported::Other(other.to_string()),
        };
        reports.lock().unwrap().push((client.and_then(Address::as_inet), reported));
    }
}

fn taken(reports: &Reports) -> Vec<(Option<SocketAddr>, Reported)> {
    std::mem::take(&mut *reports.lock().unwrap())
}

/// Sends `command` and a newline, half-closes, and reads until end-of-file. Returns the
/// client's address (as the server sees it) and the reply.
fn request(addr: SocketAddr, command: &str) -> (SocketAddr, Vec<u8>) {
    let mut stream = connect(addr);
    let local = stream.local_addr().unwrap();
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    (local, reply)
}

/// Reads the request to its end, so that closing the connection sends a FIN, not a
/// reset that could overtake the reply.
fn drain(req: &mut StreamRequest) -> io::Result<()> {
    io::copy(req.reader(), &mut io::sink()).map(drop)
}

/// Drains the request and replies `reply`.
fn reply_with(req: &mut StreamRequest, reply: &[u8]) -> io::Result<()> {
    drain(req)?;
    req.writer().write_all(reply)
}

fn client_addr(req: &StreamRequest) -> SocketAddr {
    req.client_addr().as_inet().expect("a TCP client")
}

/// Records each phase per client and obeys a one-line command: `ok` replies "ok",
/// `err` fails, `panic` panics.
#[derive(Clone, Default)]
struct Recorder {
    phases: Arc<Mutex<HashMap<SocketAddr, Vec<&'static str>>>>,
}

impl Recorder {
    fn note(&self, req: &StreamRequest, phase: &'static str) {
        self.phases.lock().unwrap().entry(client_addr(req)).or_default().push(phase);
    }

    fn phases_of(&self, client: SocketAddr) -> Vec<&'static str> {
        self.phases.lock().unwrap().get(&client).cloned().unwrap_or_default()
    }
}

impl RequestHandler<StreamRequest> for Recorder {
    fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
        self.note(req, "setup");
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        self.note(req, "handle");
        let mut line = String::new();
        req.reader().read_line(&mut line)?;
        match line.trim_end() {
            "ok" => req.writer().write_all(b"ok"),
            "err" => Err(io::Error::other("handle failed on purpose")),
            "panic" => panic!("handle panicked on purpose"),
            other => Err(io::Error::other(format!("unknown command {other:?}"))),
        }
    }

    fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
        self.note(req, "finish");
        Ok(())
    }
}

const ALL_PHASES: [&str; 3] = ["setup", "handle", "finish"];

#[test]
fn phases_run_in_order_and_failures_reach_handle_error_once() {
    for name in MODES {
        let recorder = Recorder::default();
        let reports = Reports::default();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .handle_error(recording_hook(&reports))
                .bind(recorder.clone())
                .unwrap(),
        );
        let addr = server.local_addr();
        let serving = serve(&server);

        let (ok_client, reply) = request(addr, "ok");
        assert_eq!(reply, b"ok", "{name}");
        let (err_client, reply) = request(addr, "err");
        assert!(reply.is_empty(), "{name}: a failed handle sends nothing: {reply:?}");
        let (panic_client, reply) = request(addr, "panic");
        assert!(reply.is_empty(), "{name}: a panicked handle sends nothing: {reply:?}");
        // The server goes on serving.
        let (next_client, reply) = request(addr, "ok");
        assert_eq!(reply, b"ok", "{name}: the next client after a failure is served");
        stop(&server, serving);

        for client in [ok_client, err_client, panic_client, next_client] {
            assert_eq!(recorder.phases_of(client), ALL_PHASES, "{name}: phases of {client}");
        }
        let reports = taken(&reports);
        assert_eq!(reports.len(), 2, "{name}: one report per failure, got {reports:?}");
        assert_eq!(
            reports[0],
            (Some(err_client), Reported::Handler(Phase::Handle, "handle failed on purpose".into())),
            "{name}"
        );
        match &reports[1] {
            (client, Reported::Panic(Phase::Handle, message)) => {
                assert_eq!(*client, Some(panic_client), "{name}: the panic is reported with the client's address");
                assert!(message.contains("handle panicked on purpose"), "{name}: panic message {message:?}");
            }
            other => panic!("{name}: expected a Phase::Handle panic, got {other:?}"),
        }
    }
}

/// `setup` fails; `handle` and `finish` must not run.
struct FailingSetup {
    later_phases: Arc<AtomicUsize>,
}

impl RequestHandler<StreamRequest> for FailingSetup {
    fn setup(&self, _req: &mut StreamRequest) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "setup refused on purpose"))
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        self.later_phases.fetch_add(1, Ordering::SeqCst);
        req.writer().write_all(b"handled")
    }

    fn finish(&self, _req: &mut StreamRequest) -> io::Result<()> {
        self.later_phases.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_failing_setup_skips_handle_and_finish() {
    for name in MODES {
        let later_phases = Arc::new(AtomicUsize::new(0));
        let reports = Reports::default();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .handle_error(recording_hook(&reports))
                .bind(FailingSetup { later_phases: later_phases.clone() })
                .unwrap(),
        );
        let serving = serve(&server);
        let mut stream = connect(server.local_addr());
        let client = stream.local_addr().unwrap();
        let mut reply = Vec::new();
        match stream.read_to_end(&mut reply) {
            Ok(_) => assert!(reply.is_empty(), "{name}: got {reply:?}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{name}: {e}"),
        }
        stop(&server, serving);
        assert_eq!(later_phases.load(Ordering::SeqCst), 0, "{name}: handle or finish ran after a failed setup");
        assert_eq!(
            taken(&reports),
            [(Some(client), Reported::Handler(Phase::Setup, "setup refused on purpose".into()))],
            "{name}"
        );
    }
}

/// `finish` panics after a successful `handle`.
struct PanickingFinish;

impl RequestHandler<StreamRequest> for PanickingFinish {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        reply_with(req, b"handled")
    }

    fn finish(&self, _req: &mut StreamRequest) -> io::Result<()> {
        panic!("finish panicked on purpose")
    }
}

#[test]
fn a_panic_in_finish_is_reported_with_phase_finish() {
    for name in MODES {
        let reports = Reports::default();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .handle_error(recording_hook(&reports))
                .bind(PanickingFinish)
                .unwrap(),
        );
        let serving = serve(&server);
        let (client, reply) = request(server.local_addr(), "x");
        assert_eq!(reply, b"handled", "{name}: handle's reply is still sent");
        let (second, reply) = request(server.local_addr(), "x");
        assert_eq!(reply, b"handled", "{name}: the server goes on");
        stop(&server, serving);
        let reports = taken(&reports);
        assert_eq!(reports.len(), 2, "{name}: {reports:?}");
        for ((reported_client, reported), expected_client) in reports.iter().zip([client, second]) {
            assert_eq!(*reported_client, Some(expected_client), "{name}");
            match reported {
                Reported::Panic(Phase::Finish, message) => {
                    assert!(message.contains("finish panicked on purpose"), "{name}: {message:?}")
                }
                other => panic!("{name}: expected a Phase::Finish panic, got {other:?}"),
            }
        }
    }
}

#[test]
fn verify_request_false_closes_the_connection_without_running_the_handler() {
    for name in MODES {
        let allow = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::<Option<SocketAddr>>::new()));
        let handled = Arc::new(AtomicUsize::new(0));
        let reports = Reports::default();
        let (allow_hook, seen_hook, count) = (allow.clone(), seen.clone(), handled.clone());
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .handle_error(recording_hook(&reports))
                .verify_request(move |client: &Address| {
                    seen_hook.lock().unwrap().push(client.as_inet());
                    allow_hook.load(Ordering::SeqCst)
                })
                .bind(move |req: &mut StreamRequest| {
                    count.fetch_add(1, Ordering::SeqCst);
                    reply_with(req, b"served")
                })
                .unwrap(),
        );
        let addr = server.local_addr();
        let serving = serve(&server);

        let mut rejected = connect(addr);
        rejected.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let rejected_addr = rejected.local_addr().unwrap();
        let mut data = Vec::new();
        match rejected.read_to_end(&mut data) {
            Ok(_) => assert!(data.is_empty(), "{name}: a rejected client got {data:?}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{name}: rejected client: {e}"),
        }
        assert_eq!(*seen.lock().unwrap(), [Some(rejected_addr)], "{name}: verify_request sees the client");

        allow.store(true, Ordering::SeqCst);
        let (accepted_addr, reply) = request(addr, "hi");
        assert_eq!(reply, b"served", "{name}: the server goes on after a rejection");
        stop(&server, serving);

        assert_eq!(handled.load(Ordering::SeqCst), 1, "{name}: the handler ran for the rejected client");
        assert_eq!(*seen.lock().unwrap(), [Some(rejected_addr), Some(accepted_addr)], "{name}");
        assert_eq!(taken(&reports), [], "{name}: a rejection is not an error");
    }
}

#[test]
fn without_a_handle_error_hook_a_panic_does_not_stop_the_server() {
    for name in MODES {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .bind(|req: &mut StreamRequest| {
                    let mut line = String::new();
                    req.reader().read_line(&mut line)?;
                    if line.trim_end() == "panic" {
                        panic!("panic with the default handle_error");
                    }
                    req.writer().write_all(line.as_bytes())
                })
                .unwrap(),
        );
        let serving = serve(&server);
        let (_, reply) = request(server.local_addr(), "panic");
        assert!(reply.is_empty(), "{name}");
        let (_, reply) = request(server.local_addr(), "after");
        assert_eq!(reply, b"after\n", "{name}: served after the panic");
        assert!(!serving.is_finished(), "{name}: the serve thread ended");
        stop(&server, serving);
    }
}

#[test]
fn a_panicking_handle_error_hook_does_not_stop_the_server() {
    for name in MODES {
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .handle_error(move |error: &Error, _: Option<&Address>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    panic!("handle_error panicked on purpose while reporting {error}");
                })
                .bind(Recorder::default())
                .unwrap(),
        );
        let addr = server.local_addr();
        let serving = serve(&server);
        let (_, reply) = request(addr, "err");
        assert!(reply.is_empty(), "{name}");
        let (_, reply) = request(addr, "panic");
        assert!(reply.is_empty(), "{name}");
        let (_, reply) = request(addr, "ok");
        assert_eq!(reply, b"ok", "{name}: served after the hook panicked");
        assert!(!serving.is_finished(), "{name}: the serve thread ended");
        stop(&server, serving);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{name}: the hook ran once per failure");
    }
}

#[test]
fn service_actions_runs_repeatedly_while_idle() {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let server = Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .service_actions(Duration::from_millis(50), move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
            .bind(|req: &mut StreamRequest| reply_with(req, b"ok"))
            .unwrap(),
    );
    let start = Instant::now();
    let serving = serve(&server);
    wait_until(TIMEOUT, "service_actions to run 3 times", || calls.load(Ordering::SeqCst) >= 3);
    let took = start.elapsed();
    eprintln!("service_actions ran 3 times in {took:?}");
    // Three calls at least one interval apart, the first one interval after the start.
    assert!(took >= Duration::from_millis(150), "service_actions ran 3 times in {took:?}: not at the interval");
    // It keeps running, and serving still works alongside it.
    let (_, reply) = request(server.local_addr(), "x");
    assert_eq!(reply, b"ok");
    let after_request = calls.load(Ordering::SeqCst);
    wait_until(TIMEOUT, "service_actions to run again", || calls.load(Ordering::SeqCst) > after_request);
    stop(&server, serving);
    let stopped_at = calls.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(calls.load(Ordering::SeqCst), stopped_at, "service_actions ran after serve_forever returned");
}

#[test]
fn without_service_actions_the_idle_loop_never_wakes() {
    let server = Arc::new(TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| reply_with(req, b"ok")).unwrap());
    let serving = spawn_named(&server, "hooks-idle");
    let (_, reply) = request(server.local_addr(), "warm up");
    assert_eq!(reply, b"ok");
    thread::sleep(Duration::from_millis(100));
    let before = support::context_switches_of("hooks-idle");
    thread::sleep(Duration::from_millis(500));
    let after = support::context_switches_of("hooks-idle");
    stop(&server, serving);
    eprintln!("{} wakeups in 500 ms idle", after - before);
    assert!(after - before <= 2, "the idle serve thread woke {} times in 500 ms", after - before);
}

#[test]
fn a_closure_handler_shares_captured_state_across_requests() {
    let counter = Arc::new(AtomicUsize::new(0));
    let count = counter.clone();
    let server = Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .bind(move |req: &mut StreamRequest| {
                drain(req)?;
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                write!(req.writer(), "{n}")
            })
            .unwrap(),
    );
    let serving = serve(&server);
    for expected in ["1", "2", "3"] {
        let (_, reply) = request(server.local_addr(), "count");
        assert_eq!(reply, expected.as_bytes());
    }
    stop(&server, serving);
    assert_eq!(counter.load(Ordering::SeqCst), 3);
}

/// A handler with shared state in a field.
#[derive(Default)]
struct Counting {
    served: AtomicUsize,
}

impl RequestHandler<StreamRequest> for Counting {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        drain(req)?;
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        write!(req.writer(), "{n}")
    }
}

#[test]
fn a_struct_handler_keeps_state_in_its_fields() {
    for name in MODES {
        let server =
            Arc::new(TcpServer::builder("127.0.0.1:0").dispatch(mode(name)).bind(Counting::default()).unwrap());
        let serving = serve(&server);
        for expected in ["1", "2", "3"] {
            let (_, reply) = request(server.local_addr(), "count");
            assert_eq!(reply, expected.as_bytes(), "{name}");
        }
        stop(&server, serving);
    }
}

#[test]
fn udp_handler_failures_reach_handle_error_with_the_senders_address() {
    for name in MODES {
        let reports = Reports::default();
        let server = Arc::new(
            UdpServer::builder("127.0.0.1:0")
                .dispatch(mode(name))
                .handle_error(recording_hook(&reports))
                .bind(|req: &mut DatagramRequest| match req.packet() {
                    b"err" => Err(io::Error::other("datagram handler failed on purpose")),
                    b"panic" => panic!("datagram handler panicked on purpose"),
                    packet => {
                        let packet = packet.to_vec();
                        req.reply().extend_from_slice(&packet);
                        Ok(())
                    }
                })
                .unwrap(),
        );
        let addr = server.local_addr();
        let serving = serve(&server);
        let client = udp_client();
        let sender = client.local_addr().unwrap();

        client.send_to(b"err", addr).unwrap();
        wait_until(TIMEOUT, "the UDP error to be reported", || reports.lock().unwrap().len() == 1);
        client.send_to(b"panic", addr).unwrap();
        wait_until(TIMEOUT, "the UDP panic to be reported", || reports.lock().unwrap().len() == 2);
        client.send_to(b"echo", addr).unwrap();
        let mut buf = [0; 64];
        let (n, _) = client.recv_from(&mut buf).expect("the server goes on serving datagrams");
        assert_eq!(&buf[..n], b"echo", "{name}");
        stop(&server, serving);

        let reports = taken(&reports);
        assert_eq!(
            reports[0],
            (Some(sender), Reported::Handler(Phase::Handle, "datagram handler failed on purpose".into())),
            "{name}"
        );
        match &reports[1] {
            (client, Reported::Panic(Phase::Handle, message)) => {
                assert_eq!(*client, Some(sender), "{name}");
                assert!(message.contains("datagram handler panicked on purpose"), "{name}: {message:?}");
            }
            other => panic!("{name}: expected a Phase::Handle panic, got {other:?}"),
        }
        assert_eq!(reports.len(), 2, "{name}: {reports:?}");
    }
}
