//! Serving in a thread and stopping it, within deadlines; the echo handlers; a record
//! of what `handle_error` received.

use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::transport::Transport;
use socketserver::{
    Address, BackgroundServer, DatagramRequest, Error, HandlerResult, Phase, Server, ServerHandle, StreamRequest,
};

use super::{is_timeout, join_within, wait_until, waiting_for, within, NEGATIVE_WAIT, TIMEOUT};

/// What a serve thread returns.
pub type Serving = JoinHandle<socketserver::Result<()>>;

/// Runs `serve_forever` on a thread named `name` (keep it short and unique per test:
/// Linux shows 15 bytes of it), without waiting for it to begin.
pub fn spawn_serve<T: Transport>(server: &Arc<Server<T>>, name: &str) -> Serving {
    let server = server.clone();
    thread::Builder::new().name(name.to_string()).spawn(move || server.serve_forever()).unwrap()
}

/// Runs `serve_forever` on a thread named `name` and waits until the serve call began.
pub fn serve_started<T: Transport>(server: &Arc<Server<T>>, name: &str) -> Serving {
    let thread = spawn_serve(server, name);
    let handle = server.handle();
    wait_until(TIMEOUT, "serve_forever to begin", || handle.is_serving() || thread.is_finished());
    assert!(!thread.is_finished(), "serve_forever returned at once: {:?}", thread.join());
    thread
}

/// Shuts the server down from a helper thread and joins its serve thread, each within
/// [`TIMEOUT`]; serve_forever must have returned `Ok`.
pub fn stop<T: Transport>(server: &Arc<Server<T>>, serve: Serving) {
    stop_via(&server.handle(), serve);
}

/// As [`stop`], through a handle.
pub fn stop_via(handle: &ServerHandle, serve: Serving) {
    shutdown_within(handle, TIMEOUT);
    let result = join_within(serve, TIMEOUT);
    assert!(result.is_ok(), "serve_forever returned {result:?}");
}

/// Calls `shutdown` on a helper thread; fails if it has not returned within `limit`.
/// Returns how long it took.
pub fn shutdown_within(handle: &ServerHandle, limit: Duration) -> Duration {
    let _wait = waiting_for("shutdown() to return");
    let handle = handle.clone();
    let start = Instant::now();
    within(limit, move || handle.shutdown());
    start.elapsed()
}

/// Calls `shutdown` on a new thread and returns at once.
pub fn spawn_shutdown(handle: &ServerHandle) -> JoinHandle<()> {
    let handle = handle.clone();
    thread::spawn(move || handle.shutdown())
}

/// Drops the last reference to a server on a helper thread; the drop (a close) must
/// complete within [`TIMEOUT`].
pub fn drop_within<T: Transport>(server: Arc<Server<T>>) {
    let _wait = waiting_for("the server to close on drop");
    within(TIMEOUT, move || {
        let server = Arc::try_unwrap(server).expect("the test holds the last reference to the server");
        drop(server);
    });
}

/// Stops a background server (shutdown, join, close) within [`TIMEOUT`]; it must have
/// served without an error.
pub fn stop_background<T: Transport>(background: BackgroundServer<T>) {
    let _wait = waiting_for("the background server to stop");
    within(TIMEOUT, move || background.stop()).expect("serve_forever ended with an error");
}

/// Echoes a stream until the client's end-of-file.
pub fn echo_stream(req: &mut StreamRequest) -> HandlerResult {
    let (reader, writer) = req.reader_and_writer();
    io::copy(reader, writer)?;
    Ok(())
}

/// Reads one line and writes it back (CPython's `MyHandler`); the server then closes
/// first, so the `TIME_WAIT` of many short connections sits on the server's port.
pub fn echo_line(req: &mut StreamRequest) -> HandlerResult {
    let mut line = Vec::new();
    req.reader().read_until(b'\n', &mut line)?;
    req.writer().write_all(&line)?;
    Ok(())
}

/// Sends each datagram back to its sender.
pub fn echo_datagram(req: &mut DatagramRequest) -> HandlerResult {
    let (packet, reply) = req.packet_and_reply();
    reply.extend_from_slice(packet);
    Ok(())
}

/// What `handle_error` received, in a comparable form ([`Error`] is not `Clone`).
#[derive(Debug, Clone, PartialEq)]
pub enum Reported {
    /// `Error::Handler`: the phase, the error's kind and its text.
    Handler(Phase, io::ErrorKind, String),
    /// `Error::Panic`: the phase and the panic's message.
    Panic(Phase, String),
    /// `Error::Dispatch`.
    Dispatch(io::ErrorKind),
    /// `Error::Accept`.
    Accept(io::ErrorKind),
    /// Anything else, as text.
    Other(String),
}

