//! A small HTTP/1.1 server (the role of Python's `http.server`): `GET` and `HEAD` of
//! `/`, `/health` and the files under a root directory, with keep-alive.
//!
//! ```text
//! cargo run --release --example http -- [--root DIR] [--addr ADDR] [--timeout SECS]
//!                                       [--mode sequential|threading|pool] [--workers N]
//!                                       [--max-connections N]
//! ```
//!
//! Prints `listening on http://IP:PORT` once bound; try `curl -i http://127.0.0.1:8000/`.
//! Paths are resolved below `--root` (default: the current directory): `.` and `..`
//! segments, also percent-encoded, are refused with 400, and a symbolic link leading out
//! of the root is 404. Limits: a request line of 8 KiB (414), header lines of 8 KiB, 100
//! headers and 32 KiB in all (431). A connection idle for `--timeout` seconds (default 5),
//! or a client that stops reading for as long, is closed; so is one whose request line
//! and headers have not all arrived twice `--timeout` after their first byte.
//! With `--max-connections N`, a client beyond the first N served at once gets `503
//! Service Unavailable` and is closed (in threading and pool modes; a sequential server
//! cannot refuse while it serves, so that combination fails to start and says so). SIGINT or SIGTERM stops accepting
//! at once, gives running clients up to 2 s, then exits 0.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr};
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[cfg(target_os = "linux")]
use socketserver::activation::ListenFds;
use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::{Reader, RequestHandler, StreamRequest, TcpServer, Writer};

const GRACE: Duration = Duration::from_secs(2);
const MAX_REQUEST_LINE: usize = 8192;
const MAX_HEADER_LINE: usize = 8192;
const MAX_HEADER_BYTES: usize = 32 * 1024;
const MAX_HEADERS: usize = 100;
/// How much of an unread request is drained before closing after an error response:
/// closing with unread bytes makes the kernel send a reset, which can destroy the
/// response before the client reads it.
const DRAIN_LIMIT: u64 = 256 * 1024;
const USAGE: &str = "usage: http [--root DIR] [--addr ADDR] [--timeout SECS] [--mode sequential|threading|pool]
            [--workers N] [--max-connections N] [--verbose]
  defaults: --root . --addr 127.0.0.1:8000 --timeout 5 --mode threading, no connection limit
  --timeout: a connection idle (or not reading) this long is closed, and a request's
             line and headers must arrive within twice this after their first byte
  --max-connections: clients beyond N at once get 503 and are closed
  --verbose: log each request, and the server's own messages, to stderr
  Started by systemd socket activation (LISTEN_FDS), it serves the passed socket instead of --addr.";
const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>socketserver</title></head>\n\
<body><h1>socketserver http example</h1><p>Files are served from the root directory; \
<a href=\"/health\">/health</a> answers ok.</p></body></html>\n";

struct Args {
    root: PathBuf,
    addr: SocketAddr,
    timeout: Duration,
    dispatch: Box<dyn Dispatch>,
    max_connections: Option<usize>,
    verbose: bool,
}

/// Parses the command line; the error is the one line to print.
fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut root, mut addr, mut timeout) = (PathBuf::from("."), "127.0.0.1:8000".to_string(), 5);
    let (mut mode, mut workers, mut max_connections) = ("threading".to_string(), None, None);
    let mut verbose = false;
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--root" => root = value()?.into(),
            "--addr" => addr = value()?,
            "--timeout" => {
                let text = value()?;
                timeout = text
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or(format!("bad --timeout {text:?}: expected whole seconds, at least 1"))?;
            }
            "--mode" => mode = value()?,
            "--workers" => workers = Some(count(&flag, &value()?)?),
            "--max-connections" => max_connections = Some(count(&flag, &value()?)?),
            "--verbose" => verbose = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let dispatch: Box<dyn Dispatch> = match mode.as_str() {
        "sequential" => Box::new(Sequential),
        "threading" => Box::new(Threading::new()),
        "pool" => Box::new(workers.map_or_else(Pool::default, Pool::new)),
        other => return Err(format!("unknown --mode {other:?}: expected sequential, threading or pool")),
    };
    let root = root.canonicalize().map_err(|e| format!("bad --root {}: {e}", root.display()))?;
    if !root.is_dir() {
        return Err(format!("bad --root {}: not a directory", root.display()));
    }
    let addr =
        addr.parse().map_err(|_| format!("bad --addr {addr:?}: expected IP:PORT, like 127.0.0.1:8000 or [::1]:0"))?;
    Ok(Args { root, addr, timeout: Duration::from_secs(timeout), dispatch, max_connections, verbose })
}

