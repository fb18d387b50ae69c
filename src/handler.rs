//! Handlers and the requests they receive.

use std::fmt;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::ServerHandle;
use crate::transport::{Address, Connection, DatagramSocket};

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

/// A shared reference to the connection that reads and writes through `&Connection`,
/// so the reader, the writer and the server's forced close can all hold it at once.
///
/// The reader and the writer each own one, with the request's deadline and the
/// configured timeout of their direction. Without a deadline the socket's own timeout
/// applies and an operation costs no extra system call; with one, each operation waits
/// at most the time left (or the configured timeout, if shorter).
#[derive(Debug, Clone)]
struct ConnHandle {
    connection: Arc<Connection>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    /// The socket's timeout was changed for a deadline and must be put back.
    overridden: bool,
}

impl ConnHandle {
    /// Runs one read or write under the deadline, if one is set.
    fn timed<T>(
        &mut self,
        set_timeout: fn(&Connection, Option<Duration>) -> io::Result<()>,
        op: impl FnOnce(&Connection) -> io::Result<T>,
    ) -> io::Result<T> {
        let Some(deadline) = self.deadline else { return op(&self.connection) };
        let passed = || io::Error::new(io::ErrorKind::TimedOut, "the request's deadline has passed");
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(passed());
        }
        set_timeout(&self.connection, Some(self.timeout.map_or(left, |t| t.min(left))))?;
        self.overridden = true;
        op(&self.connection).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if Instant::now() >= deadline => passed(),
            _ => e,
        })
    }

    fn set_deadline(
        &mut self,
        deadline: Option<Instant>,
        set_timeout: fn(&Connection, Option<Duration>) -> io::Result<()>,
    ) {
        if deadline.is_none() && self.overridden {
            // Back to the configured timeout, which the deadline overrode. (Only then: a
            // deadline that no read or write ran under costs no system call.)
            let _ = set_timeout(&self.connection, self.timeout);
            self.overridden = false;
        }
        self.deadline = deadline;
    }
}

impl Read for ConnHandle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timed(Connection::set_read_timeout, |mut c| c.read(buf))
    }
}

impl Write for ConnHandle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.timed(Connection::set_write_timeout, |mut c| c.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The buffered reading side of a stream request (Python's `rfile`).
///
/// Implements [`Read`] and [`BufRead`]; its buffer holds up to the server's `rbufsize`
/// bytes.
#[doc(alias = "rfile")]
pub struct Reader {
    source: ConnHandle,
    /// Initialized bytes; the buffer's capacity is `rbufsize`. Only `buf[pos..filled]`
    /// holds data not yet consumed.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    capacity: usize,
}

/// How much of the read buffer is made ready for the first read.
const FIRST_READ_WINDOW: usize = 1024;

impl Reader {
    fn new(source: ConnHandle, capacity: usize) -> Reader {
        let capacity = capacity.max(1);
        Reader { source, buf: Vec::with_capacity(capacity), pos: 0, filled: 0, capacity }
    }

    /// The bytes received and not yet consumed, without reading more: a handler that
    /// batches replies (pipelining) flushes when this is empty.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader").field("buffered", &self.buffer().len()).field("capacity", &self.capacity).finish()
    }
}

impl Read for Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // A large read with nothing buffered goes straight to the socket, as with std's
        // BufReader.
        if self.pos == self.filled && out.len() >= self.capacity {
            return self.source.read(out);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl Reader {
    /// Reads one line, newline included, appending it to `line`, but never more than
    /// `max` bytes: a longer line is an [`InvalidData`](io::ErrorKind::InvalidData) error
    /// that says so, and the rest of the line is left unread instead of being pulled
    /// into memory. Returns the bytes appended; `Ok(0)` at end-of-file. The last line may
    /// lack its newline.
    ///
    /// This is the bound Python's `http.server` applies with `rfile.readline(65537)`:
    /// without one, a client that never sends a newline grows the line without limit.
    /// On error, `line` holds the first `max` bytes of the line, for a log message.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{self, Write};
    /// use socketserver::StreamRequest;
    ///
    /// let handler = |req: &mut StreamRequest| -> io::Result<()> {
    ///     let mut line = Vec::new();
    ///     match req.reader().read_line_bounded(&mut line, 1024) {
    ///         Ok(_) => req.writer().write_all(&line),
    ///         Err(e) if e.kind() == io::ErrorKind::InvalidData => req.writer().write_all(b"line too long\n"),
    ///         Err(e) => Err(e),
    ///     }
    /// };
    /// # let _ = socketserver::TcpServer::bind("127.0.0.1:0", handler)?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn read_line_bounded(&mut self, line: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let start = line.len();
        loop {
            let available = match self.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(line.len() - start);
            }
            let room = max - (line.len() - start);
            let (chunk, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(newline) => (&available[..=newline], true),
                None => (available, false),
            };
            if chunk.len() > room {
                line.extend_from_slice(&chunk[..room]);
                self.consume(room);
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("line longer than {max} bytes")));
            }
            let taken = chunk.len();
            line.extend_from_slice(chunk);
            self.consume(taken);
            if complete {
                return Ok(line.len() - start);
            }
        }
    }
}

