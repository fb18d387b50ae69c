//! Message framing: how a stream server's messages are delimited, declared once on the
//! builder, so that the engine reads a whole message before it runs `handle`.

use std::fmt;
use std::io;
use std::sync::Arc;

/// How a stream server's messages are delimited: lines, a length prefix, or a function
/// of the bytes received. Declared with [`Builder::frame`](crate::Builder::frame).
///
/// TCP carries bytes, not messages: one `read` may return half a message, or one and a
/// half (the "粘包" of every socket tutorial). With a frame declared, the server reads
/// what each client sends without blocking, in the poller, until one whole message is
/// buffered, and only then runs `handle`, whose reads of that message return at once.
/// So a client that sends half a message and stops, or trickles a byte at a time,
/// holds no thread: its connection waits in the poller, with what it sent so far, and
/// [`Builder::idle_timeout`](crate::Builder::idle_timeout) counts from its message's
/// first byte (so a slow drip ends there). A message longer than the frame's maximum,
/// or malformed, is reported as [`Error::Message`](crate::Error::Message) and its
/// connection closed, before any of it is held in memory beyond the maximum.
///
/// Netty's `LineBasedFrameDecoder` and `LengthFieldBasedFrameDecoder`, and the way
/// Redis reads a whole command into its query buffer before running it, are the models.
///
/// A handler of a framed server reads one message per `handle` call and
/// [parks](crate::StreamRequest::park) the connection for the next; a message that
/// arrived with it (pipelined) is handled next without a read. With a frame, a new
/// connection also waits for its first whole message before `setup` runs, as with
/// [`Builder::client_speaks_first`](crate::Builder::client_speaks_first): a protocol in
/// which the server speaks first (a greeting) does not declare one.
///
/// # Examples
///
/// A line protocol that answers each line, however the client splits it:
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use socketserver::{dispatch::Pool, Frame, TcpServer};
///
/// let server = TcpServer::builder("127.0.0.1:0")
///     .dispatch(Pool::new(2))
///     .frame(Frame::lines(1024))
///     .bind(|req| {
///         let mut line = String::new();
///         req.reader().read_line(&mut line)?; // whole: it is buffered already
///         write!(req.writer(), "{}", line.to_uppercase())?;
///         req.park();
///         Ok(())
///     })?;
/// let addr = server.local_addr();
/// let background = server.serve_in_background()?;
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(b"hel")?; // half a line: no thread waits for the rest
/// client.write_all(b"lo\nwor")?;
/// client.write_all(b"ld\n")?;
/// let mut replies = BufReader::new(client);
/// let mut reply = String::new();
/// replies.read_line(&mut reply)?;
/// replies.read_line(&mut reply)?;
/// assert_eq!(reply, "HELLO\nWORLD\n");
/// background.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Frame {
    kind: Kind,
    max: usize,
}

/// A function that says how long the first message of the bytes buffered is.
type Measure = Arc<dyn Fn(&[u8]) -> io::Result<Option<usize>> + Send + Sync>;

#[derive(Clone)]
enum Kind {
    Bytes,
    Lines,
    Length { width: usize, order: ByteOrder },
    With(Measure),
}

/// The byte order of a length prefix ([`Frame::length_prefix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Most significant byte first ("network order"), as most protocols send lengths.
    BigEndian,
    /// Least significant byte first.
    LittleEndian,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Bytes => write!(f, "Frame::bytes({})", self.max),
            Kind::Lines => write!(f, "Frame::lines({})", self.max),
            Kind::Length { width, order } => write!(f, "Frame::length_prefix({width}, {order:?}, {})", self.max),
            Kind::With(_) => write!(f, "Frame::with({}, ..)", self.max),
        }
    }
}

impl Frame {
    /// No messages: whatever has arrived (at most `max` bytes) is handed to `handle`,
    /// for byte streams such as an echo or a relay, whose handler takes what is there.
    /// The reads happen without waiting, so `handle` runs only with bytes to take.
    ///
    /// # Panics
    /// Panics if `max` is zero.
    pub fn bytes(max: usize) -> Frame {
        assert!(max > 0, "a message holds at least one byte");
        Frame { kind: Kind::Bytes, max }
    }

