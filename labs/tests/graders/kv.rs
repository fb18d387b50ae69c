//! The checks of lab `kv`, over real sockets on 127.0.0.1. Each takes the lab's
//! `server` function, starts a server of its own on a free port, plays a client, and says
//! what it sent, what it expected and what it got. Every read waits 5 s at most.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use socketserver::transport::Tcp;
use socketserver::{BackgroundServer, TcpServer};

/// The lab's API: `kv::server(addr, workers)`.
pub type Start = fn(&str, usize) -> socketserver::Result<TcpServer>;

/// How long any one answer may take.
const WAIT: Duration = Duration::from_secs(5);

/// A server running in the background; stopped (bounded) when dropped.
struct Running {
    addr: SocketAddr,
    _background: BackgroundServer<Tcp>,
}

fn start(server: Start, workers: usize) -> Result<Running, String> {
    let started = panic::catch_unwind(AssertUnwindSafe(|| server("127.0.0.1:0", workers)))
        .map_err(|_| "kv::server(\"127.0.0.1:0\", ..) panicked (its message is above): finish it first".to_string())?
        .map_err(|e| format!("kv::server(\"127.0.0.1:0\", {workers}) returned an error: {e}"))?;
    let addr = started.local_addr();
    let background = started.serve_in_background().map_err(|e| format!("serve_in_background failed: {e}"))?;
    Ok(Running { addr, _background: background })
}

/// One client connection, with a line reader.
struct Client {
    name: String,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr, name: &str) -> Result<Client, String> {
        let fail = |e: io::Error| format!("{name}: could not connect to the server at {addr}: {e}");
        let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(fail)?;
        stream.set_read_timeout(Some(WAIT)).map_err(fail)?;
        stream.set_write_timeout(Some(WAIT)).map_err(fail)?;
        let reader = BufReader::new(stream.try_clone().map_err(fail)?);
        Ok(Client { name: name.to_string(), stream, reader })
    }

    fn send(&mut self, bytes: &str) -> Result<(), String> {
        self.stream.write_all(bytes.as_bytes()).map_err(|e| format!("{}: sending {bytes:?} failed: {e}", self.name))
    }

    /// The next answer line. `sent` says what it answers, for the message.
    fn answer(&mut self, sent: &str) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(format!(
                "{}: sent {sent:?}, and the server closed the connection without answering. \
                 Hint: did your handler return an error or panic (look above for its message)? \
                 An unknown command must get `ERROR ...` and leave the connection open.",
                self.name
            )),
            Ok(_) if !line.ends_with('\n') => {
                Err(format!("{}: sent {sent:?}, got {line:?} and then the connection closed", self.name))
            }
            Ok(_) => Ok(line),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Err(format!(
                "{}: no answer within 5 s to {sent:?} (got so far: {line:?}). Hint: is the reply written \
                 and ended with \\n? Is every worker busy waiting on some other client?",
                self.name
            )),
            Err(e) => Err(format!("{}: sent {sent:?}, reading the answer failed: {e}", self.name)),
        }
    }

    /// Sends one command line and checks its answer.
    fn ask(&mut self, command: &str, expected: &str) -> Result<(), String> {
        let sent = format!("{command}\n");
        self.send(&sent)?;
        let got = self.answer(&sent)?;
        if got != expected {
            return Err(format!("{}: sent {sent:?}, expected {expected:?}, got {got:?}", self.name));
        }
        Ok(())
    }
}

/// `SET`, `GET` and `DEL`, each answer exactly as the protocol says.
pub fn check_commands(server: Start) -> Result<(), String> {
    let running = start(server, 2)?;
    let mut c = Client::connect(running.addr, "client")?;
    let hint = "\nHint: the answers are `OK\\n`, `VALUE <value>\\n`, `NOT_FOUND\\n`, `DELETED\\n` (see kv.md).";
    let steps = [
        ("GET greeting", "NOT_FOUND\n"),
        ("SET greeting hello", "OK\n"),
        ("GET greeting", "VALUE hello\n"),
        ("SET greeting bonjour", "OK\n"),
        ("GET greeting", "VALUE bonjour\n"),
        ("DEL greeting", "DELETED\n"),
        ("GET greeting", "NOT_FOUND\n"),
        ("DEL greeting", "NOT_FOUND\n"),
        ("SET sentence hello big world", "OK\n"),
        ("GET sentence", "VALUE hello big world\n"),
    ];
    for (command, expected) in steps {
        c.ask(command, expected).map_err(|m| m + hint)?;
    }
    // A client may end its lines with \r\n (telnet does): the \r is not part of the value.
    c.ask("SET crlf yes\r", "OK\n").map_err(|m| m + "\nHint: strip a trailing \\r as well as the \\n.")?;
    c.ask("GET crlf\r", "VALUE yes\n").map_err(|m| m + "\nHint: strip a trailing \\r as well as the \\n.")
}

