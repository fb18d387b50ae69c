//! Test helpers: handlers tested over in-memory bytes; scripted servers and a fault
//! proxy that test a client; the same faults around a server that a test exercises.
//!
//! # Handlers without sockets
//!
//! A handler is code you want to test the way you test any function: give it input, look
//! at its output. [`TestStream`] builds a [`StreamRequest`] whose reader yields the bytes
//! you give and whose writer keeps what the handler writes; [`TestDatagram`] builds a
//! [`DatagramRequest`] whose replies are kept. `run` goes through the handler's phases
//! as a server does (`setup`, `handle`, `finish`, then the flush or the reply), catching
//! errors and panics as a server does, and returns what happened; `request` gives the
//! bare request, to call the handler's methods yourself.
//!
//! Nothing is bound and no thread starts, so such tests are fast and cannot hang on the
//! network. The request's [`server()`](StreamRequest::server) handle belongs to no
//! server: its `shutdown` only records that it was asked for
//! ([`StreamOutcome::shutdown`]).
//!
//! # Examples
//!
//! ```
//! use std::io::{self, BufRead, Write};
//! use socketserver::testing::TestStream;
//! use socketserver::StreamRequest;
//!
//! fn shout(req: &mut StreamRequest) -> io::Result<()> {
//!     let mut line = String::new();
//!     while req.reader().read_line(&mut line)? > 0 {
//!         req.writer().write_all(line.to_uppercase().as_bytes())?;
//!         line.clear();
//!     }
//!     Ok(())
//! }
//!
//! let outcome = TestStream::new("hello\nworld\n").run(&shout);
//! assert_eq!(outcome.output, b"HELLO\nWORLD\n");
//! assert!(outcome.errors.is_empty());
//!
//! // The same handler, given invalid UTF-8: the error is what handle_error would get.
//! let outcome = TestStream::new(&b"\xff\n"[..]).run(&shout);
//! assert_eq!(outcome.errors.len(), 1);
//! assert_eq!(outcome.errors[0].kind(), io::ErrorKind::InvalidData);
//! ```
//!
//! A datagram handler:
//!
//! ```
//! use std::io::Write;
//! use socketserver::testing::TestDatagram;
//! use socketserver::DatagramRequest;
//!
//! let echo = |req: &mut DatagramRequest| -> socketserver::HandlerResult {
//!     req.reply().write_all(req.packet())?;
//!     Ok(())
//! };
//! let outcome = TestDatagram::new("ping").run(&echo);
//! assert_eq!(outcome.reply(), Some(&b"ping"[..]));
//! ```
//!
//! # Clients against a scripted server
//!
//! What a test exercises is often a *client*: its parsing, its timeouts, its retries.
//! [`ScriptedServer`] serves a [`Script`] on `127.0.0.1:0`, TCP or UDP: expect these
//! bytes (a line, a framed message), reply, wait, close, reset, stop answering. It
//! records what the client sent, with the time of each piece, and
//! [`verify`](ScriptedServer::verify) says where the client deviated: the step, what was
//! expected, what came, the first byte that differs. It starts and stops in tens of
//! microseconds (`cargo bench --bench lifecycle` measures it), so a suite can run
//! thousands.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use socketserver::testing::{Script, ScriptedServer};
//!
//! // The client under test: sends a request, reads the answer to the end.
//! fn fetch(addr: std::net::SocketAddr) -> std::io::Result<String> {
//!     let mut stream = TcpStream::connect(addr)?;
//!     stream.write_all(b"GET /\n")?;
//!     let mut answer = String::new();
//!     stream.read_to_string(&mut answer)?;
//!     Ok(answer)
//! }
//!
//! let server = ScriptedServer::tcp([Script::new().expect_line("GET /").reply("hello").close()]).unwrap();
//! assert_eq!(fetch(server.addr()).unwrap(), "hello");
//! server.verify().unwrap(); // or: the client's deviations, step by step
//! ```
//!
//! # Clients against a misbehaving network
//!
//! [`FaultProxy`] sits on `127.0.0.1:0` in front of any address (a server of this crate,
//! a scripted one, another process) and forwards TCP connections or UDP datagrams through
//! [`Fault`]s, added and removed while the test runs: latency with jitter, bandwidth, a
//! slicer that delivers a few bytes at a time, a close or a reset after N bytes or a
//! time, silence (`timeout`), a late close, refused connections; for UDP, dropped,
//! duplicated, reordered, delayed and truncated datagrams. Faults apply one way or
//! both, always or with a probability, and every draw comes from a seed, so a test sees
//! the same faults on every run. [`Fault`] lists each with the situation it reproduces.
//!
//! ```
//! use std::io::Write;
//! use std::net::UdpSocket;
//! use std::time::Duration;
//! use socketserver::testing::{Fault, FaultProxy};
//! use socketserver::UdpServer;
//!
//! # fn main() -> std::io::Result<()> {
//! let echo = UdpServer::bind("127.0.0.1:0", |req| {
//!     let packet = req.packet().to_vec();
//!     req.reply().write_all(&packet)?;
//!     Ok(())
//! }).unwrap();
//! let addr = echo.local_addr();
//! let _echo = echo.serve_in_background().unwrap();
//!
//! // One datagram in three lost on the way to the server, the same ones on every run.
//! let proxy = FaultProxy::udp(addr)?;
//! proxy.add(Fault::drop_datagrams().upstream().probability(0.3))?;
//!
//! let client = UdpSocket::bind("127.0.0.1:0")?;
//! client.set_read_timeout(Some(Duration::from_millis(300)))?;
//! let mut answered = 0;
//! for i in 0..20u8 {
//!     client.send_to(&[i], proxy.addr())?;
//!     answered += usize::from(client.recv(&mut [0; 1]).is_ok());
//! }
//! assert!(answered < 20, "some were lost");
//! assert!(answered > 0, "some came back");
//! # Ok(())
//! # }
//! ```
//!
//! # Servers under the same faults
//!
//! [`Faults::around`] sets the same faults on a stream server's builder: each connection
//! the server accepts goes through them before the server sees it, on the server's own
//! address, without a proxy, so that a test of a server sees what a slow, silent,
//! disconnecting or crashing client does to it, with its framing, parking and timeouts
//! as they are. [`Faults`] has an example.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::{Hooks, DEFAULT_MAX_PACKET_SIZE, DEFAULT_RBUFSIZE};
use crate::engine::{run_phases, Outcome, Phases, Start};
use crate::error::Error;
use crate::handle::{Control, ServerHandle};
use crate::handler::RequestHandler;
use crate::net::{test_client, Address, Connection, DatagramSocket};

