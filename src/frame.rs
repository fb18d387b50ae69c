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
/// connection closed, before any of it is held in memory beyond the maximum; a
/// [`Builder::bad_message`](crate::Builder::bad_message) hook tells the client why
/// first (without one, the client sees a reset: the rest of its message is left
/// unread).
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
    /// begin a valid message. The engine asks once bytes arrive (never with none) and
    /// again each time more do, and reports a message that is still incomplete at
    /// `max` bytes as too long. RESP (Redis) commands and HTTP request heads fit it.
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

/// Reading and writing whole messages by a frame: for clients, and for handlers that
/// read or write more than the message the server gathered, by the same rules.
impl Frame {
    /// Reads one message from `reader`, by the rule the server gathers messages by: a
    /// line up to and with its `\n`; a length prefix and the body it announces; as many
    /// bytes as a [`Frame::with`] function says; for [`Frame::bytes`], what one read
    /// gives. The message comes back whole, as [`complete`](Frame::complete) measures
    /// it ([`payload`](Frame::payload) takes its frame off), and nothing after it is
    /// read from `reader`'s buffer.
    ///
    /// `Ok(None)`: the stream ended before a message began.
    ///
    /// # Errors
    /// [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) when the stream ends inside a
    /// message; [`InvalidData`](io::ErrorKind::InvalidData) when it is longer than the
    /// maximum (found before more than the maximum and one buffer is read: close the
    /// connection then); any error of `reader`.
    ///
    /// # Examples
    ///
    /// A client and a server that speak length-prefixed messages, over a real socket:
    ///
    /// ```
    /// use std::io::BufReader;
    /// use std::net::TcpStream;
    /// use socketserver::{ByteOrder, Frame, TcpServer};
    ///
    /// let frame = Frame::length_prefix(4, ByteOrder::BigEndian, 1 << 20);
    /// let server_frame = frame.clone();
    /// let server = TcpServer::builder("127.0.0.1:0").frame(frame.clone()).bind(move |req| {
    ///     // The whole message is buffered already: this read returns at once.
    ///     if let Some(message) = server_frame.read_message(req.reader())? {
    ///         let reply = server_frame.payload(&message).to_ascii_uppercase();
    ///         server_frame.write_message(&mut req.writer(), &reply)?;
    ///     }
    ///     req.park();
    ///     Ok(())
    /// })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    ///
    /// let mut client = TcpStream::connect(addr)?;
    /// frame.write_message(&mut client, b"hello")?;
    /// frame.write_message(&mut client, b"world")?;
    /// let mut replies = BufReader::new(client);
    /// let first = frame.read_message(&mut replies)?.expect("a reply");
    /// assert_eq!(frame.payload(&first), b"HELLO");
    /// assert_eq!(first, b"\0\0\0\x05HELLO");
    /// let second = frame.read_message(&mut replies)?.expect("a reply");
    /// assert_eq!(frame.payload(&second), b"WORLD");
    /// background.stop()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_message(&self, mut reader: impl io::BufRead) -> io::Result<Option<Vec<u8>>> {
        let mut message = Vec::new();
        loop {
            let available = match reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return match message.is_empty() {
                    true => Ok(None),
                    false => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended inside a message")),
                };
            }
            let before = message.len();
            let taken = available.len();
            message.extend_from_slice(available);
            match self.complete(&message)? {
                Some(whole) => {
                    reader.consume(whole - before);
                    message.truncate(whole);
                    return Ok(Some(message));
                }
                None => reader.consume(taken),
            }
        }
    }

    /// Writes `payload` as one message, in one `write_all` (one segment when the
    /// socket sends it at once): a line is the payload and `\n`; a length-prefixed
    /// message is the payload's length in the prefix's width and byte order, then the
    /// payload; with [`Frame::bytes`] and [`Frame::with`], the payload as it is.
    ///
    /// # Errors
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) for a payload longer than the
    /// maximum, a line's payload that holds a `\n`, or a length the prefix cannot hold;
    /// nothing is written then. Any error of `writer`.
    pub fn write_message(&self, mut writer: impl io::Write, payload: &[u8]) -> io::Result<()> {
        let invalid = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        let framed;
        let bytes = match &self.kind {
            Kind::Lines => {
                if payload.contains(&b'\n') {
                    return invalid("a line's payload cannot hold a newline".to_string());
                }
                if payload.len() >= self.max {
                    return invalid(format!("line longer than {} bytes with its newline", self.max));
                }
                framed = [payload, b"\n"].concat();
                &framed[..]
            }
            Kind::Length { width, order } => {
                // A width of 1, 2, 4 or 8 bytes (`length_prefix` allows no other).
                let fits = *width == 8 || (payload.len() as u64) < (1u64 << (8 * width));
                if payload.len() > self.max || !fits {
                    return invalid(format!(
                        "message of {} bytes: the frame takes at most {}",
                        payload.len(),
                        self.max
                    ));
                }
                let be = (payload.len() as u64).to_be_bytes();
                let mut prefix = be[8 - width..].to_vec();
                if *order == ByteOrder::LittleEndian {
                    prefix.reverse();
                }
                framed = [&prefix[..], payload].concat();
                &framed[..]
            }
            Kind::Bytes | Kind::With(_) => {
                if payload.len() > self.max {
                    return invalid(format!("message longer than {} bytes", self.max));
                }
                payload
            }
        };
        writer.write_all(bytes)
    }

    /// The payload of a whole message (as [`read_message`](Frame::read_message) returns
    /// it): a line without its `\n` (and a `\r` before it), a body without its length
    /// prefix; for [`Frame::bytes`] and [`Frame::with`], the message as it is.
    pub fn payload<'a>(&self, message: &'a [u8]) -> &'a [u8] {
        match &self.kind {
            Kind::Lines => {
                let line = message.strip_suffix(b"\n").unwrap_or(message);
                line.strip_suffix(b"\r").unwrap_or(line)
            }
            Kind::Length { width, .. } => message.get(*width..).unwrap_or_default(),
            Kind::Bytes | Kind::With(_) => message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every message of `input` through a reader that gives `chunk` bytes a
    /// fill, as a socket may.
    fn read_all(frame: &Frame, input: &[u8], chunk: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut reader = io::BufReader::with_capacity(chunk, input);
        let mut out = Vec::new();
        while let Some(message) = frame.read_message(&mut reader)? {
            out.push(message);
        }
        Ok(out)
    }

    #[test]
    fn messages_are_read_whole_however_the_bytes_come_and_written_back_alike() {
        let lines = Frame::lines(16);
        for chunk in [1, 2, 3, 64] {
            let got = read_all(&lines, b"ab\ncd\r\n\n", chunk).unwrap();
            assert_eq!(got, [&b"ab\n"[..], b"cd\r\n", b"\n"], "chunks of {chunk}");
        }
        assert_eq!(lines.payload(b"cd\r\n"), b"cd");
        let mut out = Vec::new();
        lines.write_message(&mut out, b"hi").unwrap();
        assert_eq!(out, b"hi\n");
        assert!(lines.write_message(&mut out, b"a\nb").is_err());
        assert!(lines.write_message(&mut out, &[b'x'; 16]).is_err(), "16 bytes and the newline: over 16");

        for order in [ByteOrder::BigEndian, ByteOrder::LittleEndian] {
            let frame = Frame::length_prefix(2, order, 300);
            let mut wire = Vec::new();
            frame.write_message(&mut wire, b"hello").unwrap();
            frame.write_message(&mut wire, &[7; 260]).unwrap();
            frame.write_message(&mut wire, b"").unwrap();
            for chunk in [1, 5, 1024] {
                let got = read_all(&frame, &wire, chunk).unwrap();
                let payloads: Vec<&[u8]> = got.iter().map(|m| frame.payload(m)).collect();
                assert_eq!(payloads, [&b"hello"[..], &[7; 260][..], b""], "{order:?}, chunks of {chunk}");
            }
            assert!(frame.write_message(&mut wire, &[0; 301]).is_err(), "over the maximum");
        }
        let narrow = Frame::length_prefix(1, ByteOrder::BigEndian, 1000);
        assert!(narrow.write_message(&mut Vec::new(), &[0; 256]).is_err(), "256 does not fit in one byte");
        let wide = Frame::length_prefix(8, ByteOrder::LittleEndian, 1000);
        let mut wire = Vec::new();
        wide.write_message(&mut wire, b"x").unwrap();
        assert_eq!(wire, [1, 0, 0, 0, 0, 0, 0, 0, b'x']);
    }

    #[test]
    fn a_stream_that_ends_inside_a_message_or_runs_over_the_maximum_is_an_error() {
        let lines = Frame::lines(8);
        assert_eq!(read_all(&lines, b"", 4).unwrap(), Vec::<Vec<u8>>::new());
        let cut = read_all(&lines, b"ok\nhalf", 4).unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
        let long = read_all(&lines, &[b'x'; 100], 4).unwrap_err();
        assert_eq!(long.kind(), io::ErrorKind::InvalidData);
        let frame = Frame::length_prefix(4, ByteOrder::BigEndian, 10);
        let announced = read_all(&frame, &[0, 0, 1, 0, 1, 2, 3], 64).unwrap_err();
        assert_eq!(announced.kind(), io::ErrorKind::InvalidData, "256 announced, 10 allowed");
        // Nothing after a message is taken from the reader.
        let mut reader = io::BufReader::new(&b"one\ntwo\n"[..]);
        assert_eq!(Frame::lines(8).read_message(&mut reader).unwrap().unwrap(), b"one\n");
        assert_eq!(io::BufRead::fill_buf(&mut reader).unwrap(), b"two\n");
    }

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
