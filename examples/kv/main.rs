//! A key-value server speaking the Redis protocol (RESP2), enough for `redis-cli` and
//! `redis-benchmark -t ping,set,get`.
//!
//! ```text
//! cargo run --release --example kv -- [--addr ADDR] [--mode sequential|threading|pool] [--workers N]
//! ```
//!
//! Prints `listening on tcp://IP:PORT` once bound (default `127.0.0.1:6380`); try
//! `redis-cli -p 6380 set greeting hello`. Commands: `PING [msg]`, `ECHO msg`, `GET key`,
//! `SET key value [EX seconds]`, `DEL key...`, `EXISTS key...`, `INCR key`, `COMMAND`
//! (an empty reply, so `redis-cli` starts cleanly), `CONFIG GET save|appendonly` (as
//! `redis-benchmark` asks), `QUIT`. Requests come as RESP arrays
//! or as inline lines (`PING\r\n`, as `nc` sends), and may be pipelined: replies are
//! written in order and sent when no further request is already waiting. A malformed
//! request gets `-ERR Protocol error: ...` and the connection is closed; so does one
//! bigger than Redis's limits (`resp.rs`: lines of 64 KiB, 1M items, bulk strings of
//! 64 MiB, 128 MiB per command in all, as `client-query-buffer-limit`). Integers are
//! read as Redis reads them: `INCR` of `007` is an error. The timeouts are
//! `Builder::internet_facing`'s; at most 10,000 clients at once (Redis's `maxclients`).
//! Between commands a connection parks
//! (`StreamRequest::park`): it holds no thread, so a pool of a few workers serves every
//! client. Commands are framed (`Builder::frame` with `resp::command_len`): the server
//! gathers each whole command without blocking before running it, so a client that sends
//! half a command, or trickles one, holds no worker. One idle for 5 minutes is closed, and
//! so is one whose command has not all arrived 5 minutes after its first byte, or that
//! stops reading its replies for 10 s (a write timeout), which holds up no one else
//! meanwhile: a batch of pipelined replies ends at 8 KiB and goes out from the poller,
//! holding no worker, and the map is never locked during a write. The RESP parser is `resp.rs`, which the fuzz
//! crate compiles too. SIGINT or SIGTERM stops accepting at once, gives running clients
//! up to 2 s, then exits 0.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use socketserver::dispatch::{Dispatch, Pool};
use socketserver::{Frame, Reader, RequestHandler, StreamRequest, TcpServer, Writer};

mod resp;

use resp::{command_len, number, read_command, ReadError};

const GRACE: Duration = Duration::from_secs(2);
/// At most this many clients at once (Redis's default `maxclients`): each parked one
/// costs a socket and its buffers, not a thread.
const MAX_CLIENTS: usize = 10_000;
/// The longest command the frame lets gather: the limits of `resp.rs` end one first.
const MAX_FRAME: usize = resp::MAX_COMMAND_BYTES as usize + 32 * 1024 * 1024;
/// How long a client may stay idle between commands, parked.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a write may wait for a client that does not read its replies.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The writer's buffer, where a batch's replies collect.
const WBUFSIZE: usize = 16 * 1024;
/// A batch of pipelined commands ends once its replies fill half the writer's buffer:
/// the server sends them from the poller (a client that does not read holds no worker)
/// and runs the commands still buffered after that. A usual reply after it still fits,
/// so the buffer does not flush, blocking, in the middle of a batch.
const REPLY_BATCH: usize = WBUFSIZE / 2;
const USAGE: &str = "usage: kv [--addr ADDR] [--mode sequential|threading|pool] [--workers N]
  defaults: --addr 127.0.0.1:6380 --mode pool (a worker per CPU, at least 2)";

struct Args {
    addr: SocketAddr,
    dispatch: Dispatch,
}

/// Parses the command line; the error is the one line to print.
fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut addr, mut mode, mut workers) = ("127.0.0.1:6380".to_string(), "pool".to_string(), None);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--mode" => mode = value()?,
            "--workers" => {
                let text = value()?;
                let n = text.parse().ok().filter(|&n| n > 0);
                workers = Some(n.ok_or(format!("bad --workers {text:?}: expected a whole number of at least 1"))?);
            }
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
    let addr = addr.parse().map_err(|_| format!("bad --addr {addr:?}: expected IP:PORT, like 127.0.0.1:6380"))?;
    Ok(Args { addr, dispatch })
}

struct Entry {
    /// Shared, so that `GET` copies a pointer out of the map, not the value.
    value: Arc<[u8]>,
    expires: Option<Instant>,
}

/// The store, shared by every connection.
#[derive(Default)]
struct Kv {
    map: Mutex<HashMap<Vec<u8>, Entry>>,
}

/// The writer, counting the bytes a batch's replies have written.
struct Counted<'a> {
    out: &'a mut Writer,
    bytes: usize,
}

impl Write for Counted<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.out.write(bytes)?;
        self.bytes += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What the connection does after a command.
