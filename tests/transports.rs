//! Every transport × every dispatch mode echoes, over real sockets on loopback and in
//! the temp directory, on the threads the mode says: short, empty and long payloads.
//! What each transport does beyond that: tests/tcp.rs, tests/udp.rs, tests/unix.rs.
//! The Unix transports are Unix only.

mod support;

use std::sync::mpsc;
use std::thread;

use socketserver::{DatagramRequest, StreamRequest, TcpServer, UdpServer};
#[cfg(unix)]
use socketserver::{UnixDatagramServer, UnixStreamServer};
use support::{
    bounded, echo_datagram, echo_stream, pattern, recv, stop_background, tcp_echo, udp_client, udp_exchange, Mode,
    LIMIT,
};
#[cfg(unix)]
use support::{unix_dgram_client, unix_dgram_exchange, unix_echo, TempPath};

/// A stream echo handler that also reports the name of the thread it ran on.
fn stream_echo_reporting(
    names: mpsc::Sender<String>,
) -> impl Fn(&mut StreamRequest) -> socketserver::HandlerResult + Send + Sync {
    move |req: &mut StreamRequest| {
        let _ = names.send(thread::current().name().unwrap_or("(unnamed)").to_string());
        echo_stream(req)
    }
}

/// A datagram echo handler that also reports the name of the thread it ran on.
fn datagram_echo_reporting(
    names: mpsc::Sender<String>,
) -> impl Fn(&mut DatagramRequest) -> socketserver::HandlerResult + Send + Sync {
    move |req: &mut DatagramRequest| {
        let _ = names.send(thread::current().name().unwrap_or("(unnamed)").to_string());
        echo_datagram(req)
    }
}

fn check_thread_name(names: &mpsc::Receiver<String>, mode: Mode, label: &str) {
    let name = recv(names, "the handler's thread name");
    let prefix = mode.default_thread_prefix();
    assert!(name.starts_with(prefix), "{label}: handler ran on thread {name:?}, expected a {prefix:?} thread");
}

const STREAM_PAYLOADS: [usize; 3] = [5, 0, 20_000];
const DATAGRAM_PAYLOADS: [usize; 3] = [5, 0, 1000];

fn echo_over_tcp(mode: Mode, label: &str) {
    let (tx, names) = mpsc::channel();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode.dispatch())
        .bind_handler(stream_echo_reporting(tx))
        .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
    let addr = server.local_addr();
    let background = server.serve_in_background().unwrap();
    for len in STREAM_PAYLOADS {
        let message = pattern(len);
        let reply = tcp_echo(addr, &message);
        assert!(reply == message, "{label}: sent {len} bytes, got back {} different bytes", reply.len());
        check_thread_name(&names, mode, label);
    }
    stop_background(background);
}

#[cfg(unix)]
fn echo_over_unix_stream(mode: Mode, label: &str) {
    let path = TempPath::socket("es");
    let (tx, names) = mpsc::channel();
    let server = UnixStreamServer::builder(&*path)
        .dispatch(mode.dispatch())
        .bind_handler(stream_echo_reporting(tx))
        .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
    let background = server.serve_in_background().unwrap();
    for len in STREAM_PAYLOADS {
        let message = pattern(len);
        let reply = unix_echo(&path, &message);
        assert!(reply == message, "{label}: sent {len} bytes, got back {} different bytes", reply.len());
        check_thread_name(&names, mode, label);
    }
    stop_background(background);
}

fn echo_over_udp(mode: Mode, label: &str) {
    let (tx, names) = mpsc::channel();
    let server = UdpServer::builder("127.0.0.1:0")
        .dispatch(mode.dispatch())
        .bind_handler(datagram_echo_reporting(tx))
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
    stop_background(background);
}

#[cfg(unix)]
fn echo_over_unix_datagram(mode: Mode, label: &str) {
    let path = TempPath::socket("ed");
    let (tx, names) = mpsc::channel();
    let server = UnixDatagramServer::builder(&*path)
        .dispatch(mode.dispatch())
        .bind_handler(datagram_echo_reporting(tx))
        .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
    let background = server.serve_in_background().unwrap();
    let (client, _client_path) = unix_dgram_client("edc");
    for len in DATAGRAM_PAYLOADS {
        let message = pattern(len);
        let reply = unix_dgram_exchange(&client, &path, &message);
        assert!(reply == message, "{label}: sent {len} bytes, got back {} different bytes", reply.len());
        check_thread_name(&names, mode, label);
    }
    stop_background(background);
}

macro_rules! echo_tests {
    ($($(#[$attr:meta])* $name:ident: $run:ident, $mode:ident;)*) => {$(
        $(#[$attr])*
        #[test]
        fn $name() {
            bounded(LIMIT, || $run(Mode::$mode, stringify!($name)));
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
    #[cfg(unix)]
    echo_unix_stream_sequential: echo_over_unix_stream, Sequential;
    #[cfg(unix)]
    echo_unix_stream_threading: echo_over_unix_stream, Threading;
    #[cfg(unix)]
    echo_unix_stream_pool: echo_over_unix_stream, Pool;
    #[cfg(unix)]
    echo_unix_datagram_sequential: echo_over_unix_datagram, Sequential;
    #[cfg(unix)]
    echo_unix_datagram_threading: echo_over_unix_datagram, Threading;
    #[cfg(unix)]
    echo_unix_datagram_pool: echo_over_unix_datagram, Pool;
}
