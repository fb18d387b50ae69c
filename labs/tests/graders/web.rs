//! The checks of lab `web`, over real sockets on 127.0.0.1. Each makes a temporary
//! site (removed afterwards), starts the lab's server on it on a free port, sends raw
//! HTTP requests and says what it sent, what it expected and what it got. Every read
//! waits 5 s at most.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socketserver::transport::Tcp;
use socketserver::{BackgroundServer, TcpServer};

/// The lab's API: `web::server(addr, root)`.
pub type Start = fn(&str, PathBuf) -> socketserver::Result<TcpServer>;

/// How long any one answer may take.
const WAIT: Duration = Duration::from_secs(5);

const INDEX: &str = "<!DOCTYPE html>\n<html><body><h1>It works</h1></body></html>\n";
const HELLO: &str = "Hello from the lab's web server.\n";
const SECRET: &str = "TOP SECRET: outside the root\n";

/// Bytes of every value, not text: a server that handles files as strings garbles them.
fn image() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..100_000u32).map(|i| (i * 7 % 256) as u8));
    bytes
}

/// A temporary directory `site/` with the files, and `secret.txt` beside it (outside
/// the root); removed on drop.
struct Site {
    dir: PathBuf,
    root: PathBuf,
}

impl Site {
    fn new() -> Result<Site, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("labs-web-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        let root = dir.join("site");
        let site = Site { dir, root };
        let files: [(&str, &[u8]); 8] = [
            ("index.html", INDEX.as_bytes()),
            ("hello.txt", HELLO.as_bytes()),
            ("style.css", b"h1 { color: teal; }\n"),
            ("app.js", b"console.log('hi');\n"),
            ("image.png", &image()),
            ("data.bin", b"\x00\x01\x02 raw"),
            ("with space.txt", b"a name with a space\n"),
            ("sub/page.html", b"<p>a page in a subdirectory</p>\n"),
        ];
        for (name, bytes) in files {
            let path = site.root.join(name);
            let made = std::fs::create_dir_all(path.parent().unwrap_or(&site.root))
                .and_then(|()| std::fs::write(&path, bytes));
            made.map_err(|e| format!("the grader could not write {}: {e}", path.display()))?;
        }
        let secret = site.dir.join("secret.txt");
        std::fs::write(&secret, SECRET).map_err(|e| format!("the grader could not write {}: {e}", secret.display()))?;
        Ok(site)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server running in the background on a fresh site; both cleaned up when dropped.
struct Running {
    addr: SocketAddr,
    // Stopped before the site is removed.
    _background: BackgroundServer<Tcp>,
    _site: Site,
}

fn start(server: Start) -> Result<Running, String> {
    let site = Site::new()?;
    let root = site.root.clone();
    let started = panic::catch_unwind(AssertUnwindSafe(|| server("127.0.0.1:0", root)))
        .map_err(|_| "web::server(\"127.0.0.1:0\", root) panicked (its message is above): finish it first".to_string())?
        .map_err(|e| format!("web::server(\"127.0.0.1:0\", root) returned an error: {e}"))?;
    let addr = started.local_addr();
    let background = started.serve_in_background().map_err(|e| format!("serve_in_background failed: {e}"))?;
    Ok(Running { addr, _background: background, _site: site })
}

/// A response as received.
struct Response {
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The head and the start of the body, for messages.
    fn shown(&self) -> String {
        let mut head = self.status_line.clone();
        for (name, value) in &self.headers {
            head += &format!("\\r\\n{name}: {value}");
        }
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(120)]).into_owned();
        format!("{head:?} and a body of {} bytes starting {body:?}", self.body.len())
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let fail = |e: io::Error| format!("could not connect to the server at {addr}: {e}");
    let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(fail)?;
    stream.set_read_timeout(Some(WAIT)).map_err(fail)?;
    stream.set_write_timeout(Some(WAIT)).map_err(fail)?;
    Ok(stream)
}

/// Sends `request` on a new connection and reads one response: the head up to the
/// blank line, then `Content-Length` bytes of body.
fn exchange(addr: SocketAddr, request: &str) -> Result<Response, String> {
    let mut stream = connect(addr)?;
    stream.write_all(request.as_bytes()).map_err(|e| format!("sending {request:?} failed: {e}"))?;
    read_response(&mut stream, request)
}

fn read_response(stream: &mut TcpStream, request: &str) -> Result<Response, String> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut head_len = None;
    let mut body_len = None;
    loop {
        if head_len.is_none() {
            head_len = got.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4);
            if let Some(end) = head_len {
                let head = String::from_utf8_lossy(&got[..end]).into_owned();
                let length = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())
                });
                body_len = match length {
                    Some(Some(n)) => Some(n),
                    Some(None) => {
                        return Err(format!("sent {request:?}; the Content-Length header is not a number: {head:?}"))
                    }
                    None => {
                        return Err(format!(
                            "sent {request:?}; the response has no Content-Length header: {head:?}. \
                             Hint: every response says how long its body is (`Content-Length: <bytes>`)."
                        ))
                    }
                };
            }
        }
        if let (Some(head), Some(body)) = (head_len, body_len) {
            if got.len() >= head + body {
                break;
            }
        }
        let mut chunk = [0; 16 * 1024];
        let read =
            if Instant::now() >= deadline { Err(io::ErrorKind::TimedOut.into()) } else { stream.read(&mut chunk) };
        match read {
            Ok(0) if got.is_empty() => {
                return Err(format!(
                    "sent {request:?}, and the server closed the connection without answering. \
                     Hint: did your handler return an error or panic (look above for its message)?"
                ))
            }
            Ok(0) => {
                let shown = String::from_utf8_lossy(&got[..got.len().min(300)]).into_owned();
                return Err(format!(
                    "sent {request:?}; the connection closed before the whole response came: got {} bytes, \
                     starting {shown:?}. Hint: a head ends with an empty line (\\r\\n\\r\\n) and the body has \
                     exactly Content-Length bytes.",
                    got.len()
                ));
            }
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                let shown = String::from_utf8_lossy(&got[..got.len().min(300)]).into_owned();
                return Err(format!(
                    "no answer within 5 s to {request:?} (got so far: {shown:?}). Hint: is your handler \
                     waiting for something the client does not send? Is the response flushed?"
                ));
            }
            Err(e) => return Err(format!("sent {request:?}; reading the response failed: {e}")),
        }
    }
    let (head, body) = (head_len.unwrap_or(0), body_len.unwrap_or(0));
    let text = String::from_utf8_lossy(&got[..head]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse().ok(),
        _ => None,
    };
    let Some(status) = status else {
        return Err(format!(
            "sent {request:?}; the status line {status_line:?} is not `HTTP/1.1 <code> <reason>` \
             (e.g. \"HTTP/1.1 200 OK\")"
        ));
    };
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("sent {request:?}; a header line is not `Name: value`: {text:?}"))?;
    Ok(Response { status, status_line, headers, body: got[head..head + body].to_vec() })
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// Checks a 200 response's body and Content-Type.
fn expect_file(addr: SocketAddr, path: &str, body: &[u8], content_type: &[&str]) -> Result<(), String> {
    let request = get(path);
    let response = exchange(addr, &request)?;
    if response.status != 200 {
        return Err(format!(
            "sent {request:?}, expected \"HTTP/1.1 200 OK\", got {}. Hint: the file exists in the root directory.",
            response.shown()
        ));
    }
    if response.body != body {
        let first_diff = response.body.iter().zip(body).position(|(a, b)| a != b);
        return Err(format!(
            "sent {request:?}: the body is not the file's bytes: {} bytes received, the file has {} \
             (first difference at byte {first_diff:?}). Hint: send the file as bytes (`std::fs::read`), \
             not as text.",
            response.body.len(),
            body.len()
        ));
    }
    let got = response.header("Content-Type").unwrap_or("(none)");
    let media = got.split(';').next().unwrap_or_default().trim();
    if !content_type.iter().any(|t| media.eq_ignore_ascii_case(t)) {
        return Err(format!(
            "sent {request:?}: expected `Content-Type: {}`, got `{got}`. Hint: choose it from the file \
             name's extension.",
            content_type.join("` or `")
        ));
    }
    Ok(())
}

