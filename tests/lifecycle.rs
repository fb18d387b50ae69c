//! The lifecycle: close and drop, concurrent serve calls, handle_request with and
//! without a timeout (also in the threaded modes and with every slot busy), close from a
//! handler, addresses, auto traits, and bind errors.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
#[cfg(unix)]
use socketserver::UnixStreamServer;
use socketserver::{Address, DatagramRequest, Error, Server, ServerHandle, StreamRequest, TcpServer, UdpServer};
use support::{
    assert_refused, bounded, connect, drop_within, echo_datagram, echo_stream, join_within, read_text, serve_started,
    spawn_serve, start, stop, stop_via, tcp_echo, wait_until, within, Gate, LIMIT, TIMEOUT,
};
#[cfg(unix)]
use support::{connect_unix, temp_socket_path};

#[test]
fn close_right_after_construction_then_serve_calls_fail_with_closed() {
    bounded(LIMIT, || {
        let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo_stream).unwrap());
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
    });
}

#[test]
fn close_after_serving_then_serve_fails_with_closed() {
    bounded(LIMIT, || {
        let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo_stream).unwrap());
        let addr = server.local_addr();
        let serve = spawn_serve(&server, "lc-serve");
        assert_eq!(tcp_echo(addr, b"before close"), b"before close");
        stop(&server, serve);
        let closing = server.clone();
        within(Duration::from_secs(2), move || closing.close());
        assert_refused(addr);
        let serving = server.clone();
        let result = within(Duration::from_secs(2), move || serving.serve_forever());
        assert!(matches!(result, Err(Error::Closed)), "serve_forever after close returned {result:?}");
    });
}

// Unix sockets.
#[cfg(unix)]
#[test]
fn close_removes_the_unix_socket_file() {
    bounded(LIMIT, || {
        let path = temp_socket_path("close");
        let server = UnixStreamServer::bind(&path, echo_stream).unwrap();
        assert!(path.exists());
        server.close();
        assert!(!path.exists(), "close() left the socket file");
        let result = server.serve_forever();
        assert!(matches!(result, Err(Error::Closed)), "serve_forever after close returned {result:?}");
    });
}

#[test]
fn dropping_the_server_closes_its_socket() {
    bounded(LIMIT, || {
        // Python's `with server:` block.
        let addr = {
            let server = TcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
            let addr = server.local_addr();
            // Before the drop the kernel accepts into the backlog even without a serve call.
            drop(connect(addr));
            addr
        };
        assert_refused(addr);

        // After a serve, too.
        let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo_stream).unwrap());
        let addr = server.local_addr();
        let serve = spawn_serve(&server, "lc-serve");
        assert_eq!(tcp_echo(addr, b"x"), b"x");
        stop(&server, serve);
        drop_within(server);
        assert_refused(addr);

        // UDP: the port is free again, so a plain socket can bind it.
        let server = UdpServer::bind("127.0.0.1:0", |_: &mut DatagramRequest| Ok(())).unwrap();
        let addr = server.local_addr();
        assert!(UdpSocket::bind(addr).is_err(), "the UDP server holds its port");
        drop(server);
        UdpSocket::bind(addr).expect("the UDP port is free after the drop");
    });
}

// Unix sockets.
#[cfg(unix)]
#[test]
fn dropping_a_unix_server_removes_its_socket_file() {
    bounded(LIMIT, || {
        let path = temp_socket_path("drop");
        {
            let server = UnixStreamServer::bind(&path, echo_stream).unwrap();
            assert_eq!(server.local_addr(), path);
            assert!(path.exists(), "binding creates the socket file");
            drop(connect_unix(&path));
        }
        assert!(!path.exists(), "dropping the server left the socket file {}", path.display());
        assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
    });
}

#[test]
fn a_second_concurrent_serve_call_fails_with_already_serving() {
    bounded(LIMIT, || {
        let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo_stream).unwrap());
        let addr = server.local_addr();
        let serve = serve_started(&server, "lc-serve");
        let handle = server.handle();

        let second = server.clone();
        let result = within(Duration::from_secs(2), move || second.serve_forever());
        assert!(matches!(result, Err(Error::AlreadyServing)), "second serve_forever returned {result:?}");
        let second = server.clone();
        let result = within(Duration::from_secs(2), move || second.handle_request());
        assert!(matches!(result, Err(Error::AlreadyServing)), "handle_request while serving returned {result:?}");

        // The first call is unaffected.
        assert!(handle.is_serving());
        assert_eq!(tcp_echo(addr, b"still serving"), b"still serving");
        stop(&server, serve);
    });
}