/// The buffer is made ready (zeroed, since safe code cannot read into uninitialized
/// memory) a window at a time: 1 KiB at first, doubling each time a read fills the
/// window, up to `rbufsize`. `std::io::BufReader` over a type of our own would zero all
/// of it on the first read, touching every page of every idle connection's buffer; this
/// way an idle or small-message connection touches one page, and a bulk one reaches the
/// full buffer after a few reads.
impl BufRead for Reader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.filled {
            if self.buf.is_empty() {
                self.buf.resize(FIRST_READ_WINDOW.min(self.capacity), 0);
            }
            let n = self.source.read(&mut self.buf)?;
            if n == self.buf.len() && n < self.capacity {
                self.buf.resize((n * 2).min(self.capacity), 0);
            }
            self.pos = 0;
            self.filled = n;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }
}

/// The writing side of a stream request (Python's `wfile`).
///
/// Unbuffered by default: every `write` sends all its bytes before returning, so
/// `write` always returns the full length, as Python's `wfile.write` does. With a
/// `wbufsize` above zero it is a [`BufWriter`]; either way the server flushes it after
/// `finish`.
#[doc(alias = "wfile")]
pub struct Writer {
    inner: WriterInner,
}

enum WriterInner {
    Direct(ConnHandle),
    Buffered(BufWriter<ConnHandle>),
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buffered = matches!(self.inner, WriterInner::Buffered(_));
        f.debug_struct("Writer").field("buffered", &buffered).finish()
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            WriterInner::Direct(c) => c.write_all(buf).map(|()| buf.len()),
            WriterInner::Buffered(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WriterInner::Direct(_) => Ok(()),
            WriterInner::Buffered(w) => w.flush(),
        }
    }
}

/// One stream connection, as a handler sees it (Python's `StreamRequestHandler`).
///
/// It gives a buffered [`Reader`] (`rfile`), a [`Writer`] (`wfile`), the client's
/// address, the [`Connection`] itself for socket options, and a [`ServerHandle`].
/// When the handler is done the server flushes the writer, shuts the connection down
/// for writing (so the client sees end-of-file) and closes it.
pub struct StreamRequest {
    reader: Reader,
    writer: Writer,
    connection: Arc<Connection>,
    client: Address,
    /// The peer that connected, when a PROXY protocol header named another client.
    proxy: Option<Address>,
    server: ServerHandle,
}

impl fmt::Debug for StreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRequest").field("client", &self.client).field("connection", &self.connection).finish()
    }
}

