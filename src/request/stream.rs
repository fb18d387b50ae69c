use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::io::{ConnHandle, Reader, ReaderRef, Traffic, Writer};
use crate::handle::ServerHandle;
use crate::net::{Address, Connection, Registration};

/// How much of a body [`StreamRequest::send_from`] reads at a time.
const SEND_CHUNK: usize = 64 * 1024;

/// A body on its way ([`StreamRequest::send_from`]).
struct Outgoing {
    /// `None`: nothing after `chunk` (a buffered reply sent from the poller,
    /// [`StreamRequest::send_buffered_reply`]).
    source: Option<Box<dyn Read + Send>>,
    chunk: Vec<u8>,
    /// `chunk[at..len]` is read and not yet sent.
    at: usize,
    len: usize,
}

/// Reads the next bytes of a body into `out.chunk[from..]`. The handler's source runs
/// here, on a worker: a panic in it is caught and becomes an error of the send (the
/// connection then ends), never a worker lost.
fn read_source(out: &mut Outgoing, from: usize) -> io::Result<usize> {
    let Some(source) = &mut out.source else { return Ok(0) };
    loop {
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.read(&mut out.chunk[from..])))
            .unwrap_or_else(|_| Err(io::Error::other("the source given to send_from panicked")));
        match read {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            read => return read,
        }
    }
}

/// How far [`StreamRequest::pump`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// All sent.
    Done,
    /// The client's window is full: wait until the connection is writable.
    Blocked,
    /// The turn's budget is spent and the client still takes more: let others run.
    Yield,
}

/// One stream connection, as a handler sees it (Python's `StreamRequestHandler`).
///
/// It gives a buffered [`Reader`] (`rfile`), a [`Writer`] (`wfile`), the client's
/// address, the [`Connection`] itself for socket options, and a [`ServerHandle`].
/// When the handler is done the server flushes the writer, shuts the connection down
/// for writing (so the client sees end-of-file) and closes it; or, if the handler
/// [parked](StreamRequest::park) it, keeps it until the client's next bytes.
pub struct StreamRequest {
    /// The connection's place in its serve loop's poller, once it has parked. First, so
    /// that it is dropped (and the poller forgets the socket) before the connection.
    pub(crate) registration: Option<Registration>,
    /// `park` was called during this exchange.
    park: bool,
    /// The PROXY header was read and `verify_request` passed (or neither applies): set
    /// by the engine before a parked connection's first exchange.
    pub(crate) opened: bool,
    /// When the first bytes of a message still incomplete arrived: the engine gathers
    /// a framed message in the poller, and its idle time counts from here.
    pub(crate) partial_since: Option<Instant>,
    /// How often a read right after an exchange found the client's next bytes lately
    /// (0 to 3, up on a find, down on nothing): the engine's guess of whether this client
    /// answers fast enough for such a read to pay.
    pub(crate) early_reads: u8,
    /// How many of the engine's occasional tries of such a read found nothing in a row
    /// (0 to 3): each halves how often it tries again, from one exchange in 8 to one
    /// in 64.
    pub(crate) quiet_probes: u8,
    /// What [`StreamRequest::send_from`] left to send, and the chunk on its way.
    outgoing: Option<Outgoing>,
    /// Exchanges run so far, this one included.
    exchanges: u64,
    /// What the handler keeps for this connection across exchanges, one value per type.
    state: Vec<(TypeId, Box<dyn Any + Send>)>,
    /// In a cell, so that [`StreamRequest::reader`] lends it through `&self`.
    reader: RefCell<Reader>,
    writer: Writer,
    connection: Arc<Connection>,
    client: Address,
    /// The peer that connected, when a PROXY protocol header named another client.
    proxy: Option<Address>,
    server: ServerHandle,
    /// When the server accepted the connection (a stop gives one that has not sent its
    /// first message yet a moment to send it); `None` for a request built outside a
    /// server (`testing`).
    pub(crate) accepted_at: Option<Instant>,
    /// When the connection became ready for its next exchange (accepted, or readable
    /// while parked), until that exchange starts: the server's queue wait.
    pub(crate) ready_at: Option<Instant>,
    /// The connection's number and state, and the server's `connection_state` hook;
    /// `None` for a request built outside a server (`testing`).
    pub(crate) states: Option<super::States>,
}