#[test]
fn handle_request_serves_exactly_one_request() {
    bounded(LIMIT, || {
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            count.fetch_add(1, Ordering::SeqCst);
            echo_stream(req)
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
        assert_eq!(read_text(&mut first), "first");

        // The second connection is not served until the next call.
        second.set_read_timeout(Some(support::NEGATIVE_WAIT)).unwrap();
        let mut buf = [0; 16];
        match second.read(&mut buf) {
            Err(e) => assert!(support::is_timeout(&e), "{e}"),
            Ok(n) => panic!("the second client got {n} bytes without a second handle_request"),
        }
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert!(!server.handle().is_serving(), "handle_request returned: nothing serves");

        assert!(matches!(server.handle_request(), Ok(true)));
        second.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(read_text(&mut second), "second");
        assert_eq!(served.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn handle_request_times_out_and_calls_handle_timeout_once() {
    bounded(LIMIT, || {
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
                    echo_stream(req)
                })
                .unwrap(),
        );
        for call in 1..=2 {
            let serving = server.clone();
            let start = Instant::now();
            let result = within(TIMEOUT, move || serving.handle_request());
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
        let result = within(TIMEOUT, move || serving.handle_request());
        assert!(matches!(result, Ok(true)), "handle_request with a client returned {result:?}");
        assert_eq!(read_text(&mut client), "in time");
        assert_eq!(timeouts.load(Ordering::SeqCst), 2, "no handle_timeout when a request came");
    });
}

/// Was: a socket bound anew after a shutdown was left blocking, so the serve loop sat in
/// `accept` instead of the poller: `handle_request`'s timeout never fired, and only
/// Linux's refusal at the next shutdown happened to wake the loop (on Windows shutdown
/// hung). Every socket the server serves, bound anew or not, waits in the poller.
#[test]
fn a_socket_bound_anew_after_a_shutdown_waits_in_the_poller_too() {
    bounded(LIMIT, || {
        for udp in [false, true] {
            let result = if udp {
                let server = Arc::new(
                    UdpServer::builder("127.0.0.1:0").timeout(Duration::from_millis(100)).bind(echo_datagram).unwrap(),
                );
                stop(&server, serve_started(&server, "lc-rebind"));
                within(TIMEOUT, move || server.handle_request())
            } else {
                let server = Arc::new(
                    TcpServer::builder("127.0.0.1:0").timeout(Duration::from_millis(100)).bind(echo_stream).unwrap(),
                );
                stop(&server, serve_started(&server, "lc-rebind"));
                within(TIMEOUT, move || server.handle_request())
            };
            // The first handle_request binds anew, then times out with no client.
            assert!(matches!(result, Ok(false)), "udp {udp}: handle_request on the new socket returned {result:?}");
        }
    });
}

#[test]
fn handle_request_in_a_loop_serves_one_request_after_another() {
    bounded(LIMIT, || {
        let server = TcpServer::builder("127.0.0.1:0").timeout(Duration::from_secs(5)).bind(echo_stream).unwrap();
        let addr = server.local_addr();
        for i in 0..3 {
            let message = format!("request {i}");
            let mut client = connect(addr);
            client.write_all(message.as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let result = server.handle_request();
            assert!(matches!(result, Ok(true)), "request {i}: handle_request returned {result:?}");
            assert_eq!(read_text(&mut client), message, "request {i}");
        }
    });
}

/// Was: handle_request waited for the request it dispatched to a thread. It must return
/// once the request is dispatched, in the modes that run requests elsewhere.
#[test]
fn handle_request_in_threading_and_pool_returns_before_its_request_ends() {
    bounded(LIMIT, || {
        let modes: [(&str, Dispatch); 2] =
            [("threading", Dispatch::from(Threading::new())), ("pool", Dispatch::from(Pool::new(2)))];
        for (name, mode) in modes {
            let gate = Gate::new();
            let server =
                Arc::new(TcpServer::builder("127.0.0.1:0").dispatch(mode).bind(gate.replying(b"done")).unwrap());
            let control = gate.control();
            let mut client = connect(server.local_addr());
            let serving = server.clone();
            let handled = start(move || serving.handle_request());
            control.expect_arrival(name);
            // The handler is blocked until released below: handle_request must not wait for it.
            match handled.recv_timeout(TIMEOUT) {
                Ok(result) => assert!(matches!(result, Ok(true)), "{name}: handle_request returned {result:?}"),
                Err(_) => panic!("{name}: handle_request did not return while its request was still running"),
            }
            control.release(1);
            assert_eq!(read_text(&mut client), "done", "{name}: the client's reply");
            drop_within(server);
        }
    });
}

/// Was: with every slot busy, handle_request waited for a slot past its timeout.
#[test]
fn handle_request_times_out_while_every_slot_is_busy() {
    bounded(LIMIT, || {
        let modes: [(&str, Dispatch); 2] = [
            ("threading max_threads(1)", Dispatch::from(Threading::new().max_threads(1).block_on_close(false))),
            ("pool of 1", Dispatch::from(Pool::new(1))),
        ];
        for (name, mode) in modes {
            let gate = Gate::new();
            let timeouts = Arc::new(AtomicUsize::new(0));
            let counted = timeouts.clone();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode)
                    .timeout(Duration::from_millis(200))
                    .handle_timeout(move || {
                        counted.fetch_add(1, Ordering::SeqCst);
                    })
                    .bind(gate.replying(b"done"))
                    .unwrap(),
            );
            let control = gate.control();
            let addr = server.local_addr();

            // The first request takes the only slot and stays there.
            let mut first = connect(addr);
            let serving = server.clone();
            let handled = start(move || serving.handle_request());
            control.expect_arrival(name);
            match handled.recv_timeout(TIMEOUT) {
                Ok(result) => {
                    assert!(matches!(result, Ok(true)), "{name}: the first handle_request returned {result:?}")
                }
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
                    control.release(1);
                    panic!("{name}: handle_request at capacity ignored its 200 ms timeout (still waiting after 3 s)");
                }
            }
            assert_eq!(timeouts.load(Ordering::SeqCst), 1, "{name}: handle_timeout calls");

            // Release the first request; the second client is then served.
            control.release(1);
            assert_eq!(read_text(&mut first), "done", "{name}: the first client's reply");
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
            control.expect_arrival(name);
            control.release(1);
            let result: socketserver::Result<bool> = support::recv(&served_second, "handle_request to return");
            assert!(matches!(result, Ok(true)), "{name}: serving the second client: {result:?}");
            assert_eq!(read_text(&mut second), "done", "{name}: the second client's reply");
            drop(control);
            drop_within(server);
        }
    });
}