    /// Lines ending in `\n` (so `\r\n` too), each at most `max` bytes, the newline
    /// included.
    ///
    /// # Panics
    /// Panics if `max` is zero.
    pub fn lines(max: usize) -> Frame {
        assert!(max > 0, "a line holds at least its newline");
        Frame { kind: Kind::Lines, max }
    }

    /// A length prefix of `width` bytes (1, 2, 4 or 8) in `order`, then that many bytes
    /// of body, the body at most `max` bytes. The message `handle` reads is the prefix
    /// and the body.
    ///
    /// # Panics
    /// Panics if `width` is not 1, 2, 4 or 8.
    pub fn length_prefix(width: usize, order: ByteOrder, max: usize) -> Frame {
        assert!(matches!(width, 1 | 2 | 4 | 8), "a length prefix is 1, 2, 4 or 8 bytes, not {width}");
        Frame { kind: Kind::Length { width, order }, max }
    }

    /// A function of the bytes buffered so far (they start at a message's first byte)
    /// that says how long the first message is: `Ok(Some(n))` once the first `n` bytes
    /// hold it whole, `Ok(None)` while more are needed, an error when they cannot
    /// begin a valid message. The engine asks again each time more bytes arrive, and
    /// reports a message that is still incomplete at `max` bytes as too long. RESP
    /// (Redis) commands and HTTP request heads fit it.
    ///
    /// # Panics
    /// Panics if `max` is zero.
    ///
    /// # Examples
    ///
    /// A message is everything up to a blank line, as an HTTP request head is:
    ///
    /// ```
    /// use socketserver::Frame;
    ///
    /// let head = Frame::with(8192, |bytes| {
    ///     Ok(bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4))
    /// });
    /// assert_eq!(head.complete(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
    /// assert_eq!(head.complete(b"GET / HTTP/1.1\r\n\r\nGET").unwrap(), Some(18));
    /// ```
    pub fn with(max: usize, f: impl Fn(&[u8]) -> io::Result<Option<usize>> + Send + Sync + 'static) -> Frame {
        assert!(max > 0, "a message holds at least one byte");
        Frame { kind: Kind::With(Arc::new(f)), max }
    }

    /// The most bytes a message may take, a length prefix included.
    pub fn max_len(&self) -> usize {
        match self.kind {
            Kind::Length { width, .. } => self.max.saturating_add(width),
            _ => self.max,
        }
    }