/// Malformed commands get `ERROR <reason>` and the connection stays usable.
pub fn check_errors_keep_connection(server: Start) -> Result<(), String> {
    let running = start(server, 2)?;
    let mut c = Client::connect(running.addr, "client")?;
    for bad in ["HELLO world", "GET", "GET two words", "SET lonely", "DEL", ""] {
        let sent = format!("{bad}\n");
        c.send(&sent)?;
        let got = c.answer(&sent)?;
        if !got.starts_with("ERROR ") || got.trim_end().len() <= "ERROR".len() {
            return Err(format!(
                "client: sent {sent:?}, expected `ERROR <reason>\\n`, got {got:?}. \
                 Hint: every line that is not a well-formed SET, GET or DEL is an error, with a reason."
            ));
        }
    }
    c.ask("SET after errors", "OK\n").map_err(|m| m + "\nHint: after an ERROR the connection must stay open.")?;
    c.ask("GET after", "VALUE errors\n")
}

/// 100 commands sent in one write, then 100 answers read, in order.
pub fn check_pipelining(server: Start) -> Result<(), String> {
    let running = start(server, 2)?;
    let mut c = Client::connect(running.addr, "client")?;
    let (mut batch, mut expected) = (String::new(), Vec::new());
    for i in 0..25 {
        batch += &format!("SET p{i} v{i}\nGET p{i}\nDEL p{i}\nGET p{i}\n");
        expected.extend(["OK\n".to_string(), format!("VALUE v{i}\n"), "DELETED\n".into(), "NOT_FOUND\n".into()]);
    }
    c.send(&batch)?;
    let commands: Vec<&str> = batch.lines().collect();
    for (n, (command, want)) in commands.iter().zip(&expected).enumerate() {
        let got = c.answer(&format!("{command}\\n (command {} of 100, all sent in one write)", n + 1))?;
        if got != *want {
            return Err(format!(
                "client: sent 100 commands in one write; answer {} (to {command:?}) should be {want:?}, got {got:?}. \
                 Hint: answer every command of the buffer, in order: one line per `handle`, then `req.park()`; \
                 the next line, already buffered, is handled at once.",
                n + 1
            ));
        }
    }
    Ok(())
}

/// Two clients share one store.
pub fn check_shared_store(server: Start) -> Result<(), String> {
    let running = start(server, 2)?;
    let mut a = Client::connect(running.addr, "client A")?;
    let mut b = Client::connect(running.addr, "client B")?;
    let hint = "\nHint: one store for the whole server (a Mutex<HashMap> captured by the one handler), \
                not one per connection.";
    a.ask("SET colour blue", "OK\n")?;
    b.ask("GET colour", "VALUE blue\n").map_err(|m| m + " (client A had just set it)" + hint)?;
    b.ask("SET colour green", "OK\n")?;
    a.ask("GET colour", "VALUE green\n").map_err(|m| m + " (client B had just set it)" + hint)?;
    b.ask("DEL colour", "DELETED\n")?;
    a.ask("GET colour", "NOT_FOUND\n").map_err(|m| m + " (client B had just deleted it)" + hint)?;
    let mut c = Client::connect(running.addr, "client C (connected later)")?;
    a.ask("SET late yes", "OK\n")?;
    c.ask("GET late", "VALUE yes\n").map_err(|m| m + hint)
}

/// Three clients (more than the pool's 2 workers) send half a command and stall;
/// another client is served meanwhile, and the three are answered once they finish.
pub fn check_half_command_does_not_block(server: Start) -> Result<(), String> {
    let running = start(server, 2)?;
    let mut stalled = Vec::new();
    for n in 0..3 {
        let mut s = Client::connect(running.addr, &format!("stalled client {}", n + 1))?;
        s.send(&format!("SET half{n}"))?; // no "\n": half a command
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(300)); // let the server see the halves
    let mut c = Client::connect(running.addr, "client")?;
    c.ask("SET whole yes", "OK\n").map_err(|m| {
        m + "\n(while 3 other clients, more than the 2 workers, had each sent half a command and stalled.) \
             Hint: declare the framing, `.frame(Frame::lines(MAX_LINE))`, so that the server gathers \
             a whole line before `handle` runs and a half line holds no worker."
    })?;
    c.ask("GET whole", "VALUE yes\n")?;
    for (n, s) in stalled.iter_mut().enumerate() {
        s.send(" done\n")?;
        let got = s.answer(&format!("SET half{n} done\\n (sent in two parts)"))?;
        if got != "OK\n" {
            return Err(format!("{}: sent \"SET half{n}\" then \" done\\n\", expected \"OK\\n\", got {got:?}", s.name));
        }
    }
    c.ask("GET half2", "VALUE done\n")
}

