//! The reading and writing sides of a stream request (Python's `rfile` and `wfile`).

use std::cell::{Cell, RefCell, RefMut};
use std::fmt;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handle::ServerHandle;
use crate::net::Connection;

/// A shared reference to the connection that reads and writes through `&Connection`,
/// so the reader, the writer and the server's forced close can all hold it at once.
///
/// The reader and the writer each own one, with the request's deadline and the
/// configured timeout of their direction. Without a deadline the socket's own timeout
/// applies and an operation costs no extra system call; with one, each operation waits
/// at most the time left (or the configured timeout, if shorter).
#[derive(Debug, Clone)]
pub(super) struct ConnHandle {
    connection: Arc<Connection>,
    /// Where the bytes that go through are counted: the server's bytes in (reading) or
    /// out (writing).
    traffic: Traffic,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    /// The socket's timeout was changed for a deadline and must be put back.
    overridden: bool,
}

impl ConnHandle {
    /// A handle with no deadline, whose direction's configured timeout is `timeout`.
    pub(super) fn new(connection: Arc<Connection>, timeout: Option<Duration>, traffic: Traffic) -> ConnHandle {
        ConnHandle { connection, traffic, deadline: None, timeout, overridden: false }
    }

    /// Runs one read or write under the deadline, if one is set. A socket timeout is
    /// reported as [`TimedOut`](io::ErrorKind::TimedOut) saying so, on every platform:
    /// Unix reports it as `WouldBlock` ("Resource temporarily unavailable", which
    /// says nothing of time), Windows as `TimedOut`. A `WouldBlock` that comes at once
    /// (a socket the handler made non-blocking) stays what it is.
    fn timed<T>(
        &mut self,
        set_timeout: fn(&Connection, Option<Duration>) -> io::Result<()>,
        stalled: &str,
        op: impl FnOnce(&Connection) -> io::Result<T>,
    ) -> io::Result<T> {
        let timeout = self.timeout;
        let start = timeout.map(|_| Instant::now());
        // The configured timeout ran out (rather than a non-blocking socket having
        // nothing): at least half of it has passed.
        let timed_out = |e: &io::Error| {
            matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
                && start.zip(timeout).is_some_and(|(start, timeout)| start.elapsed() >= timeout / 2)
        };
        let said = |timeout: Option<Duration>| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out: {stalled} for {:?}", timeout.unwrap_or_default()),
            )
        };
        let Some(deadline) = self.deadline else {
            return op(&self.connection).map_err(|e| if timed_out(&e) { said(timeout) } else { e });
        };
        let passed = || io::Error::new(io::ErrorKind::TimedOut, "the request's deadline has passed");
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(passed());
        }
        set_timeout(&self.connection, Some(self.timeout.map_or(left, |t| t.min(left))))?;
        self.overridden = true;
        op(&self.connection).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if Instant::now() >= deadline => passed(),
            // The configured timeout, sooner than the deadline.
            _ if timed_out(&e) => said(timeout),
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

/// A server's count of bytes in one direction, for its metrics.
#[derive(Debug, Clone)]
pub(super) struct Traffic {
    server: ServerHandle,
    incoming: bool,
}

impl Traffic {
    pub(super) fn new(server: ServerHandle, incoming: bool) -> Traffic {
        Traffic { server, incoming }
    }

    pub(super) fn count(&self, bytes: usize) {
        let counters = &self.server.control().counters;
        let total = if self.incoming { &counters.bytes_in } else { &counters.bytes_out };
        total.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Read for ConnHandle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.timed(Connection::set_read_timeout, "the client sent nothing", |mut c| c.read(buf))?;
        self.traffic.count(n);
        Ok(n)
    }
}

impl Write for ConnHandle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.timed(Connection::set_write_timeout, "the client took nothing", |mut c| c.write(buf))?;
        self.traffic.count(n);
        Ok(n)
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
    /// Initialized bytes, at most `rbufsize` of them (more only while the engine gathers
    /// a framed message longer than that); its allocation may be larger, when it came
    /// from a thread's spare. Only `buf[pos..filled]` holds data not yet consumed, read
    /// from this connection: the rest is never shown.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    capacity: usize,
    /// How much of the buffer the next read makes ready: 1 KiB at first, doubling each
    /// time a read fills it, up to `capacity`. Kept when the buffer is freed as the
    /// connection parks, so that a connection that sends large messages does not start
    /// again from 1 KiB at each exchange (64 exchanges for a 64 KiB message).
    window: usize,
    /// The last read from the socket returned less than it asked for (or nothing yet,
    /// without waiting): the socket had no more at that moment.
    drained: bool,
}