/// Was: `close()` from a handler of the same server waited for that very handler. It
/// must stop serving at once (the close itself happens on drop).
#[test]
fn close_from_a_handler_of_its_own_server_stops_serving_without_deadlock() {
    bounded(LIMIT, || {
        let modes: [(&str, Dispatch); 2] =
            [("sequential", Dispatch::from(Sequential)), ("threading", Dispatch::from(Threading::new()))];
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
            let serve = serve_started(&server, "lc-close");
            assert_eq!(tcp_echo(addr, b"hello"), b"hello", "{name}");
            assert_eq!(tcp_echo(addr, b"close"), b"closing", "{name}: the handler's reply after its close()");
            let result = join_within(serve, TIMEOUT);
            assert!(result.is_ok(), "{name}: serve_forever returned {result:?}");
            assert_refused(addr);
            drop_within(server);
            assert_refused(addr);
        }
    });
}

#[test]
fn local_addr_of_a_port_zero_server_is_real_and_connectable() {
    bounded(LIMIT, || {
        let server = TcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
        let handle = server.handle();
        assert_eq!(handle.local_addr().as_inet(), Some(addr), "ServerHandle::local_addr matches");
        assert!(matches!(handle.local_addr(), Address::Inet(a) if *a == addr));
        assert_eq!(handle.local_addr().to_string(), addr.to_string());
        drop(connect(addr)); // connectable (into the backlog) before any serve call

        let server = Arc::new(server);
        let serve = spawn_serve(&server, "lc-serve");
        assert_eq!(tcp_echo(addr, b"addr"), b"addr");
        stop_via(&handle, serve);
        assert_eq!(server.local_addr(), addr, "local_addr is stable across a serve");

        let udp = UdpServer::bind("127.0.0.1:0", |_: &mut DatagramRequest| Ok(())).unwrap();
        assert_ne!(udp.local_addr().port(), 0);
        assert_eq!(udp.handle().local_addr().as_inet(), Some(udp.local_addr()));

        #[cfg(unix)]
        {
            let path = temp_socket_path("addr");
            let unix = UnixStreamServer::bind(&path, echo_stream).unwrap();
            assert_eq!(unix.local_addr(), path);
            assert_eq!(unix.handle().local_addr().as_pathname(), Some(path.as_path()));
        }
    });
}

#[test]
fn handles_and_servers_are_send_sync_clone() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send_sync<T: Send + Sync>() {}
    send_sync_clone::<ServerHandle>();
    send_sync::<Server<socketserver::transport::Tcp>>();
    send_sync::<TcpServer>();
    send_sync::<UdpServer>();
    #[cfg(unix)]
    send_sync::<UnixStreamServer>();
    send_sync::<Error>();

    bounded(LIMIT, || {
        // A clone drives the same server.
        let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo_stream).unwrap());
        let serve = spawn_serve(&server, "lc-serve");
        let clone = server.handle().clone();
        wait_until(TIMEOUT, "serve_forever to begin", || clone.is_serving());
        assert!(server.handle().is_serving());
        stop_via(&clone, serve);
        assert!(!server.handle().is_serving());
    });
}

