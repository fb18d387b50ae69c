//! The teaching examples, run as processes over real sockets: the Rust versions of the
//! examples in Python's `socketserver` documentation (`py_*`), checked line by line and
//! against Python's own client and server code from the same page, and the classics of a
//! network-programming course: `chat`, `daytime` and `calc`.
//!
//! Every example is built once with `cargo build --example`, binds `127.0.0.1:0` and is
//! read for its `listening on` line; every child process is killed when its guard drops,
//! and every wait has a deadline.
//!
//! Unix only: every test runs an example as a child process (built by `cargo build`,
//! which a Windows test process under Wine cannot start) or Python's own code.
#![cfg(unix)]

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::process::{example_binary, run_to_exit, Spawned};
use support::{bounded, connect, join_within, udp_client, TIMEOUT};

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// Builds the examples a test runs (outside the deadline: builds may be slow on a busy
/// machine), then runs the test `body` within 120 s.
fn course_test(examples: &[&str], body: impl FnOnce() + Send + 'static) {
    for example in examples {
        example_binary(example);
    }
    bounded(Duration::from_secs(120), body);
}

fn example(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(example_binary(name));
    command.args(args);
    command
}

/// Python code given on the command line, unbuffered so its lines come as printed.
fn python(code: &str, args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command.arg("-u").arg("-c").arg(code).args(args);
    command
}

/// Runs a client to its end within `TIMEOUT`, checks that it succeeded, and returns its
/// standard output.
fn run(mut command: Command) -> String {
    let finished = run_to_exit(&mut command, b"", TIMEOUT);
    let (status, stdout, stderr) = (finished.status, finished.stdout, finished.stderr);
    assert!(status.success(), "{command:?} ended with {status}; stdout: {stdout}; stderr: {stderr}");
    stdout
}

/// A running server process, read line by line. Dropping it kills it and reaps it.
struct Server(Spawned);

impl Server {
    fn start(command: Command) -> Server {
        Server(Spawned::start(command))
    }

    /// The next lines the server printed, which must be `expected`.
    fn expect_lines(&mut self, expected: &[&str]) {
        for want in expected {
            assert_eq!(self.0.line(), *want, "{} printed an unexpected line", self.0.name());
        }
    }

    /// Skips printed lines until one equals `want`.
    fn wait_for_line(&mut self, want: &str) {
        self.0.wait_for_line(want);
    }

    /// The address of a `listening on SCHEME://ADDR` line, which must come next.
    fn listening(&mut self, scheme: &str) -> SocketAddr {
        let url = self.0.listening();
        let addr = url.strip_prefix(&format!("{scheme}://"));
        let addr = addr.unwrap_or_else(|| panic!("{} is listening on {url:?}, not {scheme}://ADDR", self.0.name()));
        addr.parse().unwrap_or_else(|e| panic!("{} is listening on {url:?}: {e}", self.0.name()))
    }
}

fn host_port(addr: SocketAddr) -> [String; 2] {
    [addr.ip().to_string(), addr.port().to_string()]
}

// ---------------------------------------------------------------------------------------
// Python's documentation examples
// ---------------------------------------------------------------------------------------

/// The TCP client of Python's documentation, with `HOST, PORT` from the command line.
const PY_TCP_CLIENT: &str = r#"
import socket
import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])
data = " ".join(sys.argv[3:])

# Create a socket (SOCK_STREAM means a TCP socket)
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    # Connect to server and send data
    sock.connect((HOST, PORT))
    sock.sendall(bytes(data + "\n", "utf-8"))

    # Receive data from the server and shut down
    received = str(sock.recv(1024), "utf-8")

print("Sent:     {}".format(data))
print("Received: {}".format(received))
"#;

/// The UDP client of Python's documentation, with `HOST, PORT` from the command line.
const PY_UDP_CLIENT: &str = r#"
import socket
import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])
data = " ".join(sys.argv[3:])

# SOCK_DGRAM is the socket type to use for UDP sockets
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(10)  # not in the docs: a lost datagram must not hang the test

# As you can see, there is no connect() call; UDP has no connections.
# Instead, data is directly sent to the recipient via sendto().
sock.sendto(bytes(data + "\n", "utf-8"), (HOST, PORT))
received = str(sock.recv(1024), "utf-8")