    /// The length of the first message in `bytes` if they hold it whole, `None` if more
    /// are needed.
    ///
    /// # Errors
    /// [`InvalidData`](io::ErrorKind::InvalidData) when the message is longer than the
    /// maximum (or, with [`Frame::with`], when the function says it is malformed).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{ByteOrder, Frame};
    ///
    /// let frame = Frame::length_prefix(2, ByteOrder::BigEndian, 100);
    /// assert_eq!(frame.complete(&[0, 3, b'a']).unwrap(), None);
    /// assert_eq!(frame.complete(&[0, 3, b'a', b'b', b'c', 0]).unwrap(), Some(5));
    /// assert!(frame.complete(&[1, 0]).is_err()); // 256 bytes: longer than 100
    /// ```
    pub fn complete(&self, bytes: &[u8]) -> io::Result<Option<usize>> {
        let too_long = || io::Error::new(io::ErrorKind::InvalidData, format!("message longer than {} bytes", self.max));
        match &self.kind {
            Kind::Bytes => Ok((!bytes.is_empty()).then_some(bytes.len().min(self.max))),
            Kind::Lines => {
                let window = &bytes[..bytes.len().min(self.max)];
                match window.iter().position(|&b| b == b'\n') {
                    Some(newline) => Ok(Some(newline + 1)),
                    None if bytes.len() >= self.max => {
                        Err(io::Error::new(io::ErrorKind::InvalidData, format!("line longer than {} bytes", self.max)))
                    }
                    None => Ok(None),
                }
            }
            Kind::Length { width, order } => {
                let Some(prefix) = bytes.get(..*width) else { return Ok(None) };
                let mut len: u64 = 0;
                let mut push = |b: u8| len = (len << 8) | u64::from(b);
                match order {
                    ByteOrder::BigEndian => prefix.iter().copied().for_each(&mut push),
                    ByteOrder::LittleEndian => prefix.iter().rev().copied().for_each(&mut push),
                }
                let body = usize::try_from(len).ok().filter(|&body| body <= self.max).ok_or_else(too_long)?;
                let whole = width.checked_add(body).ok_or_else(too_long)?;
                Ok((bytes.len() >= whole).then_some(whole))
            }
            Kind::With(f) => match f(bytes)? {
                Some(n) if n > self.max => Err(too_long()),
                Some(0) => Err(io::Error::new(io::ErrorKind::InvalidData, "the frame function said 0 bytes")),
                Some(n) if n > bytes.len() => {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "the frame function said more bytes than there are"))
                }
                Some(n) => Ok(Some(n)),
                None if bytes.len() >= self.max => Err(too_long()),
                None => Ok(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_whatever_arrived_up_to_the_maximum() {
        let frame = Frame::bytes(4);
        assert_eq!(frame.complete(b"").unwrap(), None);
        assert_eq!(frame.complete(b"ab").unwrap(), Some(2));
        assert_eq!(frame.complete(b"abcdef").unwrap(), Some(4));
    }

    #[test]
    fn lines_end_at_the_first_newline_and_no_later_than_the_maximum() {
        let frame = Frame::lines(8);
        assert_eq!(frame.complete(b"").unwrap(), None);
        assert_eq!(frame.complete(b"abc").unwrap(), None);
        assert_eq!(frame.complete(b"ab\ncd\n").unwrap(), Some(3));
        assert_eq!(frame.complete(b"1234567\n").unwrap(), Some(8), "the newline counts");
        assert!(frame.complete(b"12345678").is_err(), "8 bytes and no newline");
        assert!(frame.complete(b"12345678\n").is_err(), "the newline past the maximum");
    }

    #[test]
    fn a_length_prefix_is_read_in_its_byte_order_and_bounded() {
        let big = Frame::length_prefix(4, ByteOrder::BigEndian, 1000);
        assert_eq!(big.complete(&[0, 0, 0]).unwrap(), None);
        assert_eq!(big.complete(&[0, 0, 0, 2, b'h']).unwrap(), None);
        assert_eq!(big.complete(&[0, 0, 0, 2, b'h', b'i', b'x']).unwrap(), Some(6));
        assert_eq!(big.complete(&[0, 0, 0, 0]).unwrap(), Some(4), "an empty body");
        assert!(big.complete(&[0, 0, 3, 233]).is_err(), "1001 bytes");
        let little = Frame::length_prefix(2, ByteOrder::LittleEndian, 1000);
        assert_eq!(little.complete(&[1, 0, b'x']).unwrap(), Some(3));
        assert_eq!(little.max_len(), 1002);
        let huge = Frame::length_prefix(8, ByteOrder::BigEndian, usize::MAX);
        assert!(huge.complete(&[255; 8]).is_err(), "longer than any buffer, and no overflow");
    }

    #[test]
    fn a_function_frame_is_held_to_its_maximum_and_to_the_bytes_there_are() {
        let frame = Frame::with(4, |b: &[u8]| Ok(b.iter().position(|&c| c == b';').map(|at| at + 1)));
        assert_eq!(frame.complete(b"ab;c").unwrap(), Some(3));
        assert_eq!(frame.complete(b"abc").unwrap(), None);
        assert!(frame.complete(b"abcd").is_err(), "4 bytes and no end");
        let liar = Frame::with(100, |b: &[u8]| Ok(Some(b.len() + 1)));
        assert!(liar.complete(b"ab").is_err());
        let bad = Frame::with(100, |_: &[u8]| Err(io::Error::new(io::ErrorKind::InvalidData, "not RESP")));
        assert_eq!(bad.complete(b"x").unwrap_err().to_string(), "not RESP");
    }
}