mod fault;
mod layer;
mod loops;
mod memory;
mod script;

pub use crate::net::{InMemory, InMemoryDatagram};
use crate::request::{DatagramRequest, StreamRequest};
pub use fault::{Direction, Fault, FaultId, FaultProxy, REORDER_HOLD};
pub use layer::Faults;
pub use memory::{MemorySocket, MemoryStream};
pub use script::{Conversation, Recorded, Script, ScriptError, ScriptedServer, Transcript, DEFAULT_EXPECT_WITHIN};

/// The address the detached `server()` handle of an in-memory request reports unless a
/// test sets one: `127.0.0.1:0`, which no bound server has.
fn unbound_server() -> Address {
    Address::Inet(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
}

/// What [`run`](TestStream::run) collected from the handler's phases.
fn run_in_memory<R: Phases + 'static>(handler: &dyn RequestHandler<R>, request: &mut R) -> Vec<Error> {
    let errors = Mutex::new(Vec::new());
    let report = |error, _: &Address| errors.lock().push(error);
    let mut start = Start::Setup;
    // A handler that parks is called again while the input lasts, as a server calls it
    // when the client's next bytes arrive; at the end of the input it gets its finish.
    while let Outcome::Parked = run_phases(handler, request, &Hooks::default(), &report, start) {
        start = if request.next_exchange() { Start::Handle } else { Start::Finish };
    }
    errors.into_inner()
}

/// An in-memory stream request: the bytes a client sends, for a [`StreamRequest`].
///
/// The reader yields the input, then end-of-file (as after the client's half-close);
/// the writer keeps what the handler writes. Settings default as a server's do:
/// `rbufsize` 8192, an unbuffered writer, the client `127.0.0.1:49152`.
#[derive(Debug, Clone)]
pub struct TestStream {
    input: Vec<u8>,
    read_sizes: Vec<usize>,
    client: Address,
    server: Address,
    rbufsize: usize,
    wbufsize: usize,
}

/// What happened when a handler served a [`TestStream`].
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamOutcome {
    /// Everything the handler wrote, flushed.
    pub output: Vec<u8>,
    /// The errors and caught panics a server would report to `handle_error`, in order.
    pub errors: Vec<Error>,
    /// Whether the handler asked the server to shut down (`req.server().shutdown()`).
    pub shutdown: bool,
    /// The input the handler did not consume (whether or not its reader buffered it).
    pub unread: Vec<u8>,
}

