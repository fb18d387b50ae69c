//! A panic in a handler or in any hook the server calls on a request's behalf is caught,
//! reported to `handle_error` with its phase and the client's address, and the server
//! goes on serving the next client, in every mode: `setup`, `finish`, `verify_request`,
//! `shutdown_request` (after a request and for a denied one), `refuse_when_full`, the
//! datagram handler's phases around its reply, and `handle_error` itself. The two hooks
//! documented to unwind instead, `handle_timeout` (out of `handle_request`) and
//! `service_actions` (out of `serve_forever`), do exactly that and leave the server
//! usable.
//!
//! (A panic in `handle`, reported once per mode: tests/hooks.rs; ten thousand of them:
//! tests/reliability.rs.)

mod support;

use std::io::{self, BufRead, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socketserver::dispatch::{Pool, Threading};
use socketserver::{Address, DatagramRequest, Error, Phase, RequestHandler, StreamRequest, TcpServer, UdpServer};
use support::{
    bounded, connect, panic_text, request_line, serve_started, spawn_serve, stop, tcp_echo, udp_client, udp_exchange,
    wait_until, Gate, Report, Reports, LIMIT, MODES, TIMEOUT,
};

/// In the message of every panic caused on purpose, so the panic hook keeps quiet.
const ON_PURPOSE: &str = "handler_panics: on purpose";

fn quiet() {
    support::quiet_panics_containing(ON_PURPOSE);
}

/// Reads a line and echoes it.
fn echo_line(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    req.reader().read_line(&mut line)?;
    req.writer().write_all(line.as_bytes())
}

/// The one report must be a panic in `phase`, caused on purpose, about `client`.
fn assert_one_panic(reports: &Reports, phase: Phase, client: Option<SocketAddr>, what: &str) {
    let reports = reports.take();
    match reports.as_slice() {
        [Report { client: reported, reported: panic }] if panic.is_panic(phase, ON_PURPOSE) => {
            assert_eq!(*reported, client, "{what}: the panic is reported with the client's address")
        }
        other => panic!("{what}: expected one {phase} panic reported to handle_error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Hooks the server calls on a request's behalf
// ---------------------------------------------------------------------------------------

/// `verify_request` runs on the serve loop's thread: an uncaught panic there ends
/// serving for everyone. It counts as a denial, is reported, and the next client is
/// served.
#[test]
fn a_panic_in_verify_request_denies_that_client_and_the_next_is_served() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            let first = Arc::new(AtomicBool::new(true));
            let reports = Reports::default();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .verify_request(move |_| {
                        if first.swap(false, Ordering::SeqCst) {
                            panic!("{ON_PURPOSE}: verify_request");
                        }
                        true
                    })
                    .bind_handler(echo_line)
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serve = serve_started(&server, "hp-verify");
            let (panicked, reply) = request_line(addr, "first");
            assert!(reply.is_empty(), "{mode}: the client whose verify_request panicked got {reply:?}");
            let (_, reply) = request_line(addr, "next");
            assert_eq!(reply, b"next\n", "{mode}: the next client after the panic");
            stop(&server, serve);
            assert_one_panic(&reports, Phase::Setup, Some(panicked), &format!("{mode}: verify_request"));
        }
    });
}

/// `shutdown_request` after a request ran, on the request's thread.
#[test]
fn a_panic_in_shutdown_request_is_reported_and_the_next_client_is_served() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            let first = Arc::new(AtomicBool::new(true));
            let reports = Reports::default();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .shutdown_request(move |connection| {
                        if first.swap(false, Ordering::SeqCst) {
                            panic!("{ON_PURPOSE}: shutdown_request");
                        }
                        connection.shutdown(Shutdown::Write)
                    })
                    .bind_handler(echo_line)
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serve = serve_started(&server, "hp-shutreq");
            let (panicked, reply) = request_line(addr, "first");
            // The reply was written before the hook: the client still has it, then the
            // close (the server closes the connection after its last step regardless).
            assert_eq!(reply, b"first\n", "{mode}: the reply written before shutdown_request panicked");
            let (_, reply) = request_line(addr, "next");
            assert_eq!(reply, b"next\n", "{mode}: the next client after the panic");
            stop(&server, serve);
            assert_one_panic(&reports, Phase::Respond, Some(panicked), &format!("{mode}: shutdown_request"));
        }
    });
}

