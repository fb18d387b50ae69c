//! Lab `web`, the reference solution: a small HTTP/1.1 file server (after Kurose-Ross's
//! "Web Server" lab). See `labs/web.md`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use socketserver::dispatch::Threading;
use socketserver::{HandlerResult, StreamRequest, TcpServer};

/// The longest request line or header line read, its `\r\n` included.
const MAX_LINE: usize = 8192;
/// The most header lines read.
const MAX_HEADERS: usize = 100;

/// A server on `addr` serving the files under `root`, bound and ready: call
/// `serve_forever()` on it (or `serve_in_background()` in a test).
///
/// # Errors
/// When `addr` cannot be bound (`Error::AddrInUse` when it is taken).
pub fn server(addr: &str, root: impl Into<PathBuf>) -> socketserver::Result<TcpServer> {
    let root: PathBuf = root.into();
    TcpServer::builder(addr)
        // A thread per connection: a client that sends its request slowly holds its own
        // thread, not everyone's.
        .dispatch(Threading::new())
        // ...and not for ever: a read or write that waits longer fails, and the
        // connection closes.
        .read_timeout(Duration::from_secs(10))
        .write_timeout(Duration::from_secs(10))
        .bind(move |req| handle(req, &root))
}

/// One connection: one request, one response, then the server closes it.
fn handle(req: &mut StreamRequest, root: &Path) -> HandlerResult {
    // The request line, e.g. "GET /index.html HTTP/1.1\r\n".
    let mut line = Vec::new();
    if req.reader().read_line_bounded(&mut line, MAX_LINE)? == 0 {
        return Ok(()); // connected, then left without a word
    }
    // The headers, up to the blank line. We use none of them, but read them anyway:
    // closing a socket with unread bytes sends a reset, which can destroy the response
    // before the client reads it.
    let mut header = Vec::new();
    for _ in 0..MAX_HEADERS {
        header.clear();
        if req.reader().read_line_bounded(&mut header, MAX_LINE)? == 0 || header == b"\r\n" || header == b"\n" {
            break;
        }
    }

    let line = String::from_utf8_lossy(&line);
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [method, target, version] = parts[..] else {
        return error(req, "400 Bad Request");
    };
    if !version.starts_with("HTTP/") {
        return error(req, "400 Bad Request");
    }
    if method != "GET" {
        return error(req, "501 Not Implemented");
    }
    let Some(path) = resolve(root, target) else {
        return error(req, "403 Forbidden");
    };
    match fs::read(&path) {
        Ok(body) => respond(req, "200 OK", content_type(&path), &body),
        Err(_) => error(req, "404 Not Found"), // missing, a directory, or unreadable
    }
}

/// The file under `root` that the request target names, or `None` when it would lead
/// outside the root. `/` (and any directory) means its `index.html`.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    // "/a.txt?x=1#top": the query and the fragment name no file.
    let path = target.split(['?', '#']).next().unwrap_or_default();
    // Decode first, check after: "%2e%2e" is "..", and "%2f" is "/".
    let path = percent_decode(path)?;
    let mut file = root.to_path_buf();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            // A backslash or a drive ("C:") would start a path of its own on Windows.
            s if s.contains(['\\', ':', '\0']) => return None,
            s => file.push(s),
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    Some(file)
}

/// Decodes `%XX` escapes; `None` for a bad escape or for bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.bytes();
    while let Some(b) = rest.next() {
        if b == b'%' {
            let hex = [rest.next()?, rest.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

/// The media type for a file name's extension.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    }
}

/// An error response with a small HTML page, e.g. `error(req, "404 Not Found")`.
fn error(req: &StreamRequest, status: &str) -> HandlerResult {
    let page = format!("<!DOCTYPE html>\n<html><body><h1>{status}</h1></body></html>\n");
    respond(req, status, "text/html; charset=utf-8", page.as_bytes())
}

/// Writes the status line, the headers, a blank line and the body.
fn respond(req: &StreamRequest, status: &str, content_type: &str, body: &[u8]) -> HandlerResult {
    let mut out = req.writer();
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)?;
    out.flush()?;
    Ok(())
}
