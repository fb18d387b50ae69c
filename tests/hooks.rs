//! Handler phases and server hooks: setup/handle/finish order, errors reaching
//! handle_error, verify_request, service_actions (idle, while every worker is busy, and
//! slower than its interval), handler state, and UDP errors. Panics in handlers and
//! hooks: tests/handler_panics.rs.

mod support;

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::dispatch::{Pool, Threading};
use socketserver::{Address, DatagramRequest, Phase, RequestHandler, StreamRequest, TcpServer, UdpServer};
use support::{
    bounded, connect, request_line, serve_started, stop, tcp_echo, udp_client, wait_until, Gate, Report, Reported,
    Reports, LIMIT, MODES, TIMEOUT,
};

/// Reads the request to its end, so that closing the connection sends a FIN, not a
/// reset that could overtake the reply.
fn drain(req: &mut StreamRequest) -> io::Result<()> {
    io::copy(&mut req.reader(), &mut io::sink()).map(drop)
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

/// In the message of the panics caused on purpose, so the panic hook keeps quiet.
const ON_PURPOSE: &str = "hooks: panicked on purpose";

impl RequestHandler<StreamRequest> for Recorder {
    fn setup(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        self.note(req, "setup");
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        self.note(req, "handle");
        let mut line = String::new();
        req.reader().read_line(&mut line)?;
        match line.trim_end() {
            "ok" => Ok(req.writer().write_all(b"ok")?),
            "err" => Err(io::Error::other("handle failed on purpose").into()),
            "panic" => panic!("{ON_PURPOSE}"),
            other => Err(io::Error::other(format!("unknown command {other:?}")).into()),
        }
    }

    fn finish(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        self.note(req, "finish");
        Ok(())
    }
}

const ALL_PHASES: [&str; 3] = ["setup", "handle", "finish"];

#[test]
fn phases_run_in_order_and_failures_reach_handle_error_once() {
    support::quiet_panics_containing(ON_PURPOSE);
    bounded(LIMIT, || {
        for mode in MODES {
            let recorder = Recorder::default();
            let reports = Reports::default();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .bind_handler(recorder.clone())
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serving = serve_started(&server, "hk-serve");

            let (ok_client, reply) = request_line(addr, "ok");
            assert_eq!(reply, b"ok", "{mode}");
            let (err_client, reply) = request_line(addr, "err");
            assert!(reply.is_empty(), "{mode}: a failed handle sends nothing: {reply:?}");
            let (panic_client, reply) = request_line(addr, "panic");
            assert!(reply.is_empty(), "{mode}: a panicked handle sends nothing: {reply:?}");
            // The server goes on serving.
            let (next_client, reply) = request_line(addr, "ok");
            assert_eq!(reply, b"ok", "{mode}: the next client after a failure is served");
            stop(&server, serving);

            for client in [ok_client, err_client, panic_client, next_client] {
                assert_eq!(recorder.phases_of(client), ALL_PHASES, "{mode}: phases of {client}");
            }
            let reports = reports.take();
            assert_eq!(reports.len(), 2, "{mode}: one report per failure, got {reports:?}");
            assert_eq!(
                reports[0],
                Report {
                    client: Some(err_client),
                    reported: Reported::Handler(Phase::Handle, io::ErrorKind::Other, "handle failed on purpose".into())
                },
                "{mode}"
            );
            assert_eq!(reports[1].client, Some(panic_client), "{mode}: the panic is reported with the client");
            assert!(reports[1].reported.is_panic(Phase::Handle, ON_PURPOSE), "{mode}: {:?}", reports[1]);
        }
    });
}

/// `setup` fails; `handle` and `finish` must not run.
struct FailingSetup {
    later_phases: Arc<AtomicUsize>,
}

impl RequestHandler<StreamRequest> for FailingSetup {
    fn setup(&self, _req: &mut StreamRequest) -> socketserver::HandlerResult {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "setup refused on purpose").into())
    }

    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        self.later_phases.fetch_add(1, Ordering::SeqCst);
        Ok(req.writer().write_all(b"handled")?)
    }

    fn finish(&self, _req: &mut StreamRequest) -> socketserver::HandlerResult {
        self.later_phases.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_failing_setup_skips_handle_and_finish() {
    bounded(LIMIT, || {
        for mode in MODES {
            let later_phases = Arc::new(AtomicUsize::new(0));
            let reports = Reports::default();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .bind_handler(FailingSetup { later_phases: later_phases.clone() })
                    .unwrap(),
            );
            let serving = serve_started(&server, "hk-serve");
            let mut stream = connect(server.local_addr());
            let client = stream.local_addr().unwrap();
            let mut reply = Vec::new();
            match stream.read_to_end(&mut reply) {
                Ok(_) => assert!(reply.is_empty(), "{mode}: got {reply:?}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{mode}: {e}"),
            }
            stop(&server, serving);
            assert_eq!(later_phases.load(Ordering::SeqCst), 0, "{mode}: handle or finish ran after a failed setup");
            let expected =
                Reported::Handler(Phase::Setup, io::ErrorKind::PermissionDenied, "setup refused on purpose".into());
            assert_eq!(reports.take(), [Report { client: Some(client), reported: expected }], "{mode}");
        }
    });
}