/// `GET /` serves `index.html`; `GET /index.html` too.
pub fn check_index(server: Start) -> Result<(), String> {
    let running = start(server)?;
    expect_file(running.addr, "/index.html", INDEX.as_bytes(), &["text/html"])?;
    expect_file(running.addr, "/", INDEX.as_bytes(), &["text/html"]).map_err(|m| m + "\n(`/` means `/index.html`.)")
}

/// Each type of file has its Content-Type; an unknown one is application/octet-stream.
pub fn check_content_types(server: Start) -> Result<(), String> {
    let running = start(server)?;
    expect_file(running.addr, "/hello.txt", HELLO.as_bytes(), &["text/plain"])?;
    expect_file(running.addr, "/style.css", b"h1 { color: teal; }\n", &["text/css"])?;
    expect_file(running.addr, "/app.js", b"console.log('hi');\n", &["text/javascript", "application/javascript"])?;
    expect_file(running.addr, "/data.bin", b"\x00\x01\x02 raw", &["application/octet-stream"])?;
    expect_file(running.addr, "/sub/page.html", b"<p>a page in a subdirectory</p>\n", &["text/html"])
}

/// A binary file of 100 KB comes back byte for byte.
pub fn check_binary_file(server: Start) -> Result<(), String> {
    let running = start(server)?;
    expect_file(running.addr, "/image.png", &image(), &["image/png"])
}

/// A percent-encoded name (`%20` is a space) is decoded.
pub fn check_percent_encoded_name(server: Start) -> Result<(), String> {
    let running = start(server)?;
    expect_file(running.addr, "/with%20space.txt", b"a name with a space\n", &["text/plain"])
        .map_err(|m| m + "\n(The file is `with space.txt`: decode `%XX` in the path before you look it up.)")
}