/// How much of the read buffer is made ready for the first read.
const FIRST_READ_WINDOW: usize = 1024;

/// The largest read buffer a thread keeps as its spare.
const SPARE_MAX: usize = 64 * 1024;

thread_local! {
    /// The read buffer the last connection this thread parked gave up, initialized
    /// already, for the next connection the thread reads from: a keep-alive exchange
    /// then neither allocates, zeroes nor frees a buffer (a tenth of the instructions of
    /// a small echo exchange). The bytes it held are never shown: a reader shows only
    /// what its own reads put in. One per thread, of at most [`SPARE_MAX`] allocated, so
    /// what is kept is bounded by the threads, never by the connections: a parked
    /// connection still holds no buffer.
    // (Const already: clippy says otherwise on the Windows target CI checks, whose std
    // keeps thread locals in the OS's slots; as `handle.rs`'s `CURRENT`.)
    #[cfg_attr(windows, allow(clippy::missing_const_for_thread_local))]
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

impl Reader {
    pub(super) fn new(source: ConnHandle, capacity: usize) -> Reader {
        let capacity = capacity.max(1);
        Reader {
            source,
            buf: Vec::new(),
            pos: 0,
            filled: 0,
            capacity,
            window: FIRST_READ_WINDOW.min(capacity),
            drained: false,
        }
    }

    /// The bytes received and not yet consumed, without reading more: a handler that
    /// batches replies (pipelining) flushes when this is empty.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    pub(super) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.source.set_deadline(deadline, Connection::set_read_timeout);
    }

    /// Gives up the buffer while nothing is buffered, as a connection parks: a parked
    /// connection holds no read buffer. It becomes the thread's spare (or is freed, if
    /// larger than [`SPARE_MAX`]); the next read takes the spare of the thread it runs
    /// on, or allocates.
    pub(super) fn release_buffer(&mut self) {
        if self.pos == self.filled {
            let buf = std::mem::take(&mut self.buf);
            self.pos = 0;
            self.filled = 0;
            if !buf.is_empty() && buf.capacity() <= SPARE_MAX {
                // (Fails only as the thread ends: the buffer is freed.)
                let _ = SPARE.try_with(|spare| spare.set(buf));
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Makes at least `want` bytes of buffer ready: the thread's spare buffer if this
    /// reader holds none (cut to `capacity`), grown and zeroed as needed.
    fn make_ready(&mut self, want: usize) {
        if self.buf.is_empty() {
            if let Ok(mut spare) = SPARE.try_with(Cell::take) {
                // A spare from a server with a larger `rbufsize` is used up to this one's.
                spare.truncate(self.capacity);
                self.buf = spare;
            }
        }
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }

    /// Sets the per-read timeout of the socket and of this reader's deadline handling.
    pub(super) fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.source.connection.set_read_timeout(timeout)?;
        self.source.timeout = timeout;
        Ok(())
    }

    /// Reads what the connection has, without waiting, after the bytes buffered (moved
    /// to the front first), growing the buffer as needed up to `limit` bytes in all:
    /// how the engine gathers a whole message in the poller. Returns the bytes read, 0
    /// at the end of the stream or when the buffer holds `limit` bytes already;
    /// `WouldBlock` when nothing has arrived.
    pub(crate) fn read_available(&mut self, limit: usize) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        if self.filled >= limit {
            return Ok(0);
        }
        if self.filled == self.buf.len() {
            self.make_ready((self.buf.len() * 2).max(self.window).min(limit));
        }
        // Never past `limit`, even into a buffer that is larger already.
        let end = self.buf.len().min(limit);
        let n = match self.source.connection.read_available(&mut self.buf[self.filled..end]) {
            Ok(n) => {
                self.source.traffic.count(n);
                n
            }
            Err(e) => {
                self.drained = e.kind() == io::ErrorKind::WouldBlock;
                // Nothing came: a connection about to park keeps no empty buffer.
                self.release_buffer();
                return Err(e);
            }
        };
        self.drained = self.filled + n < end;
        self.filled += n;
        if self.filled == end {
            // The read filled what was ready: start larger next time.
            self.window = (self.window * 2).min(self.capacity);
        }
        Ok(n)
    }

    /// The most the buffer holds (`rbufsize`).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the last read from the socket took all it had then: it returned less
    /// than it asked for, or found nothing without waiting. More may have come since;
    /// the poller says so.
    pub(crate) fn drained(&self) -> bool {
        self.drained
    }

    /// The read timeout in force without a deadline.
    pub(super) fn timeout(&self) -> Option<Duration> {
        self.source.timeout
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
            let n = self.source.read(out)?;
            self.drained = n < out.len();
            return Ok(n);
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
    ///
    /// let server = socketserver::TcpServer::bind("127.0.0.1:0", |req| {
    ///     let mut line = Vec::new();
    ///     match req.reader().read_line_bounded(&mut line, 1024) {
    ///         Ok(_) => req.writer().write_all(&line)?,
    ///         Err(e) if e.kind() == io::ErrorKind::InvalidData => req.writer().write_all(b"line too long\n")?,
    ///         Err(e) => return Err(e.into()),
    ///     }
    ///     Ok(())
    /// })?;
    /// # drop(server);
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
                self.make_ready(self.window);
            }
            let n = self.source.read(&mut self.buf)?;
            self.drained = n < self.buf.len();
            if n == self.buf.len() && n < self.capacity {
                self.window = (n * 2).min(self.capacity);
                self.buf.resize(self.window, 0);
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
/// [`StreamRequest::writer`](crate::StreamRequest::writer) lends it through `&self`,
/// and `&Writer` is [`Write`] (as `&TcpStream` is), so a handler writes while it reads
/// or looks at the request:
/// `for line in req.reader().lines() { writeln!(req.writer(), "{}: {}", req.client_addr(), line?)?; }`.
/// Each write borrows the writer for that call only.
///
/// Unbuffered by default: every `write` sends all its bytes before returning, so
/// `write` always returns the full length, as Python's `wfile.write` does, and nothing
/// waits in a buffer when the handler reads the client's next message. A formatted
/// write (`write!`, `writeln!`) is formatted first and sent in one call, however many
/// pieces it has: `writeln!(w, "250 hello {name} ok")` is one segment on the wire, not
/// three (which Nagle's algorithm and the client's delayed ACK would hold for ~40 ms).
/// Build a reply of several `write_all` calls in a `Vec` or a `format!` and send it
/// once, for the same reason.
///
/// With a `wbufsize` above zero it is a [`BufWriter`]: writes wait in the buffer until it
/// fills or [`flush`](Write::flush) is called, so a handler that answers a message and
/// then reads the next must flush first. Either way the server flushes it after
/// `finish`.
///
/// # Errors
///
/// A write made from inside another write on the same writer (a `Display` impl that
/// writes to the writer it is being formatted into) fails with
/// [`ErrorKind::Other`](io::ErrorKind::Other) instead of interleaving the bytes.
#[doc(alias = "wfile")]
pub struct Writer {
    state: RefCell<WriterState>,
}

struct WriterState {
    inner: WriterInner,
    /// Where an unbuffered writer formats a `write!` before sending it in one call.
    formatted: Vec<u8>,
}

enum WriterInner {
    Direct(ConnHandle),
    Buffered(BufWriter<ConnHandle>),
    /// A buffered writer whose buffer was freed while its connection is parked; the
    /// next write allocates one of this capacity again.
    Idle(ConnHandle, usize),
    /// Only while switching between the other states.
    Taken,
}

impl Writer {
    /// Unbuffered with a `wbufsize` of zero, else a `BufWriter` of that capacity.
    pub(super) fn new(handle: ConnHandle, wbufsize: usize) -> Writer {
        let inner = if wbufsize == 0 {
            WriterInner::Direct(handle)
        } else {
            WriterInner::Buffered(BufWriter::with_capacity(wbufsize, handle))
        };
        Writer { state: RefCell::new(WriterState { inner, formatted: Vec::new() }) }
    }

    /// Whether bytes wait in the buffer for a flush.
    pub(crate) fn holds_bytes(&mut self) -> bool {
        matches!(&self.state.get_mut().inner, WriterInner::Buffered(w) if !w.buffer().is_empty())
    }

    pub(super) fn set_deadline(&mut self, deadline: Option<Instant>) {
        let handle = match &mut self.state.get_mut().inner {
            WriterInner::Direct(handle) | WriterInner::Idle(handle, _) => handle,
            WriterInner::Buffered(writer) => writer.get_mut(),
            WriterInner::Taken => return,
        };
        handle.set_deadline(deadline, Connection::set_write_timeout);
    }

    /// Whether the writer holds a buffer now (for the tests of parking).
    #[cfg(test)]
    pub(crate) fn holds_buffer(&self) -> bool {
        matches!(self.state.borrow().inner, WriterInner::Buffered(_))
    }

    /// Frees the buffers while nothing waits in them, as a connection parks: a parked
    /// connection holds no write buffer (a `wbufsize` of 16 KiB would otherwise stay
    /// allocated for every idle client). The next write allocates it again.
    pub(super) fn release_buffer(&mut self) {
        self.state.get_mut().formatted = Vec::new();
        self.idle_if(|buffered| buffered.is_empty());
    }

    /// Takes the bytes the buffer holds, unsent, and frees the buffer (as
    /// [`release_buffer`](Writer::release_buffer) does): they go out with the first chunk
    /// of a body from `send_from`, in one send. Empty when unbuffered or nothing waits.
    pub(super) fn take_buffered(&mut self) -> Vec<u8> {
        self.idle_if(|buffered| !buffered.is_empty()).unwrap_or_default()
    }

    /// Turns a buffered writer whose buffer passes `when` into an idle one (no buffer;
    /// the next write allocates one of the same capacity), giving back what the buffer
    /// held, unsent. `None`: unbuffered, idle already, or `when` said no.
    fn idle_if(&mut self, when: impl FnOnce(&[u8]) -> bool) -> Option<Vec<u8>> {
        let state = self.state.get_mut();
        let WriterInner::Buffered(writer) = &state.inner else { return None };
        if !when(writer.buffer()) {
            return None;
        }
        let capacity = writer.capacity();
        let WriterInner::Buffered(writer) = std::mem::replace(&mut state.inner, WriterInner::Taken) else {
            unreachable!("matched above")
        };
        let (handle, buffered) = writer.into_parts();
        state.inner = WriterInner::Idle(handle, capacity);
        Some(buffered.unwrap_or_else(|panicked| panicked.into_inner()))
    }

    /// The state, for one write through `&Writer`.
    fn state(&self) -> io::Result<RefMut<'_, WriterState>> {
        self.state.try_borrow_mut().map_err(|_| {
            io::Error::other("the writer was written to while it was writing (from a `Display` impl being written?)")
        })
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buffered =
            self.state.try_borrow().map(|s| matches!(s.inner, WriterInner::Buffered(_) | WriterInner::Idle(..)));
        let mut f = f.debug_struct("Writer");
        match buffered {
            Ok(buffered) => f.field("buffered", &buffered).finish(),
            Err(_) => f.finish_non_exhaustive(),
        }
    }
}

impl WriterState {
    /// A writer whose buffer was freed gets it back for a write.
    fn wake(&mut self) {
        if let WriterInner::Idle(..) = self.inner {
            if let WriterInner::Idle(handle, capacity) = std::mem::replace(&mut self.inner, WriterInner::Taken) {
                self.inner = WriterInner::Buffered(BufWriter::with_capacity(capacity, handle));
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wake();
        match &mut self.inner {
            WriterInner::Direct(c) => c.write_all(buf).map(|()| buf.len()),
            WriterInner::Buffered(w) => w.write(buf),
            WriterInner::Idle(..) | WriterInner::Taken => unreachable!("woken above"),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WriterInner::Direct(_) | WriterInner::Idle(..) | WriterInner::Taken => Ok(()),
            WriterInner::Buffered(w) => w.flush(),
        }
    }

    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
        self.wake();
        match &mut self.inner {
            WriterInner::Direct(c) => {
                if let Some(text) = args.as_str() {
                    return c.write_all(text.as_bytes());
                }
                self.formatted.clear();
                self.formatted.write_fmt(args)?;
                let sent = c.write_all(&self.formatted);
                if self.formatted.capacity() > 64 * 1024 {
                    self.formatted = Vec::new(); // a huge reply does not stay allocated
                }
                sent
            }
            WriterInner::Buffered(w) => w.write_fmt(args),
            WriterInner::Idle(..) | WriterInner::Taken => unreachable!("woken above"),
        }
    }
}

impl Write for &Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.state()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.state()?.flush()
    }

    /// Formats the whole text, then sends it in one call (see [`Writer`]).
    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
        self.state()?.write_fmt(args)
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.state.get_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.state.get_mut().flush()
    }

    /// Formats the whole text, then sends it in one call (see [`Writer`]).
    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
        self.state.get_mut().write_fmt(args)
    }
}