enum Next {
    Continue,
    Quit,
}

/// How a batch of commands ended.
enum Served {
    /// Every command that had arrived is answered: wait for the next, parked.
    Park,
    /// The client left or sent `QUIT`.
    End,
    /// A malformed request: the protocol error to report.
    Protocol(&'static str),
}

impl RequestHandler<StreamRequest> for Kv {
    /// One batch of commands: those that have arrived (one, or a pipelined batch), then
    /// the connection parks, holding no thread until the client sends more. A pool of a
    /// few workers thus serves every client, as Redis's single loop does.
    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        let (reader, out) = req.reader_and_writer();
        match self.serve(reader, out)? {
            // The server flushes the replies before the connection parks.
            Served::Park => req.park(),
            Served::End => {}
            Served::Protocol(message) => {
                write!(out, "-ERR Protocol error: {message}\r\n")?;
                drain(req)?;
            }
        }
        Ok(())
    }
}

impl Kv {
    /// Answers the commands that have arrived whole: at least one (the frame has
    /// gathered it), then every further one already whole in the reader's buffer.
    /// Replies collect in the writer and go out in one send when the batch ends.
    fn serve(&self, reader: &mut Reader, out: &mut Writer) -> io::Result<Served> {
        let mut line = Vec::new();
        let mut out = Counted { out, bytes: 0 };
        loop {
            let args = match read_command(reader, &mut line) {
                Ok(args) => args,
                Err(ReadError::Closed) => return Ok(Served::End),
                Err(ReadError::Protocol(message)) => return Ok(Served::Protocol(message)),
                Err(ReadError::Io(e)) if is_disconnect(&e) => return Ok(Served::End),
                Err(ReadError::Io(e)) => return Err(e),
            };
            if !args.is_empty() {
                if let Next::Quit = self.execute(&args, &mut out)? {
                    return Ok(Served::End);
                }
            }
            // Replies enough for one send: they go out from the poller first.
            if out.bytes >= REPLY_BATCH {
                return Ok(Served::Park);
            }
            // Nothing more, or the start of a command still arriving: the server
            // gathers the rest in the poller, holding no thread.
            if command_len(reader.buffer()).is_none() {
                return Ok(Served::Park);
            }
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        // A panic elsewhere cannot leave an entry half-written: every change is one call.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one command and writes its reply.
    fn execute(&self, args: &[Vec<u8>], out: &mut impl Write) -> io::Result<Next> {
        let name = args[0].to_ascii_lowercase();
        let arity_ok = match name.as_slice() {
            b"ping" => args.len() <= 2,
            b"echo" | b"get" | b"incr" => args.len() == 2,
            b"set" => args.len() >= 3,
            b"del" | b"exists" => args.len() >= 2,
            b"command" | b"quit" => true,
            b"config" => args.len() == 3,
            _ => {
                let shown = String::from_utf8_lossy(&args[0]).replace(['\r', '\n'], " ");
                return error(out, &format!("unknown command '{}'", shown.chars().take(128).collect::<String>()));
            }
        };
        if !arity_ok {
            let name = String::from_utf8_lossy(&name);
            return error(out, &format!("wrong number of arguments for '{name}' command"));
        }
        let now = Instant::now();
        // The map's lock is held only to read or change it, never across a write to the
        // client: a client that stops reading blocks its own writes, so a write under
        // the lock would stall every other client's command behind it (issue 15). Each
        // `self.map()` below is dropped at the end of its statement.
        match name.as_slice() {
            b"ping" if args.len() == 1 => out.write_all(b"+PONG\r\n")?,
            b"ping" | b"echo" => bulk(out, Some(&args[1]))?,
            b"get" => {
                let value = live(&self.map(), &args[1], now).map(|e| e.value.clone());
                bulk(out, value.as_deref())?
            }
            b"set" => {
                let expires = match &args[3..] {
                    [] => None,
                    [option, seconds] if option.eq_ignore_ascii_case(b"ex") => match number(seconds) {
                        None => return error(out, "value is not an integer or out of range"),
                        Some(s) if s <= 0 || s > i64::MAX / 1000 => {
                            return error(out, "invalid expire time in 'set' command")
                        }
                        Some(s) => now.checked_add(Duration::from_secs(s as u64)),
                    },
                    _ => return error(out, "syntax error"),
                };
                let entry = Entry { value: args[2].as_slice().into(), expires };
                self.map().insert(args[1].clone(), entry);
                out.write_all(b"+OK\r\n")?
            }
            b"del" => {
                let removed = {
                    let mut map = self.map();
                    args[1..].iter().filter(|k| map.remove(*k).is_some_and(|e| !expired(&e, now))).count()
                };
                integer(out, removed as i64)?
            }
            b"exists" => {
                let found = {
                    let map = self.map();
                    args[1..].iter().filter(|k| live(&map, k, now).is_some()).count()
                };
                integer(out, found as i64)?
            }
            b"incr" => match self.incr(&args[1], now) {
                Ok(next) => integer(out, next)?,
                Err(message) => return error(out, message),
            },
            b"command" => out.write_all(b"*0\r\n")?,
            b"config" if !args[1].eq_ignore_ascii_case(b"get") => return error(out, "only CONFIG GET is supported"),
            // What redis-benchmark asks before it starts; this server keeps nothing on disk.
            b"config" => match args[2].to_ascii_lowercase().as_slice() {
                b"save" => out.write_all(b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n")?,
                b"appendonly" => out.write_all(b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n")?,
                _ => out.write_all(b"*0\r\n")?,
            },
            b"quit" => {
                out.write_all(b"+OK\r\n")?;
                return Ok(Next::Quit);
            }
            _ => unreachable!("every name was checked above"),
        }
        Ok(Next::Continue)
    }
}

impl Kv {
    /// `INCR`: the new value, or the error to reply. The value must be an integer as
    /// Redis reads one ([`number`]: `007` is not).
    fn incr(&self, key: &[u8], now: Instant) -> Result<i64, &'static str> {
        let mut map = self.map();
        let entry = live(&map, key, now);
        let current = match entry.map(|e| number(&e.value)) {
            None => 0,
            Some(Some(n)) => n,
            Some(None) => return Err("value is not an integer or out of range"),
        };
        let next = current.checked_add(1).ok_or("increment or decrement would overflow")?;
        let expires = entry.and_then(|e| e.expires); // INCR keeps the key's time to live
        map.insert(key.to_vec(), Entry { value: next.to_string().as_bytes().into(), expires });
        Ok(next)
    }
}

/// The entry under `key` unless it has expired (expired entries are dropped lazily, on
/// the next write to their key).
fn live<'a>(map: &'a HashMap<Vec<u8>, Entry>, key: &[u8], now: Instant) -> Option<&'a Entry> {
    map.get(key).filter(|e| !expired(e, now))
}

fn expired(entry: &Entry, now: Instant) -> bool {
    entry.expires.is_some_and(|at| at <= now)
}

fn bulk(out: &mut impl Write, value: Option<&[u8]>) -> io::Result<()> {
    match value {
        Some(value) => {
            write!(out, "${}\r\n", value.len())?;
            out.write_all(value)?;
            out.write_all(b"\r\n")
        }
        None => out.write_all(b"$-1\r\n"),
    }
}

fn integer(out: &mut impl Write, n: i64) -> io::Result<()> {
    write!(out, ":{n}\r\n")
}

fn error(out: &mut impl Write, message: &str) -> io::Result<Next> {
    write!(out, "-ERR {message}\r\n")?;
    Ok(Next::Continue)
}

/// After a protocol error: stop sending, then read and discard what the client still
/// sends (at most 256 KiB, for at most a second in all: a deadline, so a client sending
/// a byte at a time cannot stretch it), so closing does not reset the connection under
/// the error reply.
fn drain(req: &mut StreamRequest) -> io::Result<()> {
    req.writer().flush()?;
    let _ = req.connection().shutdown(Shutdown::Write);
    req.set_deadline(Some(Instant::now() + Duration::from_secs(1)));
    let _ = io::copy(&mut Read::take(req.reader(), 256 * 1024), &mut io::sink());
    Ok(())
}

/// The client went away, or stayed idle past the read timeout: the connection just
/// ends.
fn is_disconnect(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(error.kind(), ConnectionReset | BrokenPipe | UnexpectedEof | WouldBlock | TimedOut)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("kv: {message}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kv: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Binds, prints the address, serves until a signal, and closes.
fn run(args: Args) -> Result<(), socketserver::Error> {
    let server = TcpServer::builder(args.addr)
        // Timeouts for a server strangers reach, then this server's own: idle clients,
        // and commands still arriving, may stay parked 5 minutes (Redis's usual `timeout
        // 300`); one that stops reading its replies goes after 10 s.
        .internet_facing()
        // Parked clients cost no thread, so the limit is Redis's own `maxclients`.
        .max_connections(MAX_CLIENTS)
        .idle_timeout(Some(IDLE_TIMEOUT))
        // Commands are framed: the server gathers each whole command in the poller
        // before `handle` runs, so a silent client, or one that sends half a command and
        // stops, holds no worker.
        .frame(Frame::with(MAX_FRAME, |bytes| Ok(command_len(bytes))))
        .dispatch(args.dispatch)
        .nodelay(true)
        // Replies collect here and go out in one send per batch of pipelined requests.
        .wbufsize(WBUFSIZE)
        .write_timeout(WRITE_TIMEOUT)
        .shutdown_deadline(GRACE)
        .handle_error(|error, client| match client {
            Some(client) => eprintln!("kv: {client}: {error}"),
            None => eprintln!("kv: {error}"),
        })
        .bind_handler(Kv::default())?;
    // Ctrl-C or SIGTERM: refuse new connections at once, give running ones GRACE.
    let _signals = server.handle().shutdown_on_signals()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on tcp://{}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    server.serve_forever()?;
    server.close();
    Ok(())
}
