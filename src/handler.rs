//! Handlers: the [`RequestHandler`] trait, closures as handlers, and the type erasure
//! the engine stores them in.

use std::sync::Arc;

use crate::request::{DatagramRequest, StreamRequest};

/// What a server calls for each request: `setup`, then `handle`, then `finish`.
///
/// `finish` runs even when `handle` returns an error or panics; when `setup` fails,
/// neither `handle` nor `finish` runs. Every error and every caught panic is reported to
/// the server's `handle_error` hook, and the server goes on serving.
///
/// `R` is [`StreamRequest`] for TCP and Unix stream servers, [`DatagramRequest`] for UDP
/// and Unix datagram servers. Implement it for a type of your own and pass that to
/// `bind_handler`; a closure passed to `bind` needs no such impl, nor a type annotation
/// (`TcpServer::bind(addr, |req| ...)`). Any function or closure
/// `Fn(&mut R) -> Result<(), E>` is a handler too, for an error type `E` that converts
/// into a [`HandlerError`], and so is an `Arc` of a handler (to keep a handle on its
/// state outside the server).
///
/// # Errors
///
/// Each method returns a [`HandlerResult`]: `?` takes any error (`io::Error`, a parse
/// error, a `Utf8Error`, a type of your own), as any exception reaches Python's
/// `handle_error`. The server reports it whole, in [`Error::Handler`](crate::Error::Handler),
/// whose `source` can be downcast back to its type.
///
/// # A handler of the wrong kind
///
/// The compiler names the request type the server expects. A datagram closure given to
/// a TCP server is a type mismatch in the closure's argument (`expected closure signature
/// for<'a> fn(&'a mut StreamRequest) -> _`):
///
/// ```compile_fail,E0631
/// use socketserver::{DatagramRequest, TcpServer};
///
/// let server = TcpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
///     req.reply();
///     Ok(())
/// });
/// ```
///
/// and a handler type for datagrams, given to a stream server, is "`Echo` is not a
/// handler of `StreamRequest`":
///
/// ```compile_fail,E0277
/// use socketserver::{DatagramRequest, HandlerResult, RequestHandler, TcpServer};
///
/// struct Echo;
/// impl RequestHandler<DatagramRequest> for Echo {
///     fn handle(&self, req: &mut DatagramRequest) -> HandlerResult {
///         let (packet, reply) = req.packet_and_reply();
///         reply.extend_from_slice(packet);
///         Ok(())
///     }
/// }
/// let server = TcpServer::bind_handler("127.0.0.1:0", Echo);
/// ```
///
/// # Shared and per-request state
///
/// One handler value serves every request of a server, from whatever thread the dispatch
/// mode picks, so its methods take `&self` and it must be `Send + Sync`. That makes the
/// two kinds of state plain Rust:
///
/// - **shared state** (a hit counter, a map behind a lock) is a field of the handler:
///   an `AtomicU64`, a `parking_lot::Mutex<HashMap<..>>`;
/// - **per-request state** is local variables inside [`RequestHandler::handle`], which
///   runs once per request and may loop over many messages of one connection.
///
/// # Python
///
/// Python creates a new handler object per request and keeps shared state on the server
/// (`self.server.x`); here the handler itself is the shared object, which saves a factory
/// and an allocation per request. What Python's `setup` stores on `self` for `handle`,
/// set up at the start of `handle` instead; `setup` and `finish` suit per-request work
/// that needs no state, such as socket options or logging.
///
/// # Testing
///
/// A handler runs without a server too: [`testing::TestStream`](crate::testing::TestStream)
/// and [`testing::TestDatagram`](crate::testing::TestDatagram) give it a request over
/// in-memory bytes and return what it wrote and the errors a server would report.
///
/// # Examples
///
/// A handler with shared state: a counter of the lines served, across all connections.
///
/// ```
/// use std::io::{self, BufRead, Write};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use socketserver::{HandlerResult, RequestHandler, StreamRequest};
///
/// #[derive(Default)]
/// struct Counter {
///     lines: AtomicU64, // shared by every request
/// }
///
/// impl RequestHandler<StreamRequest> for Counter {
///     fn handle(&self, request: &mut StreamRequest) -> HandlerResult {
///         let mut line = String::new(); // per request
///         while request.reader().read_line(&mut line)? > 0 {
///             let n = self.lines.fetch_add(1, Ordering::Relaxed) + 1;
///             writeln!(request.writer(), "{n}: {}", line.trim_end())?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
///
/// let server = socketserver::TcpServer::bind_handler("127.0.0.1:0", Counter::default())?;
/// let addr = server.local_addr();
/// let background = server.serve_in_background()?;
/// for expected in ["1: a\n2: b\n", "3: c\n"] {
///     let mut client = std::net::TcpStream::connect(addr)?;
///     client.write_all(expected.lines().map(|l| &l[3..]).collect::<Vec<_>>().join("\n").as_bytes())?;
///     client.shutdown(std::net::Shutdown::Write)?;
///     let mut reply = String::new();
///     io::Read::read_to_string(&mut client, &mut reply)?;
///     assert_eq!(reply, expected);
/// }
/// background.stop()?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[doc(alias = "BaseRequestHandler")]
#[doc(alias = "StreamRequestHandler")]
#[doc(alias = "DatagramRequestHandler")]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler of `{R}`",
    label = "this handler does not take `&mut {R}`",
    note = "a stream server (TCP, Unix stream) takes `|req: &mut StreamRequest| ...`, a datagram server (UDP, Unix datagram) `|req: &mut DatagramRequest| ...`",
    note = "a handler returns `Result<(), E>` for an error type `E` that converts into `socketserver::HandlerError`, and is `Send + Sync + 'static`"
)]
pub trait RequestHandler<R>: Send + Sync + 'static {
    /// Runs first. An error here skips `handle` and `finish`.
    fn setup(&self, request: &mut R) -> HandlerResult {
        let _ = request;
        Ok(())
    }

    /// Serves the request.
    fn handle(&self, request: &mut R) -> HandlerResult;

    /// Runs last, even when `handle` failed or panicked.
    fn finish(&self, request: &mut R) -> HandlerResult {
        let _ = request;
        Ok(())
    }
}