print("Sent:     {}".format(data))
print("Received: {}".format(received))
"#;

/// The TCP server of Python's documentation, on a free port it prints as ours do.
const PY_TCP_SERVER: &str = r#"
import socketserver

class MyTCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        # self.request is the TCP socket connected to the client
        self.data = self.request.recv(1024).strip()
        print("{} wrote:".format(self.client_address[0]))
        print(self.data)
        # just send back the same data, but upper-cased
        self.request.sendall(self.data.upper())

if __name__ == "__main__":
    HOST, PORT = "127.0.0.1", 0
    with socketserver.TCPServer((HOST, PORT), MyTCPHandler) as server:
        print("listening on tcp://{}:{}".format(*server.server_address))
        server.serve_forever()
"#;

/// The UDP server of Python's documentation, on a free port it prints as ours do.
const PY_UDP_SERVER: &str = r#"
import socketserver

class MyUDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request[0].strip()
        socket = self.request[1]
        print("{} wrote:".format(self.client_address[0]))
        print(data)
        socket.sendto(data.upper(), self.client_address)

if __name__ == "__main__":
    HOST, PORT = "127.0.0.1", 0
    with socketserver.UDPServer((HOST, PORT), MyUDPHandler) as server:
        print("listening on udp://{}:{}".format(*server.server_address))
        server.serve_forever()
"#;

/// A server example answers the Rust client example and Python's documentation client
/// alike, and prints what Python's server prints (the text, where Python shows bytes).
fn upper_case_server(server: &str, scheme: &str, rust_client: &str, python_client: &str) {
    let mut server = Server::start(example(server, &["--addr", "127.0.0.1:0"]));
    let addr = server.listening(scheme);

    let output = run(example(rust_client, &["--addr", &addr.to_string(), "hello", "world", "with", "Rust"]));
    assert_eq!(output, "Sent:     hello world with Rust\nReceived: HELLO WORLD WITH RUST\n");
    server.expect_lines(&["127.0.0.1 wrote:", "hello world with Rust"]);

    let [host, port] = host_port(addr);
    let output = run(python(python_client, &[&host, &port, "python", "is", "nice"]));
    assert_eq!(output, "Sent:     python is nice\nReceived: PYTHON IS NICE\n");
    server.expect_lines(&["127.0.0.1 wrote:", "python is nice"]);
}

#[test]
fn py_tcp_server_answers_the_rust_and_the_python_client() {
    course_test(&["py_tcp_server", "py_tcp_client"], || {
        upper_case_server("py_tcp_server", "tcp", "py_tcp_client", PY_TCP_CLIENT);
    });
}

#[test]
fn py_tcp_stream_server_answers_the_rust_and_the_python_client() {
    course_test(&["py_tcp_stream_server", "py_tcp_client"], || {
        upper_case_server("py_tcp_stream_server", "tcp", "py_tcp_client", PY_TCP_CLIENT);
    });
}

#[test]
fn py_tcp_stream_server_reads_up_to_the_newline() {
    course_test(&["py_tcp_stream_server"], || {
        let mut server = Server::start(example("py_tcp_stream_server", &["--addr", "127.0.0.1:0"]));
        let mut client = connect(server.listening("tcp"));
        // Sent in two writes, the line is answered whole, and what follows its newline is not
        // part of it: `read_line` reads up to the newline however the bytes arrive, where one
        // `recv(1024)` returns whatever has arrived.
        client.write_all(b"in two ").unwrap();
        client.write_all(b"parts\nnot this\n").unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "IN TWO PARTS");
        server.expect_lines(&["127.0.0.1 wrote:", "in two parts"]);
    });
}

#[test]
fn py_udp_server_answers_the_rust_and_the_python_client() {
    course_test(&["py_udp_server", "py_udp_client"], || {
        upper_case_server("py_udp_server", "udp", "py_udp_client", PY_UDP_CLIENT);
    });
}

