//! The checks of lab `chat`, over real sockets on 127.0.0.1. Each takes the lab's
//! `server` function, starts a server of its own on a free port, plays several clients,
//! and says what they sent, what one expected and what it got. Every read waits 5 s at
//! most.
//!
//! Included by `tests/lab_chat.rs` (the student's code) and `tests/skeleton_chat.rs`
//! (the untouched skeleton, which must fail).

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use socketserver::transport::Tcp;
use socketserver::{BackgroundServer, TcpServer};

/// The lab's API: `chat::server(addr)`.
pub type Start = fn(&str) -> socketserver::Result<TcpServer>;

/// How long any one line may take to come.
const WAIT: Duration = Duration::from_secs(5);

/// A server running in the background; stopped (bounded) when dropped.
struct Running {
    addr: SocketAddr,
    _background: BackgroundServer<Tcp>,
}

fn start(server: Start) -> Result<Running, String> {
    let started = panic::catch_unwind(AssertUnwindSafe(|| server("127.0.0.1:0")))
        .map_err(|_| "chat::server(\"127.0.0.1:0\") panicked (its message is above): finish it first".to_string())?
        .map_err(|e| format!("chat::server(\"127.0.0.1:0\") returned an error: {e}"))?;
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
    /// Connects, without sending anything.
    fn connect(addr: SocketAddr, name: &str) -> Result<Client, String> {
        let fail = |e: io::Error| format!("{name}: could not connect to the server at {addr}: {e}");
        let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(fail)?;
        stream.set_read_timeout(Some(WAIT)).map_err(fail)?;
        stream.set_write_timeout(Some(WAIT)).map_err(fail)?;
        let reader = BufReader::new(stream.try_clone().map_err(fail)?);
        Ok(Client { name: name.to_string(), stream, reader })
    }

    /// Connects, sends `name` as its first line, and reads the welcome.
    fn join(addr: SocketAddr, name: &str) -> Result<Client, String> {
        let mut client = Client::connect(addr, name)?;
        client.send(&format!("{name}\n"))?;
        let context = format!("after sending its name, {:?}, as its first line", format!("{name}\n"));
        let got = client.line(&context)?;
        if !got.starts_with("* welcome") {
            return Err(format!(
                "{name}: {context}, expected the welcome, `* welcome {name}\\n`, got {got:?}. \
                 Hint: the first line a client sends is its name; the server answers `* welcome <name>` \
                 (see chat.md)."
            ));
        }
        Ok(client)
    }

    fn send(&mut self, text: &str) -> Result<(), String> {
        self.stream.write_all(text.as_bytes()).map_err(|e| format!("{}: sending {text:?} failed: {e}", self.name))
    }

    /// The next line the server sends this client. `context` says what happened before,
    /// for the message.
    fn line(&mut self, context: &str) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(format!(
                "{}: {context}, the server closed the connection without answering. \
                 Hint: did your handler return an error or panic (look above for its message)? \
                 And does it call `req.park()`, so that the connection waits for its next line?",
                self.name
            )),
            Ok(_) if !line.ends_with('\n') => {
                Err(format!("{}: {context}, got {:?} and then the connection closed", self.name, shorten(&line)))
            }
            Ok(_) => Ok(line),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Err(format!(
                "{}: {context}, no line came within 5 s (got so far: {:?}). Hint: is each line written \
                 with its \\n, to every other client in the room?",
                self.name,
                shorten(&line)
            )),
            Err(e) => Err(format!("{}: {context}, reading failed: {e}", self.name)),
        }
    }

    /// The next line must be `want`.
    fn expect(&mut self, want: &str, context: &str, hint: &str) -> Result<(), String> {
        let got = self.line(context)?;
        if got != want {
            return Err(format!(
                "{}: {context}, expected {:?}, got {:?}.{hint}",
                self.name,
                shorten(want),
                shorten(&got)
            ));
        }
        Ok(())
    }

    /// Says `text` (a line without its `\n`), and each of `others` must receive it as
    /// `<name>: <text>`, as its next line.
    fn say(&mut self, text: &str, others: &mut [&mut Client], hint: &str) -> Result<(), String> {
        self.send(&format!("{text}\n"))?;
        let want = format!("{}: {text}\n", self.name);
        let context = format!("after {} sent {:?}", self.name, shorten(&format!("{text}\n")));
        for other in others {
            other.expect(&want, &context, hint)?;
        }
        Ok(())
    }
}

const BROADCAST_HINT: &str = "\nHint: every line a client sends after its name goes to every OTHER client \
                              in the room, as `<name>: <text>\\n`.";

