//! A small HTTP/1.1 server (the role of Python's `http.server`): `GET` and `HEAD` of
//! `/`, `/health`, `/metrics` (Prometheus) and the files under a root directory, with
//! keep-alive.
//!
//! ```text
//! cargo run --release --example http -- [--root DIR] [--addr ADDR] [--timeout SECS]
//!                                       [--mode sequential|threading|pool] [--workers N]
//!                                       [--max-connections N]
//! ```
//!
//! Prints `listening on http://IP:PORT` once bound; try `curl -i http://127.0.0.1:8000/`.
//! Paths are resolved below `--root` (default: the current directory): `.` and `..`
//! segments, also percent-encoded, are refused with 400; symbolic links below the root
//! are not followed (404), and only regular files are served (a directory, a FIFO or a
//! device is 404), each path resolved once, by opening it (see `open_beneath`). Limits:
//! a request line of 8 KiB (414), header lines of 8 KiB, 100 headers and 32 KiB in all
//! (431); a second `Host` header is 400. The request parser is `parse.rs`, which the
//! fuzz crate compiles too. Between requests a kept-alive connection parks
//! (`StreamRequest::park`): it holds no thread, so in every mode a few threads serve
//! any number of kept-alive clients. Request heads are framed (`Builder::frame` with
//! `parse::head_len`): the server gathers a whole head without blocking before answering
//! it, so a client that sends half a head, or trickles one, holds no thread either. A
//! connection idle for `--timeout` seconds (default 5), or a client that stops reading
//! for as long, is closed; so is one whose request line and headers have not all arrived
//! `--timeout` after their first byte.
//! At most 10,000 clients are served at once, the rest wait in the backlog; with
//! `--max-connections N`, a client beyond the first N (kept-alive ones included) gets `503
//! Service Unavailable` and is closed (a sequential server cannot refuse while it
//! serves, so that combination fails to start and says so). SIGINT or SIGTERM stops accepting
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
use socketserver::dispatch::{Dispatch, Pool};
use socketserver::{Frame, RequestHandler, StreamRequest, TcpServer, Writer};

mod parse;

use parse::{head_len, read_request, Incoming, Request, MAX_HEAD};

/// Connections served at once by default: parked ones cost a socket, not a thread.
const MAX_CONNECTIONS: usize = 10_000;
const GRACE: Duration = Duration::from_secs(2);
/// How much of an unread request is drained before closing after an error response:
/// closing with unread bytes makes the kernel send a reset, which can destroy the
/// response before the client reads it.
const DRAIN_LIMIT: u64 = 256 * 1024;
const USAGE: &str = "usage: http [--root DIR] [--addr ADDR] [--timeout SECS] [--mode sequential|threading|pool]
            [--workers N] [--max-connections N] [--verbose]
  defaults: --root . --addr 127.0.0.1:8000 --timeout 5 --mode pool (a worker per CPU, at least 2), 10,000 connections at once (then the backlog)
  --timeout: a connection idle (or not reading) this long is closed, and a request's
             line and headers must arrive within this after their first byte
  --max-connections: at most N clients at once; the others get 503 and are closed
  --verbose: log each request, and the server's own messages, to stderr
  Started by systemd socket activation (LISTEN_FDS), it serves the passed socket instead of --addr.";
const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>socketserver</title></head>\n\
<body><h1>socketserver http example</h1><p>Files are served from the root directory; \
<a href=\"/health\">/health</a> answers ok, <a href=\"/metrics\">/metrics</a> the server's metrics for Prometheus.</p></body></html>\n";

struct Args {
    root: PathBuf,
    addr: SocketAddr,
    timeout: Duration,
    dispatch: Dispatch,
    max_connections: Option<usize>,
    verbose: bool,
}

/// Parses the command line; the error is the one line to print.
fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut root, mut addr, mut timeout) = (PathBuf::from("."), "127.0.0.1:8000".to_string(), 5);
    let (mut mode, mut workers, mut max_connections) = ("pool".to_string(), None, None);
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
    let dispatch: Dispatch = match mode.as_str() {
        "sequential" => Dispatch::sequential(),
        "threading" => Dispatch::threading(),
        "pool" => workers.map_or_else(Pool::default, Pool::new).into(),
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

/// Serves HTTP/1.1 below `root`.
struct Http {
    root: Root,
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
                    let metrics = (request.path.as_slice() == b"/metrics").then(|| req.server().metrics());
                    let (after, body) = self.serve(req.writer(), &request, metrics)?;
                    if let Some(body) = body {
                        // A file goes out from the poller: a client that reads it slowly
                        // holds no worker. The connection then parks (or closes) as below,
                        // and a pipelined request waits until the file is sent.
                        req.send_from(body);
                        if after == After::KeepAlive {
                            req.park();
                        }
                        return Ok(());
                    }
                    after
                }
            };
            match after {
                // A pipelined request is here already, whole: answer it now.
                After::KeepAlive if head_len(req.reader().buffer()).is_some() => continue,
                // Keep-alive: park until the next request, holding no thread, so a few
                // workers serve any number of kept-alive clients.
                After::KeepAlive => {
                    req.park();
                    return Ok(());
                }
                After::Close => return Ok(()),
                After::DrainAndClose => return Ok(self.drain(req)?),
            }
        }
    }
}