#[test]
fn rust_clients_talk_to_pythons_own_servers() {
    course_test(&["py_tcp_client", "py_udp_client"], || {
        for (code, scheme, client) in [(PY_TCP_SERVER, "tcp", "py_tcp_client"), (PY_UDP_SERVER, "udp", "py_udp_client")]
        {
            let mut server = Server::start(python(code, &[]));
            let addr = server.listening(scheme);
            let output = run(example(client, &["--addr", &addr.to_string(), "hello", "from", "Rust"]));
            assert_eq!(output, "Sent:     hello from Rust\nReceived: HELLO FROM RUST\n", "{client} against Python");
            server.expect_lines(&["127.0.0.1 wrote:", "b'hello from Rust'"]);
        }
    });
}

#[test]
fn py_threaded_serves_three_clients_on_request_threads_then_stops() {
    course_test(&["py_threaded"], || {
        // `run` also checks that the example ends, successfully: shutdown returned.
        let output = run(example("py_threaded", &[]));
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 4, "{output}");
        assert_eq!(lines[0], "Server loop running in thread: server_thread");
        for (n, line) in (1..=3).zip(&lines[1..]) {
            let reply = line.strip_prefix("Received: ").unwrap_or_else(|| panic!("{line:?}"));
            let (thread, data) = reply.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
            // Named by the threading mode, not the serve loop's thread: a request thread.
            assert!(thread.starts_with("socketserver-request-"), "{line:?}");
            assert_eq!(data, format!("Hello World {n}"));
        }
    });
}

// ---------------------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------------------

/// One chat client, with the read timeout of `support::connect`.
struct ChatClient {
    reader: BufReader<TcpStream>,
    nick: String,
}

impl ChatClient {
    /// Connects, answers the nickname prompt with `wanted`, and checks the welcome line,
    /// which must list `here` (in order of arrival).
    fn join(addr: SocketAddr, wanted: &str, here: &[&str]) -> ChatClient {
        let stream = connect(addr);
        let mut client = ChatClient { reader: BufReader::new(stream), nick: String::new() };
        let prompt = client.line();
        let guest = prompt
            .strip_prefix("* your nickname? (an empty line: ")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("prompt {prompt:?}"))
            .to_string();
        client.say(wanted);
        let welcome = client.line();
        let nick = welcome
            .strip_prefix("* welcome, ")
            .and_then(|rest| rest.split_once(';'))
            .map(|(nick, _)| nick.to_string())
            .unwrap_or_else(|| panic!("welcome {welcome:?}"));
        let expected_rest = match here {
            [] => "you are the first here".to_string(),
            names => format!("also here: {}", names.join(", ")),
        };
        assert_eq!(welcome, format!("* welcome, {nick}; {expected_rest}"));
        if nick != wanted {
            assert_eq!(nick, guest, "a refused nickname becomes the guest name the prompt offered");
        }
        client.nick = nick;
        client
    }

    fn say(&mut self, text: &str) {
        writeln!(self.reader.get_mut(), "{text}").expect("send a chat line");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("{}: the server closed the connection", self.nick),
            Ok(_) => line.strip_suffix('\n').unwrap_or_else(|| panic!("a partial line {line:?}")).to_string(),
            Err(e) => panic!("{}: no line within {TIMEOUT:?}: {e}", self.nick),
        }
    }

    fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want, "what {} received", self.nick);
    }

    /// The server must close this connection, with no line left before that.
    fn expect_closed(&mut self) {
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).unwrap_or_else(|e| panic!("{}: not closed: {e}", self.nick));
        assert_eq!(rest, "", "{} got lines before the end", self.nick);
    }
}

