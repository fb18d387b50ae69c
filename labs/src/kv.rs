//! Lab `kv`: a key-value server with a line protocol (after Talent Plan's `kvs`,
//! simplified). The assignment is `labs/kv.md` (中文: `labs/kv.zh-CN.md`); the grader is
//! `cargo test -p labs --test lab_kv`.
//!
//! Complete the parts marked `TODO(n)`, in order. Keep the public API as it is (the
//! grader calls `server` and reads `MAX_LINE`).

use std::collections::HashMap;
#[allow(unused_imports)] // TODO: you will use these
use std::io::{BufRead, Write};
use std::sync::Mutex;

use socketserver::dispatch::Pool;
#[allow(unused_imports)] // TODO: you will use `Frame`
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
        // TODO(3): declare how messages are delimited, so that the server gathers each
        // whole line (at most MAX_LINE bytes) before `handle` runs: a client that sends
        // half a command then holds no worker, and a longer line closes its connection.
        // One line of the builder: see `Frame` in the crate's docs.
        .bind(move |req| handle(req, &store))
}

/// One command: read its line, answer, and park the connection until the next one.
fn handle(req: &mut StreamRequest, store: &Store) -> HandlerResult {
    // TODO(1): read ONE line from `req.reader()` (0 bytes read: the client left, return
    // Ok(())), turn it into text without its "\n" (and a "\r" before it), answer it with
    // `execute`, and write the answer to `req.writer()`.
    //
    // TODO(4): then call `req.park()`, so that the connection waits for its next command
    // in the server's poller, holding no worker. (Do not loop over the lines here: a
    // handler that loops keeps its worker for as long as the client stays connected.)
    let _ = (req, store);
    todo!("TODO(1): read one command line and answer it (labs/kv.md, step 1)")
}

/// Runs one command line (without its newline) and returns the reply line, with its
/// `\n`: `OK`, `VALUE <value>`, `NOT_FOUND`, `DELETED` or `ERROR <reason>`.
#[allow(dead_code)] // until `handle` calls it (TODO(1)): then remove this line
fn execute(store: &Store, line: &str) -> String {
    // TODO(2): split the command from its arguments (`split_once(' ')`), then:
    //   SET key value  -> insert (the value is the rest of the line), "OK\n"
    //   GET key        -> "VALUE <value>\n" or "NOT_FOUND\n"
    //   DEL key        -> "DELETED\n" or "NOT_FOUND\n"
    //   anything else  -> "ERROR <reason>\n" (a missing key, an extra word, a command
    //                     nobody knows, an empty line)
    // Lock the store (`store.lock()`) only for the insert, get or remove itself.
    let _ = (store, line);
    todo!("TODO(2): execute SET, GET and DEL (labs/kv.md, step 2)")
}
