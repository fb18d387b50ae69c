//! Lab `web`: a small HTTP/1.1 file server (after Kurose-Ross's "Web Server" lab). The
//! assignment is `labs/web.md` (中文: `labs/web.zh-CN.md`); the grader is
//! `cargo test -p labs --test lab_web`.
//!
//! Complete the parts marked `TODO(n)`, in order. Keep the public API as it is (the
//! grader calls `server`).

// The unfinished parts leave some helpers and imports unused: delete this line when
// you are done, and the compiler will tell you if something is still unused.
#![allow(dead_code, unused_imports)]

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
        // TODO(5): as it is, the server is sequential: one connection at a time, so a
        // client that sends its request slowly makes every other client wait. Serve
        // each connection on a thread of its own, and set a read timeout (and a write
        // timeout) so that a silent client cannot keep its thread for ever.
        .bind(move |req| handle(req, &root))
}

/// One connection: one request, one response, then the server closes it.
fn handle(req: &mut StreamRequest, root: &Path) -> HandlerResult {
    // TODO(1): read the request line ("GET /index.html HTTP/1.1\r\n") with
    // `req.reader().read_line_bounded(&mut line, MAX_LINE)` (0 bytes: the client left,
    // return Ok(())), then the header lines up to the empty line, at most MAX_HEADERS
    // of them (read them even if you use none: see labs/web.md, step 1). Then:
    //   - not three words, or a version not starting with "HTTP/": 400 Bad Request
    //   - a method other than GET: 501 Not Implemented (or 405 Method Not Allowed)
    //   - `resolve` says None: 403 Forbidden
    //   - else read the file (`fs::read`): 200 OK with `content_type`, or 404 Not Found
    // `error(req, "404 Not Found")` answers an error with a small HTML page.
    let _ = (req, root);
    todo!("TODO(1): read the request and answer it (labs/web.md, step 1)")
}

/// The file under `root` that the request target names, or `None` when it would lead
/// outside the root. `/` (and any directory) means its `index.html`.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    // TODO(3): drop a query ("?x=1") or fragment ("#top") from `target`, decode it with
    // `percent_decode` (None: give up), split it on '/', and push each segment onto
    // `root.to_path_buf()`: skip "" and ".", refuse ".." (return None), and refuse a
    // segment containing '\\', ':' or '\0' (on Windows they start a path of their own).
    // If the result is a directory, push "index.html".
    let _ = (root, target);
    todo!("TODO(3): map the request path to a file under the root (labs/web.md, step 3)")
}

/// Decodes `%XX` escapes; `None` for a bad escape or for bytes that are not UTF-8.
/// (Given: nothing to do here.)
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
        // TODO(4): .txt, .css, .js, .png (and .jpg, .gif if you like): see labs/web.md.
        _ => "application/octet-stream",
    }
}

/// An error response with a small HTML page, e.g. `error(req, "404 Not Found")`.
/// (Given.)
fn error(req: &StreamRequest, status: &str) -> HandlerResult {
    let page = format!("<!DOCTYPE html>\n<html><body><h1>{status}</h1></body></html>\n");
    respond(req, status, "text/html; charset=utf-8", page.as_bytes())
}

/// Writes the status line, the headers, a blank line and the body.
fn respond(req: &StreamRequest, status: &str, content_type: &str, body: &[u8]) -> HandlerResult {
    // TODO(2): write to `req.writer()`, each line ending in "\r\n":
    //   HTTP/1.1 <status>
    //   Content-Type: <content_type>
    //   Content-Length: <the body's length in bytes>
    //   Connection: close
    //   (an empty line)
    // then the body, and flush.
    let _ = (req, status, content_type, body);
    todo!("TODO(2): write the response (labs/web.md, step 2)")
}