impl TestStream {
    /// A request whose client sends `input` and then half-closes.
    pub fn new(input: impl Into<Vec<u8>>) -> TestStream {
        TestStream {
            input: input.into(),
            read_sizes: Vec::new(),
            client: test_client(),
            server: unbound_server(),
            rbufsize: DEFAULT_RBUFSIZE,
            wbufsize: 0,
        }
    }

    /// The client's address, as [`StreamRequest::client_addr`] gives it.
    pub fn client_addr(mut self, addr: impl Into<Address>) -> TestStream {
        self.client = addr.into();
        self
    }

    /// The address the request's `server()` handle reports. Default `127.0.0.1:0`.
    pub fn server_addr(mut self, addr: impl Into<Address>) -> TestStream {
        self.server = addr.into();
        self
    }

    /// Makes each read of the connection return at most the next of `sizes` bytes, in
    /// turn and then again from the first, as a network delivers a message in pieces;
    /// a 0 makes that read fail with [`Interrupted`](std::io::ErrorKind::Interrupted), as
    /// a signal would. A handler that assumes a message arrives in one read fails here
    /// as it would on a slow link. Default: each read gets all it asks for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{self, BufRead, Write};
    /// use socketserver::testing::TestStream;
    /// use socketserver::StreamRequest;
    ///
    /// let echo_line = |req: &mut StreamRequest| -> io::Result<()> {
    ///     let mut line = Vec::new();
    ///     req.reader().read_until(b'\n', &mut line)?;
    ///     req.writer().write_all(&line)
    /// };
    /// // One byte at a time, with a signal now and then: the same line comes back.
    /// let outcome = TestStream::new("hello\n").read_sizes([1, 0, 1]).run(&echo_line);
    /// assert_eq!(outcome.output, b"hello\n");
    /// assert!(outcome.errors.is_empty());
    /// ```
    pub fn read_sizes(mut self, sizes: impl IntoIterator<Item = usize>) -> TestStream {
        self.read_sizes = sizes.into_iter().collect();
        self
    }

    /// The reader's buffer size, as [`Builder::rbufsize`](crate::Builder::rbufsize).
    pub fn rbufsize(mut self, bytes: usize) -> TestStream {
        self.rbufsize = bytes;
        self
    }

    /// The writer's buffer size, as [`Builder::wbufsize`](crate::Builder::wbufsize).
    pub fn wbufsize(mut self, bytes: usize) -> TestStream {
        self.wbufsize = bytes;
        self
    }

    /// The bare request, and its connection to read the output from (after flushing the
    /// request's writer, if it is buffered).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::testing::TestStream;
    ///
    /// let (request, connection) = TestStream::new("").request();
    /// request.writer().write_all(b"220 ready\r\n")?;
    /// assert_eq!(connection.output(), b"220 ready\r\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request(&self) -> (StreamRequest, MemoryStream) {
        self.request_on(ServerHandle::new(Arc::new(Control::detached(self.server.clone()))))
    }

    fn request_on(&self, server: ServerHandle) -> (StreamRequest, MemoryStream) {
        let stream = MemoryStream::new(self.input.clone(), self.client.clone());
        stream.set_read_sizes(self.read_sizes.clone());
        let connection = Arc::new(Connection::Memory(InMemory(Box::new(stream.clone()))));
        let request =
            StreamRequest::new(connection, self.client.clone(), server, self.rbufsize, self.wbufsize, (None, None));
        (request, stream)
    }

    /// Serves this request with `handler` as a server would: `setup`, `handle`,
    /// `finish` (even after an error or a panic in `handle`), then the flush and the
    /// server's default `shutdown_request`. Errors and panics are caught and collected,
    /// not reported.
    pub fn run<H: RequestHandler<StreamRequest>>(&self, handler: &H) -> StreamOutcome {
        let control = Arc::new(Control::detached(self.server.clone()));
        let (mut request, stream) = self.request_on(ServerHandle::new(control.clone()));
        let errors = run_in_memory(handler, &mut request);
        // What the reader buffered and the handler did not consume was not read either.
        let mut unread = request.reader_mut().buffer().to_vec();
        unread.extend(stream.unread());
        StreamOutcome { output: stream.output(), errors, shutdown: control.stop_pending(), unread }
    }
}

/// An in-memory datagram request: one packet, for a [`DatagramRequest`].
///
/// Replies and other sends go to an in-memory socket. Settings default as a server's
/// do: `max_packet_size` 8192 (a longer packet is truncated and says so), the client
/// `127.0.0.1:49152`.
#[derive(Debug, Clone)]
pub struct TestDatagram {
    packet: Vec<u8>,
    client: Address,
    server: Address,
    max_packet_size: usize,
}