/// A missing file is `404 Not Found` with a small HTML page.
pub fn check_not_found(server: Start) -> Result<(), String> {
    let running = start(server)?;
    for path in ["/missing.html", "/sub/nothing.txt", "/nodir/x.txt"] {
        let request = get(path);
        let response = exchange(running.addr, &request)?;
        if response.status != 404 {
            return Err(format!(
                "sent {request:?} (no such file), expected \"HTTP/1.1 404 Not Found\", got {}",
                response.shown()
            ));
        }
        let html = response.header("Content-Type").is_some_and(|t| t.to_ascii_lowercase().starts_with("text/html"));
        if !html || !response.body.contains(&b'<') {
            return Err(format!(
                "sent {request:?}: the 404 response should carry a small HTML page (`Content-Type: text/html`), \
                 got {}",
                response.shown()
            ));
        }
    }
    Ok(())
}

/// A method other than GET is `405 Method Not Allowed` or `501 Not Implemented`.
pub fn check_other_methods(server: Start) -> Result<(), String> {
    let running = start(server)?;
    for method in ["POST", "DELETE", "PUT"] {
        let request = format!(
            "{method} /index.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let response = exchange(running.addr, &request)?;
        if response.status != 405 && response.status != 501 {
            return Err(format!(
                "sent {request:?}, expected \"HTTP/1.1 405 Method Not Allowed\" or \"HTTP/1.1 501 Not Implemented\", \
                 got {}. Hint: this server only knows GET.",
                response.shown()
            ));
        }
        if response.body.is_empty() {
            return Err(format!(
                "sent {request:?}: the {} response should have a short body saying why",
                response.status
            ));
        }
    }
    Ok(())
}

/// A request line that is not `METHOD PATH VERSION` is `400 Bad Request`.
pub fn check_bad_request(server: Start) -> Result<(), String> {
    let running = start(server)?;
    for line in ["HELLO", "GET /", "GET / HTTP/1.1 extra", "GET /index.html NOTHTTP"] {
        let request = format!("{line}\r\nHost: localhost\r\n\r\n");
        let response = exchange(running.addr, &request)?;
        if response.status != 400 {
            return Err(format!(
                "sent the request line {line:?}, expected \"HTTP/1.1 400 Bad Request\", got {}. Hint: a request \
                 line is exactly three words, METHOD PATH VERSION, and the version starts with \"HTTP/\".",
                response.shown()
            ));
        }
    }
    Ok(())
}

/// No path, encoded or not, serves a file outside the root: 403 or 404 (400 is
/// accepted too).
pub fn check_path_escape(server: Start) -> Result<(), String> {
    let running = start(server)?;
    let paths = [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub/..%2F..%2Fsecret.txt",
    ];
    for path in paths {
        let request = get(path);
        let response = exchange(running.addr, &request)?;
        if response.body.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()) || response.status == 200 {
            return Err(format!(
                "sent {request:?}: the server served a file outside its root directory (the file `secret.txt` \
                 next to the root): got {}. Hint: decode the path first, then refuse any `..` segment \
                 (with 403 Forbidden or 404 Not Found).",
                response.shown()
            ));
        }
        if ![400, 403, 404].contains(&response.status) {
            return Err(format!("sent {request:?}, expected 403 Forbidden or 404 Not Found, got {}", response.shown()));
        }
    }
    Ok(())
}

/// While a first client sends its request slowly (half a request line, then a pause),
/// a second client is served; then the first one is served too.
pub fn check_slow_client_does_not_block(server: Start) -> Result<(), String> {
    let running = start(server)?;
    let mut slow = connect(running.addr)?;
    slow.write_all(b"GET /hel").map_err(|e| format!("slow client: sending failed: {e}"))?;
    std::thread::sleep(Duration::from_millis(300)); // the server has accepted it
    let request = get("/index.html");
    let response = exchange(running.addr, &request).map_err(|m| {
        format!(
            "{m}\n(while another client had sent only \"GET /hel\" and paused.) Hint: serve each connection \
             on a thread of its own (`.dispatch(Threading::new())`), so that a slow client holds only its \
             own thread, with a read timeout so that it cannot hold it for ever."
        )
    })?;
    if response.status != 200 {
        return Err(format!("sent {request:?} while another client was slow, expected 200, got {}", response.shown()));
    }
    let rest = "lo.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    slow.write_all(rest.as_bytes()).map_err(|e| format!("slow client: sending the rest failed: {e}"))?;
    let response = read_response(&mut slow, &format!("GET /hel{rest}"))
        .map_err(|m| format!("slow client (its request came in two parts, 0.3 s apart): {m}"))?;
    if response.status != 200 || response.body != HELLO.as_bytes() {
        return Err(format!(
            "slow client: sent \"GET /hel\", paused, then {rest:?}; expected 200 and hello.txt, got {}",
            response.shown()
        ));
    }
    Ok(())
}
