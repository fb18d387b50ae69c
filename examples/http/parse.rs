//! The request parser of the `http` example: a request's line and headers, and a
//! target's path split into decoded segments. Nothing here touches the file system.
//!
//! A file of its own, using only `std` and [`socketserver::Reader`], so that the fuzz
//! crate (`fuzz/fuzz_targets/http_request.rs`) compiles this very file with
//! `#[path = "../../examples/http/parse.rs"] mod parse;` and feeds it hostile bytes
//! through an in-memory `Reader` (`socketserver::testing`). An example cannot be a
//! dependency, and a copy in the fuzz crate would drift from the code that serves.

use std::io;

use socketserver::Reader;

/// The longest request line: a longer one is answered 414.
pub const MAX_REQUEST_LINE: usize = 8192;
/// The longest header line: a longer one is answered 431.
pub const MAX_HEADER_LINE: usize = 8192;
/// All header lines together: more is answered 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most header lines: more is answered 431.
pub const MAX_HEADERS: usize = 100;

/// The most bytes of a head the server gathers before handing it to [`read_request`]:
/// past this, the longest request line and header lines the limits allow have ended,
/// so the parser finds its 414 or 431 in what has arrived.
pub const MAX_HEAD: usize = MAX_REQUEST_LINE + MAX_HEADER_BYTES + MAX_HEADER_LINE + 2 * MAX_HEADERS + 16;

/// How long the request head at the start of `bytes` is once it has all arrived (empty
/// lines before it, its line and headers, and the empty line that ends them):
/// `Some(n)`; `None` while more bytes are needed. The server's frame
/// (`socketserver::Frame::with`): the engine gathers a whole head, holding no thread,
/// before `read_request` reads it, so reading never waits. A head that has not ended by
/// [`MAX_HEAD`] bytes is whole at once (`Some(bytes.len())`): the parser then answers it
/// 414 or 431. So is one that has broken a limit already, where the parser finds it
/// without reading further: an unfinished line longer than its limit, or more header
/// lines, or more header bytes, than allowed. The answer comes as soon as it is known,
/// not when the head ends or the client gives up.
pub fn head_len(bytes: &[u8]) -> Option<usize> {
    let (mut at, mut started) = (0, false);
    // Header lines so far, and their bytes as the parser counts them (without the line
    // end), for its limits on both.
    let (mut count, mut total) = (0, 0);
    while let Some(newline) = bytes[at..].iter().position(|&b| b == b'\n') {
        let line = &bytes[at..at + newline];
        let empty = line.is_empty() || line == b"\r";
        at += newline + 1;
        if empty && started {
            return Some(at);
        }
        // A line too long is one whatever follows (its `\n` counts against the limit).
        let line_limit = if started { MAX_HEADER_LINE } else { MAX_REQUEST_LINE };
        if line.len() + 1 > line_limit {
            return Some(at);
        }
        if started {
            count += 1;
            total += line.strip_suffix(b"\r").unwrap_or(line).len();
            if count > MAX_HEADERS || total > MAX_HEADER_BYTES {
                return Some(at);
            }
        }
        started |= !empty;
    }
    // `read_line` counts every byte of a line against its limit, its end included: more
    // than the limit unfinished is too long already.
    let line_limit = if started { MAX_HEADER_LINE } else { MAX_REQUEST_LINE };
    (bytes.len() >= MAX_HEAD || bytes.len() - at > line_limit).then_some(bytes.len())
}

/// The parts of a request the server acts on.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The method, a token (RFC 9110, 9.1).
    pub method: String,
    /// The path of the target, without query or fragment, still percent-encoded.
    pub path: Vec<u8>,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
}

/// What reading a request gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A request to answer.
    Request(Request),
    /// The client closed the connection, between requests or within one.
    Closed,
    /// A request to refuse with this status, then close.
    Bad(u16),
}

