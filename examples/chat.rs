//! A chat room over TCP: every line a client sends goes to every other client.
//!
//! The classic exercise of a network-programming course: one thread per client
//! (`ThreadingMixIn`), shared state behind a lock, and clients that come and go.
//!
//! ```text
//! cargo run --example chat [-- --addr HOST:PORT]    # default 127.0.0.1:7000
//! nc 127.0.0.1 7000                                 # in two or more terminals
//! ```
//!
//! The protocol, one line each way:
//!
//! ```text
//! < * your nickname? (an empty line: guest1)
//! > alice
//! < * welcome, alice; also here: bob
//! > hello                       # bob sees `alice: hello`
//! < bob: hi alice
//! < * carol joined
//! < * bob left
//! ```
//!
//! A nickname is up to 16 letters, digits, `-` or `_`, not starting with `guest`; any
//! other, or one already taken, becomes `guestN`. A client leaves on end-of-file (Ctrl-D
//! in `nc`), `/quit`, an error, or a line over 1024 bytes. A client that stops reading
//! cannot stall the room for long: a write to it that waits more than 2 s fails, and it
//! is disconnected (the others wait those 2 s, since a broadcast writes under the lock;
//! a real server would give each client an outgoing queue).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socketserver::{Connection, RequestHandler, StreamRequest, ThreadingTcpServer};

const MAX_LINE: usize = 1024;
const MAX_NICK: usize = 16;
/// How long a message may wait for a client to make room for it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client in the room: its nickname, and a handle to write to its connection from
/// other clients' threads.
struct Member {
    nick: String,
    stream: Connection,
}

/// The server's one handler value: the room, shared by every client's thread.
#[derive(Default)]
struct ChatRoom {
    /// By id, which is the order of arrival: who is here is listed in that order.
    members: Mutex<BTreeMap<u64, Member>>,
    next_id: AtomicU64,
}

impl ChatRoom {
    fn members(&self) -> MutexGuard<'_, BTreeMap<u64, Member>> {
        // A panic cannot leave the map half-changed, so a poisoned lock is still usable.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `line` to every member but `from`. Called with the lock held, so lines never
    /// interleave and no one joins or leaves halfway. A member whose write fails (or
    /// times out) is shut down: its own thread then reads end-of-file and leaves.
    fn broadcast(members: &mut BTreeMap<u64, Member>, from: u64, line: &str) {
        for (&id, member) in members.iter_mut() {
            if id != from && member.stream.write_all(line.as_bytes()).is_err() {
                let _ = member.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Enters the room under a free nickname, which it returns.
    fn join(&self, id: u64, wanted: &str, stream: Connection) -> io::Result<String> {
        let mut members = self.members();
        // `guestN` names are the server's to give, so a chosen one can never collide with
        // the fallback of a later client.
        let valid = !wanted.is_empty()
            && wanted.len() <= MAX_NICK
            && wanted.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !wanted.starts_with("guest");
        let taken = members.values().any(|m| m.nick == wanted);
        let nick = if valid && !taken { wanted.to_string() } else { format!("guest{id}") };
        let others: Vec<&str> = members.values().map(|m| m.nick.as_str()).collect();
        if others.is_empty() {
            writeln!(&stream, "* welcome, {nick}; you are the first here")?;
        } else {
            writeln!(&stream, "* welcome, {nick}; also here: {}", others.join(", "))?;
        }
        Self::broadcast(&mut members, id, &format!("* {nick} joined\n"));
        members.insert(id, Member { nick: nick.clone(), stream });
        Ok(nick)
    }

    fn leave(&self, id: u64) {
        let mut members = self.members();
        if let Some(member) = members.remove(&id) {
            Self::broadcast(&mut members, id, &format!("* {} left\n", member.nick));
            println!("{} left", member.nick);
        }
    }

    /// Passes the client's lines to the room until it leaves.
    fn relay(&self, req: &mut StreamRequest, id: u64, nick: &str) -> io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            if req.reader().read_line_bounded(&mut line, MAX_LINE)? == 0 {
                return Ok(()); // end-of-file: the client closed, or was shut down
            }
            match String::from_utf8_lossy(&line).trim_end() {
                "/quit" => return Ok(()),
                "" => {}
                text => Self::broadcast(&mut self.members(), id, &format!("{nick}: {text}\n")),
            }
        }
    }
}

impl RequestHandler<StreamRequest> for ChatRoom {
    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        writeln!(req.writer(), "* your nickname? (an empty line: guest{id})")?;
        let mut wanted = Vec::new();
        if req.reader().read_line_bounded(&mut wanted, MAX_LINE)? == 0 {
            return Ok(()); // gone before joining
        }
        // Other clients' threads write to this connection through a second handle to
        // the same socket (a dup of its descriptor).
        let stream = req.connection().try_clone()?;
        let nick = self.join(id, String::from_utf8_lossy(&wanted).trim(), stream)?;
        println!("{nick} joined from {}", req.client_addr());
        let result = self.relay(req, id, &nick);
        self.leave(id); // on end-of-file, /quit and errors alike
        Ok(result?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => "127.0.0.1:7000",
        [flag, addr] if flag == "--addr" => addr,
        _ => return Err("usage: chat [--addr HOST:PORT]".into()),
    };
    // A thread per client, as each connection stays open. The write timeout is set on
    // each connection's socket, so it holds for the other clients' writes too.
    let server = ThreadingTcpServer::builder(addr).write_timeout(WRITE_TIMEOUT).bind_handler(ChatRoom::default())?;
    println!("listening on tcp://{}", server.local_addr());
    server.serve_forever()?; // until Ctrl-C
    Ok(())
}