/// Two clients: what one says, the other receives as `alice: ...`, and the sender does
/// not get its own line back.
pub fn check_two_clients(server: Start) -> Result<(), String> {
    let running = start(server)?;
    let mut alice = Client::join(running.addr, "alice")?;
    let mut bob = Client::join(running.addr, "bob")?;
    alice.expect("* bob joined\n", "after bob joined", "\nHint: announce a join to the others: `* <name> joined`.")?;
    alice.say("hello bob", &mut [&mut bob], BROADCAST_HINT)?;
    bob.say("hi alice, how are you?", &mut [&mut alice], BROADCAST_HINT).map_err(|m| {
        m + "\n(alice had sent \"hello bob\" before: if that is what alice got, the server sent \
             alice's own line back to her. Skip the sender when you broadcast.)"
    })?;
    alice.say("fine: a colon, and  two spaces, are kept", &mut [&mut bob], BROADCAST_HINT)?;
    // A line ending in \r\n (telnet, or nc -C) is the same line.
    alice.send("crlf line\r\n")?;
    bob.expect(
        "alice: crlf line\n",
        "after alice sent \"crlf line\\r\\n\"",
        "\nHint: strip a \\r before the \\n as well.",
    )
}

/// Joins and leaves are announced to the others, not to the one who joins.
pub fn check_join_and_leave(server: Start) -> Result<(), String> {
    let running = start(server)?;
    let join_hint = "\nHint: when a client joins, every OTHER client in the room gets `* <name> joined\\n`.";
    let leave_hint = "\nHint: when a client's connection ends, every other client gets `* <name> left\\n`: \
                      the server sees it end (reading 0 bytes, or in `finish`), and the room must forget that \
                      name.";
    let mut alice = Client::join(running.addr, "alice")?;
    let mut bob = Client::join(running.addr, "bob")?;
    alice.expect("* bob joined\n", "after bob joined", join_hint)?;
    let mut carol = Client::join(running.addr, "carol")?;
    alice.expect("* carol joined\n", "after carol joined", join_hint)?;
    bob.expect("* carol joined\n", "after carol joined", join_hint)?;
    carol.say("hi all", &mut [&mut alice, &mut bob], "\nHint: the one who joins is not told of its own join.")?;

    // bob leaves, closing his connection as a program that ends does.
    drop(bob);
    alice.expect("* bob left\n", "after bob closed his connection", leave_hint)?;
    carol.expect("* bob left\n", "after bob closed his connection", leave_hint)?;
    alice.say("bye bob", &mut [&mut carol], BROADCAST_HINT)?;
    // The name is free again.
    let mut bob = Client::join(running.addr, "bob")
        .map_err(|m| m + " (a second client named bob, after the first one left: the name is free again)")?;
    alice.expect("* bob joined\n", "after a new bob joined", join_hint)?;
    carol.expect("* bob joined\n", "after a new bob joined", join_hint)?;
    bob.say("I am back", &mut [&mut alice, &mut carol], BROADCAST_HINT)
}

/// A name that is taken, or empty, is refused with an error line; the client may try
/// again, and nobody is told of the refused attempts.
pub fn check_bad_names(server: Start) -> Result<(), String> {
    let running = start(server)?;
    let mut alice = Client::join(running.addr, "alice")?;
    let mut second = Client::connect(running.addr, "second client")?;
    for (sent, why) in [("alice\n", "a name that alice has"), ("\n", "an empty name"), ("   \n", "a name of spaces")] {
        second.send(sent)?;
        let context = format!("after sending {sent:?} as its name ({why})");
        let got = second.line(&context)?;
        if !got.starts_with("* error") {
            return Err(format!(
                "second client: {context}, expected an error line, `* error: ...\\n`, got {got:?}.\n\
                 Hint: refuse an empty name or one that is taken, and let the client send another name."
            ));
        }
    }
    second.send("alice2\n")?;
    let got = second.line("after refused names, sending \"alice2\\n\"")?;
    if !got.starts_with("* welcome") {
        return Err(format!(
            "second client: after two refused names, sent \"alice2\\n\", expected `* welcome alice2\\n`, got \
             {got:?}.\nHint: after an error the connection stays open, and the next line is a new try at a name."
        ));
    }
    second.name = "alice2".to_string();
    alice.expect(
        "* alice2 joined\n",
        "after another client tried the names \"alice\", \"\" and \"   \" (refused), then joined as alice2",
        "\nHint: a refused name joins nobody: announce only the name that is accepted.",
    )?;
    second.say("hello alice", &mut [&mut alice], BROADCAST_HINT)?;
    alice.say("hello alice2", &mut [&mut second], BROADCAST_HINT)
}

