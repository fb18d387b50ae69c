//! What Python's own servers (`http.server`, `xmlrpc.server`, `logging.config.listen`,
//! `wsgiref`, `idlelib`) need from `socketserver`'s base, done on ours without forking
//! the crate: hooks around bind, replacing accept, an outside event loop, server-wide
//! state, handler construction with arguments, bounded lines, keep-alive, and replies
//! batched into one write.
//!
//! Unix only: Unix socket permissions, and a `SOCK_SEQPACKET` pair that keeps write
//! boundaries.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::{Address, Connection, DatagramRequest, Error, StreamRequest, TcpServer, UdpServer};
#[cfg(unix)]
use socketserver::{UnixDatagramServer, UnixStreamServer};
#[cfg(unix)]
use support::temp_socket_path;
use support::{
    bounded, bounded_alone, connect, fileno, join_within, serve_started, stop, stop_background, udp_client,
    wait_readable, with_socket, within, LIMIT, NO_SOCKET, TIMEOUT,
};

fn hello(req: &mut StreamRequest) -> io::Result<()> {
    req.writer().write_all(b"hello\n")
}

fn read_all(mut stream: impl Read) -> String {
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn after_bind_sees_the_real_address_on_every_bind() {
    bounded(LIMIT, || {
        let seen: Arc<Mutex<Vec<Address>>> = Arc::default();
        let record = seen.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .after_bind(move |addr| {
                    record.lock().unwrap().push(addr.clone());
                    Ok(())
                })
                .bind_handler(hello)
                .unwrap(),
        );
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let inet = |seen: &[Address]| seen.iter().map(|a| a.as_inet()).collect::<Vec<_>>();
        assert_eq!(inet(&seen.lock().unwrap()), [Some(addr)], "called once, with the picked port");
        // A serve call after a shutdown binds anew, and says so.
        for _ in 0..3 {
            let serve = serve_started(&server, "ep-serve");
            assert_eq!(read_all(connect(addr)), "hello\n");
            stop(&server, serve);
        }
        assert_eq!(inet(&seen.lock().unwrap()), [Some(addr); 3], "called on each bind: once built, twice again");
    });
}

/// Was: after_bind failing when the server binds anew left the new socket open. It is
/// closed, and the next serve call binds (and calls the hook) again.
#[test]
fn after_bind_failing_on_a_rebind_closes_the_socket_and_binds_again_next_time() {
    bounded(LIMIT, || {
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .after_bind(move |_| match count.fetch_add(1, Ordering::SeqCst) {
                    1 => Err(io::Error::other("no")),
                    _ => Ok(()),
                })
                .bind_handler(|req: &mut StreamRequest| req.writer().write_all(b"hi"))
                .unwrap(),
        );
        let addr = server.local_addr();
        let serve_once = |server: &Arc<TcpServer>| {
            let serve = serve_started(server, "ep-rebind");
            assert_eq!(read_all(connect(addr)), "hi");
            stop(server, serve);
        };
        serve_once(&server);
        let second = server.serve_forever();
        assert!(matches!(second, Err(Error::Bind { .. })), "{second:?}");
        support::assert_refused(addr);
        serve_once(&server);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "built, failed rebind, rebind");
    });
}

#[test]
fn a_failing_bind_hook_fails_the_bind_and_leaks_nothing() {
    bounded_alone(LIMIT, || {
        #[cfg(target_os = "linux")]
        let fds = support::open_fds();
        for _ in 0..50 {
            let before =
                TcpServer::builder("127.0.0.1:0").before_bind(|_| Err(io::Error::other("no"))).bind_handler(hello);
            assert!(matches!(before, Err(Error::Bind { .. })), "{before:?}");
            let after =
                TcpServer::builder("127.0.0.1:0").after_bind(|_| Err(io::Error::other("no"))).bind_handler(hello);
            assert!(matches!(&after, Err(Error::Bind { source, .. }) if source.to_string() == "no"), "{after:?}");
        }
        #[cfg(unix)]
        {
            let path = temp_socket_path("afterbind");
            let unix = UnixStreamServer::builder(&path).after_bind(|_| Err(io::Error::other("no"))).bind_handler(hello);
            assert!(matches!(unix, Err(Error::Bind { .. })));
            assert!(!path.exists(), "the socket file of a failed bind is removed");
        }
        #[cfg(target_os = "linux")]
        assert_eq!(support::open_fds(), fds, "descriptors leaked by failed binds");
    });
}

