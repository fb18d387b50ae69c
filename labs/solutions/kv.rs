//! Lab `kv`, the reference solution: a key-value server with a line protocol (after
//! Talent Plan's `kvs`, simplified). See `labs/kv.md`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Mutex, PoisonError};

use socketserver::dispatch::Pool;
use socketserver::{Frame, HandlerResult, StreamRequest, TcpServer};

/// The longest command line the server accepts, its `\n` included. A longer line closes
/// the connection.
pub const MAX_LINE: usize = 1024;

/// The store every connection shares.
type Store = Mutex<HashMap<String, String>>;

/// A server on `addr`, served by a pool of `workers` threads, bound and ready: call
/// `serve_forever()` on it (or `serve_in_background()` in a test).
///
/// # Errors
/// When `addr` cannot be bound (`Error::AddrInUse` when it is taken).
pub fn server(addr: &str, workers: usize) -> socketserver::Result<TcpServer> {
    // One store, captured by the one handler value that serves every connection.
    let store = Store::default();
    TcpServer::builder(addr)
        .dispatch(Pool::new(workers))
        // The server gathers each whole line before `handle` runs: a client that sends
        // half a command holds no worker, and a line over MAX_LINE closes its connection.
        .frame(Frame::lines(MAX_LINE))
        .bind(move |req| handle(req, &store))
}

/// One command: read its line (whole: the frame gathered it), answer, park.
fn handle(req: &mut StreamRequest, store: &Store) -> HandlerResult {
    let mut line = Vec::new();
    if req.reader().read_until(b'\n', &mut line)? == 0 {
        return Ok(()); // the client left
    }
    let reply = match std::str::from_utf8(&line) {
        Ok(text) => execute(store, text.trim_end_matches(['\r', '\n'])),
        Err(_) => "ERROR not UTF-8\n".to_string(),
    };
    req.writer().write_all(reply.as_bytes())?;
    // Wait for the next command in the poller, holding no thread. A command that came
    // with this one (pipelined) is already buffered: `handle` runs again at once.
    req.park();
    Ok(())
}

/// Runs one command line (without its newline) and returns the reply line.
fn execute(store: &Store, line: &str) -> String {
    let (command, args) = line.split_once(' ').unwrap_or((line, ""));
    // A panic in another handler while it held the lock leaves a whole map: go on.
    let map = || store.lock().unwrap_or_else(PoisonError::into_inner);
    match command {
        "SET" => match args.split_once(' ') {
            Some((key, value)) if !key.is_empty() => {
                map().insert(key.to_string(), value.to_string());
                "OK\n".to_string()
            }
            _ => "ERROR usage: SET key value\n".to_string(),
        },
        "GET" | "DEL" if args.is_empty() || args.contains(' ') => format!("ERROR usage: {command} key\n"),
        "GET" => match map().get(args) {
            Some(value) => format!("VALUE {value}\n"),
            None => "NOT_FOUND\n".to_string(),
        },
        "DEL" => match map().remove(args) {
            Some(_) => "DELETED\n".to_string(),
            None => "NOT_FOUND\n".to_string(),
        },
        "" => "ERROR empty command\n".to_string(),
        other => format!("ERROR unknown command {other:?}\n"),
    }
}