impl Http {
    /// Reads the next request's line and headers, which the server's frame has
    /// gathered whole (so no read here waits), or, for a pipelined request taken after
    /// another, which are whole in the buffer. The deadline is for a request that
    /// `process_request` brought in, which no frame gathers.
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

    /// Answers one request and says what becomes of the connection; a file's bytes are
    /// left to send, after the head the writer has.
    fn serve(
        &self,
        mut writer: &Writer,
        request: &Request,
        metrics: Option<socketserver::Metrics>,
    ) -> io::Result<(After, Option<FileBody>)> {
        let head = request.method == "HEAD";
        if !head && request.method != "GET" {
            let response = Response { allow: true, ..Response::error(405) };
            send(&mut writer, response, false, After::DrainAndClose)?;
            return Ok((After::DrainAndClose, None));
        }
        let response = match request.path.as_slice() {
            b"/" => Response::text(200, INDEX, "text/html; charset=utf-8"),
            b"/health" => Response::text(200, "ok\n", "text/plain; charset=utf-8"),
            // The server's metrics for Prometheus to scrape (the text format's own type).
            b"/metrics" => match metrics {
                Some(metrics) => Response::text(200, metrics.to_prometheus("http"), "text/plain; version=0.0.4"),
                None => Response::error(500),
            },
            path => match open(&self.root, path) {
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
        let body = send(&mut writer, response, head, after)?;
        Ok((after, body))
    }
}

/// A file's bytes, exactly as many as the `Content-Length` sent: a file that shrinks
/// while it is sent is an error, which ends the connection, so that the client does not
/// wait for the bytes missing.
struct FileBody {
    file: io::Take<File>,
    left: u64,
}

impl Read for FileBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && self.left > 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes the response, only its head for `HEAD`, and flushes it; a file's bytes are
/// given back, to send after it from the poller, and then the head is left in the
/// writer's buffer: the server sends it with the file's first bytes, in one send.
fn send(writer: &mut impl Write, response: Response, head: bool, after: After) -> io::Result<Option<FileBody>> {
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
    let mut rest = None;
    if !head {
        match response.body {
            Body::Bytes(bytes) => writer.write_all(&bytes)?,
            Body::File(file, len) => rest = Some(FileBody { file: file.take(len), left: len }),
        }
    }
    if rest.is_none() {
        writer.flush()?;
    }
    Ok(rest)
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

/// The root directory, opened once at start: every request path is resolved from this
/// handle, so renaming or replacing the root's path later changes nothing.
#[cfg(unix)]
type Root = File;
/// The root directory's canonical path (see [`open_beneath`] for how it is held).
#[cfg(not(unix))]
type Root = PathBuf;

#[cfg(unix)]
fn open_root(path: &Path) -> io::Result<Root> {
    File::open(path)
}

#[cfg(not(unix))]
fn open_root(path: &Path) -> io::Result<Root> {
    Ok(path.to_path_buf())
}

/// Opens the regular file that a percent-encoded request path names below the root:
/// the file, its length and its content type, or the status to answer instead.
///
/// The path is resolved once, by opening it (see [`open_beneath`]), and the file's type
/// is judged from the opened handle (`fstat`), never from the name again: a name that
/// is checked and then opened can be swapped between the two.
fn open(root: &Root, path: &[u8]) -> Result<(File, u64, &'static str), u16> {
    let segments = parse::segments(path)?;
    let names = segments.iter().map(|s| path_segment(s)).collect::<Result<Vec<&OsStr>, u16>>()?;
    let Some(last) = names.last() else { return Err(404) }; // the root itself: no listings
    let file =
        open_beneath(root, &names)
            .map_err(|e| if e.kind() == io::ErrorKind::PermissionDenied { 403u16 } else { 404 })?;
    let meta = file.metadata().map_err(|_| 404u16)?;
    if !meta.is_file() {
        return Err(404); // a directory, a FIFO, a device, a socket: only regular files
    }
    Ok((file, meta.len(), content_type(Path::new(last))))
}

/// Opens `names` below `root` without following any symbolic link and without
/// blocking.
///
/// Each name is opened relative to the handle of the directory before it
/// (`openat(2)`), with `O_NOFOLLOW` (a symbolic link fails to open, `ELOOP`, as
/// nginx's `disable_symlinks on` does) and `O_DIRECTORY` for all but the last. The
/// kernel resolves every name exactly once, within a directory this function holds
/// open, so no swap of a directory for a symbolic link, at any moment, can lead
/// outside the root: there is no second lookup to race. (Checking a canonical path and
/// then opening it by name, as this example once did, lost that race: issue 15.)
///
/// The last name is opened with `O_NONBLOCK` too: opening a FIFO for reading
/// otherwise blocks until a writer comes, which no timeout covers; non-blocking, it
/// opens at once and the caller turns it down on its type. (`O_NONBLOCK` does nothing
/// to reads of a regular file.) `O_NOCTTY` keeps a terminal device from becoming the
/// process's controlling terminal.
#[cfg(unix)]
fn open_beneath(root: &Root, names: &[&OsStr]) -> io::Result<File> {
    use rustix::fs::{openat, Mode, OFlags};
    use std::os::fd::{AsFd, OwnedFd};

    let (last, dirs) = names.split_last().expect("open passes at least one name");
    let mut dir: Option<OwnedFd> = None;
    for name in dirs {
        let parent = dir.as_ref().map_or(root.as_fd(), AsFd::as_fd);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let next = openat(parent, *name, flags, Mode::empty())?;
        dir = Some(next);
    }
    let parent = dir.as_ref().map_or(root.as_fd(), AsFd::as_fd);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    Ok(File::from(openat(parent, *last, flags, Mode::empty())?))
}

/// Opens `names` below `root` without following any reparse point (symbolic link,
/// junction), Windows' way: std has no `openat` there, so every directory on the way
/// (the root included) is opened and held without `FILE_SHARE_DELETE`, which keeps
/// anyone from renaming, deleting or replacing it until the file is open; each is
/// opened with `FILE_FLAG_OPEN_REPARSE_POINT`, so a reparse point is opened itself, and
/// refused. The name is looked up again for each step, but none of the directories it
/// passes through can change meanwhile. Windows has no FIFOs in the file system (pipes
/// live in `\\.\pipe\`), so no open can block.
#[cfg(not(unix))]
fn open_beneath(root: &Root, names: &[&OsStr]) -> io::Result<File> {
    use std::os::windows::fs::{MetadataExt, OpenOptionsExt};

    const FILE_SHARE_READ: u32 = 0x1;
    const FILE_SHARE_WRITE: u32 = 0x2;
    const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000; // needed to open a directory
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
    let open = |path: &Path| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)?;
        let meta = file.metadata()?;
        if meta.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, "a reparse point below the root"));
        }
        Ok((file, meta))
    };
    let mut path = root.clone();
    let mut held = vec![open(&path)?.0];
    for (i, name) in names.iter().enumerate() {
        path.push(name);
        let (file, meta) = open(&path)?;
        if i + 1 == names.len() {
            return Ok(file);
        }
        if !meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "not a directory"));
        }
        held.push(file);
    }
    unreachable!("open passes at least one name")
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
    }
    // Timeouts for a server strangers reach; --timeout below replaces the preset's.
    // Kept-alive clients park, holding no thread, so the preset's 512 connections become
    // 10,000 (or --max-connections).
    .internet_facing()
    .max_connections(MAX_CONNECTIONS);
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
        // A kept-alive connection waits parked, with no thread, as long as that too.
        .idle_timeout(Some(args.timeout))
        // Request heads are framed: the server gathers each whole head in the poller
        // before `handle` runs, so a client that connects and says nothing, or sends
        // half a head, or trickles one, holds no worker (a new client parks until then
        // too).
        .frame(Frame::with(2 * MAX_HEAD, |bytes| Ok(head_len(bytes))))
        // A client that stops reading a response must not hold its thread forever either.
        .write_timeout(args.timeout)
        .shutdown_deadline(GRACE)
        .handle_error(|error, client| match client {
            Some(client) => eprintln!("http: {client}: {error}"),
            None => eprintln!("http: {error}"),
        })
        .bind_handler(Http { root: open_root(&args.root)?, timeout: args.timeout })?;
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
