//! Regression tests for the fixes from the review of the pool redesign, the connection
//! limit and the bind hooks: each failed before its fix (reproductions by the reviewer).

mod support;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socketserver::{Error, StreamRequest, TcpServer};
use support::{connect, join_within, wait_until, watchdog, TIMEOUT};

const WATCHDOG: Duration = Duration::from_secs(60);

/// after_bind failing when the server binds anew: the new socket is closed, and the
/// next serve call binds (and calls the hook) again.
#[test]
fn a_failing_after_bind_on_rebind_closes_the_socket_and_binds_again_next_time() {
    let _watchdog = watchdog("a_failing_after_bind_on_rebind_closes_the_socket_and_binds_again_next_time", WATCHDOG);
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let server = Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .after_bind(move |_| match count.fetch_add(1, Ordering::SeqCst) {
                1 => Err(io::Error::other("no")),
                _ => Ok(()),
            })
            .bind(|req: &mut StreamRequest| req.writer().write_all(b"hi"))
            .unwrap(),
    );
    let addr = server.local_addr();
    let serve_once = |server: &Arc<socketserver::TcpServer>| {
        let serving = server.clone();
        let serve = thread::spawn(move || serving.serve_forever());
        wait_until(TIMEOUT, "serving", || server.handle().is_serving());
        let mut reply = String::new();
        connect(addr).read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "hi");
        server.shutdown();
        join_within(serve, TIMEOUT).unwrap();
    };
    serve_once(&server);
    let second = server.serve_forever();
    assert!(matches!(second, Err(Error::Bind { .. })), "{second:?}");
    support::assert_refused(addr);
    serve_once(&server);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "built, failed rebind, rebind");
}

/// Behind a PROXY protocol proxy, verify_request judges the client the header names,
/// not the proxy.
#[cfg(feature = "proxy-protocol")]
#[test]
fn verify_request_sees_the_client_named_by_the_proxy_header() {
    let _watchdog = watchdog("verify_request_sees_the_client_named_by_the_proxy_header", WATCHDOG);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = TcpServer::builder("127.0.0.1:0")
        .proxy_protocol(true)
        .verify_request(move |client| {
            record.lock().unwrap().push(client.to_string());
            client.as_inet().is_some_and(|a| a.ip().to_string() != "198.51.100.9")
        })
        .bind(|req: &mut StreamRequest| {
            let client = req.client_addr().to_string();
            req.writer().write_all(client.as_bytes())
        })
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let ask = |header: &[u8]| {
        let mut client = connect(addr);
        client.write_all(header).unwrap();
        let mut reply = String::new();
        let _ = client.read_to_string(&mut reply);
        reply
    };
    assert_eq!(ask(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n"), "203.0.113.7:51000");
    assert_eq!(ask(b"PROXY TCP4 198.51.100.9 192.0.2.1 51000 443\r\n"), "", "a denied client got a reply");
    let stats = background.handle().stats();
    background.stop().unwrap();
    assert_eq!(*seen.lock().unwrap(), ["203.0.113.7:51000", "198.51.100.9:51000"]);
    assert_eq!(stats.denied, 1);
}

/// A UDP socket shut down by someone else (not by `shutdown`) never receives again:
/// serve_forever returns an error instead of reporting "no datagram" in a loop.
#[test]
fn a_udp_socket_shut_down_from_outside_ends_serve_forever() {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let _watchdog = watchdog("a_udp_socket_shut_down_from_outside_ends_serve_forever", WATCHDOG);
    let server = Arc::new(
        socketserver::UdpServer::builder("127.0.0.1:0")
            .handle_error(|_, _| {})
            .bind(|_: &mut socketserver::DatagramRequest| Ok(()))
            .unwrap(),
    );
    let serving = server.clone();
    let serve = thread::spawn(move || serving.serve_forever());
    wait_until(TIMEOUT, "serving", || server.handle().is_serving());
    // SAFETY: the server owns the descriptor and outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(server.as_raw_fd()) };
    // Linux answers ENOTCONN for an unconnected UDP socket but shuts it down all the same.
    let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read);
    let result = join_within(serve, TIMEOUT);
    assert!(matches!(result, Err(Error::Accept(_))), "{result:?}");
    assert!(server.handle().stats().errors < 5, "{:?}", server.handle().stats());
}