/// Three clients each send 20 lines at once, without waiting: each of the others gets
/// all of them, each sender's in the order sent.
pub fn check_order(server: Start) -> Result<(), String> {
    const LINES: usize = 20;
    let running = start(server)?;
    let mut clients: Vec<Client> = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let joined = Client::join(running.addr, name)?;
        for earlier in &mut clients {
            earlier.expect(&format!("* {name} joined\n"), &format!("after {name} joined"), "")?;
        }
        clients.push(joined);
    }
    for i in 1..=LINES {
        for c in &mut clients {
            let line = format!("line {i} of {}\n", c.name);
            c.send(&line)?;
        }
    }
    let names: Vec<String> = clients.iter().map(|c| c.name.clone()).collect();
    for c in &mut clients {
        let mut next = vec![1; names.len()];
        for n in 0..2 * LINES {
            let context = format!(
                "line {} of the {} that the other two sent (the 3 clients sent {LINES} lines each at once)",
                n + 1,
                2 * LINES
            );
            let got = c.line(&context)?;
            let from = names.iter().position(|name| got.starts_with(&format!("{name}: ")));
            let Some(from) = from.filter(|&from| names[from] != c.name) else {
                return Err(format!(
                    "{}: {context}: got {got:?}, expected a line `<name>: line <i> of <name>` from one of the \
                     others.{BROADCAST_HINT}",
                    c.name
                ));
            };
            let want = format!("{0}: line {1} of {0}\n", names[from], next[from]);
            if got != want {
                return Err(format!(
                    "{}: {context}: got {got:?}, expected {want:?}: each sender's lines must arrive whole, \
                     once, and in the order sent.\nHint: write each line whole (write_all of the line with its \
                     \\n), to each client under the room's lock, so that two lines never mix.",
                    c.name
                ));
            }
            next[from] += 1;
        }
    }
    Ok(())
}

/// A client that vanishes (a reset, half a line unsent) is removed and announced, and
/// the others go on.
pub fn check_abrupt_disconnect(server: Start) -> Result<(), String> {
    let running = start(server)?;
    let mut alice = Client::join(running.addr, "alice")?;
    let mut bob = Client::join(running.addr, "bob")?;
    alice.expect("* bob joined\n", "after bob joined", "")?;
    // dave joins but reads nothing; then sends half a line and is gone: closing a socket
    // with unread bytes makes the kernel send a reset instead of a normal close.
    let mut dave = Client::connect(running.addr, "dave")?;
    dave.send("dave\n")?;
    alice.expect("* dave joined\n", "after dave joined", "")?;
    bob.expect("* dave joined\n", "after dave joined", "")?;
    alice.say("hi dave", &mut [&mut bob], BROADCAST_HINT)?;
    dave.send("I am about to vani")?;
    drop(dave);
    let hint = "\nHint: a client that disappears (a reset: the read fails with ConnectionReset, or it \
                left in the middle of a line) leaves the room like one that closes: remove it and tell the others.";
    alice.expect("* dave left\n", "after dave reset his connection in the middle of a line", hint)?;
    bob.expect("* dave left\n", "after dave reset his connection in the middle of a line", hint)?;
    alice.say("dave is gone", &mut [&mut bob], BROADCAST_HINT).map_err(|m| m + " (after dave vanished)")?;
    bob.say("still here", &mut [&mut alice], BROADCAST_HINT).map_err(|m| m + " (after dave vanished)")?;
    let mut erin = Client::join(running.addr, "erin").map_err(|m| m + " (after dave vanished)")?;
    alice.expect("* erin joined\n", "after erin joined (after dave vanished)", "")?;
    bob.expect("* erin joined\n", "after erin joined (after dave vanished)", "")?;
    erin.say("hello", &mut [&mut alice, &mut bob], BROADCAST_HINT)
}

/// A line of exactly `max_line` bytes (its `\n` included) is relayed.
pub fn check_line_of_max_length(server: Start, max_line: usize) -> Result<(), String> {
    let running = start(server)?;
    let mut alice = Client::join(running.addr, "alice")?;
    let mut bob = Client::join(running.addr, "bob")?;
    alice.expect("* bob joined\n", "after bob joined", "")?;
    let text = "x".repeat(max_line - 1);
    alice.say(&text, &mut [&mut bob], "").map_err(|m| {
        format!(
            "{m}\n(the line was exactly MAX_LINE = {max_line} bytes with its \\n: it is allowed.)\n\
             Hint: MAX_LINE counts the newline."
        )
    })
}