pub use crate::error::{HandlerError, HandlerResult};

impl<F, E> RequestHandler<StreamRequest> for F
where
    F: Fn(&mut StreamRequest) -> Result<(), E> + Send + Sync + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, request: &mut StreamRequest) -> HandlerResult {
        self(request).map_err(Into::into)
    }
}

impl<F, E> RequestHandler<DatagramRequest> for F
where
    F: Fn(&mut DatagramRequest) -> Result<(), E> + Send + Sync + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, request: &mut DatagramRequest) -> HandlerResult {
        self(request).map_err(Into::into)
    }
}

/// A shared handler is a handler: keep an `Arc` to read its state (a counter, a map)
/// from outside the server while the server serves the same value.
///
/// ```
/// use std::io::Write;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use socketserver::{HandlerResult, RequestHandler, StreamRequest, TcpServer};
///
/// #[derive(Default)]
/// struct Hits(AtomicU64);
///
/// impl RequestHandler<StreamRequest> for Hits {
///     fn handle(&self, req: &mut StreamRequest) -> HandlerResult {
///         let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
///         writeln!(req.writer(), "hit {n}")?;
///         Ok(())
///     }
/// }
///
/// let hits = Arc::new(Hits::default());
/// let server = TcpServer::bind_handler("127.0.0.1:0", hits.clone())?;
/// let addr = server.local_addr();
/// let background = server.serve_in_background()?;
/// let mut reply = String::new();
/// std::io::Read::read_to_string(&mut std::net::TcpStream::connect(addr)?, &mut reply)?;
/// assert_eq!(reply, "hit 1\n");
/// background.stop()?;
/// assert_eq!(hits.0.load(Ordering::Relaxed), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<R, H: RequestHandler<R> + ?Sized> RequestHandler<R> for Arc<H> {
    fn setup(&self, request: &mut R) -> HandlerResult {
        (**self).setup(request)
    }

    fn handle(&self, request: &mut R) -> HandlerResult {
        (**self).handle(request)
    }

    fn finish(&self, request: &mut R) -> HandlerResult {
        (**self).finish(request)
    }
}

/// A closure given to `bind`, whose signature the bound there spelled out so that Rust
/// infers the closure's argument type.
pub(crate) struct FnHandler<F>(pub(crate) F);

impl<R, F> RequestHandler<R> for FnHandler<F>
where
    R: 'static,
    F: Fn(&mut R) -> HandlerResult + Send + Sync + 'static,
{
    fn handle(&self, request: &mut R) -> HandlerResult {
        (self.0)(request)
    }
}

/// A handler with its request type erased, as the serve loop stores it.
pub(crate) enum AnyHandler {
    /// For TCP and Unix stream servers.
    Stream(Arc<dyn RequestHandler<StreamRequest>>),
    /// For UDP and Unix datagram servers.
    Datagram(Arc<dyn RequestHandler<DatagramRequest>>),
}

pub(crate) mod sealed {
    use super::*;

    /// A request type: [`StreamRequest`] or [`DatagramRequest`]. Sealed: the engine
    /// runs these two alone.
    pub trait RequestKind: Sized + 'static {
        /// Erases a handler into the form the engine stores.
        fn erase<H: RequestHandler<Self>>(handler: H) -> AnyHandler;
    }
}

impl sealed::RequestKind for StreamRequest {
    fn erase<H: RequestHandler<StreamRequest>>(handler: H) -> AnyHandler {
        AnyHandler::Stream(Arc::new(handler))
    }
}

impl sealed::RequestKind for DatagramRequest {
    fn erase<H: RequestHandler<DatagramRequest>>(handler: H) -> AnyHandler {
        AnyHandler::Datagram(Arc::new(handler))
    }
}
