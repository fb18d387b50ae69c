//! Regression tests for the engine fixes of "Engine fixes from review" not yet filed
//! under the behaviour they guard.

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socketserver::TcpServer;
use support::{drop_within, echo_stream, serve_started, stop, tcp_echo, watchdog};

const WATCHDOG: Duration = Duration::from_secs(90);

#[test]
fn a_non_blocking_listener_from_the_user_does_not_spin() {
    let _watchdog = watchdog("a_non_blocking_listener_from_the_user_does_not_spin", WATCHDOG);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(TcpServer::from_listener(listener).bind(echo_stream).unwrap());
    let serve = serve_started(&server, "rg-nonblock");
    assert_eq!(tcp_echo(addr, b"warm up"), b"warm up");
    thread::sleep(Duration::from_millis(100));
    let switches = support::context_switches_of("rg-nonblock");
    let cpu = support::cpu_time_of("rg-nonblock");
    thread::sleep(Duration::from_millis(500));
    let woke = support::context_switches_of("rg-nonblock") - switches;
    let busy = support::cpu_time_of("rg-nonblock") - cpu;
    eprintln!("non-blocking listener: {woke} wakeups and {busy:?} of CPU in 500 ms idle");
    // A spinning loop retries accept() without sleeping: few voluntary switches, but
    // the CPU time gives it away. A blocked thread uses none.
    assert!(woke <= 2, "the idle serve thread woke {woke} times in 500 ms");
    assert!(busy < Duration::from_millis(50), "the idle serve thread used {busy:?} of CPU in 500 ms");
    assert_eq!(tcp_echo(addr, b"still served"), b"still served");
    stop(&server, serve);
    drop_within(server);
}