#[test]
fn chat_room_announces_joins_broadcasts_lines_and_survives_a_leave() {
    course_test(&["chat"], || {
        let mut chat = Server::start(example("chat", &["--addr", "127.0.0.1:0"]));
        let addr = chat.listening("tcp");

        let mut alice = ChatClient::join(addr, "alice", &[]);
        let mut bob = ChatClient::join(addr, "bob", &["alice"]);
        alice.expect("* bob joined");
        // An empty answer, a taken name and an invalid one all give `guestN`.
        let mut guest = ChatClient::join(addr, "", &["alice", "bob"]);
        assert_eq!(guest.nick, "guest3");
        for client in [&mut alice, &mut bob] {
            client.expect("* guest3 joined");
        }
        for (wanted, nick) in [("alice", "guest4"), ("no spaces", "guest5")] {
            let mut other = ChatClient::join(addr, wanted, &["alice", "bob", "guest3"]);
            assert_eq!(other.nick, nick);
            other.say("/quit");
            other.expect_closed();
            for client in [&mut alice, &mut bob, &mut guest] {
                client.expect(&format!("* {nick} joined"));
                client.expect(&format!("* {nick} left"));
            }
        }

        // Every line goes to every other client; the sender's next line is someone else's,
        // so it did not get its own back.
        alice.say("hello everyone");
        bob.expect("alice: hello everyone");
        guest.expect("alice: hello everyone");
        bob.say("hi alice");
        alice.expect("bob: hi alice");
        guest.expect("bob: hi alice");

        // Bob leaves mid-conversation, by closing the connection right after a line.
        bob.say("got to go");
        drop(bob);
        for client in [&mut alice, &mut guest] {
            client.expect("bob: got to go");
            client.expect("* bob left");
        }
        chat.wait_for_line("bob left");
        // The others go on as before.
        guest.say("still here");
        alice.expect("guest3: still here");
        alice.say("me too");
        guest.expect("alice: me too");
        alice.say("/quit");
        alice.expect_closed();
        guest.expect("* alice left");
    });
}

#[test]
fn chat_drops_a_client_that_stops_reading_and_the_room_goes_on() {
    course_test(&["chat"], || {
        let mut chat = Server::start(example("chat", &["--addr", "127.0.0.1:0"]));
        let addr = chat.listening("tcp");

        let mut reader = ChatClient::join(addr, "reader", &[]);
        let mut slow = ChatClient::join(addr, "slow", &["reader"]); // never reads again
        reader.expect("* slow joined");
        let mut sender = ChatClient::join(addr, "sender", &["reader", "slow"]);
        reader.expect("* sender joined");

        // `reader` keeps up with the flood; `slow`'s buffers fill, a write to it times out
        // after 2 s, and the server drops it.
        let slow_left = Arc::new(AtomicBool::new(false));
        let reading = {
            let slow_left = slow_left.clone();
            thread::spawn(move || loop {
                let line = reader.line();
                if line == "* slow left" {
                    slow_left.store(true, Ordering::SeqCst);
                } else if line == "sender: after the flood" {
                    return slow_left.load(Ordering::SeqCst);
                } else {
                    assert!(line.starts_with("sender: flood "), "reader got {line:?}");
                }
            })
        };
        // Lines until the server dropped `slow`, or 64 MiB: far beyond any socket buffers.
        let filler = "x".repeat(1000);
        let mut sent = 0_usize;
        while !slow_left.load(Ordering::SeqCst) {
            assert!(sent < 64 << 20, "sent {sent} bytes and the client that reads nothing is still in the room");
            sender.say(&format!("flood {filler}"));
            sent += filler.len();
        }
        sender.say("after the flood");
        assert!(join_within(reading, TIMEOUT), "reader saw `* slow left`");
        chat.wait_for_line("slow left");
        // The dropped client gets what was sent before, then the end of the connection.
        io::copy(&mut slow.reader, &mut io::sink()).expect("the dropped client's connection ends");
    });
}

// ---------------------------------------------------------------------------------------
// daytime
// ---------------------------------------------------------------------------------------

/// Seconds since 1970 of a `YYYY-MM-DD HH:MM:SS UTC` line ending in CRLF, counted day by
/// day (not the example's algorithm, so the two check each other).
fn parse_daytime(line: &str) -> u64 {
    let fail = || -> ! { panic!("{line:?} is not `YYYY-MM-DD HH:MM:SS UTC` and CRLF") };
    let text = line.strip_suffix(" UTC\r\n").unwrap_or_else(|| fail());
    let fields: Vec<u64> = text.split(['-', ' ', ':']).map(|f| f.parse().unwrap_or_else(|_| fail())).collect();
    let &[year, month, day, hour, minute, second] = fields.as_slice() else { fail() };
    assert!(text.len() == 19 && (1..=12).contains(&month) && hour < 24 && minute < 60 && second < 60, "{line:?}");
    let leap = |y: u64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    assert!(day >= 1 && day <= month_days[month as usize - 1], "{line:?}");
    let days = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum::<u64>()
        + month_days[..month as usize - 1].iter().sum::<u64>()
        + (day - 1);
    days * 86_400 + hour * 3600 + minute * 60 + second
}