#[test]
fn verify_request_false_closes_the_connection_without_running_the_handler() {
    bounded(LIMIT, || {
        for mode in MODES {
            let allow = Arc::new(AtomicBool::new(false));
            let seen = Arc::new(Mutex::new(Vec::<Option<SocketAddr>>::new()));
            let handled = Arc::new(AtomicUsize::new(0));
            let reports = Reports::default();
            let (allow_hook, seen_hook, count) = (allow.clone(), seen.clone(), handled.clone());
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .verify_request(move |client: &Address| {
                        seen_hook.lock().unwrap().push(client.as_inet());
                        allow_hook.load(Ordering::SeqCst)
                    })
                    .bind_handler(move |req: &mut StreamRequest| {
                        count.fetch_add(1, Ordering::SeqCst);
                        reply_with(req, b"served")
                    })
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serving = serve_started(&server, "hk-serve");

            let mut rejected = connect(addr);
            let rejected_addr = rejected.local_addr().unwrap();
            let mut data = Vec::new();
            match rejected.read_to_end(&mut data) {
                Ok(_) => assert!(data.is_empty(), "{mode}: a rejected client got {data:?}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{mode}: rejected client: {e}"),
            }
            assert_eq!(*seen.lock().unwrap(), [Some(rejected_addr)], "{mode}: verify_request sees the client");

            allow.store(true, Ordering::SeqCst);
            let (accepted_addr, reply) = request_line(addr, "hi");
            assert_eq!(reply, b"served", "{mode}: the server goes on after a rejection");
            stop(&server, serving);

            assert_eq!(handled.load(Ordering::SeqCst), 1, "{mode}: the handler ran for the rejected client");
            assert_eq!(*seen.lock().unwrap(), [Some(rejected_addr), Some(accepted_addr)], "{mode}");
            assert_eq!(reports.take(), [], "{mode}: a rejection is not an error");
        }
    });
}

#[test]
fn service_actions_runs_repeatedly_while_idle() {
    bounded(LIMIT, || {
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .service_actions(Duration::from_millis(50), move || {
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .bind_handler(|req: &mut StreamRequest| reply_with(req, b"ok"))
                .unwrap(),
        );
        let start = Instant::now();
        let serving = serve_started(&server, "hk-serve");
        wait_until(TIMEOUT, "service_actions to run 3 times", || calls.load(Ordering::SeqCst) >= 3);
        let took = start.elapsed();
        eprintln!("service_actions ran 3 times in {took:?}");
        // Three calls at least one interval apart, the first one interval after the start.
        assert!(took >= Duration::from_millis(150), "service_actions ran 3 times in {took:?}: not at the interval");
        // It keeps running, and serving still works alongside it.
        let (_, reply) = request_line(server.local_addr(), "x");
        assert_eq!(reply, b"ok");
        let after_request = calls.load(Ordering::SeqCst);
        wait_until(TIMEOUT, "service_actions to run again", || calls.load(Ordering::SeqCst) > after_request);
        stop(&server, serving);
        let stopped_at = calls.load(Ordering::SeqCst);
        thread::sleep(Duration::from_millis(200));
        assert_eq!(calls.load(Ordering::SeqCst), stopped_at, "service_actions ran after serve_forever returned");
    });
}

/// Was: with every pool worker busy, service_actions stopped being called.
#[test]
fn service_actions_runs_while_every_pool_worker_is_busy() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .service_actions(Duration::from_millis(50), move || {
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .bind(gate.replying(b"done"))
                .unwrap(),
        );
        let control = gate.control();
        let serve = serve_started(&server, "hk-service");
        let mut client = connect(server.local_addr());
        control.expect_arrival("the long request");
        let before = calls.load(Ordering::SeqCst);
        // The only worker is blocked until released below.
        wait_until(TIMEOUT, "service_actions to run 3 more times while the pool is full", || {
            calls.load(Ordering::SeqCst) >= before + 3
        });
        control.release(1);
        assert_eq!(support::read_text(&mut client), "done");
        stop(&server, serve);
    });
}

