//! Behaviour per transport, over real sockets on loopback and in the temp directory:
//! every transport × every dispatch mode echoes; UDP replies, truncation and extra
//! sends; Unix socket files (lifetime, live/stale paths, things that are not sockets,
//! sockets the user owns); TCP binding errors, descriptor leaks, IPv6, `from_listener`
//! and the per-connection options.

mod support;

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::Duration;

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::{
    Address, DatagramRequest, Error, Phase, StreamRequest, TcpServer, ThreadingTcpServer, UdpServer,
    UnixDatagramServer, UnixStreamServer, DEFAULT_MAX_PACKET_SIZE,
};
use support::{
    connect, connect_unix, join_within, open_fds, round_trip, temp_socket_path, udp_client, watchdog, TIMEOUT,
};

/// A hang in any test ends the process after this long.
const WATCHDOG: Duration = Duration::from_secs(60);
/// How long a negative check ("nothing arrived") waits.
const NEGATIVE_WAIT: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Mode {
    Sequential,
    Threading,
    Pool,
}

fn dispatch(mode: Mode) -> Box<dyn Dispatch> {
    match mode {
        Mode::Sequential => Box::new(Sequential),
        Mode::Threading => Box::new(Threading::new()),
        Mode::Pool => Box::new(Pool::new(2)),
    }
}

/// The name of the thread a request runs on, per mode (the library's default names).
fn expected_thread_prefix(mode: Mode) -> &'static str {
    match mode {
        Mode::Sequential => "socketserver-serve",
        Mode::Threading => "socketserver-request",
        Mode::Pool => "socketserver-worker",
    }
}

/// Removes a file or an empty directory when dropped.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        let _ = fs::remove_dir(&self.0);
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn echo_stream(req: &mut StreamRequest) -> io::Result<()> {
    let (reader, writer) = req.reader_and_writer();
    io::copy(reader, writer).map(drop)
}

fn echo_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    let packet = req.packet().to_vec();
    req.reply().write_all(&packet)
}

/// A stream echo handler that also reports the name of the thread it ran on.
fn stream_echo_reporting(names: mpsc::Sender<String>) -> impl Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync {
    move |req: &mut StreamRequest| {
        let _ = names.send(thread::current().name().unwrap_or("(unnamed)").to_string());
        echo_stream(req)
    }
}

/// A datagram echo handler that also reports the name of the thread it ran on.
fn datagram_echo_reporting(
    names: mpsc::Sender<String>,
) -> impl Fn(&mut DatagramRequest) -> io::Result<()> + Send + Sync {
    move |req: &mut DatagramRequest| {
        let _ = names.send(thread::current().name().unwrap_or("(unnamed)").to_string());
        echo_datagram(req)
    }
}

fn tcp_echo(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let stream = connect(addr);
    round_trip(&stream, message, || stream.shutdown(Shutdown::Write).unwrap())
}

fn unix_echo(path: &Path, message: &[u8]) -> Vec<u8> {
    let stream = connect_unix(path);
    round_trip(&stream, message, || stream.shutdown(Shutdown::Write).unwrap())
}

/// A Unix datagram client bound to its own path (an unnamed client cannot be replied to).
fn unix_dgram_client(tag: &str) -> (UnixDatagram, TempPath) {
    let path = temp_socket_path(tag);
    let socket = UnixDatagram::bind(&path).expect("bind unix datagram client");
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    (socket, TempPath(path))
}

fn unix_dgram_exchange(client: &UnixDatagram, server: &Path, message: &[u8]) -> Vec<u8> {
    client.send_to(message, server).expect("send to unix datagram server");
    let mut buf = vec![0; 65536];
    let (n, _) = client.recv_from(&mut buf).expect("reply from unix datagram server");
    buf.truncate(n);
    buf
}