/// A whole number of at least 1, the value of `flag`.
fn count(flag: &str, text: &str) -> Result<usize, String> {
    text.parse().ok().filter(|&n| n > 0).ok_or(format!("bad {flag} {text:?}: expected a whole number of at least 1"))
}

/// The parts of a request this server acts on.
struct Request {
    method: String,
    /// The path of the target, without query or fragment, still percent-encoded.
    path: Vec<u8>,
    keep_alive: bool,
}

/// What reading a request gave.
enum Incoming {
    Request(Request),
    /// The client closed the connection, between requests or within one.
    Closed,
    /// A request to refuse with this status, then close.
    Bad(u16),
}

/// What to do with the connection after a response.
#[derive(Clone, Copy, PartialEq)]
enum After {
    KeepAlive,
    Close,
    /// Close after draining what the client may still be sending.
    DrainAndClose,
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Body,
    allow: bool,
}

enum Body {
    Bytes(Cow<'static, [u8]>),
    File(File, u64),
}

impl Response {
    fn text(status: u16, text: impl Into<Cow<'static, str>>, content_type: &'static str) -> Response {
        let body = match text.into() {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        };
        Response { status, content_type, body: Body::Bytes(body), allow: false }
    }

    fn error(status: u16) -> Response {
        Response::text(status, format!("{status} {}\n", reason(status)), "text/plain; charset=utf-8")
    }
}

/// Serves HTTP/1.1 below `root`, an absolute, canonical directory.
struct Http {
    root: PathBuf,
    /// `--timeout`, from which the deadlines for a request's head and for draining
    /// after an error response follow.
    timeout: Duration,
}

impl RequestHandler<StreamRequest> for Http {
    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        loop {
            let incoming = match self.next_request(req) {
                Ok(incoming) => incoming,
                Err(e) if is_disconnect(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let after = match incoming {
                Incoming::Closed => return Ok(()),
                Incoming::Bad(status) => {
                    send(&mut req.writer(), Response::error(status), false, After::DrainAndClose)?;
                    After::DrainAndClose
                }
                Incoming::Request(request) => {
                    log::info!(
                        target: "http::access",
                        "{} {} {}",
                        req.client_addr(),
                        request.method,
                        String::from_utf8_lossy(&request.path)
                    );
                    self.serve(req.writer(), &request)?
                }
            };
            match after {
                After::KeepAlive => continue,
                After::Close => return Ok(()),
                After::DrainAndClose => return Ok(self.drain(req)?),
            }
        }
    }
}

impl Http {
    /// Waits for the next request, then reads its line and headers.
    ///
    /// The read timeout (`--timeout`) bounds each wait, which is right for an idle
    /// connection but lets a client sending a byte now and then hold its thread
    /// forever. So once a request begins, its head must arrive whole by a deadline.
    /// The response is written without one: a large file may take long, and the write
    /// timeout already catches a client that stops reading.
    fn next_request(&self, req: &mut StreamRequest) -> io::Result<Incoming> {
        if req.reader().fill_buf()?.is_empty() {
            return Ok(Incoming::Closed);
        }
        req.set_deadline(Some(Instant::now() + 2 * self.timeout));
        let incoming = read_request(req.reader_and_writer().0);
        req.set_deadline(None);
        incoming
    }