/// Reads one request's line and headers; the body, if any, is left unread (the
/// connection then closes after the response).
///
/// # Errors
/// The reader's errors (a timeout, a reset); a malformed request is not an error but
/// [`Incoming::Bad`].
pub fn read_request(reader: &mut Reader) -> io::Result<Incoming> {
    let mut line = Vec::new();
    // An empty line before a request is allowed (RFC 9112, 2.2), e.g. after a body.
    loop {
        match read_line(reader, &mut line, MAX_REQUEST_LINE)? {
            Line::Eof => return Ok(Incoming::Closed),
            Line::TooLong => return Ok(Incoming::Bad(414)),
            Line::Ok if line.is_empty() => continue,
            Line::Ok => break,
        }
    }
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else { return Ok(Incoming::Bad(400)) };
    if method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || !target.starts_with(b"/")
        || !target.iter().all(|b| b.is_ascii_graphic())
    {
        return Ok(Incoming::Bad(400));
    }
    let http10 = match version {
        b"HTTP/1.0" => true,
        b"HTTP/1.1" => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            if *major == b'1' {
                false // a later 1.x speaks 1.1 at least
            } else {
                return Ok(Incoming::Bad(505));
            }
        }
        _ => return Ok(Incoming::Bad(400)),
    };
    let method = String::from_utf8_lossy(method).into_owned();
    let path = target.split(|&b| b == b'?' || b == b'#').next().unwrap_or_default().to_vec();

    let (mut total, mut count) = (0, 0);
    let (mut close, mut keep_alive, mut host, mut body) = (false, false, false, false);
    let mut content_length: Option<&[u8]> = None;
    let mut lengths = Vec::new();
    loop {
        match read_line(reader, &mut line, MAX_HEADER_LINE)? {
            Line::Eof => return Ok(Incoming::Closed),
            Line::TooLong => return Ok(Incoming::Bad(431)),
            Line::Ok if line.is_empty() => break,
            Line::Ok => {}
        }
        total += line.len();
        count += 1;
        if total > MAX_HEADER_BYTES || count > MAX_HEADERS {
            return Ok(Incoming::Bad(431));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { return Ok(Incoming::Bad(400)) };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        // An empty name, a space before the colon or a folded line (one starting with
        // a space) are errors (RFC 9112, 5.1 and 5.2); so are control characters.
        if name.is_empty()
            || !name.iter().all(|&b| is_tchar(b))
            || value.iter().any(|&b| b.is_ascii_control() && b != b'\t')
        {
            return Ok(Incoming::Bad(400));
        }
        let name = name.to_ascii_lowercase();
        match name.as_slice() {
            b"connection" => {
                for token in value.split(|&b| b == b',').map(trim) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            // "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
            // request message that lacks a Host header field and to any request message
            // that contains more than one Host header field line" (RFC 9112, 3.2): two
            // hosts are two answers to which site is meant, a cache or a proxy in front
            // may pick the other.
            b"host" if host => return Ok(Incoming::Bad(400)),
            b"host" => host = true,
            b"transfer-encoding" => body = true,
            b"content-length" => lengths.push(value.to_vec()),
            _ => {}
        }
    }
    // Several differing lengths, or a length beside a transfer coding, are how requests
    // are smuggled past proxies: refuse them (RFC 9112, 6.3).
    for length in &lengths {
        if length.is_empty()
            || !length.iter().all(u8::is_ascii_digit)
            || content_length.is_some_and(|l| l != length.as_slice())
        {
            return Ok(Incoming::Bad(400));
        }
        content_length = Some(length);
    }
    if body && content_length.is_some() || !http10 && !host {
        return Ok(Incoming::Bad(400));
    }
    body |= content_length.is_some_and(|l| l.iter().any(|&b| b != b'0'));
    let keep_alive = !body && !close && (!http10 || keep_alive);
    Ok(Incoming::Request(Request { method, path, keep_alive }))
}

/// What [`read_line`] read.
enum Line {
    Ok,
    Eof,
    TooLong,
}

/// Reads a line of at most `max` bytes with its end into `line`, without the `\r\n`
/// (or bare `\n`). The rest of a longer line is left unread, so it costs no memory.
fn read_line(reader: &mut Reader, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    line.clear();
    match reader.read_line_bounded(line, max) {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Line::TooLong),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    if line.pop() != Some(b'\n') {
        return Ok(Line::Eof); // nothing, or a partial line, before end-of-file
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Line::Ok)
}

/// The decoded segments of a percent-encoded request path, empty ones (`//`, a final
/// `/`) left out, or the status to answer instead. Each segment is one plain file
/// name: never `.` or `..` (also as `%2e%2e`), never holding a `/` (`%2f`) or a NUL.
pub fn segments(path: &[u8]) -> Result<Vec<Vec<u8>>, u16> {
    let mut segments = Vec::new();
    for raw in path.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        let segment = percent_decode(raw).ok_or(400u16)?;
        if segment == b"." || segment == b".." || segment.contains(&b'/') || segment.contains(&0) {
            return Err(400);
        }
        segments.push(segment);
    }
    Ok(segments)
}

/// Decodes `%XX` escapes; `None` for a malformed one.
pub fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            // Two hex digits, exactly: `u8::from_str_radix` alone would take "+f".
            let mut digit = || char::from(*bytes.next()?).to_digit(16);
            let (high, low) = (digit()?, digit()?);
            out.push((high * 16 + low) as u8);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// A header token character (RFC 9110, 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &bytes[start..end]
}