impl Reported {
    /// Whether this is a panic in `phase` whose message contains `text`.
    pub fn is_panic(&self, phase: Phase, text: &str) -> bool {
        matches!(self, Reported::Panic(p, message) if *p == phase && message.contains(text))
    }

    /// Whether this is what a server sees when its peer is gone in `handle`.
    pub fn is_peer_gone(&self) -> bool {
        matches!(self, Reported::Handler(Phase::Handle, io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe, _))
    }
}

/// One call of `handle_error`: the client's IP address (`None` for none, or a Unix
/// client) and the error.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub client: Option<SocketAddr>,
    pub reported: Reported,
}

/// Every call of a `handle_error` hook made by [`Reports::hook`], in order.
#[derive(Clone, Default)]
pub struct Reports(Arc<Mutex<Vec<Report>>>);

impl Reports {
    /// The hook to give the builder.
    pub fn hook(&self) -> impl Fn(&Error, Option<&Address>) + Send + Sync + 'static + use<> {
        let reports = self.0.clone();
        move |error: &Error, client: Option<&Address>| {
            let reported = match error {
                Error::Handler { phase, source } => Reported::Handler(*phase, error.kind(), source.to_string()),
                Error::Panic { phase, message } => Reported::Panic(*phase, message.clone()),
                Error::Dispatch(source) => Reported::Dispatch(source.kind()),
                Error::Accept(source) => Reported::Accept(source.kind()),
                other => Reported::Other(other.to_string()),
            };
            reports.lock().unwrap().push(Report { client: client.and_then(Address::as_inet), reported });
        }
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Takes every report so far.
    pub fn take(&self) -> Vec<Report> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Takes every report so far, without the clients.
    pub fn take_reported(&self) -> Vec<Reported> {
        self.take().into_iter().map(|report| report.reported).collect()
    }

    /// Waits until at least `n` reports arrived.
    pub fn wait_for(&self, n: usize, what: &str) {
        wait_until(TIMEOUT, what, || self.len() >= n);
    }
}

/// A datagram handler that obeys its packet: `silent` sends no reply, `touch` asks for
/// an empty reply without writing it, `extra` sends `extra-1` and `extra-2` through the
/// socket before its reply `reply`; anything else is echoed.
pub fn datagram_commands(req: &mut DatagramRequest) -> HandlerResult {
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
            req.reply().write_all(b"reply")?;
            Ok(())
        }
        _ => echo_datagram(req),
    }
}

/// Binding `addr` must have failed with `Error::AddrInUse`, saying "in use" and naming it.
pub fn assert_addr_in_use<S>(result: socketserver::Result<S>, addr: SocketAddr, what: &str) {
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

/// Whether a UDP datagram longer than the server's receive buffer (`max_packet_size` and
/// one byte, so that the request can tell it was cut) reaches the handler truncated, as
/// on Unix. On Windows receiving it fails (`WSAEMSGSIZE`): the datagram is dropped and
/// the error reported to `handle_error` as `Error::Accept`, with no client
/// (`src/sys/windows.rs`); see [`assert_overlong_datagram_reported`].
pub const OVERLONG_DATAGRAMS_TRUNCATED: bool = cfg!(unix);

/// Sends `message`, longer than the receive buffer of the UDP server at `server`, where
/// that is a receive error (see [`OVERLONG_DATAGRAMS_TRUNCATED`]): no reply comes, and
/// `reports` (the server's `handle_error`) gets one more `Accept(InvalidData)`.
pub fn assert_overlong_datagram_reported(client: &UdpSocket, server: SocketAddr, message: &[u8], reports: &Reports) {
    let before = reports.len();
    client.send_to(message, server).expect("send to the UDP server");
    reports.wait_for(before + 1, "handle_error to report the overlong datagram");
    let reported = reports.0.lock().unwrap()[before].clone();
    assert_eq!(
        reported,
        Report { client: None, reported: Reported::Accept(io::ErrorKind::InvalidData) },
        "a {}-byte datagram",
        message.len()
    );
    client.set_read_timeout(Some(NEGATIVE_WAIT)).unwrap();
    let mut buf = vec![0; 65536];
    match client.recv_from(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        Ok((n, from)) => panic!("a {n}-byte reply from {from} to a dropped {}-byte datagram", message.len()),
        Err(e) => panic!("waiting for no reply to a dropped datagram: {e}"),
    }
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
}