/// The reader of a stream request, lent by
/// [`StreamRequest::reader`](crate::StreamRequest::reader) through `&self`: it
/// implements [`Read`] and [`BufRead`] over the request's [`Reader`], so that reading
/// and writing go together,
/// `for line in req.reader().lines() { writeln!(req.writer(), "{}", line?)?; }`, and
/// the loop can still look at the request (`req.client_addr()`, `req.reader().buffer()`).
///
/// Each read borrows the reader for that call only; [`fill_buf`](BufRead::fill_buf)
/// (and [`buffer`](ReaderRef::buffer)) borrows it until the next
/// [`consume`](BufRead::consume) or until this `ReaderRef` is dropped, since the bytes
/// it returns live in the reader's buffer.
///
/// # Errors
///
/// A read through one `ReaderRef` while another holds the buffer (between its
/// `fill_buf` and `consume`) fails with [`ErrorKind::Other`](io::ErrorKind::Other)
/// saying so, instead of reading bytes out of order.
///
/// # Panics
///
/// `consume` and `buffer` panic in that same case, having no error to return.
pub struct ReaderRef<'a> {
    reader: &'a RefCell<Reader>,
    /// The reader, borrowed by `fill_buf` until `consume`.
    held: Option<RefMut<'a, Reader>>,
}

