//! The lifecycle: close and drop, concurrent serve calls, handle_request with and
//! without a timeout, addresses, auto traits, and bind errors.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::transport::Transport;
use socketserver::{
    Address, DatagramRequest, Error, Server, ServerHandle, StreamRequest, TcpServer, UdpServer, UnixStreamServer,
};
use support::{
    assert_refused, connect, connect_unix, join_within, round_trip, temp_socket_path, wait_until, watchdog, TIMEOUT,
};

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    let (reader, writer) = req.reader_and_writer();
    io::copy(reader, writer).map(drop)
}

fn tcp_echo(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let stream = connect(addr);
    round_trip(&stream, message, || stream.shutdown(Shutdown::Write).unwrap())
}

/// Runs `f` on a helper thread, failing the test if it does not return within `limit`.
fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    join_within(thread::spawn(f), limit)
}

fn spawn_serve<T: Transport>(server: &Arc<Server<T>>) -> JoinHandle<socketserver::Result<()>> {
    let server = server.clone();
    thread::Builder::new().name("lc-serve".into()).spawn(move || server.serve_forever()).unwrap()
}

fn stop(handle: &ServerHandle, serve: JoinHandle<socketserver::Result<()>>) {
    let handle = handle.clone();
    within(Duration::from_secs(5), move || handle.shutdown());
    let result = join_within(serve, Duration::from_secs(5));
    assert!(result.is_ok(), "serve_forever returned {result:?}");
}

#[test]
fn close_right_after_construction_then_serve_calls_fail_with_closed() {
    let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo).unwrap());
    let addr = server.local_addr();
    let closing = server.clone();
    within(Duration::from_secs(2), move || closing.close());
    assert_refused(addr);
    let closing = server.clone();
    within(Duration::from_secs(2), move || closing.close()); // twice is fine

    let serving = server.clone();
    let result = within(Duration::from_secs(2), move || serving.serve_forever());
    assert!(matches!(result, Err(Error::Closed)), "serve_forever after close returned {result:?}");
    let serving = server.clone();
    let result = within(Duration::from_secs(2), move || serving.handle_request());
    assert!(matches!(result, Err(Error::Closed)), "handle_request after close returned {result:?}");
    // Shutdown after close does nothing and does not hang.
    let handle = server.handle();
    within(Duration::from_secs(2), move || handle.shutdown());
    assert!(!server.handle().is_serving());
    drop(server); // and drop after close
}

#[test]
fn close_after_serving_then_serve_fails_with_closed() {
    let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo).unwrap());
    let addr = server.local_addr();
    let serve = spawn_serve(&server);
    assert_eq!(tcp_echo(addr, b"before close"), b"before close");
    stop(&server.handle(), serve);
    let closing = server.clone();
    within(Duration::from_secs(2), move || closing.close());
    assert_refused(addr);
    let serving = server.clone();
    let result = within(Duration::from_secs(2), move || serving.serve_forever());
    assert!(matches!(result, Err(Error::Closed)), "serve_forever after close returned {result:?}");
}

#[test]
fn close_removes_the_unix_socket_file() {
    let path = temp_socket_path("close");
    let server = UnixStreamServer::bind(&path, echo).unwrap();
    assert!(path.exists());
    server.close();
    assert!(!path.exists(), "close() left the socket file");
    let result = server.serve_forever();
    assert!(matches!(result, Err(Error::Closed)), "serve_forever after close returned {result:?}");
}

#[test]
fn dropping_the_server_closes_its_socket() {
    // Python's `with server:` block.
    let addr = {
        let server = TcpServer::bind("127.0.0.1:0", echo).unwrap();
        let addr = server.local_addr();
        // Before the drop the kernel accepts into the backlog even without a serve call.
        drop(connect(addr));
        addr
    };
    assert_refused(addr);

    // After a serve, too.
    let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo).unwrap());
    let addr = server.local_addr();
    let serve = spawn_serve(&server);
    assert_eq!(tcp_echo(addr, b"x"), b"x");
    stop(&server.handle(), serve);
    within(Duration::from_secs(5), move || drop(server));
    assert_refused(addr);

    // UDP: the port is free again, so a plain socket can bind it.
    let server = UdpServer::bind("127.0.0.1:0", |_: &mut DatagramRequest| Ok(())).unwrap();
    let addr = server.local_addr();
    assert!(UdpSocket::bind(addr).is_err(), "the UDP server holds its port");
    drop(server);
    UdpSocket::bind(addr).expect("the UDP port is free after the drop");
}