fn udp_exchange(client: &UdpSocket, server: SocketAddr, message: &[u8]) -> (Vec<u8>, SocketAddr) {
    client.send_to(message, server).expect("send to udp server");
    let mut buf = vec![0; 65536];
    let (n, from) = client.recv_from(&mut buf).expect("reply from udp server");
    buf.truncate(n);
    (buf, from)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Receives from `rx` within the standard timeout, failing with `what` otherwise.
fn recv<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    rx.recv_timeout(TIMEOUT).unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

fn check_thread_name(names: &mpsc::Receiver<String>, mode: Mode, label: &str) {
    let name = recv(names, "the handler's thread name");
    let prefix = expected_thread_prefix(mode);
    assert!(name.starts_with(prefix), "{label}: handler ran on thread {name:?}, expected a {prefix:?} thread");
}

const STREAM_PAYLOADS: [usize; 3] = [5, 0, 20_000];
const DATAGRAM_PAYLOADS: [usize; 3] = [5, 0, 1000];

// ---------------------------------------------------------------------------------------
// Every transport × every mode echoes
// ---------------------------------------------------------------------------------------

fn echo_over_tcp(mode: Mode, label: &str) {
    let (tx, names) = mpsc::channel();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(dispatch(mode))
        .bind(stream_echo_reporting(tx))
        .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    for len in STREAM_PAYLOADS {
        let message = pattern(len);
        let reply = tcp_echo(addr, &message);
        assert!(reply == message, "{label}: sent {len} bytes, got back {} different bytes", reply.len());
        check_thread_name(&names, mode, label);
    }
    background.stop().unwrap_or_else(|e| panic!("{label}: stop: {e}"));
}

fn echo_over_unix_stream(mode: Mode, label: &str) {
    let path = temp_socket_path("es");
    let _cleanup = TempPath(path.clone());
    let (tx, names) = mpsc::channel();
    let server = UnixStreamServer::builder(&path)
        .dispatch(dispatch(mode))
        .bind(stream_echo_reporting(tx))
        .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
    let background = server.serve_in_background().unwrap();
    for len in STREAM_PAYLOADS {
        let message = pattern(len);
        let reply = unix_echo(&path, &message);
        assert!(reply == message, "{label}: sent {len} bytes, got back {} different bytes", reply.len());
        check_thread_name(&names, mode, label);
    }
    background.stop().unwrap_or_else(|e| panic!("{label}: stop: {e}"));
}

fn echo_over_udp(mode: Mode, label: &str) {
    let (tx, names) = mpsc::channel();
    let server = UdpServer::builder("127.0.0.1:0")
        .dispatch(dispatch(mode))
        .bind(datagram_echo_reporting(tx))
        .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let client = udp_client();
    for len in DATAGRAM_PAYLOADS {
        let message = pattern(len);
        let (reply, from) = udp_exchange(&client, addr, &message);
        assert!(reply == message, "{label}: sent {len} bytes, got back {} different bytes", reply.len());
        assert_eq!(from, addr, "{label}: reply came from the wrong address");
        check_thread_name(&names, mode, label);
    }
    background.stop().unwrap_or_else(|e| panic!("{label}: stop: {e}"));
}

fn echo_over_unix_datagram(mode: Mode, label: &str) {
    let path = temp_socket_path("ed");
    let _cleanup = TempPath(path.clone());
    let (tx, names) = mpsc::channel();
    let server = UnixDatagramServer::builder(&path)
        .dispatch(dispatch(mode))
        .bind(datagram_echo_reporting(tx))
        .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
    let background = server.serve_in_background().unwrap();
    let (client, _client_path) = unix_dgram_client("edc");
    for len in DATAGRAM_PAYLOADS {
        let message = pattern(len);
        let reply = unix_dgram_exchange(&client, &path, &message);
        assert!(reply == message, "{label}: sent {len} bytes, got back {} different bytes", reply.len());
        check_thread_name(&names, mode, label);
    }
    background.stop().unwrap_or_else(|e| panic!("{label}: stop: {e}"));
}

macro_rules! echo_tests {
    ($($name:ident: $run:ident, $mode:ident;)*) => {$(
        #[test]
        fn $name() {
            let _watchdog = watchdog(stringify!($name), WATCHDOG);
            $run(Mode::$mode, stringify!($name));
        }
    )*};
}

echo_tests! {
    echo_tcp_sequential: echo_over_tcp, Sequential;
    echo_tcp_threading: echo_over_tcp, Threading;
    echo_tcp_pool: echo_over_tcp, Pool;
    echo_udp_sequential: echo_over_udp, Sequential;
    echo_udp_threading: echo_over_udp, Threading;
    echo_udp_pool: echo_over_udp, Pool;
    echo_unix_stream_sequential: echo_over_unix_stream, Sequential;
    echo_unix_stream_threading: echo_over_unix_stream, Threading;
    echo_unix_stream_pool: echo_over_unix_stream, Pool;
    echo_unix_datagram_sequential: echo_over_unix_datagram, Sequential;
    echo_unix_datagram_threading: echo_over_unix_datagram, Threading;
    echo_unix_datagram_pool: echo_over_unix_datagram, Pool;
}

// ---------------------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------------------

/// Sequential (the default), so requests are handled, and replied to, in arrival order.
fn udp_test_handler(req: &mut DatagramRequest) -> io::Result<()> {
    match req.packet() {
        b"silent" => Ok(()),
        b"touch" => {
            req.reply();
            Ok(())
        }
        b"extra" => {
            let client = req.client_addr().clone();
            req.socket().send_to(b"extra-1", &client)?;
            req.socket().send_to(b"extra-2", &client)?;
            req.reply().write_all(b"reply")
        }
        _ => echo_datagram(req),
    }
}

#[test]
fn udp_reply_comes_from_the_bound_address() {
    let _watchdog = watchdog("udp_reply_comes_from_the_bound_address", WATCHDOG);
    let server = UdpServer::bind("127.0.0.1:0", udp_test_handler).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let client = udp_client();
    let (reply, from) = udp_exchange(&client, addr, b"ping");
    assert_eq!(reply, b"ping");
    assert_eq!(from, addr, "the reply must come from the server's bound address");
    // A second client gets its own reply, not the first one's.
    let other = udp_client();
    let (reply, from) = udp_exchange(&other, addr, b"pong");
    assert_eq!(reply, b"pong");
    assert_eq!(from, addr);
    background.stop().unwrap();
}

#[test]
fn udp_empty_reply_is_sent_when_reply_was_called() {
    let _watchdog = watchdog("udp_empty_reply_is_sent_when_reply_was_called", WATCHDOG);
    let server = UdpServer::bind("127.0.0.1:0", udp_test_handler).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let client = udp_client();
    // A 0-byte datagram, echoed: the handler calls reply() and writes nothing.
    let (reply, from) = udp_exchange(&client, addr, b"");
    assert_eq!(reply, b"", "a 0-byte datagram must get a 0-byte reply");
    assert_eq!(from, addr);
    // A handler that only touches reply() also sends a 0-byte datagram.
    let (reply, _) = udp_exchange(&client, addr, b"touch");
    assert_eq!(reply, b"");
    background.stop().unwrap();
}

#[test]
fn udp_no_reply_when_handler_never_calls_reply() {
    let _watchdog = watchdog("udp_no_reply_when_handler_never_calls_reply", WATCHDOG);
    let server = UdpServer::bind("127.0.0.1:0", udp_test_handler).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let client = udp_client();
    client.send_to(b"silent", addr).unwrap();
    client.set_read_timeout(Some(NEGATIVE_WAIT)).unwrap();
    let mut buf = [0; 64];
    match client.recv_from(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        Ok((n, from)) => panic!("got a {n}-byte datagram {:?} from {from}; expected none", &buf[..n]),
        Err(e) => panic!("unexpected error: {e}"),
    }
    // The server is sequential: had "silent" produced a reply, it would come before the
    // reply to this next datagram.
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (reply, _) = udp_exchange(&client, addr, b"next");
    assert_eq!(reply, b"next", "the first datagram received must be the reply to \"next\"");
    background.stop().unwrap();
}

#[test]
fn udp_truncates_to_default_max_packet_size() {
    let _watchdog = watchdog("udp_truncates_to_default_max_packet_size", WATCHDOG);
    assert_eq!(DEFAULT_MAX_PACKET_SIZE, 8192);
    let server = UdpServer::bind("127.0.0.1:0", udp_test_handler).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let client = udp_client();
    let message = pattern(10_000);
    let (reply, _) = udp_exchange(&client, addr, &message);
    assert_eq!(reply.len(), 8192, "a 10000-byte datagram must be truncated to 8192 bytes");
    assert!(reply == message[..8192], "the truncated packet must be the datagram's first bytes");
    // Exactly the limit passes whole.
    let (reply, _) = udp_exchange(&client, addr, &message[..8192]);
    assert_eq!(reply.len(), 8192);
    background.stop().unwrap();
}

#[test]
fn udp_truncates_to_custom_max_packet_size() {
    let _watchdog = watchdog("udp_truncates_to_custom_max_packet_size", WATCHDOG);
    let server = UdpServer::builder("127.0.0.1:0").max_packet_size(100).bind(udp_test_handler).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let client = udp_client();
    let message = pattern(1000);
    let (reply, _) = udp_exchange(&client, addr, &message);
    assert!(reply == message[..100], "expected the first 100 bytes, got {} bytes", reply.len());
    let (reply, _) = udp_exchange(&client, addr, &message[..100]);
    assert_eq!(reply.len(), 100);
    let (reply, _) = udp_exchange(&client, addr, &message[..50]);
    assert!(reply == message[..50], "a short datagram must arrive whole");
    background.stop().unwrap();
}

/// The handler is told when a datagram was cut, for UDP and Unix datagrams, exactly at
/// the limit and one byte past it.
#[test]
fn datagram_handlers_see_whether_a_packet_was_truncated() {
    let _watchdog = watchdog("datagram_handlers_see_whether_a_packet_was_truncated", WATCHDOG);
    let flag = |req: &mut DatagramRequest| {
        let answer = format!("{} {}", req.packet().len(), req.truncated());
        req.reply().write_all(answer.as_bytes())
    };
    let server = UdpServer::builder("127.0.0.1:0").max_packet_size(100).bind(flag).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let client = udp_client();
    for (len, expected) in [(99, "99 false"), (100, "100 false"), (101, "100 true"), (5000, "100 true")] {
        let (reply, _) = udp_exchange(&client, addr, &pattern(len));
        assert_eq!(String::from_utf8_lossy(&reply), expected, "a {len}-byte datagram over UDP");
    }
    background.stop().unwrap();

    let path = temp_socket_path("trunc");
    let _cleanup = TempPath(path.clone());
    let server = UnixDatagramServer::builder(&path).max_packet_size(100).bind(flag).unwrap();
    let background = server.serve_in_background().unwrap();
    let (client, _client_path) = unix_dgram_client("truncc");
    for (len, expected) in [(100, "100 false"), (101, "100 true")] {
        let reply = unix_dgram_exchange(&client, &path, &pattern(len));
        assert_eq!(String::from_utf8_lossy(&reply), expected, "a {len}-byte Unix datagram");
    }
    background.stop().unwrap();
}

#[test]
fn udp_handler_sends_extra_datagrams_through_the_socket() {
    let _watchdog = watchdog("udp_handler_sends_extra_datagrams_through_the_socket", WATCHDOG);
    let server = UdpServer::bind("127.0.0.1:0", udp_test_handler).unwrap();
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    let client = udp_client();
    client.send_to(b"extra", addr).unwrap();
    let mut buf = [0; 64];
    for expected in [&b"extra-1"[..], b"extra-2", b"reply"] {
        let (n, from) = client.recv_from(&mut buf).expect("a datagram from the handler");
        assert_eq!(&buf[..n], expected);
        assert_eq!(from, addr);
    }
    background.stop().unwrap();
}

#[test]
fn unix_datagram_truncates_and_replies_only_when_asked() {
    let _watchdog = watchdog("unix_datagram_truncates_and_replies_only_when_asked", WATCHDOG);
    let path = temp_socket_path("udt");
    let _cleanup = TempPath(path.clone());
    let server = UnixDatagramServer::builder(&path).max_packet_size(100).bind(udp_test_handler).unwrap();
    let background = server.serve_in_background().unwrap();
    let (client, _client_path) = unix_dgram_client("udtc");
    let message = pattern(1000);
    let reply = unix_dgram_exchange(&client, &path, &message);
    assert!(reply == message[..100], "expected the first 100 bytes, got {} bytes", reply.len());
    let reply = unix_dgram_exchange(&client, &path, b"");
    assert_eq!(reply, b"", "a 0-byte datagram must get a 0-byte reply");
    // No reply to "silent": the next datagram received is the reply to "next".
    client.send_to(b"silent", &path).unwrap();
    client.set_read_timeout(Some(NEGATIVE_WAIT)).unwrap();
    let mut buf = [0; 64];
    match client.recv_from(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        Ok((n, _)) => panic!("got a {n}-byte datagram {:?}; expected none", &buf[..n]),
        Err(e) => panic!("unexpected error: {e}"),
    }
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(unix_dgram_exchange(&client, &path, b"next"), b"next");
    // Extra sends through the socket reach a Unix client too.
    client.send_to(b"extra", &path).unwrap();
    for expected in [&b"extra-1"[..], b"extra-2", b"reply"] {
        let (n, _) = client.recv_from(&mut buf).expect("a datagram from the handler");
        assert_eq!(&buf[..n], expected);
    }
    background.stop().unwrap();
}

// ---------------------------------------------------------------------------------------
// Unix socket files
// ---------------------------------------------------------------------------------------

fn is_socket_file(path: &Path) -> bool {
    fs::symlink_metadata(path).map(|m| m.file_type().is_socket()).unwrap_or(false)
}

#[test]
fn unix_stream_socket_file_lives_as_long_as_the_server() {
    let _watchdog = watchdog("unix_stream_socket_file_lives_as_long_as_the_server", WATCHDOG);
    let path = temp_socket_path("usl");
    let _cleanup = TempPath(path.clone());

    // stop()
    let server = UnixStreamServer::bind(&path, echo_stream).unwrap();
    assert_eq!(server.local_addr(), path);
    assert!(is_socket_file(&path), "the socket file must exist once bound");
    let background = server.serve_in_background().unwrap();
    assert_eq!(unix_echo(&path, b"hi"), b"hi");
    assert!(is_socket_file(&path), "the socket file must exist while serving");
    background.stop().unwrap();
    assert!(!path.exists(), "stop() must remove the socket file");

    // close(), without ever serving
    let server = UnixStreamServer::bind(&path, echo_stream).unwrap();
    assert!(is_socket_file(&path));
    server.close();
    assert!(!path.exists(), "close() must remove the socket file");
    drop(server);

    // dropping the server
    let server = UnixStreamServer::bind(&path, echo_stream).unwrap();
    assert!(is_socket_file(&path));
    drop(server);
    assert!(!path.exists(), "dropping the server must remove the socket file");

    // dropping the background guard
    let background = UnixStreamServer::bind(&path, echo_stream).unwrap().serve_in_background().unwrap();
    assert_eq!(unix_echo(&path, b"hi"), b"hi");
    drop(background);
    assert!(!path.exists(), "dropping the background server must remove the socket file");
}

#[test]
fn unix_datagram_socket_file_lives_as_long_as_the_server() {
    let _watchdog = watchdog("unix_datagram_socket_file_lives_as_long_as_the_server", WATCHDOG);
    let path = temp_socket_path("udl");
    let _cleanup = TempPath(path.clone());
    let (client, _client_path) = unix_dgram_client("udlc");

    let server = UnixDatagramServer::bind(&path, echo_datagram).unwrap();
    assert_eq!(server.local_addr(), path);
    assert!(is_socket_file(&path), "the socket file must exist once bound");
    let background = server.serve_in_background().unwrap();
    assert_eq!(unix_dgram_exchange(&client, &path, b"hi"), b"hi");
    assert!(is_socket_file(&path), "the socket file must exist while serving");
    background.stop().unwrap();
    assert!(!path.exists(), "stop() must remove the socket file");

    let server = UnixDatagramServer::bind(&path, echo_datagram).unwrap();
    server.close();
    assert!(!path.exists(), "close() must remove the socket file");
    drop(server);

    let server = UnixDatagramServer::bind(&path, echo_datagram).unwrap();
    drop(server);
    assert!(!path.exists(), "dropping the server must remove the socket file");

    let background = UnixDatagramServer::bind(&path, echo_datagram).unwrap().serve_in_background().unwrap();
    assert_eq!(unix_dgram_exchange(&client, &path, b"hi"), b"hi");
    drop(background);
    assert!(!path.exists(), "dropping the background server must remove the socket file");
}

#[test]
fn unix_stream_live_path_is_addr_in_use_and_first_server_keeps_serving() {
    let _watchdog = watchdog("unix_stream_live_path_is_addr_in_use_and_first_server_keeps_serving", WATCHDOG);
    let path = temp_socket_path("usa");
    let _cleanup = TempPath(path.clone());
    let first = UnixStreamServer::bind(&path, echo_stream).unwrap().serve_in_background().unwrap();
    assert_eq!(unix_echo(&path, b"one"), b"one");

    match UnixStreamServer::bind(&path, echo_stream) {
        Err(e @ Error::AddrInUse { .. }) => {
            assert!(e.to_string().contains(&path.display().to_string()), "error must name the path: {e}");
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        }
        Err(e) => panic!("expected Error::AddrInUse, got {e:?}"),
        Ok(_) => panic!("a second server bound a live path"),
    }
    assert!(is_socket_file(&path), "the failed bind must leave the live socket file alone");
    assert_eq!(unix_echo(&path, b"two"), b"two", "the first server must keep serving");
    first.stop().unwrap();
    assert!(!path.exists());
}

#[test]
fn unix_datagram_live_path_is_addr_in_use_and_first_server_keeps_serving() {
    let _watchdog = watchdog("unix_datagram_live_path_is_addr_in_use_and_first_server_keeps_serving", WATCHDOG);
    let path = temp_socket_path("uda");
    let _cleanup = TempPath(path.clone());
    let (client, _client_path) = unix_dgram_client("udac");
    let first = UnixDatagramServer::bind(&path, echo_datagram).unwrap().serve_in_background().unwrap();
    assert_eq!(unix_dgram_exchange(&client, &path, b"one"), b"one");

    match UnixDatagramServer::bind(&path, echo_datagram) {
        Err(e @ Error::AddrInUse { .. }) => {
            assert!(e.to_string().contains(&path.display().to_string()), "error must name the path: {e}");
        }
        Err(e) => panic!("expected Error::AddrInUse, got {e:?}"),
        Ok(_) => panic!("a second server bound a live path"),
    }
    // A stream server at a live datagram path is refused too.
    match UnixStreamServer::bind(&path, echo_stream) {
        Err(Error::AddrInUse { .. }) => {}
        Err(e) => panic!("expected Error::AddrInUse, got {e:?}"),
        Ok(_) => panic!("a stream server bound a live datagram path"),
    }
    assert!(is_socket_file(&path), "the failed bind must leave the live socket file alone");
    assert_eq!(unix_dgram_exchange(&client, &path, b"two"), b"two", "the first server must keep serving");
    first.stop().unwrap();
    assert!(!path.exists());
}

#[test]
fn unix_stream_bind_at_a_live_but_busy_path_does_not_hang() {
    // A live server whose accept queue is full (it is busy, or not serving yet) still
    // answers at the path; a second bind there must report AddrInUse, not block.
    let _watchdog = watchdog("unix_stream_bind_at_a_live_but_busy_path_does_not_hang", WATCHDOG);
    let path = temp_socket_path("usb");
    let _cleanup = TempPath(path.clone());
    let first = UnixStreamServer::builder(&path).backlog(1).bind(echo_stream).unwrap();
    // Fill the accept queue with non-blocking connects until the kernel refuses more.
    let mut queued = Vec::new();
    loop {
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        socket.set_nonblocking(true).unwrap();
        match socket.connect(&socket2::SockAddr::unix(&path).unwrap()) {
            Ok(()) => queued.push(socket),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the accept queue: {e}"),
        }
        assert!(queued.len() < 1000, "the accept queue never filled");
    }
    let second_path = path.clone();
    let second = thread::spawn(move || UnixStreamServer::bind(&second_path, echo_stream).map(drop));
    let result = join_within(second, Duration::from_secs(5));
    match result {
        Err(Error::AddrInUse { .. }) => {}
        Err(e) => panic!("expected Error::AddrInUse, got {e:?}"),
        Ok(()) => panic!("a second server bound a live path"),
    }
    assert!(is_socket_file(&path));
    drop(queued);
    drop(first);
}

#[test]
fn unix_stream_stale_socket_file_is_replaced() {
    let _watchdog = watchdog("unix_stream_stale_socket_file_is_replaced", WATCHDOG);
    let path = temp_socket_path("uss");
    let _cleanup = TempPath(path.clone());
    drop(UnixListener::bind(&path).unwrap()); // std leaves the file behind
    assert!(is_socket_file(&path), "setup: the stale socket file must exist");
    let server = UnixStreamServer::bind(&path, echo_stream).expect("a stale socket file must be replaced");
    let background = server.serve_in_background().unwrap();
    assert_eq!(unix_echo(&path, b"fresh"), b"fresh");
    background.stop().unwrap();
    assert!(!path.exists());
}

#[test]
fn unix_datagram_stale_socket_file_is_replaced() {
    let _watchdog = watchdog("unix_datagram_stale_socket_file_is_replaced", WATCHDOG);
    let path = temp_socket_path("uds");
    let _cleanup = TempPath(path.clone());
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(is_socket_file(&path), "setup: the stale socket file must exist");
    let server = UnixDatagramServer::bind(&path, echo_datagram).expect("a stale socket file must be replaced");
    let background = server.serve_in_background().unwrap();
    let (client, _client_path) = unix_dgram_client("udsc");
    assert_eq!(unix_dgram_exchange(&client, &path, b"fresh"), b"fresh");
    background.stop().unwrap();
    assert!(!path.exists());
}

/// Binding at `path` must fail with `Error::Bind` naming it.
fn expect_bind_error<S>(result: socketserver::Result<S>, path: &Path, what: &str) {
    match result {
        Err(e @ Error::Bind { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{what}: error must name the path: {text}");
            if let Error::Bind { addr, .. } = &e {
                assert_eq!(addr, &path.display().to_string(), "{what}");
            }
        }
        Err(e) => panic!("{what}: expected Error::Bind, got {e:?}"),
        Ok(_) => panic!("{what}: bound over something that is not a socket"),
    }
}

#[test]
fn unix_path_that_is_not_a_socket_is_a_bind_error_and_kept() {
    let _watchdog = watchdog("unix_path_that_is_not_a_socket_is_a_bind_error_and_kept", WATCHDOG);
    // A regular file.
    let file = temp_socket_path("unf");
    let _file_cleanup = TempPath(file.clone());
    fs::write(&file, b"precious").unwrap();
    expect_bind_error(UnixStreamServer::bind(&file, echo_stream), &file, "stream server on a regular file");
    expect_bind_error(UnixDatagramServer::bind(&file, echo_datagram), &file, "datagram server on a regular file");
    assert_eq!(fs::read(&file).unwrap(), b"precious", "the regular file must not be touched");

    // A directory.
    let dir = temp_socket_path("und");
    let _dir_cleanup = TempPath(dir.clone());
    fs::create_dir(&dir).unwrap();
    expect_bind_error(UnixStreamServer::bind(&dir, echo_stream), &dir, "stream server on a directory");
    expect_bind_error(UnixDatagramServer::bind(&dir, echo_datagram), &dir, "datagram server on a directory");
    assert!(fs::metadata(&dir).unwrap().is_dir(), "the directory must not be touched");
}

#[test]
fn unix_stream_from_listener_leaves_the_users_file() {
    let _watchdog = watchdog("unix_stream_from_listener_leaves_the_users_file", WATCHDOG);
    let path = temp_socket_path("usf");
    let _cleanup = TempPath(path.clone());
    let listener = UnixListener::bind(&path).unwrap();
    let server = UnixStreamServer::from_listener(listener).bind(echo_stream).unwrap();
    assert_eq!(server.local_addr(), path);
    let background = server.serve_in_background().unwrap();
    assert_eq!(unix_echo(&path, b"mine"), b"mine");
    background.stop().unwrap();
    assert!(is_socket_file(&path), "closing a server built from_listener must not remove the user's file");
}

#[test]
fn unix_datagram_from_socket_leaves_the_users_file() {
    let _watchdog = watchdog("unix_datagram_from_socket_leaves_the_users_file", WATCHDOG);
    let path = temp_socket_path("udf");
    let _cleanup = TempPath(path.clone());
    let socket = UnixDatagram::bind(&path).unwrap();
    let server = UnixDatagramServer::from_socket(socket).bind(echo_datagram).unwrap();
    let background = server.serve_in_background().unwrap();
    let (client, _client_path) = unix_dgram_client("udfc");
    assert_eq!(unix_dgram_exchange(&client, &path, b"mine"), b"mine");
    background.stop().unwrap();
    assert!(is_socket_file(&path), "closing a server built from_socket must not remove the user's file");
}

// ---------------------------------------------------------------------------------------
// TCP and UDP binding
// ---------------------------------------------------------------------------------------

fn assert_addr_in_use<S>(result: socketserver::Result<S>, addr: SocketAddr, what: &str) {
    match result {
        Err(e @ Error::AddrInUse { .. }) => {
            let text = e.to_string();
            assert!(text.contains("in use"), "{what}: Display must say \"in use\": {text}");
            assert!(text.contains(&addr.to_string()), "{what}: Display must name {addr}: {text}");
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{what}");
        }
        Err(e) => panic!("{what}: expected Error::AddrInUse, got {e:?}"),
        Ok(_) => panic!("{what}: a second server bound {addr}"),
    }
}

#[test]
fn tcp_second_bind_on_same_port_is_addr_in_use() {
    let _watchdog = watchdog("tcp_second_bind_on_same_port_is_addr_in_use", WATCHDOG);
    let first = TcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
    let addr = first.local_addr();
    assert_addr_in_use(TcpServer::bind(addr, echo_stream), addr, "TCP, SocketAddr");
    assert_addr_in_use(TcpServer::bind(format!("127.0.0.1:{}", addr.port()), echo_stream), addr, "TCP, string");
    assert_addr_in_use(TcpServer::bind(("127.0.0.1", addr.port()), echo_stream), addr, "TCP, tuple");
    let background = first.serve_in_background().unwrap();
    assert_eq!(tcp_echo(addr, b"still here"), b"still here", "the first server must keep serving");
    background.stop().unwrap();
}

#[test]
fn udp_second_bind_on_same_port_is_addr_in_use() {
    let _watchdog = watchdog("udp_second_bind_on_same_port_is_addr_in_use", WATCHDOG);
    let first = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let addr = first.local_addr();
    assert_addr_in_use(UdpServer::bind(addr, echo_datagram), addr, "UDP, SocketAddr");
    assert_addr_in_use(UdpServer::bind(format!("127.0.0.1:{}", addr.port()), echo_datagram), addr, "UDP, string");
    let background = first.serve_in_background().unwrap();
    let (reply, _) = udp_exchange(&udp_client(), addr, b"still here");
    assert_eq!(reply, b"still here", "the first server must keep serving");
    background.stop().unwrap();
}

#[test]
fn failed_binds_leak_no_descriptor() {
    let _watchdog = watchdog("failed_binds_leak_no_descriptor", WATCHDOG);
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
        let before = open_fds();
        attempts();
        let after = open_fds();
        let growth = after.saturating_sub(before);
        if growth < 50 {
            return;
        }
        growths.push(growth);
    }
    panic!("descriptors grew by {growths:?} over rounds of 250 failed binds");
}

#[test]
fn ipv6_loopback_serves() {
    let _watchdog = watchdog("ipv6_loopback_serves", WATCHDOG);
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
    background.stop().unwrap();

    let server = UdpServer::bind("[::1]:0", echo_datagram).expect("bind [::1]:0 over UDP");
    let addr = server.local_addr();
    assert!(addr.is_ipv6());
    let background = server.serve_in_background().unwrap();
    let client = UdpSocket::bind("[::1]:0").unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (reply, from) = udp_exchange(&client, addr, b"six");
    assert_eq!(reply, b"six");
    assert_eq!(from, addr);
    background.stop().unwrap();
}

#[test]
fn local_addr_reports_the_real_port() {
    let _watchdog = watchdog("local_addr_reports_the_real_port", WATCHDOG);
    let server = TcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "local_addr must give the port the kernel picked");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_eq!(server.handle().local_addr().as_inet(), Some(addr));
    let background = server.serve_in_background().unwrap();
    assert_eq!(background.local_addr(), addr);
    assert_eq!(tcp_echo(addr, b"port"), b"port", "the reported port must be the one served");
    background.stop().unwrap();

    let server = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let background = server.serve_in_background().unwrap();
    let (reply, _) = udp_exchange(&udp_client(), addr, b"port");
    assert_eq!(reply, b"port");
    background.stop().unwrap();
}