/// A `service_actions` hook slower than its interval must not starve the requests: the
/// next call is counted from the end of the last one, and the loop receives in between.
#[test]
fn a_slow_service_actions_hook_does_not_starve_requests() {
    bounded(LIMIT, || {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .service_actions(Duration::from_millis(20), move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(30));
                })
                .bind(support::echo_stream)
                .unwrap(),
        );
        let addr = server.local_addr();
        let serve = serve_started(&server, "hk-slow-service");
        wait_until(TIMEOUT, "the slow hook to run", || calls.load(Ordering::SeqCst) >= 2);
        for n in 0..3 {
            assert_eq!(tcp_echo(addr, b"starved?"), b"starved?", "request {n} while the hook keeps running");
        }
        stop(&server, serve);
    });
}

#[cfg(target_os = "linux")]
#[test]
fn without_service_actions_the_idle_loop_never_wakes() {
    bounded(LIMIT, || {
        let server =
            Arc::new(TcpServer::bind_handler("127.0.0.1:0", |req: &mut StreamRequest| reply_with(req, b"ok")).unwrap());
        let serving = serve_started(&server, "hooks-idle");
        let (_, reply) = request_line(server.local_addr(), "warm up");
        assert_eq!(reply, b"ok");
        thread::sleep(Duration::from_millis(100));
        let before = support::context_switches_of("hooks-idle");
        thread::sleep(Duration::from_millis(500));
        let after = support::context_switches_of("hooks-idle");
        stop(&server, serving);
        eprintln!("{} wakeups in 500 ms idle", after - before);
        assert!(after - before <= 2, "the idle serve thread woke {} times in 500 ms", after - before);
    });
}

#[test]
fn a_closure_handler_shares_captured_state_across_requests() {
    bounded(LIMIT, || {
        let counter = Arc::new(AtomicUsize::new(0));
        let count = counter.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Threading::new())
                .bind_handler(move |req: &mut StreamRequest| {
                    drain(req)?;
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    write!(req.writer(), "{n}")
                })
                .unwrap(),
        );
        let serving = serve_started(&server, "hk-serve");
        for expected in ["1", "2", "3"] {
            let (_, reply) = request_line(server.local_addr(), "count");
            assert_eq!(reply, expected.as_bytes());
        }
        stop(&server, serving);
        assert_eq!(counter.load(Ordering::SeqCst), 3);
    });
}

/// A handler with shared state in a field.
#[derive(Default)]
struct Counting {
    served: AtomicUsize,
}

impl RequestHandler<StreamRequest> for Counting {
    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        drain(req)?;
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(write!(req.writer(), "{n}")?)
    }
}

#[test]
fn a_struct_handler_keeps_state_in_its_fields() {
    bounded(LIMIT, || {
        for mode in MODES {
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0").dispatch(mode.dispatch()).bind_handler(Counting::default()).unwrap(),
            );
            let serving = serve_started(&server, "hk-serve");
            for expected in ["1", "2", "3"] {
                let (_, reply) = request_line(server.local_addr(), "count");
                assert_eq!(reply, expected.as_bytes(), "{mode}");
            }
            stop(&server, serving);
        }
    });
}

#[test]
fn udp_handler_failures_reach_handle_error_with_the_senders_address() {
    support::quiet_panics_containing(ON_PURPOSE);
    bounded(LIMIT, || {
        for mode in MODES {
            let reports = Reports::default();
            let server = Arc::new(
                UdpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .bind_handler(|req: &mut DatagramRequest| match req.packet() {
                        b"err" => Err(io::Error::other("datagram handler failed on purpose").into()),
                        b"panic" => panic!("{ON_PURPOSE}"),
                        _ => support::echo_datagram(req),
                    })
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serving = serve_started(&server, "hk-serve");
            let client = udp_client();
            let sender = client.local_addr().unwrap();

            client.send_to(b"err", addr).unwrap();
            reports.wait_for(1, "the UDP error to be reported");
            client.send_to(b"panic", addr).unwrap();
            reports.wait_for(2, "the UDP panic to be reported");
            client.send_to(b"echo", addr).unwrap();
            let mut buf = [0; 64];
            let (n, _) = client.recv_from(&mut buf).expect("the server goes on serving datagrams");
            assert_eq!(&buf[..n], b"echo", "{mode}");
            stop(&server, serving);

            let reports = reports.take();
            assert_eq!(reports.len(), 2, "{mode}: {reports:?}");
            let failed =
                Reported::Handler(Phase::Handle, io::ErrorKind::Other, "datagram handler failed on purpose".into());
            assert_eq!(reports[0], Report { client: Some(sender), reported: failed }, "{mode}");
            assert_eq!(reports[1].client, Some(sender), "{mode}");
            assert!(reports[1].reported.is_panic(Phase::Handle, ON_PURPOSE), "{mode}: {:?}", reports[1]);
        }
    });
}