/// A line over `max_line` bytes gets an error line; nobody else gets it, and the
/// sender stays in the room.
pub fn check_long_line(server: Start, max_line: usize) -> Result<(), String> {
    let running = start(server)?;
    let mut alice = Client::join(running.addr, "alice")?;
    let mut bob = Client::join(running.addr, "bob")?;
    alice.expect("* bob joined\n", "after bob joined", "")?;
    let long = format!("{}\n", "x".repeat(2 * max_line));
    alice.send(&long)?;
    let context = format!("after sending a line of {} bytes (MAX_LINE is {max_line})", long.len());
    let got = alice.line(&context)?;
    if !got.starts_with("* error") {
        return Err(format!(
            "alice: {context}, expected an error line, `* error: ...\\n`, got {:?}.\n\
             Hint: a line longer than MAX_LINE bytes (its \\n included) is not relayed: the sender gets \
             `* error: line too long ...`, and stays in the room.",
            shorten(&got)
        ));
    }
    alice.say("after the long line", &mut [&mut bob], BROADCAST_HINT).map_err(|m| {
        m + &format!(
            "\n(alice had sent a line of {} bytes just before: it must reach nobody, and alice stays in the room.)",
            long.len()
        )
    })?;
    bob.say("ok", &mut [&mut alice], BROADCAST_HINT)
}

/// A client that floods 64 KiB without a newline is cut off (or told an error), and the
/// others are not disturbed.
pub fn check_flood(server: Start, max_line: usize) -> Result<(), String> {
    let running = start(server)?;
    let mut alice = Client::join(running.addr, "alice")?;
    let mut bob = Client::join(running.addr, "bob")?;
    alice.expect("* bob joined\n", "after bob joined", "")?;
    let mut mallory = Client::join(running.addr, "mallory")?;
    alice.expect("* mallory joined\n", "after mallory joined", "")?;
    bob.expect("* mallory joined\n", "after mallory joined", "")?;
    let flood = "x".repeat(64 * 1024);
    // The server may close before it has read it all: a failed write is fine here.
    let _ = mallory.stream.write_all(flood.as_bytes());
    let mut got = Vec::new();
    let ended = loop {
        let mut chunk = [0; 4096];
        match mallory.reader.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                if got.starts_with(b"* error") && got.contains(&b'\n') {
                    break true; // told: it may stay connected
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break false,
            Err(_) => break true, // reset: closed
        }
    };
    let text = String::from_utf8_lossy(&got);
    if !ended {
        return Err(format!(
            "mallory: sent 64 KiB without a newline (MAX_LINE is {max_line}); 5 s later the connection was still \
             open and no error line came (got {:?}).\nHint: the server must not read a line without end: \
             `.frame(Frame::lines(MAX_FRAME))` closes a connection whose line runs past MAX_FRAME bytes.",
            shorten(&text)
        ));
    }
    if !(text.is_empty() || text.starts_with("* error")) {
        return Err(format!(
            "mallory: sent 64 KiB without a newline, expected the connection closed (or an error line), got {:?}",
            shorten(&text)
        ));
    }
    let hint = "\n(mallory had sent 64 KiB without a newline: nothing of it must reach the others, and they \
                stay in the room; if mallory's connection is closed, they are told `* mallory left`.)";
    alice.send("still here\n")?;
    let mut got = bob.line("after mallory's flood and alice's \"still here\\n\"").map_err(|m| m + hint)?;
    if got == "* mallory left\n" {
        got = bob.line("after \"* mallory left\", waiting for alice's \"still here\\n\"").map_err(|m| m + hint)?;
    }
    if got != "alice: still here\n" {
        return Err(format!(
            "bob: after mallory's flood, alice sent \"still here\\n\"; expected \"alice: still here\\n\" (maybe \
             after \"* mallory left\\n\"), got {:?}{hint}",
            shorten(&got)
        ));
    }
    bob.send("me too\n")?;
    let mut got = alice.line("after mallory's flood and bob's \"me too\\n\"").map_err(|m| m + hint)?;
    if got == "* mallory left\n" {
        got = alice.line("after \"* mallory left\", waiting for bob's \"me too\\n\"").map_err(|m| m + hint)?;
    }
    if got != "bob: me too\n" {
        return Err(format!(
            "alice: after mallory's flood, bob sent \"me too\\n\"; expected \"bob: me too\\n\" (maybe after \
             \"* mallory left\\n\"), got {:?}{hint}",
            shorten(&got)
        ));
    }
    Ok(())
}