#[test]
fn before_bind_sets_socket_options_the_builder_lacks() {
    bounded(LIMIT, || {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        // The hook gets a `BorrowedFd` on Unix, a `BorrowedSocket` on Windows.
        let server = TcpServer::builder("127.0.0.1:0")
            .before_bind(move |socket| {
                counted.fetch_add(1, Ordering::SeqCst);
                socket2::SockRef::from(&socket).set_recv_buffer_size(256 * 1024)
            })
            .bind_handler(hello)
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let size = with_socket(&server, |socket| socket.recv_buffer_size().unwrap());
        assert!(size >= 256 * 1024, "SO_RCVBUF is {size}: the hook did not reach the socket");
        let default = TcpServer::bind_handler("127.0.0.1:0", hello).unwrap();
        let default_size = with_socket(&default, |socket| socket.recv_buffer_size().unwrap());
        assert!(default_size < size, "the test shows nothing");
    });
}

// Unix sockets, and their file's mode.
#[cfg(unix)]
#[test]
fn unix_socket_permissions_are_set_before_clients_connect_and_after_a_rebind() {
    use std::os::unix::fs::PermissionsExt;
    bounded(LIMIT, || {
        let mode_of = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let path = temp_socket_path("perm");
        let server = Arc::new(UnixStreamServer::builder(&path).permissions(0o600).bind_handler(hello).unwrap());
        assert_eq!(mode_of(&path), 0o600);
        for round in 0..2 {
            let serve = serve_started(&server, "ep-serve");
            assert_eq!(read_all(support::connect_unix(&path)), "hello\n");
            assert_eq!(mode_of(&path), 0o600, "round {round} (the second binds anew)");
            stop(&server, serve);
        }

        let path = temp_socket_path("permdg");
        let _datagram =
            UnixDatagramServer::builder(&path).permissions(0o660).bind(|_: &mut DatagramRequest| Ok(())).unwrap();
        assert_eq!(mode_of(&path), 0o660);
    });
}

/// `process_request` in every mode: connections accepted from a listener of the test's
/// own are served by the server's handler, and verify_request still applies.
#[test]
fn process_request_serves_connections_accepted_elsewhere() {
    bounded(LIMIT, || {
        let modes: [(&str, Dispatch); 3] = [
            ("sequential", Dispatch::from(Sequential)),
            ("threading", Dispatch::from(Threading::new())),
            ("pool", Dispatch::from(Pool::new(2))),
        ];
        for (name, mode) in modes {
            let own = TcpListener::bind("127.0.0.1:0").unwrap();
            let own_addr = own.local_addr().unwrap();
            let denied = Arc::new(AtomicUsize::new(0));
            let count = denied.clone();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode)
                    .verify_request(move |client| {
                        let ok = client.as_inet().is_some_and(|a| a.port() % 2 == 0);
                        if !ok {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        ok
                    })
                    .bind_handler(hello)
                    .unwrap(),
            );
            // The accept loop is the test's (Python's get_request override); the server
            // never runs serve_forever.
            let serving = server.clone();
            let accept_loop = thread::spawn(move || {
                for _ in 0..6 {
                    let (stream, peer) = own.accept().unwrap();
                    serving.process_request(Connection::Tcp(stream), peer.into()).unwrap();
                }
            });
            let mut expected_denied = 0;
            for _ in 0..6 {
                let client = connect(own_addr);
                let even = client.local_addr().unwrap().port() % 2 == 0;
                let reply = read_all(client);
                if even {
                    assert_eq!(reply, "hello\n", "{name}");
                } else {
                    expected_denied += 1;
                    assert_eq!(reply, "", "{name}: a denied client got a reply");
                }
            }
            join_within(accept_loop, TIMEOUT);
            assert_eq!(denied.load(Ordering::SeqCst), expected_denied, "{name}");
            let stats = server.handle().stats();
            assert_eq!((stats.received, stats.denied), (6, expected_denied as u64), "{name}");
            server.close();
            let late = TcpStream::connect(server.local_addr()).map(drop);
            assert!(late.is_err(), "{name}: closed server still listens");
            let other = TcpListener::bind("127.0.0.1:0").unwrap();
            let late = TcpStream::connect(other.local_addr().unwrap()).unwrap();
            let closed = server.process_request(Connection::Tcp(late), Address::Inet(own_addr));
            assert!(matches!(closed, Err(Error::Closed)), "{name}: {closed:?}");
        }
    });
}