const READER_IN_USE: &str = "the request's reader is in use: another ReaderRef called fill_buf or buffer and \
                             has neither consumed nor been dropped";

impl<'a> ReaderRef<'a> {
    pub(crate) fn new(reader: &'a RefCell<Reader>) -> ReaderRef<'a> {
        ReaderRef { reader, held: None }
    }

    /// Runs `op` on the reader: the one this handle holds, or one borrowed for the call.
    fn with<T>(&mut self, op: impl FnOnce(&mut Reader) -> io::Result<T>) -> io::Result<T> {
        match &mut self.held {
            Some(reader) => op(reader),
            None => op(&mut *self.reader.try_borrow_mut().map_err(|_| io::Error::other(READER_IN_USE))?),
        }
    }

    /// Borrows the reader until `consume` or drop.
    fn hold(&mut self) -> io::Result<&mut Reader> {
        if self.held.is_none() {
            self.held = Some(self.reader.try_borrow_mut().map_err(|_| io::Error::other(READER_IN_USE))?);
        }
        Ok(self.held.as_mut().expect("held just now"))
    }

    /// The bytes received and not yet consumed, without reading more (see
    /// [`Reader::buffer`]). Holds the reader until `consume` or drop, as `fill_buf` does.
    ///
    /// # Panics
    ///
    /// If another `ReaderRef` holds the reader (see [`ReaderRef`]).
    pub fn buffer(&mut self) -> &[u8] {
        self.hold().expect(READER_IN_USE).buffer()
    }

    /// Reads one line of at most `max` bytes: see [`Reader::read_line_bounded`].
    pub fn read_line_bounded(&mut self, line: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        self.with(|reader| reader.read_line_bounded(line, max))
    }
}

impl fmt::Debug for ReaderRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.held, self.reader.try_borrow()) {
            (Some(reader), _) => reader.fmt(f),
            (None, Ok(reader)) => reader.fmt(f),
            (None, Err(_)) => f.debug_struct("ReaderRef").finish_non_exhaustive(),
        }
    }
}

impl Read for ReaderRef<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|reader| reader.read(buf))
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.with(|reader| reader.read_to_end(buf))
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        self.with(|reader| reader.read_to_string(buf))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.with(|reader| reader.read_exact(buf))
    }
}

impl BufRead for ReaderRef<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Err(e) = self.hold()?.fill_buf() {
            self.held = None;
            return Err(e);
        }
        Ok(self.held.as_ref().expect("held by fill_buf").buffer())
    }

    fn consume(&mut self, amt: usize) {
        match self.held.take() {
            Some(mut reader) => reader.consume(amt),
            None => self.reader.try_borrow_mut().expect(READER_IN_USE).consume(amt),
        }
    }

    fn read_until(&mut self, byte: u8, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.with(|reader| reader.read_until(byte, buf))
    }

    fn read_line(&mut self, buf: &mut String) -> io::Result<usize> {
        self.with(|reader| reader.read_line(buf))
    }
}