/// Eight clients connected at once, all in the room: each one's line reaches the seven
/// others.
pub fn check_many_clients(server: Start) -> Result<(), String> {
    const CLIENTS: usize = 8;
    let running = start(server)?;
    let hint = format!(
        "\n({CLIENTS} clients are connected at once and stay connected.) Hint: a sequential server serves \
         one connection at a time; a pool whose handler loops over its client's lines serves only as many \
         clients as it has workers. Park the connection after each line (or give each client a thread)."
    );
    let mut clients: Vec<Client> = Vec::new();
    for n in 1..=CLIENTS {
        let name = format!("user{n}");
        let joined = Client::join(running.addr, &name).map_err(|m| format!("{m}{hint}"))?;
        for earlier in &mut clients {
            earlier.expect(&format!("* {name} joined\n"), &format!("after {name} joined"), &hint)?;
        }
        clients.push(joined);
    }
    for c in &mut clients {
        let line = format!("hello from {}\n", c.name);
        c.send(&line)?;
    }
    for c in &mut clients {
        let want: BTreeSet<String> = (1..=CLIENTS)
            .map(|n| format!("user{n}"))
            .filter(|name| *name != c.name)
            .map(|name| format!("{name}: hello from {name}\n"))
            .collect();
        let mut got = BTreeSet::new();
        for n in 0..CLIENTS - 1 {
            let context =
                format!("waiting for line {} of {} (every other client said `hello from <name>`)", n + 1, CLIENTS - 1);
            got.insert(c.line(&context).map_err(|m| m + &hint)?);
        }
        if got != want {
            return Err(format!(
                "{}: after every client said `hello from <name>`, expected {want:?}, got {got:?}{BROADCAST_HINT}",
                c.name
            ));
        }
    }
    Ok(())
}

/// A client that reads nothing is disconnected once its socket is full and a write to
/// it waits too long; meanwhile and after, the others are served.
pub fn check_slow_reader(server: Start, max_line: usize) -> Result<(), String> {
    const BATCH: usize = 64;
    const MOST: usize = 64 * 1024 * 1024;
    let running = start(server)?;
    let mut alice = Client::join(running.addr, "alice")?;
    let mut bob = Client::join(running.addr, "bob")?;
    alice.expect("* bob joined\n", "after bob joined", "")?;
    let slow = Client::join(running.addr, "slow")?;
    alice.expect("* slow joined\n", "after slow joined", "")?;
    bob.expect("* slow joined\n", "after slow joined", "")?;
    let hint = "\nHint: a client that reads nothing fills its socket's buffers, and then a write to it \
                blocks. Set `.write_timeout(WRITE_TIMEOUT)` (2 s) on the builder: the write then fails, the \
                server disconnects that client, and the room goes on.";
    let began = Instant::now();
    let (mut sent, mut seq, mut slow_left) = (0, 0, false);
    let pad = "x".repeat(max_line.saturating_sub(32).clamp(1, 400));
    while !slow_left {
        if sent >= MOST {
            return Err(format!(
                "alice sent {} MiB while a client named slow read nothing, and slow was never disconnected \
                 (bob never got `* slow left`).{hint}",
                sent >> 20
            ));
        }
        let first = seq + 1;
        let mut batch = String::new();
        for _ in 0..BATCH {
            seq += 1;
            batch += &format!("{seq} {pad}\n");
        }
        alice.send(&batch)?;
        sent += batch.len();
        for want in first..=seq {
            let context = format!(
                "while a client named slow read nothing, alice had sent {} KiB ({:.1} s); waiting for her line {want}",
                sent >> 10,
                began.elapsed().as_secs_f64()
            );
            let mut got = bob.line(&context).map_err(|m| m + hint)?;
            if got == "* slow left\n" {
                slow_left = true;
                got = bob.line(&context).map_err(|m| m + hint)?;
            }
            if got != format!("alice: {want} {pad}\n") {
                return Err(format!(
                    "bob: {context}, expected \"alice: {want} xxx...\", got {:?}{BROADCAST_HINT}",
                    shorten(&got)
                ));
            }
        }
    }
    drop(slow);
    alice.expect("* slow left\n", "after slow was cut off", "\nHint: every other client is told `* slow left`.")?;
    bob.say("the room goes on", &mut [&mut alice], BROADCAST_HINT).map_err(|m| m + " (after slow was cut off)")
}

/// A message with long runs of `x` cut short, so that it stays readable.
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
