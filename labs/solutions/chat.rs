//! Lab `chat`, the reference solution: a chat room over TCP with a line protocol (after
//! the chat rooms of Kurose-Ross and of the Chinese socket tutorials). See `labs/chat.md`.

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
    // A pool, and each connection parked between its lines: a chat user is silent most of
    // the time, and a parked connection holds no thread, so 4 workers serve hundreds of
    // users. Parking does not stop the others from writing to it: the room keeps a clone
    // of each connection (a second handle on the same socket), which stays a blocking
    // socket with the write timeout below while the server waits for it in its poller.
    TcpServer::builder(addr)
        .dispatch(Pool::new(WORKERS))
        // The server gathers each whole line before `handle` runs: half a line holds no
        // worker, and a line past MAX_FRAME closes its connection.
        .frame(Frame::lines(MAX_FRAME))
        // Set on each connection's socket, so it bounds the room's writes to it too.
        .write_timeout(WRITE_TIMEOUT)
        .idle_timeout(Some(IDLE_TIMEOUT))
        .bind_handler(Room::default())
}

/// The room: who is here, by name, with a handle to write to each one's connection.
/// One value serves every connection, so this map is shared by all of them.
#[derive(Default)]
struct Room {
    members: Mutex<HashMap<String, Connection>>,
}

/// What one connection remembers between its lines: its name, once it has joined.
#[derive(Default)]
struct Joined(Option<String>);

impl RequestHandler<StreamRequest> for Room {
    /// One line: the name, or a message. Then park until the next one.
    fn handle(&self, req: &mut StreamRequest) -> HandlerResult {
        let mut line = Vec::new();
        if req.reader().read_until(b'\n', &mut line)? == 0 {
            return Ok(()); // the client left: `finish` says so to the others
        }
        req.park();
        let name = req.state::<Joined>().0.clone();
        if line.len() > MAX_LINE {
            let error = format!("* error: line too long (at most {MAX_LINE} bytes)\n");
            match name {
                Some(name) => self.tell(&name, &error),
                None => req.writer().write_all(error.as_bytes())?,
            }
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        match name {
            Some(name) if !text.is_empty() => self.broadcast(&name, &format!("{name}: {text}\n")),
            Some(_) => {} // an empty line says nothing
            None => {
                if let Some(name) = self.join(req, text.trim())? {
                    req.state::<Joined>().0 = Some(name);
                }
            }
        }
        Ok(())
    }

    /// The connection ended (the client closed or reset it, was cut off, or the server
    /// stops): the others are told.
    fn finish(&self, req: &mut StreamRequest) -> HandlerResult {
        if let Some(name) = req.state::<Joined>().0.take() {
            let mut members = self.members();
            members.remove(&name);
            Self::send_all(&mut members, &name, &format!("* {name} left\n"));
        }
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
        let mut members = self.members();
        let refused = if name.is_empty() {
            Some("* error: empty name\n".to_string())
        } else if members.contains_key(name) {
            Some(format!("* error: name {name:?} is taken\n"))
        } else {
            None
        };
        if let Some(error) = refused {
            req.writer().write_all(error.as_bytes())?;
            return Ok(None);
        }
        // Under the lock, straight to the socket: the welcome goes before any line that
        // another client sends once this one is in the room.
        let mut connection = req.connection().try_clone()?;
        connection.write_all(format!("* welcome {name}\n").as_bytes())?;
        Self::send_all(&mut members, name, &format!("* {name} joined\n"));
        members.insert(name.to_string(), connection);
        Ok(Some(name.to_string()))
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
        for (name, connection) in members.iter_mut() {
            if name != from {
                Self::send(connection, line);
            }
        }
    }

    /// A write that fails (the client is gone, or took nothing for WRITE_TIMEOUT) shuts
    /// the connection down: the server then sees it end, and `finish` tells the others.
    fn send(connection: &mut Connection, line: &str) {
        if connection.write_all(line.as_bytes()).is_err() {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}