impl StreamRequest {
    /// Moves the connection to `state`, for the server's hook (if it has one) and its
    /// count of open connections.
    pub(crate) fn enter_state(&mut self, state: super::ConnState) {
        if let Some(states) = &mut self.states {
            if states.enter(&self.client, state) && state.is_last() {
                self.server.control().counters.connections_ended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The one place a connection's end is reported, whichever way it ends.
impl Drop for StreamRequest {
    fn drop(&mut self) {
        self.enter_state(super::ConnState::Closed);
    }
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
        let inward = Traffic::new(server.clone(), true);
        let outward = Traffic::new(server.clone(), false);
        let reader = Reader::new(ConnHandle::new(connection.clone(), read_timeout, inward), rbufsize);
        let writer = Writer::new(ConnHandle::new(connection.clone(), write_timeout, outward), wbufsize);
        StreamRequest {
            registration: None,
            park: false,
            opened: false,
            partial_since: None,
            accepted_at: None,
            early_reads: 0,
            quiet_probes: 0,
            outgoing: None,
            exchanges: 1,
            state: Vec::new(),
            reader: RefCell::new(reader),
            writer,
            connection,
            client,
            proxy: None,
            server,
            ready_at: None,
            states: None,
        }
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
    /// use std::io::Write;
    /// use std::time::{Duration, Instant};
    ///
    /// let server = socketserver::TcpServer::bind("127.0.0.1:0", |req| {
    ///     let mut line = Vec::new();
    ///     loop {
    ///         req.set_deadline(Some(Instant::now() + Duration::from_secs(10)));
    ///         line.clear();
    ///         if req.reader().read_line_bounded(&mut line, 4096)? == 0 {
    ///             return Ok(());
    ///         }
    ///         req.writer().write_all(&line)?;
    ///     }
    /// })?;
    /// # drop(server);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.get_mut().set_deadline(deadline);
        self.writer.set_deadline(deadline);
    }

    /// The buffered reader over the connection (Python's `rfile`), as a [`ReaderRef`]
    /// that is [`Read`](std::io::Read) and [`BufRead`](std::io::BufRead).
    ///
    /// It borrows the request only as `&self` does, so the reader, the
    /// [`writer`](StreamRequest::writer) and the client's address go together in one
    /// loop; each read borrows the reader for that call (see [`ReaderRef`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use std::net::{Shutdown, TcpStream};
    ///
    /// let server = socketserver::TcpServer::bind("127.0.0.1:0", |req| {
    ///     for line in req.reader().lines() {
    ///         let line = line?;
    ///         writeln!(req.writer(), "{} said {line}", req.client_addr().ip().unwrap())?;
    ///     }
    ///     Ok(())
    /// })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    /// let mut client = TcpStream::connect(addr)?;
    /// client.write_all(b"hi\n")?;
    /// client.shutdown(Shutdown::Write)?;
    /// let mut reply = String::new();
    /// BufReader::new(&client).read_line(&mut reply)?;
    /// assert_eq!(reply, "127.0.0.1 said hi\n");
    /// background.stop()?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    #[doc(alias = "rfile")]
    pub fn reader(&self) -> ReaderRef<'_> {
        ReaderRef::new(&self.reader)
    }

    /// The writer over the connection (Python's `wfile`). `&Writer` is
    /// [`Write`](std::io::Write), as `&TcpStream` is, so `writeln!(req.writer(), ..)`
    /// goes with reading and with `req.client_addr()` in the same statement.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let server = socketserver::TcpServer::bind("127.0.0.1:0", |req| {
    ///     writeln!(req.writer(), "hello {}", req.client_addr())?;
    ///     Ok(())
    /// })?;
    /// # drop(server);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    #[doc(alias = "wfile")]
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The reader and the writer themselves, mutably, for code that takes a
    /// `&mut Reader` (or a `&mut impl BufRead` and a `&mut impl Write` that must not
    /// borrow at run time). [`reader`](StreamRequest::reader) and
    /// [`writer`](StreamRequest::writer) go together too:
    /// `io::copy(&mut req.reader(), &mut req.writer())`.
    pub fn reader_and_writer(&mut self) -> (&mut Reader, &mut Writer) {
        (self.reader.get_mut(), &mut self.writer)
    }

    /// The reader itself, for the server's own steps.
    pub(crate) fn reader_mut(&mut self) -> &mut Reader {
        self.reader.get_mut()
    }

    /// The reader, and the client's address beside it (for a report of a failed read,
    /// without copying the address at each read).
    pub(crate) fn reader_and_client(&mut self) -> (&mut Reader, &Address) {
        (self.reader.get_mut(), &self.client)
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
        let header = read_header(self.reader.get_mut());
        self.set_deadline(None);
        if let ProxyHeader::Proxied { source, .. } = header? {
            self.proxy = Some(std::mem::replace(&mut self.client, Address::Inet(source)));
        }
        Ok(())
    }

    /// The connection (Python's `request`), for timeouts, `TCP_NODELAY` and the like.
    /// Reading from it directly bypasses the reader's buffer.
    ///
    /// One limit (Linux, a parked TCP connection): a handler that reads TCP urgent data
    /// itself, out of band (`MSG_OOB`), hides it from the server's poller, and a message
    /// that follows the urgent byte is then served only at the idle timeout's look (never,
    /// without an idle timeout). Urgent data the handler leaves alone is seen to.
    #[doc(alias = "request")]
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The connection, shared, for the poller it parks in.
    pub(crate) fn connection_arc(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// A handle to the server (Python's `self.server`): its address, and `shutdown`.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// Sends everything `source` reads, after `handle` returns, without holding a thread
    /// while the client is slow to take it: the server writes what the connection
    /// accepts and, when the client's window is full, waits for it in the poller, the
    /// connection [parked](StreamRequest::park) for writing, so that a client reading a
    /// large reply slowly holds no worker from the others. What the handler wrote to the
    /// [`writer`](StreamRequest::writer) (a header) goes first; with a buffered writer
    /// ([`Builder::wbufsize`](crate::Builder::wbufsize)) leave it unflushed, and it leaves
    /// with the body's first bytes in one send (a small reply in one segment, not two).
    /// Then the connection goes
    /// on as the handler said: it parks for the next message if `handle` called
    /// [`park`](StreamRequest::park), else `finish` runs and it closes.
    ///
    /// A client that takes nothing for the write timeout
    /// ([`Builder::write_timeout`](crate::Builder::write_timeout), else the idle
    /// timeout) is closed, and so is every connection still sending a body at a
    /// shutdown (a reply the writer held when `handle` parked is sent whole, within the
    /// shutdown's deadline, as a running request's is).
    /// `source` is read on a worker, a chunk (64 KiB) at a time, so it should not block
    /// for long: a file is right, a socket to another server is not. Outside the serve
    /// loop ([`Server::process_request`](crate::Server::process_request)) and in memory
    /// ([`testing`](crate::testing)) it is sent at once, blocking, as a write would be.
    ///
    /// Why a body to send rather than a minimum transfer rate or a deadline per reply:
    /// either of those still holds a thread for the whole reply (minutes for a large file
    /// at a slow but honest rate) and cuts off clients that are merely slow; waiting in
    /// the poller costs the slow client nothing and the others no thread.
    ///
    /// # Examples
    ///
    /// A file after its header:
    ///
    /// ```
    /// use std::io::{Read, Write};
    ///
    /// let server = socketserver::TcpServer::bind("127.0.0.1:0", |req| {
    ///     let body = vec![b'x'; 1 << 20]; // a file, in a real server
    ///     write!(req.writer(), "{} bytes follow\n", body.len())?;
    ///     req.send_from(std::io::Cursor::new(body));
    ///     Ok(())
    /// })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    /// let mut reply = Vec::new();
    /// std::net::TcpStream::connect(addr)?.read_to_end(&mut reply)?;
    /// assert!(reply.starts_with(b"1048576 bytes follow\n"));
    /// assert_eq!(reply.len(), 21 + (1 << 20));
    /// background.stop()?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn send_from(&mut self, source: impl Read + Send + 'static) {
        self.outgoing = Some(Outgoing { source: Some(Box::new(source)), chunk: Vec::new(), at: 0, len: 0 });
    }

    /// Makes the reply the writer holds the body to send from the poller, as
    /// [`send_from`](StreamRequest::send_from) does, before the connection parks: a
    /// client that does not read its replies then holds no thread while they wait (a
    /// blocking flush held the thread until the write timeout, and then again for each
    /// write the kernel took a few bytes of). Whether there was one, on a real socket.
    pub(crate) fn send_buffered_reply(&mut self) -> bool {
        if self.outgoing.is_some() || self.connection.sock().is_none() || !self.writer.holds_bytes() {
            return false;
        }
        let chunk = self.writer.take_buffered();
        let len = chunk.len();
        self.outgoing = Some(Outgoing { source: None, chunk, at: 0, len });
        true
    }

    /// Whether a body from [`StreamRequest::send_from`] waits to be sent from the
    /// poller (a real socket; in memory it is sent at the end, blocking).
    pub(crate) fn sending(&self) -> bool {
        self.outgoing.is_some() && self.connection.sock().is_some()
    }

    /// Starts sending a body from `send_from`, or flushes the writer: the bytes the
    /// writer holds (a reply's head) become the start of the body's first chunk, so
    /// that a small reply leaves in one send, one segment, rather than a head and then a
    /// body (which cost a quarter of the `http` example's rate at 128 connections). If
    /// that first read of the body fails, the head is not sent either: the client sees
    /// the connection end, not a head whose body never comes.
    pub(crate) fn begin_send(&mut self) -> io::Result<()> {
        match &mut self.outgoing {
            Some(out) if out.chunk.is_empty() => {
                let head = self.writer.take_buffered();
                if head.is_empty() {
                    return Ok(()); // nothing to join: `pump` reads the body as it goes
                }
                let at = head.len();
                out.chunk = head;
                out.chunk.resize(at + SEND_CHUNK, 0);
                let n = read_source(out, at)?;
                (out.at, out.len) = (0, at + n);
                Ok(())
            }
            _ => self.writer.flush(),
        }
    }

    /// Sends what the connection takes now of the body, at most `budget` bytes:
    /// [`Pumped::Blocked`] when the client's window is full.
    pub(crate) fn pump(&mut self, budget: usize) -> io::Result<Pumped> {
        let Some(out) = &mut self.outgoing else { return Ok(Pumped::Done) };
        let mut sent = 0;
        loop {
            if out.at == out.len {
                if out.source.is_none() {
                    self.outgoing = None;
                    return Ok(Pumped::Done);
                }
                if sent >= budget {
                    return Ok(Pumped::Yield);
                }
                out.chunk.resize(SEND_CHUNK, 0);
                let n = read_source(out, 0)?;
                if n == 0 {
                    self.outgoing = None;
                    return Ok(Pumped::Done);
                }
                (out.at, out.len) = (0, n);
            }
            match self.connection.write_available(&out.chunk[out.at..out.len]) {
                Ok(n) => {
                    self.server.control().counters.bytes_out.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    out.at += n;
                    sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pumped::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the rest of the body, blocking: in memory, or outside the serve loop.
    pub(crate) fn send_rest(&mut self) -> io::Result<()> {
        let Some(mut out) = self.outgoing.take() else { return Ok(()) };
        self.writer.write_all(&out.chunk[out.at..out.len])?;
        if let Some(source) = &mut out.source {
            io::copy(source, &mut self.writer)?;
        }
        self.writer.flush()
    }

    /// Whether what waits to be sent is a reply the writer held
    /// ([`StreamRequest::send_buffered_reply`]), not a body from `send_from`.
    pub(crate) fn sending_reply(&self) -> bool {
        self.outgoing.as_ref().is_some_and(|out| out.source.is_none())
    }

    /// Gives up the rest of the body: the connection ends (too slow a client, or a
    /// shutdown).
    pub(crate) fn abandon_send(&mut self) {
        self.outgoing = None;
    }

    /// Flushes the writer, after `finish`.
    pub(crate) fn flush_writer(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Ends this exchange without ending the connection: when `handle` returns `Ok`, the
    /// server sends what the writer holds (from the poller, as a body from
    /// [`send_from`](StreamRequest::send_from): a client that does not read holds no
    /// thread) and keeps the connection, parked in its poller with no
    /// thread, until the client sends more; then it calls `handle` again with this same
    /// request, on a thread of the dispatch mode (a pool worker, a new thread, or the
    /// sequential loop). A keep-alive protocol (HTTP/1.1, RESP, a line protocol) answers
    /// one message per `handle` and parks, so that a few threads serve many clients.
    ///
    /// What the request keeps while parked: the bytes already read into its
    /// [`Reader`] (pipelined messages are served at once, without waiting), its client
    /// and proxy addresses, and [`state`](StreamRequest::state). `setup` ran once,
    /// before the first exchange; `finish` runs once, when the connection really ends:
    ///
    /// - the client closes or resets it while parked (`handle` is not called for that);
    /// - it stays parked longer than the idle timeout
    ///   ([`Builder::idle_timeout`](crate::Builder::idle_timeout), 60 s by default);
    /// - the server shuts down, which closes parked connections at once;
    /// - `handle` returns without calling `park`, or fails, or panics.
    ///
    /// A deadline set with [`set_deadline`](StreamRequest::set_deadline) is cleared when
    /// the request parks. A parked connection counts against `max_connections` and in
    /// [`Stats::parked`](crate::Stats::parked). Once a parked client's next message has
    /// begun, the rest of it must arrive within the read timeout; without one, the idle
    /// timeout bounds each read of an exchange after the first, so a client that sends
    /// half a message cannot hold a thread for longer.
    ///
    /// A handler that loops until end-of-file never calls `park` and keeps its thread
    /// for the whole connection, which is simpler when there are fewer clients than
    /// threads. A connection that [`process_request`](crate::Server::process_request)
    /// runs outside the serve loop does not park: it ends after the exchange.
    ///
    /// # Examples
    ///
    /// A line protocol served by a pool of two workers, however many clients keep their
    /// connections open:
    ///
    /// ```
    /// use std::io::{self, BufRead, BufReader, Write};
    /// use std::net::TcpStream;
    /// use socketserver::{dispatch::Pool, StreamRequest};
    ///
    /// let handler = |req: &mut StreamRequest| -> socketserver::HandlerResult {
    ///     let mut line = String::new();
    ///     if req.reader().read_line(&mut line)? == 0 {
    ///         return Ok(()); // the client is gone
    ///     }
    ///     write!(req.writer(), "{}", line.to_uppercase())?;
    ///     req.park(); // wait for the next line without holding a worker
    ///     Ok(())
    /// };
    /// let server = socketserver::TcpServer::builder("127.0.0.1:0").dispatch(Pool::new(2)).bind(handler)?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    /// // Five clients connected at once, more than the pool's two workers.
    /// let mut clients: Vec<_> = (0..5).map(|_| TcpStream::connect(addr)).collect::<io::Result<_>>()?;
    /// for (n, client) in clients.iter_mut().enumerate() {
    ///     writeln!(client, "hello {n}")?;
    ///     let mut reply = String::new();
    ///     BufReader::new(client).read_line(&mut reply)?;
    ///     assert_eq!(reply, format!("HELLO {n}\n"));
    /// }
    /// background.stop()?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    #[doc(alias = "keep_alive")]
    pub fn park(&mut self) {
        self.park = true;
    }

    /// How many exchanges this connection has had, this one included: 1 until it has
    /// [parked](StreamRequest::park) and come back.
    pub fn exchanges(&self) -> u64 {
        self.exchanges
    }

    /// The connection's value of type `T`, made with `T::default()` the first time it is
    /// asked for. It lives as long as the connection, across [parked](StreamRequest::park)
    /// exchanges, and is dropped after `finish`: the place for what a keep-alive
    /// handler remembers about one client (a logged-in user, a selected database, a
    /// count), while what all clients share belongs in the handler's fields.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, Write};
    /// use socketserver::StreamRequest;
    ///
    /// #[derive(Default)]
    /// struct Session {
    ///     lines: u64,
    /// }
    ///
    /// let handler = |req: &mut StreamRequest| -> socketserver::HandlerResult {
    ///     let mut line = String::new();
    ///     if req.reader().read_line(&mut line)? == 0 {
    ///         return Ok(());
    ///     }
    ///     let session = req.state::<Session>();
    ///     session.lines += 1;
    ///     let n = session.lines;
    ///     writeln!(req.writer(), "line {n} of this connection")?;
    ///     req.park();
    ///     Ok(())
    /// };
    /// # let _ = socketserver::TcpServer::bind("127.0.0.1:0", handler)?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn state<T: Default + Send + 'static>(&mut self) -> &mut T {
        let id = TypeId::of::<T>();
        let index = match self.state.iter().position(|(t, _)| *t == id) {
            Some(index) => index,
            None => {
                self.state.push((id, Box::new(T::default())));
                self.state.len() - 1
            }
        };
        self.state[index].1.downcast_mut().expect("state is stored under its own type")
    }

    /// Whether `park` was called in the exchange that just ran; clears it for the next.
    pub(crate) fn take_park(&mut self) -> bool {
        std::mem::take(&mut self.park)
    }

    /// The request is about to wait in the poller: nothing buffered to write, no write
    /// buffer held, and no read buffer held unless it holds the start of a message. `fallback` is the read timeout for the exchanges to come when the
    /// server sets none (the idle timeout).
    /// Whether the writer holds bytes that [`StreamRequest::prepare_to_park`] will
    /// flush first (a write that may wait for the client).
    pub(crate) fn reply_buffered(&mut self) -> bool {
        self.writer.holds_bytes()
    }

    pub(crate) fn prepare_to_park(&mut self, fallback: Option<Duration>) -> io::Result<()> {
        // A deadline set for this exchange's message must not fail the next one, which
        // may come any time within the idle timeout.
        self.set_deadline(None);
        self.writer.flush()?;
        self.writer.release_buffer();
        let reader = self.reader.get_mut();
        reader.release_buffer();
        if self.exchanges <= 1 && reader.timeout().is_none() && fallback.is_some() {
            reader.set_timeout(fallback)?;
        }
        Ok(())
    }

    /// The parked request is back for another exchange. Returns whether it is its
    /// first: it was parked before it started ([`StreamRequest::mark_unstarted`]).
    pub(crate) fn resumed(&mut self) -> bool {
        self.exchanges += 1;
        self.exchanges == 1
    }

    /// The request parks before its first exchange: `exchanges` counts from 0.
    pub(crate) fn mark_unstarted(&mut self) {
        self.exchanges = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read, Write};
    use std::sync::Arc;

    use super::*;
    use crate::handle::Control;
    use crate::net::{tcp_pair, test_client};

    #[test]
    fn a_buffered_head_leaves_with_the_body_in_one_send() {
        let (server, mut client) = tcp_pair();
        let control = Arc::new(Control::detached(test_client()));
        let connection = Arc::new(Connection::Tcp(server));
        let mut request =
            StreamRequest::new(connection, test_client(), ServerHandle::new(control), 64, 1024, (None, None));
        request.writer().write_all(b"HEAD\n").unwrap();
        request.send_from(io::Cursor::new(b"body".to_vec()));
        request.begin_send().unwrap();
        // Nothing has been sent yet: the head waits in the body's first chunk.
        client.set_nonblocking(true).unwrap();
        let early = client.read(&mut [0; 16]);
        assert_eq!(early.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock), "the head was sent on its own");
        assert_eq!(request.pump(1 << 20).unwrap(), Pumped::Done);
        drop(request);
        client.set_nonblocking(false).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"HEAD\nbody");
    }

    fn request_with_rbufsize(rbufsize: usize) -> (StreamRequest, std::net::TcpStream) {
        let (server, client) = tcp_pair();
        let control = Arc::new(Control::detached(test_client()));
        let connection = Arc::new(Connection::Tcp(server));
        (StreamRequest::new(connection, test_client(), ServerHandle::new(control), rbufsize, 0, (None, None)), client)
    }

    #[test]
    fn a_parked_connection_holds_no_read_buffer_and_the_next_reader_keeps_to_its_own_rbufsize() {
        // All on this test's thread, which keeps the buffer each parked reader gives up.
        // Every read here has its bytes waiting: a blocking one has a read timeout, and
        // the reads without waiting a deadline, so a regression fails instead of hanging.
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let leave_a_large_spare = || {
            let (mut big, mut client) = request_with_rbufsize(4096);
            big.reader_mut().set_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            client.write_all(&[b'a'; 3000]).unwrap();
            let mut read = 0;
            while read < 3000 {
                let n = big.reader_mut().fill_buf().unwrap().len();
                big.reader_mut().consume(n);
                read += n;
            }
            big.prepare_to_park(None).unwrap();
            assert!(!big.reader_mut().holds_buffer(), "a parked connection holds no read buffer");
        };
        leave_a_large_spare();
        let (mut small, mut small_client) = request_with_rbufsize(16);
        small.reader_mut().set_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        small_client.write_all(&[b'b'; 100]).unwrap();
        let buffered = small.reader_mut().fill_buf().unwrap();
        assert!(buffered.len() <= 16, "fill_buf read {} bytes into a buffer of 16", buffered.len());
        let n = buffered.len();
        small.reader_mut().consume(n);
        // The engine's read without waiting, from a fresh large spare.
        let (mut other, mut other_client) = request_with_rbufsize(16);
        leave_a_large_spare();
        other_client.write_all(&[b'c'; 100]).unwrap();
        let read = loop {
            match other.reader_mut().read_available(1 << 20) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < limit => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    leave_a_large_spare();
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(read <= 16, "read_available read {read} bytes into a buffer of 16");
        assert_eq!(other.reader_mut().buffer(), &[b'c'; 16][..read]);
    }
}
