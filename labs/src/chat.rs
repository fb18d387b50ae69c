//! Lab `chat`: a chat room over TCP with a line protocol (after the chat rooms of
//! Kurose-Ross and of the Chinese socket tutorials). The assignment is `labs/chat.md`
//! (中文: `labs/chat.zh-CN.md`); the grader is `cargo test -p labs --test lab_chat`.
//!
//! Complete the parts marked `TODO(n)`, in order. Keep the public API as it is (the
//! grader calls `server` and reads `MAX_LINE`).

// The unfinished parts leave some helpers and imports unused: delete this line when
// you are done, and the compiler will tell you if something is still unused.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::Shutdown;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socketserver::dispatch::Pool;
use socketserver::{Connection, Frame, HandlerResult, RequestHandler, StreamRequest, TcpServer};

/// The longest line a client may send, its `\n` included. A longer one is refused with
/// an error line, and the connection stays open.
pub const MAX_LINE: usize = 512;

/// The longest line the server reads at all: past it a client is flooding, not chatting,
/// and its connection is closed without reading more.
const MAX_FRAME: usize = 8 * MAX_LINE;

/// The worker threads. Every connection waits parked between its lines, holding none.
const WORKERS: usize = 4;

/// How long a line may wait for a client to make room for it: a client that stops
/// reading is disconnected after that, and stalls the room no longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client silent for this long is disconnected (the default, 60 s, is short for a chat).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A server on `addr`, bound and ready: call `serve_forever()` on it (or
/// `serve_in_background()` in a test).
///
/// # Errors
/// When `addr` cannot be bound (`Error::AddrInUse` when it is taken).
pub fn server(addr: &str) -> socketserver::Result<TcpServer> {
    // A pool of WORKERS threads; each connection will wait parked between its lines
    // (TODO(1)), holding no thread, so that a few workers serve many chat users.
    TcpServer::builder(addr)
        .dispatch(Pool::new(WORKERS))
        // TODO(5): three lines of the builder (labs/chat.md, step 5):
        //   - declare the framing, lines of at most MAX_FRAME bytes, so that the server
        //     gathers each whole line before `handle` runs (half a line holds no worker,
        //     and a flood without a newline closes its connection);
        //   - a write timeout of WRITE_TIMEOUT, so that a client that reads nothing
        //     cannot stall the room for ever (it is set on each connection's socket, so
        //     it bounds the room's writes to that client too);
        //   - an idle timeout of IDLE_TIMEOUT (the default, 60 s, is short for a chat).
        .bind_handler(Room::default())
}

/// The room: who is here, by name, with a handle to write to each one's connection.
/// One value serves every connection, so this map is shared by all of them.
#[derive(Default)]
struct Room {
    members: Mutex<HashMap<String, Connection>>,
}

/// What one connection remembers between its lines: its name, once it has joined.
/// (`req.state::<Joined>()` gives this connection's.)
#[derive(Default)]
struct Joined(Option<String>);

impl RequestHandler<StreamRequest> for Room {
    /// One line: the name, or a message. Then park until the next one.
    fn handle(&self, req: &mut StreamRequest) -> HandlerResult {
        // TODO(1): read ONE line from `req.reader()` with `read_until(b'\n', ..)` into a
        // Vec<u8> (0 bytes: the client left, return Ok(())), then call `req.park()`, so
        // that the connection waits for its next line in the server's poller. Then:
        //   - a line longer than MAX_LINE bytes: answer "* error: line too long ...\n"
        //     (through `self.tell(name, ..)` once joined, else `req.writer()`), nothing
        //     else;
        //   - take the text without its "\n" (and a "\r" before it);
        //   - not joined yet (`req.state::<Joined>().0` is None): it is a name, trimmed:
        //     `self.join(req, name)`, and remember the name it returns in the state;
        //   - joined, and not empty: `self.broadcast(name, "<name>: <text>\n")`.
        let _ = req;
        todo!("TODO(1): read one line and act on it (labs/chat.md, step 1)")
    }

    /// The connection ended (the client closed or reset it, was cut off, or the server
    /// stops): the others are told.
    fn finish(&self, req: &mut StreamRequest) -> HandlerResult {
        // TODO(4): if this connection had joined (its `Joined` state holds a name), remove
        // the name from the room and tell every other member "* <name> left\n", under one
        // lock.
        let _ = req;
        Ok(())
    }
}

impl Room {
    fn members(&self) -> MutexGuard<'_, HashMap<String, Connection>> {
        // A panic cannot leave the map half-changed, so a poisoned lock is still usable.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters the room as `name`, or says why not (the client may try again). Returns
    /// the name once joined.
    fn join(&self, req: &StreamRequest, name: &str) -> std::io::Result<Option<String>> {
        // TODO(2): lock the room, once, for all of this:
        //   - an empty name, or one in the room already: write "* error: ...\n" to
        //     `req.writer()` and return Ok(None);
        //   - else: a clone of the connection, `req.connection().try_clone()?`, to write
        //     to this client from other clients' handlers; write "* welcome <name>\n" to
        //     it; tell every other member "* <name> joined\n" (`Self::send_all`); insert
        //     the name and the clone into the map; return Ok(Some(name)).
        let _ = (req, name);
        todo!("TODO(2): join the room (labs/chat.md, step 2)")
    }

    /// Sends `line` to every member but `from`.
    fn broadcast(&self, from: &str, line: &str) {
        Self::send_all(&mut self.members(), from, line);
    }

    /// Sends `line` to one member (an error about its own line).
    fn tell(&self, to: &str, line: &str) {
        if let Some(connection) = self.members().get_mut(to) {
            Self::send(connection, line);
        }
    }

    /// Sends `line` to every member but `from`, with the lock held: lines never
    /// interleave, and everyone gets them in the same order.
    fn send_all(members: &mut HashMap<String, Connection>, from: &str, line: &str) {
        // TODO(3): `Self::send` the line to each member whose name is not `from`.
        let _ = (members, from, line);
        todo!("TODO(3): send a line to every other member (labs/chat.md, step 3)")
    }

    /// A write that fails (the client is gone, or took nothing for WRITE_TIMEOUT) shuts
    /// the connection down: the server then sees it end, and `finish` tells the others.
    fn send(connection: &mut Connection, line: &str) {
        // TODO(3): `write_all` the line to the connection; if that fails, shut the
        // connection down (`shutdown(Shutdown::Both)`), ignoring the result.
        let _ = (connection, line);
        todo!("TODO(3): write a line to one member (labs/chat.md, step 3)")
    }
}