fn assert_near_now(line: &str) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let told = parse_daytime(line);
    assert!(told.abs_diff(now) <= 60, "{line:?} is {told}, now is {now}");
}

#[test]
fn daytime_tells_the_time_over_tcp_and_udp() {
    course_test(&["daytime"], || {
        let mut daytime = Server::start(example("daytime", &["--addr", "127.0.0.1:0"]));
        let tcp = daytime.listening("tcp");
        let udp = daytime.listening("udp");

        // TCP: one line as soon as the client connects, then the end of the connection.
        for _ in 0..2 {
            let mut line = String::new();
            connect(tcp).read_to_string(&mut line).unwrap();
            assert_near_now(&line);
        }
        // UDP: an answer to any datagram, even an empty one.
        let client = udp_client();
        for datagram in [&b"what time is it?"[..], b""] {
            client.send_to(datagram, udp).unwrap();
            let mut buf = [0; 512];
            let (n, from) = client.recv_from(&mut buf).expect("a daytime datagram");
            assert_eq!(from, udp);
            assert_near_now(std::str::from_utf8(&buf[..n]).unwrap());
        }
    });
}

// ---------------------------------------------------------------------------------------
// calc
// ---------------------------------------------------------------------------------------

/// Sends each request line in turn on one connection and checks each answer.
fn calc_session(addr: SocketAddr, exchanges: &[(&str, &str)]) -> BufReader<TcpStream> {
    let mut client = BufReader::new(connect(addr));
    for (request, answer) in exchanges {
        client.get_mut().write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        client.read_line(&mut line).unwrap_or_else(|e| panic!("no answer to {request:?}: {e}"));
        assert_eq!(line, format!("{answer}\n"), "the answer to {request:?}");
    }
    client
}

fn expect_closed(mut client: BufReader<TcpStream>) {
    let mut rest = String::new();
    client.read_to_string(&mut rest).expect("the server closes the connection");
    assert_eq!(rest, "");
}

#[test]
fn calc_answers_each_command_and_each_error() {
    course_test(&["calc"], || {
        let mut calc = Server::start(example("calc", &["--addr", "127.0.0.1:0"]));
        let addr = calc.listening("tcp");
        let client = calc_session(
            addr,
            &[
                ("ADD 1 2", "3"),
                ("SUB 2 5", "-3"),
                ("MUL -4 6", "-24"),
                ("DIV 7 2", "3"),
                ("div -7 2", "-3"),
                ("  add   10   20  ", "30"),
                ("ADD 1 2\r", "3"), // telnet's line ending
                ("DIV 1 0", "ERR division by zero"),
                ("POW 2 3", "ERR unknown command"),
                ("MUL 2 x", "ERR not a number: x"),
                ("ADD 1.5 2", "ERR not a number: 1.5"),
                ("ADD 1", "ERR ADD takes two numbers"),
                ("SUB 1 2 3", "ERR SUB takes two numbers"),
                ("", "ERR empty line"),
                ("MUL 9223372036854775807 2", "ERR overflow"),
                ("DIV -9223372036854775808 -1", "ERR overflow"),
                ("QUIT", "BYE"),
            ],
        );
        expect_closed(client);
    });
}

#[test]
fn calc_closes_on_a_line_too_long_and_serves_the_next_connection() {
    course_test(&["calc"], || {
        let mut calc = Server::start(example("calc", &["--addr", "127.0.0.1:0"]));
        let addr = calc.listening("tcp");
        // 1024 bytes with the newline is the longest line allowed.
        let longest = format!("ADD 1 2{}", " ".repeat(1024 - 8));
        let mut client = calc_session(addr, &[(&longest, "3")]);
        // One byte more: the answer, then the end of the connection. (Exactly 1025 bytes, so
        // the server has read all of them: unread bytes would make its close a reset.)
        client.get_mut().write_all(format!("{longest} \n").as_bytes()).unwrap();
        let mut rest = String::new();
        client.read_to_string(&mut rest).expect("the server closes the connection");
        assert_eq!(rest, "ERR line too long\n");
        // A fresh connection is served as usual.
        let client = calc_session(addr, &[("MUL 6 7", "42"), ("QUIT", "BYE")]);
        expect_closed(client);
    });
}