/// idlelib's RPC server connects out to its peer instead of listening; the handler
/// then talks over that connection.
#[test]
fn process_request_serves_a_connection_made_outward() {
    bounded(LIMIT, || {
        let peer = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .bind_handler(|req: &mut StreamRequest| {
                let mut line = String::new();
                req.reader().read_line(&mut line)?;
                write!(req.writer(), "you said {line}")
            })
            .unwrap();
        let outward = TcpStream::connect(peer.local_addr().unwrap()).unwrap();
        let addr = outward.peer_addr().unwrap();
        server.process_request(Connection::Tcp(outward), addr.into()).unwrap();
        let (mut stream, _) = peer.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(b"ping\n").unwrap();
        assert_eq!(read_all(stream), "you said ping\n");
    });
}

/// A single-threaded event loop of the user's own waits on both servers' descriptors
/// (Python's `fileno()` in a `selectors` loop) and calls `handle_request` on the ready
/// one.
#[test]
fn handle_request_driven_by_an_outside_poll_loop() {
    bounded(LIMIT, || {
        let tcp = TcpServer::bind_handler("127.0.0.1:0", hello).unwrap();
        let udp = UdpServer::bind_handler("127.0.0.1:0", |req: &mut DatagramRequest| {
            let upper = req.packet().to_ascii_uppercase();
            req.reply().write_all(&upper)
        })
        .unwrap();
        let (tcp_addr, udp_addr) = (tcp.local_addr(), udp.local_addr());
        let clients = thread::spawn(move || {
            let socket = udp_client();
            let mut replies = Vec::new();
            for n in 0..3 {
                replies.push(read_all(connect(tcp_addr)));
                socket.send_to(format!("ping {n}").as_bytes(), udp_addr).unwrap();
                let mut buf = [0; 64];
                let (len, _) = socket.recv_from(&mut buf).unwrap();
                replies.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
            replies
        });
        let mut handled = (0, 0);
        while handled != (3, 3) {
            // SAFETY: both servers outlive the wait, and neither shuts down meanwhile.
            let ready = unsafe { wait_readable(&[fileno(&tcp), fileno(&udp)], TIMEOUT) };
            let (tcp_ready, udp_ready) = (ready[0], ready[1]);
            assert!(tcp_ready || udp_ready, "nothing became ready in {TIMEOUT:?}");
            if tcp_ready {
                assert!(tcp.handle_request().unwrap());
                handled.0 += 1;
            }
            if udp_ready {
                assert!(udp.handle_request().unwrap());
                handled.1 += 1;
            }
        }
        let replies = join_within(clients, TIMEOUT);
        assert_eq!(replies, ["hello\n", "PING 0", "hello\n", "PING 1", "hello\n", "PING 2"]);
        tcp.close();
        assert_eq!(fileno(&tcp), NO_SOCKET, "a closed server has no descriptor");
    });
}

/// http.server's shape: a handler type built with arguments (functools.partial in
/// Python), server-wide state every request reads and updates, a request line read
/// with a bound, and a keep-alive loop inside one `handle`.
#[test]
fn a_keep_alive_handler_with_arguments_and_server_wide_state() {
    struct Greeter {
        greeting: String,  // an argument given at construction
        served: AtomicU64, // server-wide state
    }
    impl socketserver::RequestHandler<StreamRequest> for Greeter {
        fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
            let mut line = Vec::new();
            loop {
                line.clear();
                match req.reader().read_line_bounded(&mut line, 64) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        return Ok(req.writer().write_all(b"414 line too long\n")?);
                    }
                    Err(e) => return Err(e.into()),
                }
                let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
                let name = String::from_utf8_lossy(&line);
                writeln!(req.writer(), "{} {} (#{n})", self.greeting, name.trim_end())?;
            }
        }
    }
    bounded(LIMIT, || {
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .bind_handler(Greeter { greeting: "Hello,".into(), served: AtomicU64::new(0) })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let replies = within(TIMEOUT, move || {
            // One connection, several requests (keep-alive), then a second connection.
            let mut first = connect(addr);
            let mut reader = BufReader::new(first.try_clone().unwrap());
            let mut replies = Vec::new();
            for name in ["Ada", "Grace"] {
                writeln!(first, "{name}").unwrap();
                let mut reply = String::new();
                reader.read_line(&mut reply).unwrap();
                replies.push(reply);
            }
            first.shutdown(Shutdown::Write).unwrap();
            let mut second = connect(addr);
            second.write_all(format!("{}\n", "x".repeat(100)).as_bytes()).unwrap();
            replies.push(read_all(second));
            replies
        });
        stop_background(background);
        assert_eq!(replies, ["Hello, Ada (#1)\n", "Hello, Grace (#2)\n", "414 line too long\n"]);
    });
}