/// `shutdown_request` for a connection `verify_request` turned down runs on the serve
/// loop's thread.
#[test]
fn a_panic_in_shutdown_request_for_a_denied_client_is_reported_and_the_next_client_is_served() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            // The first client is denied; its shutdown_request is the first call.
            let (deny, panic_now) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)));
            let reports = Reports::default();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .verify_request(move |_| !deny.swap(false, Ordering::SeqCst))
                    .shutdown_request(move |connection| {
                        if panic_now.swap(false, Ordering::SeqCst) {
                            panic!("{ON_PURPOSE}: shutdown_request of a denied client");
                        }
                        connection.shutdown(Shutdown::Write)
                    })
                    .bind_handler(echo_line)
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serve = serve_started(&server, "hp-denied");
            let (denied, reply) = request_line(addr, "denied");
            assert!(reply.is_empty(), "{mode}: a denied client got {reply:?}");
            let (_, reply) = request_line(addr, "next");
            assert_eq!(reply, b"next\n", "{mode}: the next client after the panic");
            let denials = server.handle().stats().denied;
            stop(&server, serve);
            assert_eq!(denials, 1, "{mode}: the denial is counted");
            assert_one_panic(&reports, Phase::Respond, Some(denied), &format!("{mode}: shutdown_request"));
        }
    });
}

/// `refuse_when_full` runs on the serve loop's thread, for a connection beyond the limit.
#[test]
fn a_panic_in_refuse_when_full_closes_that_connection_and_the_server_goes_on() {
    quiet();
    bounded(LIMIT, || {
        let gate = Gate::new();
        let reports = Reports::default();
        let refusals = Arc::new(AtomicUsize::new(0));
        let counted = refusals.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Threading::new())
                .max_connections(1)
                .handle_error(reports.hook())
                .refuse_when_full(move |connection, _| {
                    if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("{ON_PURPOSE}: refuse_when_full");
                    }
                    (&*connection).write_all(b"busy\n")
                })
                .bind(gate.replying(b"done"))
                .unwrap(),
        );
        let control = gate.control();
        let addr = server.local_addr();
        let serve = serve_started(&server, "hp-refuse");
        let mut held = connect(addr);
        control.expect_arrival("the request that fills the server");
        let (panicked, reply) = request_line(addr, "refused while the hook panics");
        assert!(reply.is_empty(), "the client whose refusal panicked got {reply:?}");
        let (_, reply) = request_line(addr, "refused");
        assert_eq!(reply, b"busy\n", "the next refusal");
        control.release(1);
        assert_eq!(support::read_text(&mut held), "done");
        wait_until(TIMEOUT, "the held request to end", || server.handle().stats().active == 0);
        // With the slot free again, a client is served.
        let mut later = connect(addr);
        control.expect_arrival("a client after the refusals");
        control.release(1);
        assert_eq!(support::read_text(&mut later), "done", "a client once the server has room again");
        let stats = server.handle().stats();
        stop(&server, serve);
        assert_eq!(stats.refused, 2, "{stats:?}");
        assert_one_panic(&reports, Phase::Respond, Some(panicked), "refuse_when_full");
    });
}

// ---------------------------------------------------------------------------------------
// Handler phases
// ---------------------------------------------------------------------------------------

/// `setup` panics for the first request: `handle` and `finish` do not run, the panic
/// is reported, the next request is served.
struct PanickingSetup {
    first: AtomicBool,
    later_phases: AtomicUsize,
}

impl RequestHandler<StreamRequest> for PanickingSetup {
    fn setup(&self, _: &mut StreamRequest) -> socketserver::HandlerResult {
        if self.first.swap(false, Ordering::SeqCst) {
            panic!("{ON_PURPOSE}: setup");
        }
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        self.later_phases.fetch_add(1, Ordering::SeqCst);
        Ok(echo_line(req)?)
    }

    fn finish(&self, _: &mut StreamRequest) -> socketserver::HandlerResult {
        self.later_phases.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_panic_in_setup_skips_handle_and_finish_and_the_next_client_is_served() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            let handler = Arc::new(PanickingSetup { first: AtomicBool::new(true), later_phases: AtomicUsize::new(0) });
            let reports = Reports::default();
            let shared = handler.clone();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .bind_handler(shared)
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serve = serve_started(&server, "hp-setup");
            let (panicked, reply) = request_line(addr, "first");
            assert!(reply.is_empty(), "{mode}: the client whose setup panicked got {reply:?}");
            assert_eq!(
                handler.later_phases.load(Ordering::SeqCst),
                0,
                "{mode}: handle or finish ran after setup panicked"
            );
            let (_, reply) = request_line(addr, "next");
            assert_eq!(reply, b"next\n", "{mode}: the next client after the panic");
            stop(&server, serve);
            assert_one_panic(&reports, Phase::Setup, Some(panicked), &format!("{mode}: setup"));
        }
    });
}

/// `finish` panics after a successful `handle`.
struct PanickingFinish;