/// What happened when a handler served a [`TestDatagram`].
#[derive(Debug)]
#[non_exhaustive]
pub struct DatagramOutcome {
    /// Every datagram sent, in order, with its address: the reply (if the handler asked
    /// for one) comes last, to the client.
    pub sent: Vec<(Vec<u8>, Address)>,
    /// The errors and caught panics a server would report to `handle_error`, in order.
    pub errors: Vec<Error>,
    /// Whether the handler asked the server to shut down.
    pub shutdown: bool,
    /// The reply the server sent to the client, if the handler asked for one.
    reply: Option<Vec<u8>>,
}

impl DatagramOutcome {
    /// The reply to the client: what the handler wrote to
    /// [`DatagramRequest::reply`], sent by the server when the handler was done. `None`
    /// when the handler did not ask for one, whatever else it sent (a datagram it sent
    /// itself, to the client or to anyone else, is in [`sent`](DatagramOutcome::sent)).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::testing::TestDatagram;
    /// use socketserver::DatagramRequest;
    ///
    /// let forward = |req: &mut DatagramRequest| -> socketserver::HandlerResult {
    ///     req.socket().send_to(b"log: ping", &"192.0.2.1:514".parse::<std::net::SocketAddr>()?.into())?;
    ///     Ok(())
    /// };
    /// let outcome = TestDatagram::new("ping").run(&forward);
    /// assert_eq!(outcome.reply(), None, "a datagram to someone else is no reply");
    /// assert_eq!(outcome.sent.len(), 1);
    /// ```
    pub fn reply(&self) -> Option<&[u8]> {
        self.reply.as_deref()
    }
}

impl TestDatagram {
    /// A request carrying `packet`.
    pub fn new(packet: impl Into<Vec<u8>>) -> TestDatagram {
        TestDatagram {
            packet: packet.into(),
            client: test_client(),
            server: unbound_server(),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        }
    }

    /// The sender's address, as [`DatagramRequest::client_addr`] gives it.
    pub fn client_addr(mut self, addr: impl Into<Address>) -> TestDatagram {
        self.client = addr.into();
        self
    }

    /// The address the request's `server()` handle reports. Default `127.0.0.1:0`.
    pub fn server_addr(mut self, addr: impl Into<Address>) -> TestDatagram {
        self.server = addr.into();
        self
    }

    /// The largest packet, as [`Builder::max_packet_size`](crate::Builder::max_packet_size);
    /// a longer one is truncated and [`DatagramRequest::truncated`] says so.
    pub fn max_packet_size(mut self, bytes: usize) -> TestDatagram {
        self.max_packet_size = bytes;
        self
    }

    /// The bare request, and the socket whose [`sent`](MemorySocket::sent) datagrams
    /// the handler's sends end up in. The reply is sent only by the server's last step,
    /// which [`run`](TestDatagram::run) performs; with the bare request, read the reply
    /// buffer instead.
    pub fn request(&self) -> (DatagramRequest, MemorySocket) {
        self.request_on(ServerHandle::new(Arc::new(Control::detached(self.server.clone()))))
    }

    fn request_on(&self, server: ServerHandle) -> (DatagramRequest, MemorySocket) {
        let socket = MemorySocket::new();
        let request = DatagramRequest::new(
            self.packet.clone(),
            self.max_packet_size,
            self.client.clone(),
            Arc::new(DatagramSocket::Memory(InMemoryDatagram(Box::new(socket.clone())))),
            server,
        );
        (request, socket)
    }

    /// Serves this request with `handler` as a server would: `setup`, `handle`,
    /// `finish`, then the reply if the handler asked for one. Errors and panics are
    /// caught and collected.
    pub fn run<H: RequestHandler<DatagramRequest>>(&self, handler: &H) -> DatagramOutcome {
        let control = Arc::new(Control::detached(self.server.clone()));
        let (mut request, socket) = self.request_on(ServerHandle::new(control.clone()));
        let errors = run_in_memory(handler, &mut request);
        let reply = request.wanted_reply();
        DatagramOutcome { sent: socket.sent(), errors, shutdown: control.stop_pending(), reply }
    }
}

#[cfg(test)]
mod tests {

    /// A parked connection keeps no empty buffers: the write buffer of a `wbufsize`
    /// is freed as the request parks, and comes back for the next exchange's writes.
    #[test]
    fn parking_frees_the_write_buffer_and_the_next_write_gets_it_back() {
        use std::io::Write;
        let (mut request, stream) = TestStream::new("").wbufsize(16 * 1024).request();
        request.writer().write_all(b"one").unwrap();
        assert!(request.writer().holds_buffer());
        request.prepare_to_park(None).unwrap();
        assert_eq!(stream.output(), b"one", "flushed before parking");
        assert!(!request.writer().holds_buffer(), "the buffer is freed");
        request.writer().write_all(b" two").unwrap();
        assert!(request.writer().holds_buffer());
        assert_eq!(stream.output(), b"one", "buffered again, not sent at once");
        request.writer().flush().unwrap();
        assert_eq!(stream.output(), b"one two");
    }