/// Answers pipelined lines, batching the replies in the buffered writer and flushing
/// only when the reader holds no more received bytes (the RESP example's shape).
fn pipelined(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    while req.reader().read_line(&mut line)? > 0 {
        let pending = req.reader().buffer().len();
        write!(req.writer(), "{} pending={pending};", line.trim_end())?;
        if pending == 0 {
            req.writer().flush()?;
        }
        line.clear();
    }
    Ok(())
}

const PIPELINED_REPLY: &str = "a pending=7;bb pending=4;ccc pending=0;";

/// Pipelining: two requests sent in one packet get their replies in order, and the
/// reader's buffer shows what is still unread.
#[test]
fn reader_buffer_shows_pipelined_requests_still_unread() {
    bounded(LIMIT, || {
        let server = TcpServer::builder("127.0.0.1:0").wbufsize(4096).bind_handler(pipelined).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut client = connect(addr);
        client.write_all(b"a\nbb\nccc\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(client), PIPELINED_REPLY);
        stop_background(background);
    });
}

/// Runs [`pipelined`] (with a write buffer of `wbufsize`) on a connection that keeps the
/// boundary of every write: a Unix `SOCK_SEQPACKET` pair handed to `process_request`,
/// where each `write(2)` of the server is one record for the client. The records the
/// client receives, in order.
#[cfg(unix)]
fn pipelined_records(wbufsize: usize) -> Vec<String> {
    use socket2::{Domain, Socket, Type};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    let (server_end, client) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let server_end = UnixStream::from(OwnedFd::from(server_end));
    let path = temp_socket_path("ep-seqpacket");
    let server = UnixStreamServer::builder(&path).wbufsize(wbufsize).bind_handler(pipelined).unwrap();
    // Sent (as one record) and ended before the sequential server runs the request on
    // this thread.
    client.send(b"a\nbb\nccc\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let peer = Connection::Unix(server_end.try_clone().unwrap()).peer_addr().unwrap();
    server.process_request(Connection::Unix(server_end), peer).unwrap();
    let mut records = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = std::io::Read::read(&mut &client, &mut buf).expect("a record from the server");
        if n == 0 {
            return records;
        }
        records.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

/// Was: "in one write" was checked by the replies' content only, which any number of
/// writes gives. Over a connection that keeps write boundaries, the three batched
/// replies arrive as one record, while an unbuffered writer sends several.
// A Unix SOCK_SEQPACKET pair: nothing on Windows keeps write boundaries.
#[cfg(unix)]
#[test]
fn pipelined_replies_batched_in_the_writer_leave_in_one_write() {
    bounded(LIMIT, || {
        assert_eq!(pipelined_records(4096), [PIPELINED_REPLY], "the batched replies, write by write");
        let unbuffered = pipelined_records(0);
        assert_eq!(unbuffered.concat(), PIPELINED_REPLY);
        assert!(unbuffered.len() >= 3, "unbuffered, each reply is a write of its own at least: {unbuffered:?}");
    });
}