/// A line of exactly `max_line` bytes (its `\n` included) is accepted.
pub fn check_line_of_max_length_accepted(server: Start, max_line: usize) -> Result<(), String> {
    let running = start(server, 2)?;
    let mut c = Client::connect(running.addr, "client")?;
    let value = "x".repeat(max_line - "SET k \n".len());
    c.ask(&format!("SET k {value}"), "OK\n").map_err(|m| {
        format!(
            "{} (the line was exactly MAX_LINE = {max_line} bytes with its \\n.)\n\
             Hint: MAX_LINE counts the newline, as `Frame::lines(MAX_LINE)` does.",
            shorten(&m)
        )
    })?;
    c.ask("GET k", &format!("VALUE {value}\n")).map_err(|m| shorten(&m))
}

/// A line far over the maximum closes that connection (maybe after an `ERROR` line),
/// and other clients, connected before or after, are still served.
pub fn check_long_line_refused(server: Start, max_line: usize) -> Result<(), String> {
    let running = start(server, 2)?;
    let mut before = Client::connect(running.addr, "client connected before")?;
    before.ask("SET safe yes", "OK\n")?;
    let mut flood = Client::connect(running.addr, "flooding client")?;
    let long = format!("SET big {}\n", "x".repeat(8 * max_line));
    // The server may close before it has read it all: a failed write is fine here.
    let _ = flood.stream.write_all(long.as_bytes());
    let mut got = Vec::new();
    let ended = loop {
        let mut chunk = [0; 4096];
        match flood.stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break false,
            Err(_) => break true, // reset: closed
        }
    };
    let text = String::from_utf8_lossy(&got);
    if !ended {
        return Err(format!(
            "flooding client: sent a line of {} bytes (MAX_LINE is {max_line}); the connection was still open \
             5 s later (got {:?}). Hint: `.frame(Frame::lines(MAX_LINE))` closes a connection whose line is \
             longer than MAX_LINE.",
            long.len(),
            text
        ));
    }
    if !(text.is_empty() || text.starts_with("ERROR")) || text.contains("OK") {
        return Err(format!(
            "flooding client: sent a line of {} bytes (MAX_LINE is {max_line}), expected the connection closed \
             (an `ERROR ...` line first is allowed), got {text:?}",
            long.len()
        ));
    }
    before.ask("GET safe", "VALUE yes\n").map_err(|m| m + " (after another client sent an over-long line)")?;
    let mut after = Client::connect(running.addr, "client connected after")?;
    after.ask("GET safe", "VALUE yes\n").map_err(|m| m + " (after another client sent an over-long line)")
}

/// 200 connections open at once, a pool of 2 workers: each sends a GET and gets its
/// answer, every connection still open.
pub fn check_many_idle_clients(server: Start) -> Result<(), String> {
    const CLIENTS: usize = 200;
    let running = start(server, 2)?;
    let mut setter = Client::connect(running.addr, "setter")?;
    setter.ask("SET shared here", "OK\n")?;
    let mut clients = Vec::with_capacity(CLIENTS);
    for n in 0..CLIENTS {
        clients.push(Client::connect(running.addr, &format!("client {} of {CLIENTS}", n + 1))?);
    }
    let hint = "\n(200 clients connected at once, served by a pool of 2 workers; the earlier ones stay \
                connected.) Hint: answer one command per `handle` and call `req.park()`, so that a \
                connection waiting for its next command holds no worker.";
    for c in &mut clients {
        c.ask("GET shared", "VALUE here\n").map_err(|m| m + hint)?;
    }
    // Again, every client first, then every answer.
    for c in &mut clients {
        c.send("GET shared\n")?;
    }
    for c in &mut clients {
        let got = c.answer("GET shared\\n (the second round)").map_err(|m| m + hint)?;
        if got != "VALUE here\n" {
            return Err(format!("{}: sent \"GET shared\\n\", expected \"VALUE here\\n\", got {got:?}", c.name));
        }
    }
    Ok(())
}

/// A message with long values cut short, so that it stays readable.
fn shorten(message: &str) -> String {
    let mut out = String::new();
    let mut run = 0;
    for ch in message.chars() {
        run = if ch == 'x' { run + 1 } else { 0 };
        match run {
            0..=16 => out.push(ch),
            17 => out.push_str("..."),
            _ => {}
        }
    }
    out
}
