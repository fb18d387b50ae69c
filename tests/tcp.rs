//! TCP, over real sockets on loopback: addresses in use, failed binds that leak nothing,
//! IPv6, the real port of port 0, a listener the user bound, the per-connection options
//! (`nodelay`, `read_timeout`, `rbufsize`, `wbufsize`), and the `ThreadingTcpServer`
//! alias.

mod support;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use socketserver::{Address, Error, Phase, StreamRequest, TcpServer, ThreadingTcpServer, UdpServer};
use support::{
    assert_addr_in_use, bounded, connect, echo_datagram, echo_stream, is_timeout, pattern, recv, stop_background,
    tcp_echo, udp_client, udp_exchange, LIMIT, NEGATIVE_WAIT, TIMEOUT,
};

#[test]
fn tcp_second_bind_on_same_port_is_addr_in_use() {
    bounded(LIMIT, || {
        let first = TcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
        let addr = first.local_addr();
        assert_addr_in_use(TcpServer::bind(addr, echo_stream), addr, "TCP, SocketAddr");
        assert_addr_in_use(TcpServer::bind(format!("127.0.0.1:{}", addr.port()), echo_stream), addr, "TCP, string");
        assert_addr_in_use(TcpServer::bind(("127.0.0.1", addr.port()), echo_stream), addr, "TCP, tuple");
        let background = first.serve_in_background().unwrap();
        assert_eq!(tcp_echo(addr, b"still here"), b"still here", "the first server must keep serving");
        stop_background(background);
    });
}

#[cfg(target_os = "linux")]
#[test]
fn failed_binds_leak_no_descriptor() {
    use socketserver::UnixStreamServer;
    use support::temp_socket_path;
    bounded(LIMIT, || {
        let tcp = TcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
        let udp = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
        let (tcp_addr, udp_addr) = (tcp.local_addr(), udp.local_addr());
        // A Unix path whose directory does not exist: the socket is created, bind fails.
        let missing_dir = temp_socket_path("nodir").join("sub.sock");
        let attempts = || {
            for _ in 0..100 {
                assert!(matches!(TcpServer::bind(tcp_addr, echo_stream), Err(Error::AddrInUse { .. })));
            }
            for _ in 0..100 {
                assert!(matches!(UdpServer::bind(udp_addr, echo_datagram), Err(Error::AddrInUse { .. })));
            }
            for _ in 0..50 {
                assert!(matches!(UnixStreamServer::bind(&missing_dir, echo_stream), Err(Error::Bind { .. })));
            }
        };
        attempts(); // warm up lazily opened descriptors, if any
                    // Other tests in this process open and close descriptors at the same time, so one
                    // measurement may be off by a few; a leak would be at least 250 per round.
        let mut growths = Vec::new();
        for _ in 0..3 {
            let before = support::open_fds();
            attempts();
            let after = support::open_fds();
            let growth = after.saturating_sub(before);
            if growth < 50 {
                return;
            }
            growths.push(growth);
        }
        panic!("descriptors grew by {growths:?} over rounds of 250 failed binds");
    });
}

#[test]
fn ipv6_loopback_serves() {
    bounded(LIMIT, || {
        if let Err(e) = TcpListener::bind("[::1]:0") {
            eprintln!("ipv6_loopback_serves: SKIPPED, ::1 is not available here: {e}");
            return;
        }
        let server = TcpServer::bind("[::1]:0", echo_stream).expect("bind [::1]:0 over TCP");
        let addr = server.local_addr();
        assert!(addr.is_ipv6() && addr.ip().is_loopback(), "bound to {addr}");
        assert_ne!(addr.port(), 0);
        let background = server.serve_in_background().unwrap();
        assert_eq!(tcp_echo(addr, b"six"), b"six");
        stop_background(background);

        let server = UdpServer::bind("[::1]:0", echo_datagram).expect("bind [::1]:0 over UDP");
        let addr = server.local_addr();
        assert!(addr.is_ipv6());
        let background = server.serve_in_background().unwrap();
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (reply, from) = udp_exchange(&client, addr, b"six");
        assert_eq!(reply, b"six");
        assert_eq!(from, addr);
        stop_background(background);
    });
}