#[test]
fn tcp_from_listener_serves() {
    let _watchdog = watchdog("tcp_from_listener_serves", WATCHDOG);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TcpServer::from_listener(listener).bind(echo_stream).unwrap();
    assert_eq!(server.local_addr(), addr);
    let background = server.serve_in_background().unwrap();
    assert_eq!(tcp_echo(addr, b"yours"), b"yours");
    assert_eq!(tcp_echo(addr, b"again"), b"again");
    background.stop().unwrap();
}

#[test]
fn udp_from_socket_serves() {
    let _watchdog = watchdog("udp_from_socket_serves", WATCHDOG);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let server = UdpServer::from_socket(socket).bind(echo_datagram).unwrap();
    assert_eq!(server.local_addr(), addr);
    let background = server.serve_in_background().unwrap();
    let (reply, from) = udp_exchange(&udp_client(), addr, b"yours");
    assert_eq!(reply, b"yours");
    assert_eq!(from, addr);
    background.stop().unwrap();
}

// ---------------------------------------------------------------------------------------
// TCP per-connection options
// ---------------------------------------------------------------------------------------

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
    background.stop().unwrap();
    seen
}

#[test]
fn tcp_nodelay_is_set_on_accepted_connections() {
    let _watchdog = watchdog("tcp_nodelay_is_set_on_accepted_connections", WATCHDOG);
    assert_eq!(nodelay_seen_by_handler(Some(true)), Some(true), "nodelay(true) must set TCP_NODELAY");
    assert_eq!(nodelay_seen_by_handler(None), Some(false), "TCP_NODELAY is off by default");
}