impl StreamRequest {
    pub(crate) fn new(
        connection: Arc<Connection>,
        client: Address,
        server: ServerHandle,
        rbufsize: usize,
        wbufsize: usize,
        timeouts: (Option<Duration>, Option<Duration>),
    ) -> StreamRequest {
        let (read_timeout, write_timeout) = timeouts;
        let handle =
            ConnHandle { connection: connection.clone(), deadline: None, timeout: write_timeout, overridden: false };
        let reader_handle = ConnHandle { timeout: read_timeout, ..handle.clone() };
        let reader = Reader::new(reader_handle, rbufsize);
        let inner = if wbufsize == 0 {
            WriterInner::Direct(handle)
        } else {
            WriterInner::Buffered(BufWriter::with_capacity(wbufsize, handle))
        };
        StreamRequest { reader, writer: Writer { inner }, connection, client, proxy: None, server }
    }

    /// Sets a deadline for this request's reads and writes, or clears it with `None`.
    ///
    /// After `deadline`, reads and writes fail with [`TimedOut`](io::ErrorKind::TimedOut);
    /// before it, each waits at most the time left (or the server's `read_timeout` /
    /// `write_timeout`, if shorter). A per-read timeout alone cannot stop a client that
    /// sends one byte now and then; a deadline can. Set it again for each message of a
    /// keep-alive connection.
    ///
    /// # Examples
    ///
    /// Each request line must arrive within 10 seconds of the previous reply:
    ///
    /// ```
    /// use std::io::{self, Write};
    /// use std::time::{Duration, Instant};
    /// use socketserver::StreamRequest;
    ///
    /// let handler = |req: &mut StreamRequest| -> io::Result<()> {
    ///     let mut line = Vec::new();
    ///     loop {
    ///         req.set_deadline(Some(Instant::now() + Duration::from_secs(10)));
    ///         line.clear();
    ///         if req.reader().read_line_bounded(&mut line, 4096)? == 0 {
    ///             return Ok(());
    ///         }
    ///         req.writer().write_all(&line)?;
    ///     }
    /// };
    /// # let _ = socketserver::TcpServer::bind("127.0.0.1:0", handler)?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.source.set_deadline(deadline, Connection::set_read_timeout);
        let writer = match &mut self.writer.inner {
            WriterInner::Direct(handle) => handle,
            WriterInner::Buffered(writer) => writer.get_mut(),
        };
        writer.set_deadline(deadline, Connection::set_write_timeout);
    }

    /// The buffered reader over the connection (Python's `rfile`).
    #[doc(alias = "rfile")]
    pub fn reader(&mut self) -> &mut Reader {
        &mut self.reader
    }

    /// The writer over the connection (Python's `wfile`).
    #[doc(alias = "wfile")]
    pub fn writer(&mut self) -> &mut Writer {
        &mut self.writer
    }

    /// The reader and the writer at once, for `io::copy(reader, writer)`.
    pub fn reader_and_writer(&mut self) -> (&mut Reader, &mut Writer) {
        (&mut self.reader, &mut self.writer)
    }

    /// The client's address (Python's `client_address`).
    #[doc(alias = "client_address")]
    pub fn client_addr(&self) -> &Address {
        &self.client
    }

    /// With the PROXY protocol on (`Builder::proxy_protocol`, feature
    /// `proxy-protocol`): the address of the proxy that connected, when its header named
    /// the real client, which [`client_addr`](StreamRequest::client_addr) then gives.
    /// `None` otherwise.
    pub fn proxy_addr(&self) -> Option<&Address> {
        self.proxy.as_ref()
    }

    /// Reads the PROXY protocol header that must open the connection, and takes the
    /// client's address from it. A proxy's health check (`LOCAL`) keeps the peer's.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) fn read_proxy_header(&mut self, within: Duration) -> io::Result<()> {
        use crate::proxy_protocol::{read_header, ProxyHeader};
        // A client that connects directly and sends nothing must not hold the thread.
        self.set_deadline(Some(Instant::now() + within));
        let header = read_header(&mut self.reader);
        self.set_deadline(None);
        if let ProxyHeader::Proxied { source, .. } = header? {
            self.proxy = Some(std::mem::replace(&mut self.client, Address::Inet(source)));
        }
        Ok(())
    }

    /// The connection (Python's `request`), for timeouts, `TCP_NODELAY` and the like.
    /// Reading from it directly bypasses the reader's buffer.
    #[doc(alias = "request")]
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A handle to the server (Python's `self.server`): its address, and `shutdown`.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// Flushes the writer, after `finish`.
    pub(crate) fn flush_writer(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// One datagram, as a handler sees it (Python's `DatagramRequestHandler`).
///
/// It gives the packet, a reply buffer, the server's socket and the sender's address.
/// If the handler touched the reply buffer (called [`DatagramRequest::reply`]), its
/// contents are sent back to the sender in one datagram once the handler is done, even
/// when empty.
///
/// # Python
///
/// Python's `DatagramRequestHandler` always sends the contents of `wfile`, so a handler
/// that writes nothing still sends an empty datagram. Here nothing is sent unless the
/// handler asked for a reply, which lets a handler stay silent (for a request it drops,
/// or a protocol with no replies); call `req.reply()` without writing to send the empty
/// one. A datagram longer than `max_packet_size` is cut to it, as in Python, but
/// [`truncated`](DatagramRequest::truncated) says so.
pub struct DatagramRequest {
    packet: Vec<u8>,
    truncated: bool,
    reply: Vec<u8>,
    reply_wanted: bool,
    client: Address,
    socket: Arc<DatagramSocket>,
    server: ServerHandle,
}

impl fmt::Debug for DatagramRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramRequest")
            .field("client", &self.client)
            .field("packet_len", &self.packet.len())
            .field("reply_len", &self.reply.len())
            .finish()
    }
}