#[test]
fn local_addr_reports_the_real_port() {
    bounded(LIMIT, || {
        let server = TcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0, "local_addr must give the port the kernel picked");
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_eq!(server.handle().local_addr().as_inet(), Some(addr));
        let background = server.serve_in_background().unwrap();
        assert_eq!(background.local_addr(), addr);
        assert_eq!(tcp_echo(addr, b"port"), b"port", "the reported port must be the one served");
        stop_background(background);

        let server = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let background = server.serve_in_background().unwrap();
        let (reply, _) = udp_exchange(&udp_client(), addr, b"port");
        assert_eq!(reply, b"port");
        stop_background(background);
    });
}

#[test]
fn tcp_from_listener_serves() {
    bounded(LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = TcpServer::from_listener(listener).bind(echo_stream).unwrap();
        assert_eq!(server.local_addr(), addr);
        let background = server.serve_in_background().unwrap();
        assert_eq!(tcp_echo(addr, b"yours"), b"yours");
        assert_eq!(tcp_echo(addr, b"again"), b"again");
        stop_background(background);
    });
}

fn nodelay_seen_by_handler(nodelay: Option<bool>) -> Option<bool> {
    let (tx, rx) = mpsc::channel();
    let mut builder = TcpServer::builder("127.0.0.1:0");
    if let Some(nodelay) = nodelay {
        builder = builder.nodelay(nodelay);
    }
    let server = builder
        .bind(move |req: &mut StreamRequest| {
            let _ = tx.send(req.connection().as_tcp().and_then(|s| s.nodelay().ok()));
            Ok(())
        })
        .unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    assert_eq!(tcp_echo(addr, b""), b"");
    let seen = recv(&rx, "the handler's TCP_NODELAY");
    stop_background(background);
    seen
}

#[test]
fn tcp_nodelay_is_set_on_accepted_connections() {
    bounded(LIMIT, || {
        assert_eq!(nodelay_seen_by_handler(Some(true)), Some(true), "nodelay(true) must set TCP_NODELAY");
        assert_eq!(nodelay_seen_by_handler(None), Some(true), "TCP_NODELAY is on by default (issue 14)");
        assert_eq!(nodelay_seen_by_handler(Some(false)), Some(false), "nodelay(false) leaves it off");
    });
}