#[test]
fn tcp_read_timeout_ends_a_silent_request_and_server_keeps_serving() {
    let _watchdog = watchdog("tcp_read_timeout_ends_a_silent_request_and_server_keeps_serving", WATCHDOG);
    let (err_tx, errors) = mpsc::channel::<(String, Option<Phase>, Option<io::ErrorKind>, Option<SocketAddr>)>();
    let server = TcpServer::builder("127.0.0.1:0")
        .read_timeout(Duration::from_millis(500))
        .handle_error(move |e, client| {
            let (phase, kind) = match e {
                Error::Handler { phase, source } => (Some(*phase), Some(source.kind())),
                _ => (None, None),
            };
            let _ = err_tx.send((e.to_string(), phase, kind, client.and_then(Address::as_inet)));
        })
        .bind(|req: &mut StreamRequest| {
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
    background.stop().unwrap();
}

#[test]
fn tcp_rbufsize_sets_the_read_buffer() {
    let _watchdog = watchdog("tcp_rbufsize_sets_the_read_buffer", WATCHDOG);
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
        background.stop().unwrap();
    }
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
        .bind(move |req: &mut StreamRequest| {
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
    let _watchdog = watchdog("tcp_wbufsize_buffers_and_flushes_after_the_handler", WATCHDOG);
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
    background.stop().unwrap();

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
    background.stop().unwrap();
}

#[test]
fn tcp_default_writer_is_unbuffered() {
    let _watchdog = watchdog("tcp_default_writer_is_unbuffered", WATCHDOG);
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
    background.stop().unwrap();
}

#[test]
fn threading_tcp_server_alias_serves_two_clients_at_once() {
    let _watchdog = watchdog("threading_tcp_server_alias_serves_two_clients_at_once", WATCHDOG);
    let (arrived_tx, arrived) = mpsc::channel::<String>();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let server = ThreadingTcpServer::bind("127.0.0.1:0", move |req: &mut StreamRequest| {
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
    background.stop().unwrap();
}