impl DatagramRequest {
    pub(crate) fn new(
        mut packet: Vec<u8>,
        max_packet_size: usize,
        client: Address,
        socket: Arc<DatagramSocket>,
        server: ServerHandle,
    ) -> Self {
        let truncated = packet.len() > max_packet_size;
        packet.truncate(max_packet_size);
        DatagramRequest { packet, truncated, reply: Vec::new(), reply_wanted: false, client, socket, server }
    }

    /// Whether the datagram was longer than the server's `max_packet_size`, so that
    /// [`packet`](DatagramRequest::packet) holds only its first bytes. Python truncates
    /// silently; here the handler can tell, and answer with an error instead of acting
    /// on half a message.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The datagram's bytes (Python's `self.request[0]`, or `rfile`), truncated to the
    /// server's `max_packet_size`.
    #[doc(alias = "rfile")]
    #[doc(alias = "data")]
    pub fn packet(&self) -> &[u8] {
        &self.packet
    }

    /// The reply buffer (Python's `wfile`). Calling this marks the reply to be sent to
    /// the sender when the request finishes, even if nothing is written (an empty
    /// datagram is then sent).
    #[doc(alias = "wfile")]
    pub fn reply(&mut self) -> &mut Vec<u8> {
        self.reply_wanted = true;
        &mut self.reply
    }

    /// The packet and the reply buffer at once, to answer from the packet without
    /// copying it first (the borrow checker will not lend `packet()` and `reply()`
    /// together). Marks the reply to be sent, as [`reply`](DatagramRequest::reply) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{DatagramRequest, UdpServer};
    ///
    /// let echo = |req: &mut DatagramRequest| {
    ///     let (packet, reply) = req.packet_and_reply();
    ///     reply.extend_from_slice(packet);
    ///     Ok(())
    /// };
    /// # let _ = UdpServer::bind("127.0.0.1:0", echo)?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn packet_and_reply(&mut self) -> (&[u8], &mut Vec<u8>) {
        self.reply_wanted = true;
        (&self.packet, &mut self.reply)
    }

    /// The server's socket (Python's `self.request[1]`), for sends beyond the reply.
    pub fn socket(&self) -> &DatagramSocket {
        &self.socket
    }

    /// The sender's address (Python's `client_address`).
    #[doc(alias = "client_address")]
    pub fn client_addr(&self) -> &Address {
        &self.client
    }

    /// A handle to the server (Python's `self.server`).
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// The server's last step: send the reply, if the handler asked for one.
    pub(crate) fn respond(&mut self) -> io::Result<()> {
        if self.reply_wanted {
            self.socket.send_to(&self.reply, &self.client)?;
        }
        Ok(())
    }
}
