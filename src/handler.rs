//! Handlers: the [`RequestHandler`] trait, closures as handlers, and the type erasure
//! the engine stores them in.

use std::io;
use std::sync::Arc;

use crate::request::{DatagramRequest, StreamRequest};

/// What a server calls for each request: `setup`, then `handle`, then `finish`.
///
/// `finish` runs even when `handle` returns an error or panics; when `setup` fails,
/// neither `handle` nor `finish` runs. Every error and every caught panic is reported to
/// the server's `handle_error` hook, and the server goes on serving.
///
/// `R` is [`StreamRequest`] for TCP and Unix stream servers, [`DatagramRequest`] for UDP
/// and Unix datagram servers. A closure `Fn(&mut R) -> io::Result<()>` is a handler; give
/// its argument's type (`|req: &mut StreamRequest| ...`), which Rust cannot infer here.
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
/// use socketserver::{RequestHandler, StreamRequest};
///
/// #[derive(Default)]
/// struct Counter {
///     lines: AtomicU64, // shared by every request
/// }
///
/// impl RequestHandler<StreamRequest> for Counter {
///     fn handle(&self, request: &mut StreamRequest) -> io::Result<()> {
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
/// let server = socketserver::TcpServer::bind("127.0.0.1:0", Counter::default())?;
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
pub trait RequestHandler<R>: Send + Sync + 'static {
    /// Runs first. An error here skips `handle` and `finish`.
    fn setup(&self, request: &mut R) -> io::Result<()> {
        let _ = request;
        Ok(())
    }

    /// Serves the request.
    fn handle(&self, request: &mut R) -> io::Result<()>;

    /// Runs last, even when `handle` failed or panicked.
    fn finish(&self, request: &mut R) -> io::Result<()> {
        let _ = request;
        Ok(())
    }
}

impl<F> RequestHandler<StreamRequest> for F
where
    F: Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, request: &mut StreamRequest) -> io::Result<()> {
        self(request)
    }
}

impl<F> RequestHandler<DatagramRequest> for F
where
    F: Fn(&mut DatagramRequest) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, request: &mut DatagramRequest) -> io::Result<()> {
        self(request)
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