impl RequestHandler<StreamRequest> for PanickingFinish {
    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        io::copy(&mut req.reader(), &mut io::sink())?;
        req.writer().write_all(b"handled")?;
        Ok(())
    }

    fn finish(&self, _req: &mut StreamRequest) -> socketserver::HandlerResult {
        panic!("{ON_PURPOSE}: finish")
    }
}

#[test]
fn a_panic_in_finish_is_reported_with_phase_finish() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            let reports = Reports::default();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .bind_handler(PanickingFinish)
                    .unwrap(),
            );
            let serving = serve_started(&server, "hp-finish");
            let (client, reply) = request_line(server.local_addr(), "x");
            assert_eq!(reply, b"handled", "{mode}: handle's reply is still sent");
            let (second, reply) = request_line(server.local_addr(), "x");
            assert_eq!(reply, b"handled", "{mode}: the server goes on");
            stop(&server, serving);
            let reports = reports.take();
            assert_eq!(reports.len(), 2, "{mode}: {reports:?}");
            for (report, expected_client) in reports.iter().zip([client, second]) {
                assert_eq!(report.client, Some(expected_client), "{mode}");
                assert!(report.reported.is_panic(Phase::Finish, ON_PURPOSE), "{mode}: {report:?}");
            }
        }
    });
}

/// A datagram handler whose `setup` panics for `setup-panic` and whose `finish` panics
/// for `finish-panic` (after `handle` wrote the reply); anything else is echoed.
struct PanickingDatagramPhases;

impl RequestHandler<DatagramRequest> for PanickingDatagramPhases {
    fn setup(&self, req: &mut DatagramRequest) -> socketserver::HandlerResult {
        if req.packet() == b"setup-panic" {
            panic!("{ON_PURPOSE}: datagram setup");
        }
        Ok(())
    }

    fn handle(&self, req: &mut DatagramRequest) -> socketserver::HandlerResult {
        support::echo_datagram(req)
    }

    fn finish(&self, req: &mut DatagramRequest) -> socketserver::HandlerResult {
        if req.packet() == b"finish-panic" {
            panic!("{ON_PURPOSE}: datagram finish");
        }
        Ok(())
    }
}

/// Around a datagram's reply: a panic in `setup` means no reply; a panic in `finish`,
/// after `handle` wrote the reply, still sends it. Both are reported, and the next
/// datagram is answered.
#[test]
fn panics_around_a_datagram_reply_are_reported_and_the_next_datagram_is_answered() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            let reports = Reports::default();
            let server = Arc::new(
                UdpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(reports.hook())
                    .bind_handler(PanickingDatagramPhases)
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serve = serve_started(&server, "hp-dgram");
            let client = udp_client();
            let sender = client.local_addr().unwrap();

            client.send_to(b"setup-panic", addr).unwrap();
            reports.wait_for(1, "the datagram setup's panic to be reported");
            assert_one_panic(&reports, Phase::Setup, Some(sender), &format!("{mode}: datagram setup"));

            let (reply, from) = udp_exchange(&client, addr, b"finish-panic");
            assert_eq!(
                (reply.as_slice(), from),
                (&b"finish-panic"[..], addr),
                "{mode}: the reply before finish panicked"
            );
            reports.wait_for(1, "the datagram finish's panic to be reported");
            assert_one_panic(&reports, Phase::Finish, Some(sender), &format!("{mode}: datagram finish"));

            // The first datagram got no reply: the next one received is this echo.
            let (reply, _) = udp_exchange(&client, addr, b"next");
            assert_eq!(reply, b"next", "{mode}: the next datagram after the panics");
            stop(&server, serve);
            assert_eq!(reports.take(), [], "{mode}");
        }
    });
}

// ---------------------------------------------------------------------------------------
// handle_error
// ---------------------------------------------------------------------------------------

#[test]
fn without_a_handle_error_hook_a_panic_does_not_stop_the_server() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .bind_handler(|req: &mut StreamRequest| {
                        let mut line = String::new();
                        req.reader().read_line(&mut line)?;
                        if line.trim_end() == "panic" {
                            panic!("{ON_PURPOSE}: with the default handle_error");
                        }
                        req.writer().write_all(line.as_bytes())
                    })
                    .unwrap(),
            );
            let serving = serve_started(&server, "hp-default");
            let (_, reply) = request_line(server.local_addr(), "panic");
            assert!(reply.is_empty(), "{mode}");
            let (_, reply) = request_line(server.local_addr(), "after");
            assert_eq!(reply, b"after\n", "{mode}: served after the panic");
            assert!(!serving.is_finished(), "{mode}: the serve thread ended");
            let errors = server.handle().stats().errors;
            stop(&server, serving);
            assert_eq!(errors, 1, "{mode}: the panic is counted as an error");
        }
    });
}