    use std::io::{self, Read, Write};

    use super::*;
    use crate::error::Phase;

    #[test]
    fn finish_runs_after_a_panic_in_handle_and_both_are_reported() {
        struct Panics;
        impl RequestHandler<StreamRequest> for Panics {
            fn handle(&self, _: &mut StreamRequest) -> crate::handler::HandlerResult {
                panic!("boom in handle");
            }
            fn finish(&self, req: &mut StreamRequest) -> crate::handler::HandlerResult {
                req.writer().write_all(b"finished")?;
                Err(io::Error::other("finish failed").into())
            }
        }
        let outcome = TestStream::new("").run(&Panics);
        assert_eq!(outcome.output, b"finished");
        assert!(
            matches!(&outcome.errors[0], Error::Panic { phase: Phase::Handle, message } if message == "boom in handle")
        );
        assert!(matches!(&outcome.errors[1], Error::Handler { phase: Phase::Finish, .. }));
        assert_eq!(outcome.errors.len(), 2);
    }

    #[test]
    fn a_buffered_writer_is_flushed_and_the_stream_ended() {
        let handler = |req: &mut StreamRequest| {
            let mut first = [0; 3];
            req.reader().read_exact(&mut first)?;
            req.writer().write_all(&first)
        };
        let (request, stream) = TestStream::new("abcdef").wbufsize(64).request();
        drop(request);
        assert!(!stream.is_write_shut_down());
        let outcome = TestStream::new("abcdef").wbufsize(64).run(&handler);
        assert_eq!(outcome.output, b"abc", "the buffered write is flushed after finish");
        assert_eq!(outcome.unread, b"def");
    }

    #[test]
    fn a_handler_sees_the_client_and_can_ask_for_shutdown() {
        let client: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let handler = |req: &mut StreamRequest| {
            let line = format!("{} via {}", req.client_addr(), req.server().local_addr());
            req.server().shutdown();
            req.writer().write_all(line.as_bytes())
        };
        let server: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let outcome = TestStream::new("").client_addr(client).server_addr(server).run(&handler);
        assert_eq!(outcome.output, b"192.0.2.1:4000 via 127.0.0.1:8000");
        assert!(outcome.shutdown);
        assert!(!TestStream::new("").run(&handler_that_does_nothing).shutdown);
    }

    fn handler_that_does_nothing(_: &mut StreamRequest) -> io::Result<()> {
        Ok(())
    }

    #[test]
    fn a_failing_setup_skips_handle_and_finish() {
        struct FailsSetup;
        impl RequestHandler<StreamRequest> for FailsSetup {
            fn setup(&self, _: &mut StreamRequest) -> crate::handler::HandlerResult {
                Err("no".into())
            }
            fn handle(&self, req: &mut StreamRequest) -> crate::handler::HandlerResult {
                req.writer().write_all(b"handled")?;
                Ok(())
            }
        }
        let outcome = TestStream::new("").run(&FailsSetup);
        assert!(outcome.output.is_empty());
        assert!(matches!(&outcome.errors[..], [Error::Handler { phase: Phase::Setup, .. }]));
    }

    #[test]
    fn datagrams_are_truncated_and_replies_sent_only_when_asked() {
        let silent = |_: &mut DatagramRequest| -> crate::handler::HandlerResult { Ok(()) };
        assert_eq!(TestDatagram::new("x").run(&silent).reply(), None);
        let sizes = |req: &mut DatagramRequest| -> crate::handler::HandlerResult {
            let text = format!("{} {}", req.packet().len(), req.truncated());
            req.socket().send_to(b"extra", &"192.0.2.9:9".parse::<SocketAddr>().unwrap().into())?;
            req.reply().extend_from_slice(text.as_bytes());
            Ok(())
        };
        let outcome = TestDatagram::new("abcdef").max_packet_size(4).run(&sizes);
        assert_eq!(outcome.reply(), Some(&b"4 true"[..]));
        assert_eq!(outcome.sent.len(), 2);
        assert_eq!(outcome.sent[0].1.to_string(), "192.0.2.9:9");
        assert_eq!(outcome.sent[1].1.to_string(), "127.0.0.1:49152", "the reply goes to the client");
    }
}