#[test]
fn binding_an_address_in_use_fails_with_addr_in_use() {
    bounded(LIMIT, || {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = TcpServer::bind(addr, echo_stream).expect_err("bind to a port with a listener");
        assert!(matches!(err, Error::AddrInUse { .. }), "got {err:?}");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "the error names the address: {err}");

        let first = TcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
        let err = TcpServer::bind(first.local_addr(), echo_stream).expect_err("second server on the same port");
        assert!(matches!(err, Error::AddrInUse { .. }), "got {err:?}");

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = UdpServer::bind(udp.local_addr().unwrap(), |_: &mut DatagramRequest| Ok(()))
            .expect_err("UDP bind to a taken port");
        assert!(matches!(err, Error::AddrInUse { .. }), "got {err:?}");

        #[cfg(unix)]
        {
            let path = temp_socket_path("inuse");
            let live = UnixStreamServer::bind(&path, echo_stream).unwrap();
            let err = UnixStreamServer::bind(&path, echo_stream).expect_err("a live server answers at the path");
            assert!(matches!(err, Error::AddrInUse { .. }), "got {err:?}");
            drop(live);
        }
    });
}

#[test]
fn binding_an_unresolvable_address_fails_with_bind() {
    let err = TcpServer::bind("127.0.0.1:notaport", echo_stream).expect_err("an invalid port");
    assert!(matches!(err, Error::Bind { .. }), "got {err:?}");
    assert!(err.to_string().contains("127.0.0.1:notaport"), "the error names the address: {err}");

    let nothing: &[SocketAddr] = &[];
    let err = TcpServer::bind(nothing, echo_stream).expect_err("an address list that resolves to nothing");
    assert!(matches!(err, Error::Bind { .. }), "got {err:?}");

    let err = UdpServer::bind("127.0.0.1:99999", |_: &mut DatagramRequest| Ok(())).expect_err("port out of range");
    assert!(matches!(err, Error::Bind { .. }), "got {err:?}");
}

/// A test fixture as a newcomer writes it: the server first, so it drops first, while
/// its client is still connected and the handler waits for the client's next line.
struct Fixture {
    server: socketserver::BackgroundServer<socketserver::transport::Tcp>,
    client: std::io::BufReader<std::net::TcpStream>,
}

fn fixture(mode: support::Mode) -> Fixture {
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode.dispatch())
        .bind(|req| {
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut req.reader(), &mut line)? > 0 {
                req.writer().write_all(line.as_bytes())?;
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    let addr = server.local_addr();
    let server = server.serve_in_background().unwrap();
    let mut client = std::io::BufReader::new(support::connect(addr));
    client.get_mut().write_all(b"hello\n").unwrap();
    let mut reply = String::new();
    std::io::BufRead::read_line(&mut client, &mut reply).unwrap();
    assert_eq!(reply, "hello\n");
    Fixture { server, client }
}

/// Dropping the fixture (server first) ends within a few seconds in every mode: the
/// background server closes the connection its handler still serves after its stop
/// timeout (1 s) instead of waiting for the client, which is dropped after it. Also
/// when the test fails: a panic with the fixture alive unwinds through its drop at once.
/// (Before, both hung forever; issue 14.)
#[test]
#[cfg_attr(
    windows,
    ignore = "Windows: shutdown() of a socket does not wake a read blocked on it in another thread \
              (rust-lang/rust#121594), and the stop timeout closes connections that way"
)]
fn a_fixture_holding_a_background_server_and_its_client_drops_within_seconds() {
    support::quiet_panics_containing("an assertion of the test failed");
    support::bounded(support::LIMIT, || {
        for mode in support::MODES {
            let start = Instant::now();
            drop(fixture(mode));
            assert!(start.elapsed() < Duration::from_secs(5), "{mode}: the drop took {:?}", start.elapsed());

            let start = Instant::now();
            let failed = std::panic::catch_unwind(|| {
                let fixture = fixture(mode);
                let _ = &fixture.client;
                panic!("an assertion of the test failed");
            });
            assert!(failed.is_err());
            assert!(start.elapsed() < Duration::from_secs(2), "{mode}: the unwind took {:?}", start.elapsed());

            // stop() with the client still connected is bounded too, and configurable.
            let Fixture { server, client } = fixture(mode);
            let start = Instant::now();
            server.stop_timeout(Duration::from_millis(100)).stop().unwrap();
            assert!(start.elapsed() < Duration::from_secs(3), "{mode}: stop took {:?}", start.elapsed());
            drop(client);
        }
    });
}