    /// After an error response: stop sending, then read and discard what the client
    /// still sends (at most `DRAIN_LIMIT` bytes, for at most `--timeout` in all), so
    /// closing does not reset the connection under the response.
    fn drain(&self, req: &mut StreamRequest) -> io::Result<()> {
        req.writer().flush()?;
        let _ = req.connection().shutdown(Shutdown::Write);
        req.set_deadline(Some(Instant::now() + self.timeout));
        let _ = io::copy(&mut Read::take(req.reader(), DRAIN_LIMIT), &mut io::sink());
        Ok(())
    }

    /// Answers one request and says what becomes of the connection.
    fn serve(&self, mut writer: &Writer, request: &Request) -> io::Result<After> {
        let head = request.method == "HEAD";
        if !head && request.method != "GET" {
            let response = Response { allow: true, ..Response::error(405) };
            send(&mut writer, response, false, After::DrainAndClose)?;
            return Ok(After::DrainAndClose);
        }
        let response = match request.path.as_slice() {
            b"/" => Response::text(200, INDEX, "text/html; charset=utf-8"),
            b"/health" => Response::text(200, "ok\n", "text/plain; charset=utf-8"),
            path => match resolve(&self.root, path).and_then(open) {
                Ok((file, len, content_type)) => {
                    Response { status: 200, content_type, body: Body::File(file, len), allow: false }
                }
                Err(status) => Response::error(status),
            },
        };
        let after = match (request.keep_alive, response.status) {
            (_, 400) => After::DrainAndClose,
            (true, _) => After::KeepAlive,
            (false, _) => After::Close,
        };
        send(&mut writer, response, head, after)?;
        Ok(after)
    }
}

/// Writes the response, only its head for `HEAD`, and flushes it.
fn send(writer: &mut impl Write, response: Response, head: bool, after: After) -> io::Result<()> {
    let len = match &response.body {
        Body::Bytes(bytes) => bytes.len() as u64,
        Body::File(_, len) => *len,
    };
    write!(
        writer,
        "HTTP/1.1 {} {}\r\nServer: socketserver-http\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\n",
        response.status,
        reason(response.status),
        http_date(SystemTime::now()),
        response.content_type,
    )?;
    if response.allow {
        writer.write_all(b"Allow: GET, HEAD\r\n")?;
    }
    // Said even to HTTP/1.1 clients, for whom keep-alive is the default: it costs a line.
    let connection: &[u8] = if after == After::KeepAlive { b"keep-alive" } else { b"close" };
    writer.write_all(b"Connection: ")?;
    writer.write_all(connection)?;
    writer.write_all(b"\r\n\r\n")?;
    if !head {
        match response.body {
            Body::Bytes(bytes) => writer.write_all(&bytes)?,
            Body::File(file, len) => {
                if io::copy(&mut file.take(len), writer)? < len {
                    // The Content-Length sent can no longer be kept: the client must not
                    // wait for the missing bytes, so the connection ends here.
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
                }
            }
        }
    }
    writer.flush()
}

/// Reads one request's line and headers; the body, if any, is left unread (the
/// connection then closes after the response).
fn read_request(reader: &mut Reader) -> io::Result<Incoming> {
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

/// A decoded segment as a file name: any bytes on Unix; on Windows valid UTF-8 without
/// the characters that would make it a path of its own there (a backslash, a colon).
#[cfg(unix)]
fn path_segment(segment: &[u8]) -> Result<&OsStr, u16> {
    Ok(OsStr::from_bytes(segment))
}

#[cfg(not(unix))]
fn path_segment(segment: &[u8]) -> Result<&OsStr, u16> {
    let name = std::str::from_utf8(segment).map_err(|_| 400u16)?;
    if name.contains(['\\', ':']) {
        return Err(400);
    }
    Ok(OsStr::new(name))
}

/// The file under `root` that a percent-encoded request path names, or the status to
/// answer instead.
fn resolve(root: &Path, path: &[u8]) -> Result<PathBuf, u16> {
    let mut full = root.to_path_buf();
    for raw in path.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        let segment = percent_decode(raw).ok_or(400u16)?;
        // Decoded, a segment must still be one plain name: `%2e%2e` is `..`, `%2f`
        // would smuggle a separator.
        if segment == b"." || segment == b".." || segment.contains(&b'/') || segment.contains(&0) {
            return Err(400);
        }
        full.push(path_segment(&segment)?);
    }
    // Symbolic links may still lead out of the root: judge where the path really ends.
    let real = full.canonicalize().map_err(|_| 404u16)?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err(404)
    }
}

/// Opens a regular file for sending: the file, its length and its content type.
fn open(path: PathBuf) -> Result<(File, u64, &'static str), u16> {
    let file = File::open(&path).map_err(|e| if e.kind() == io::ErrorKind::PermissionDenied { 403u16 } else { 404 })?;
    let meta = file.metadata().map_err(|_| 404u16)?;
    if !meta.is_file() {
        return Err(404); // no directory listings
    }
    Ok((file, meta.len(), content_type(&path)))
}

fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(OsStr::to_str).unwrap_or_default().to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "md" => "text/plain; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Decodes `%XX` escapes; `None` for a malformed one.
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hex = [*bytes.next()?, *bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110, 5.6.7), from the days-to-civil algorithm
/// of Howard Hinnant's `chrono`-compatible date algorithms.
fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The client went away, or stayed idle past the read timeout or its request's
/// deadline: the connection just ends.
fn is_disconnect(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(error.kind(), WouldBlock | TimedOut | ConnectionReset | BrokenPipe | UnexpectedEof)
}

/// `--verbose`: a logger of a few lines, so that this example's access log (target
/// `http::access`) and the crate's own messages (targets `socketserver::*`: a signal
/// received, a shutdown deadline passed, accepting backing off) show on stderr. A real
/// program would install `env_logger` or the like the same way, once, in `main`.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{:5} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("http: {message}");
            return ExitCode::from(2);
        }
    };
    if args.verbose && log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("http: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Binds, prints the address, serves until a signal, and closes.
/// The listening socket systemd passed, if any (socket activation is Linux's).
#[cfg(target_os = "linux")]
fn passed_listener() -> io::Result<Option<std::net::TcpListener>> {
    let mut passed = ListenFds::take()?;
    if passed.len() > 1 {
        eprintln!("http: {} sockets passed; serving the first, closing the others", passed.len());
    }
    passed.take_tcp_listener(0)
}

#[cfg(not(target_os = "linux"))]
fn passed_listener() -> io::Result<Option<std::net::TcpListener>> {
    Ok(None)
}

fn run(args: Args) -> Result<(), socketserver::Error> {
    // Under systemd (or `systemd-socket-activate`), serve the socket it passed, already
    // bound and listening; otherwise bind --addr.
    let mut builder = match passed_listener()? {
        Some(listener) => TcpServer::from_listener(listener),
        None => TcpServer::builder(args.addr),
    };
    if let Some(n) = args.max_connections {
        // Answering at once beats leaving clients in the backlog, where they cannot tell
        // a busy server from a dead one.
        builder = builder.max_connections(n).refuse_when_full(|mut connection, _| {
            // Built whole, then written at once: one segment, and one write to time out.
            let mut reply = Vec::new();
            send(&mut reply, Response::error(503), false, After::Close)?;
            connection.write_all(&reply)
        });
    }
    let server = builder
        .dispatch(args.dispatch)
        .nodelay(true)
        // A response is written whole into this buffer and flushed once: one send, so
        // no small segment waits on Nagle or on the client's delayed ACK.
        .wbufsize(16 * 1024)
        .read_timeout(args.timeout)
        // A client that stops reading a response must not hold its thread forever either.
        .write_timeout(args.timeout)
        .shutdown_deadline(GRACE)
        .handle_error(|error, client| match client {
            Some(client) => eprintln!("http: {client}: {error}"),
            None => eprintln!("http: {error}"),
        })
        .bind_handler(Http { root: args.root, timeout: args.timeout })?;
    // Ctrl-C or SIGTERM: refuse new connections at once, give running ones GRACE.
    let _signals = server.handle().shutdown_on_signals()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on http://{}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    server.serve_forever()?;
    server.close();
    Ok(())
}