#[test]
fn tcp_read_timeout_ends_a_silent_request_and_server_keeps_serving() {
    bounded(LIMIT, || {
        let (err_tx, errors) = mpsc::channel::<(String, Option<Phase>, Option<io::ErrorKind>, Option<SocketAddr>)>();
        let server = TcpServer::builder("127.0.0.1:0")
            .read_timeout(Duration::from_millis(500))
            .handle_error(move |e, client| {
                let (phase, kind) = match e {
                    Error::Handler { phase, .. } => (Some(*phase), Some(e.kind())),
                    _ => (None, None),
                };
                let _ = err_tx.send((e.to_string(), phase, kind, client.and_then(Address::as_inet)));
            })
            .bind_handler(|req: &mut StreamRequest| {
                let mut data = Vec::new();
                req.reader().read_to_end(&mut data)?;
                req.writer().write_all(&data)
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();

        let mut silent = connect(addr);
        // The next client has sent everything before the silent one times out, so it does
        // not depend on how quickly this thread runs; it waits in the backlog meanwhile.
        let next = connect(addr);
        (&next).write_all(b"after the timeout").unwrap();
        next.shutdown(Shutdown::Write).unwrap();

        let (text, phase, kind, client) = recv(&errors, "the read timeout's report to handle_error");
        assert_eq!(phase, Some(Phase::Handle), "expected a handler error in handle, got: {text}");
        assert!(
            matches!(kind, Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
            "expected WouldBlock or TimedOut, got {kind:?}: {text}"
        );
        assert_eq!(client, Some(silent.local_addr().unwrap()), "the report must name the silent client");
        let mut rest = Vec::new();
        silent.read_to_end(&mut rest).expect("the silent client sees its connection closed");
        assert!(rest.is_empty());

        let mut reply = Vec::new();
        (&next).read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"after the timeout", "the server must go on serving after a timeout");
        assert!(errors.try_recv().is_err(), "only the silent client's request may fail");
        stop_background(background);
    });
}

#[test]
fn tcp_rbufsize_sets_the_read_buffer() {
    bounded(LIMIT, || {
        for rbufsize in [4, 0] {
            let (tx, rx) = mpsc::channel();
            let server = TcpServer::builder("127.0.0.1:0")
                .rbufsize(rbufsize)
                .bind(move |req: &mut StreamRequest| {
                    let _ = tx.send(req.reader().fill_buf()?.len());
                    echo_stream(req)
                })
                .unwrap();
            let addr = server.local_addr();
            let background = server.serve_in_background().unwrap();
            let message = pattern(100);
            assert!(tcp_echo(addr, &message) == message, "rbufsize({rbufsize}): echo through a tiny buffer failed");
            let buffered = recv(&rx, "the handler's first fill_buf");
            assert!(
                (1..=rbufsize.max(1)).contains(&buffered),
                "rbufsize({rbufsize}): the reader buffered {buffered} bytes"
            );
            stop_background(background);
        }
    });
}

/// A handler that reads one line, writes a reply without flushing, says so, then waits
/// to be released.
fn write_then_wait_server(
    wbufsize: Option<usize>,
) -> (socketserver::BackgroundServer<socketserver::transport::Tcp>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (written_tx, written) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let mut builder = TcpServer::builder("127.0.0.1:0");
    if let Some(size) = wbufsize {
        builder = builder.wbufsize(size);
    }
    let server = builder
        .bind_handler(move |req: &mut StreamRequest| {
            let mut line = String::new();
            req.reader().read_line(&mut line)?;
            req.writer().write_all(b"buffered\n")?;
            let _ = written_tx.send(());
            release_rx.lock().unwrap().recv_timeout(TIMEOUT).map_err(io::Error::other)
        })
        .unwrap();
    (server.serve_in_background().unwrap(), written, release)
}

#[test]
fn tcp_wbufsize_buffers_and_flushes_after_the_handler() {
    bounded(LIMIT, || {
        let (background, written, release) = write_then_wait_server(Some(1024));
        // Re-bound so it drops before `background`: on a failure the waiting handler is
        // released at once instead of at its timeout.
        let release = release;
        let mut client = connect(background.local_addr());
        client.write_all(b"go\n").unwrap();
        recv(&written, "the handler's write");
        client.set_read_timeout(Some(NEGATIVE_WAIT)).unwrap();
        let mut buf = [0; 64];
        match client.read(&mut buf) {
            Err(e) if is_timeout(&e) => {}
            Ok(n) => panic!("with wbufsize(1024) {n} bytes arrived before the handler returned: {:?}", &buf[..n]),
            Err(e) => panic!("unexpected error: {e}"),
        }
        release.send(()).unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"buffered\n", "the buffered reply must be flushed before the connection closes");
        stop_background(background);

        // Many writes into a large buffer, never flushed by the handler: all arrive.
        let server = TcpServer::builder("127.0.0.1:0")
            .wbufsize(65536)
            .bind(|req: &mut StreamRequest| {
                for chunk in pattern(5000).chunks(100) {
                    req.writer().write_all(chunk)?;
                }
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        assert!(tcp_echo(addr, b"") == pattern(5000), "all 5000 buffered bytes must arrive");
        stop_background(background);
    });
}

#[test]
fn tcp_default_writer_is_unbuffered() {
    bounded(LIMIT, || {
        let (background, written, release) = write_then_wait_server(None);
        let release = release; // drops before `background`, as above
        let mut client = connect(background.local_addr());
        client.write_all(b"go\n").unwrap();
        recv(&written, "the handler's write");
        // The handler is still waiting: the bytes must already be here.
        let mut buf = [0; 9];
        client.read_exact(&mut buf).expect("unbuffered bytes must arrive while the handler runs");
        assert_eq!(&buf, b"buffered\n");
        release.send(()).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        stop_background(background);
    });
}

#[test]
fn threading_tcp_server_alias_serves_two_clients_at_once() {
    bounded(LIMIT, || {
        let (arrived_tx, arrived) = mpsc::channel::<String>();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let server = ThreadingTcpServer::bind_handler("127.0.0.1:0", move |req: &mut StreamRequest| {
            let mut line = String::new();
            req.reader().read_line(&mut line)?;
            let _ = arrived_tx.send(line.trim().to_string());
            release_rx.lock().unwrap().recv_timeout(TIMEOUT).map_err(io::Error::other)?;
            req.writer().write_all(format!("bye {line}").as_bytes())
        })
        .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        // Re-bound so it drops before `background`: on a failure the waiting handlers are
        // released at once instead of at their timeout.
        let release = release;
        let mut a = connect(addr);
        let mut b = connect(addr);
        a.write_all(b"a\n").unwrap();
        b.write_all(b"b\n").unwrap();
        // Both handlers are inside at once: neither is released until both arrived.
        let mut seen = [recv(&arrived, "the first handler"), recv(&arrived, "the second handler (not concurrent?)")];
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
        release.send(()).unwrap();
        release.send(()).unwrap();
        for (client, expected) in [(&mut a, "bye a\n"), (&mut b, "bye b\n")] {
            let mut reply = String::new();
            client.read_to_string(&mut reply).unwrap();
            assert_eq!(reply, expected);
        }
        stop_background(background);
    });
}

/// `Connection` is `Read` and `Write` by value, as `TcpStream` is, so a clone kept for
/// another thread (a chat room's broadcast) writes with `conn.write_all(..)`, without
/// `(&*conn)` (issue 14).
#[test]
fn a_connection_reads_and_writes_by_value() {
    fn read_write<T: Read + Write>() {}
    read_write::<socketserver::Connection>();
    bounded(LIMIT, || {
        let server = TcpServer::bind_handler("127.0.0.1:0", |req: &mut StreamRequest| -> io::Result<()> {
            let mut clone = req.connection().try_clone()?;
            let mut word = [0; 4];
            clone.read_exact(&mut word)?;
            clone.write_all(&word.to_ascii_uppercase())
        })
        .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        assert_eq!(tcp_echo(addr, b"ping"), b"PING");
        stop_background(background);
    });
}

/// A `writeln!` of several pieces is one send on the default (unbuffered) writer, so
/// Nagle's algorithm has nothing to hold back: nothing is sent while the arguments are
/// still being formatted. Before, each piece was a send of its own, and "250 hello "
/// reached the client before the name was formatted (issue 14).
#[test]
fn a_formatted_reply_is_sent_once_whole() {
    /// Says it is being formatted, then waits for the test.
    struct Slow(Mutex<(mpsc::Sender<()>, mpsc::Receiver<()>)>);
    impl std::fmt::Display for Slow {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let channels = self.0.lock().unwrap();
            let _ = channels.0.send(());
            let _ = channels.1.recv_timeout(TIMEOUT);
            f.write_str("world")
        }
    }
    bounded(LIMIT, || {
        let (formatting_tx, formatting) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let slow = Slow(Mutex::new((formatting_tx, release_rx)));
        let server = TcpServer::bind("127.0.0.1:0", move |req| {
            writeln!(req.writer(), "250 hello {slow} ok")?;
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut client = connect(addr);
        recv(&formatting, "the reply to be formatted");
        client.set_read_timeout(Some(NEGATIVE_WAIT)).unwrap();
        let mut buf = [0; 64];
        match client.read(&mut buf) {
            Err(e) if is_timeout(&e) => {}
            Ok(n) => panic!("{:?} was sent before the reply was formatted", String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("unexpected error: {e}"),
        }
        release.send(()).unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "250 hello world ok\n");
        stop_background(background);
    });
}