#[test]
fn dropping_a_unix_server_removes_its_socket_file() {
    let path = temp_socket_path("drop");
    {
        let server = UnixStreamServer::bind(&path, echo).unwrap();
        assert_eq!(server.local_addr(), path);
        assert!(path.exists(), "binding creates the socket file");
        drop(connect_unix(&path));
    }
    assert!(!path.exists(), "dropping the server left the socket file {}", path.display());
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
}

#[test]
fn a_second_concurrent_serve_call_fails_with_already_serving() {
    let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo).unwrap());
    let addr = server.local_addr();
    let serve = spawn_serve(&server);
    let handle = server.handle();
    wait_until(TIMEOUT, "serve_forever to begin", || handle.is_serving());

    let second = server.clone();
    let result = within(Duration::from_secs(2), move || second.serve_forever());
    assert!(matches!(result, Err(Error::AlreadyServing)), "second serve_forever returned {result:?}");
    let second = server.clone();
    let result = within(Duration::from_secs(2), move || second.handle_request());
    assert!(matches!(result, Err(Error::AlreadyServing)), "handle_request while serving returned {result:?}");

    // The first call is unaffected.
    assert!(handle.is_serving());
    assert_eq!(tcp_echo(addr, b"still serving"), b"still serving");
    stop(&handle, serve);
}

#[test]
fn handle_request_serves_exactly_one_request() {
    let _watchdog = watchdog("handle_request_serves_exactly_one_request", Duration::from_secs(20));
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let server = TcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
        count.fetch_add(1, Ordering::SeqCst);
        echo(req)
    })
    .unwrap();
    let addr = server.local_addr();

    let mut first = connect(addr);
    first.write_all(b"first").unwrap();
    first.shutdown(Shutdown::Write).unwrap();
    let mut second = connect(addr); // waits in the backlog
    second.write_all(b"second").unwrap();
    second.shutdown(Shutdown::Write).unwrap();

    assert!(matches!(server.handle_request(), Ok(true)));
    assert_eq!(served.load(Ordering::SeqCst), 1, "one handle_request, one request");
    let mut reply = Vec::new();
    first.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"first");

    // The second connection is not served until the next call.
    second.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0; 16];
    match second.read(&mut buf) {
        Err(e) => assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{e}"),
        Ok(n) => panic!("the second client got {n} bytes without a second handle_request"),
    }
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert!(!server.handle().is_serving(), "handle_request returned: nothing serves");

    assert!(matches!(server.handle_request(), Ok(true)));
    second.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reply = Vec::new();
    second.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"second");
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[test]
fn handle_request_times_out_and_calls_handle_timeout_once() {
    let timeouts = Arc::new(AtomicUsize::new(0));
    let count = timeouts.clone();
    let served = Arc::new(AtomicUsize::new(0));
    let requests = served.clone();
    let server = Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .timeout(Duration::from_millis(200))
            .handle_timeout(move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
            .bind(move |req: &mut StreamRequest| {
                requests.fetch_add(1, Ordering::SeqCst);
                echo(req)
            })
            .unwrap(),
    );
    for call in 1..=2 {
        let serving = server.clone();
        let start = Instant::now();
        let result = within(Duration::from_secs(5), move || serving.handle_request());
        let took = start.elapsed();
        assert!(matches!(result, Ok(false)), "call {call}: handle_request with no client returned {result:?}");
        assert_eq!(timeouts.load(Ordering::SeqCst), call, "handle_timeout runs exactly once per timed-out call");
        assert!(took >= Duration::from_millis(200), "call {call}: returned after {took:?}, before the timeout");
    }
    assert_eq!(served.load(Ordering::SeqCst), 0);

    // With a client waiting, the timeout does not fire.
    let mut client = connect(server.local_addr());
    client.write_all(b"in time").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let serving = server.clone();
    let result = within(Duration::from_secs(5), move || serving.handle_request());
    assert!(matches!(result, Ok(true)), "handle_request with a client returned {result:?}");
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"in time");
    assert_eq!(timeouts.load(Ordering::SeqCst), 2, "no handle_timeout when a request came");
}