#[test]
fn a_panicking_handle_error_hook_does_not_stop_the_server() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            let calls = Arc::new(AtomicUsize::new(0));
            let count = calls.clone();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .handle_error(move |error: &Error, _: Option<&Address>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        panic!("{ON_PURPOSE}: handle_error, while reporting {error}");
                    })
                    .bind_handler(|req: &mut StreamRequest| {
                        let mut line = String::new();
                        req.reader().read_line(&mut line)?;
                        match line.trim_end() {
                            "err" => Err(io::Error::other("handle failed on purpose")),
                            "panic" => panic!("{ON_PURPOSE}: handle"),
                            _ => req.writer().write_all(b"ok"),
                        }
                    })
                    .unwrap(),
            );
            let addr = server.local_addr();
            let serving = serve_started(&server, "hp-hook");
            let (_, reply) = request_line(addr, "err");
            assert!(reply.is_empty(), "{mode}");
            let (_, reply) = request_line(addr, "panic");
            assert!(reply.is_empty(), "{mode}");
            let (_, reply) = request_line(addr, "ok");
            assert_eq!(reply, b"ok", "{mode}: served after the hook panicked");
            assert!(!serving.is_finished(), "{mode}: the serve thread ended");
            stop(&server, serving);
            assert_eq!(calls.load(Ordering::SeqCst), 2, "{mode}: the hook ran once per failure");
        }
    });
}

// ---------------------------------------------------------------------------------------
// The hooks that unwind, as documented
// ---------------------------------------------------------------------------------------

/// `handle_timeout` runs on the thread that called `handle_request`, and a panic in it
/// unwinds out of `handle_request` (as an exception does in Python). The server is left
/// idle and usable: `handle_request` and `serve_forever` serve afterwards.
#[test]
fn a_panic_in_handle_timeout_unwinds_out_of_handle_request_and_the_server_stays_usable() {
    quiet();
    bounded(LIMIT, || {
        for mode in MODES {
            let timeouts = Arc::new(AtomicUsize::new(0));
            let counted = timeouts.clone();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .timeout(Duration::from_millis(100))
                    .handle_timeout(move || {
                        counted.fetch_add(1, Ordering::SeqCst);
                        panic!("{ON_PURPOSE}: handle_timeout");
                    })
                    .bind_handler(echo_line)
                    .unwrap(),
            );
            let unwound = panic::catch_unwind(AssertUnwindSafe(|| server.handle_request()));
            match unwound {
                Err(payload) => {
                    let message = panic_text(&*payload);
                    assert!(message.contains("handle_timeout"), "{mode}: handle_request unwound with {message:?}");
                }
                Ok(result) => panic!("{mode}: handle_request returned {result:?} instead of unwinding"),
            }
            assert_eq!(timeouts.load(Ordering::SeqCst), 1, "{mode}");
            assert!(!server.handle().is_serving(), "{mode}: the unwound handle_request left the server serving");

            // handle_request again, with a client waiting: served.
            let mut client = connect(server.local_addr());
            client.write_all(b"after\n").unwrap();
            let result = server.handle_request();
            assert!(matches!(result, Ok(true)), "{mode}: handle_request after the panic returned {result:?}");
            assert_eq!(support::read_text(&mut client), "after\n", "{mode}");

            // And serve_forever.
            let serve = serve_started(&server, "hp-timeout");
            assert_eq!(tcp_echo(server.local_addr(), b"forever\n"), b"forever\n", "{mode}");
            stop(&server, serve);
            assert_eq!(timeouts.load(Ordering::SeqCst), 1, "{mode}: serve_forever has no timeout");
        }
    });
}

/// Was: a pool's supervisor waited for workers that went on serving. A panic in
/// service_actions ends serve_forever by unwinding, with a pool too.
#[test]
fn a_panic_in_service_actions_unwinds_out_of_a_pool_serve_forever() {
    quiet();
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(2))
                .service_actions(Duration::from_millis(50), || panic!("{ON_PURPOSE}: service_actions"))
                .bind_handler(|req: &mut StreamRequest| req.writer().write_all(b"hi"))
                .unwrap(),
        );
        let serve = spawn_serve(&server, "hp-service");
        wait_until(TIMEOUT, "serve_forever to end after the panic", || serve.is_finished());
        match serve.join() {
            Err(payload) => assert!(panic_text(&*payload).contains("service_actions"), "{}", panic_text(&*payload)),
            Ok(result) => panic!("serve_forever returned {result:?}: it must unwind with the hook's panic"),
        }
        support::assert_refused(server.local_addr());
    });
}