#[test]
fn handle_request_in_a_loop_serves_one_request_after_another() {
    let _watchdog = watchdog("handle_request_in_a_loop", Duration::from_secs(20));
    let server = TcpServer::builder("127.0.0.1:0").timeout(Duration::from_secs(5)).bind(echo).unwrap();
    let addr = server.local_addr();
    for i in 0..3 {
        let message = format!("request {i}");
        let mut client = connect(addr);
        client.write_all(message.as_bytes()).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let result = server.handle_request();
        assert!(matches!(result, Ok(true)), "request {i}: handle_request returned {result:?}");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, message.as_bytes(), "request {i}");
    }
}

#[test]
fn local_addr_of_a_port_zero_server_is_real_and_connectable() {
    let server = TcpServer::bind("127.0.0.1:0", echo).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    let handle = server.handle();
    assert_eq!(handle.local_addr().as_inet(), Some(addr), "ServerHandle::local_addr matches");
    assert!(matches!(handle.local_addr(), Address::Inet(a) if *a == addr));
    assert_eq!(handle.local_addr().to_string(), addr.to_string());
    drop(connect(addr)); // connectable (into the backlog) before any serve call

    let server = Arc::new(server);
    let serve = spawn_serve(&server);
    assert_eq!(tcp_echo(addr, b"addr"), b"addr");
    stop(&handle, serve);
    assert_eq!(server.local_addr(), addr, "local_addr is stable across a serve");

    let udp = UdpServer::bind("127.0.0.1:0", |_: &mut DatagramRequest| Ok(())).unwrap();
    assert_ne!(udp.local_addr().port(), 0);
    assert_eq!(udp.handle().local_addr().as_inet(), Some(udp.local_addr()));

    let path = temp_socket_path("addr");
    let unix = UnixStreamServer::bind(&path, echo).unwrap();
    assert_eq!(unix.local_addr(), path);
    assert_eq!(unix.handle().local_addr().as_pathname(), Some(path.as_path()));
}

#[test]
fn handles_and_servers_are_send_sync_clone() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send_sync<T: Send + Sync>() {}
    send_sync_clone::<ServerHandle>();
    send_sync::<Server<socketserver::transport::Tcp>>();
    send_sync::<TcpServer>();
    send_sync::<UdpServer>();
    send_sync::<UnixStreamServer>();
    send_sync::<Error>();

    // A clone drives the same server.
    let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo).unwrap());
    let serve = spawn_serve(&server);
    let clone = server.handle().clone();
    wait_until(TIMEOUT, "serve_forever to begin", || clone.is_serving());
    assert!(server.handle().is_serving());
    stop(&clone, serve);
    assert!(!server.handle().is_serving());
}

#[test]
fn binding_an_address_in_use_fails_with_addr_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = TcpServer::bind(addr, echo).expect_err("bind to a port with a listener");
    assert!(matches!(err, Error::AddrInUse { .. }), "got {err:?}");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&addr.to_string()), "the error names the address: {err}");

    let first = TcpServer::bind("127.0.0.1:0", echo).unwrap();
    let err = TcpServer::bind(first.local_addr(), echo).expect_err("second server on the same port");
    assert!(matches!(err, Error::AddrInUse { .. }), "got {err:?}");

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = UdpServer::bind(udp.local_addr().unwrap(), |_: &mut DatagramRequest| Ok(()))
        .expect_err("UDP bind to a taken port");
    assert!(matches!(err, Error::AddrInUse { .. }), "got {err:?}");

    let path = temp_socket_path("inuse");
    let live = UnixStreamServer::bind(&path, echo).unwrap();
    let err = UnixStreamServer::bind(&path, echo).expect_err("a live server answers at the path");
    assert!(matches!(err, Error::AddrInUse { .. }), "got {err:?}");
    drop(live);
}

#[test]
fn binding_an_unresolvable_address_fails_with_bind() {
    let err = TcpServer::bind("127.0.0.1:notaport", echo).expect_err("an invalid port");
    assert!(matches!(err, Error::Bind { .. }), "got {err:?}");
    assert!(err.to_string().contains("127.0.0.1:notaport"), "the error names the address: {err}");

    let nothing: &[SocketAddr] = &[];
    let err = TcpServer::bind(nothing, echo).expect_err("an address list that resolves to nothing");
    assert!(matches!(err, Error::Bind { .. }), "got {err:?}");

    let err = UdpServer::bind("127.0.0.1:99999", |_: &mut DatagramRequest| Ok(())).expect_err("port out of range");
    assert!(matches!(err, Error::Bind { .. }), "got {err:?}");
}
