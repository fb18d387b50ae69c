//! The `kv` example against a hostile client, over real sockets: what issue 15 found
//! (no total bound on one command, the map locked during a write to a client that does
//! not read, `INCR` of `007`), each attack run against the example as a child process.
//!
//! Unix only, as `tests/echo_example.rs` (the example runs as a child process). Every
//! wait has a deadline; only `127.0.0.1:0` is bound.
#![cfg(unix)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use support::process::{example_binary, Spawned};
use support::{bounded, connect, LIMIT, TIMEOUT};

/// The example on a free port; its address.
fn start() -> (Spawned, SocketAddr) {
    start_with(&[])
}

/// The example on a free port with more arguments; its address.
fn start_with(args: &[&str]) -> (Spawned, SocketAddr) {
    let mut command = Command::new(example_binary("kv"));
    command.args(["--addr", "127.0.0.1:0"]).args(args);
    let mut kv = Spawned::start(command);
    let url = kv.listening();
    (kv, url.strip_prefix("tcp://").expect("a tcp:// URL").parse().expect("IP:PORT"))
}

/// A RESP array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A client that reads one reply line at a time (bulk strings as their header line and
/// their data line).
struct Client(BufReader<TcpStream>);

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let stream = connect(addr);
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client(BufReader::new(stream))
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).expect("a reply within the client's timeout");
        line
    }

    /// Sends one command and reads its reply's first line.
    fn ask(&mut self, args: &[&[u8]]) -> String {
        self.0.get_mut().write_all(&command(args)).unwrap();
        self.line()
    }
}

/// Issue 15: one command of 16 items of 64 MiB each took the server to 1 GB. Now a
/// command's items together are bounded (as Redis's `client-query-buffer-limit`), checked
/// on each item's announced length before its bytes are read.
#[test]
fn one_command_is_bounded_in_total() {
    let _ = example_binary("kv");
    bounded(LIMIT, || {
        let (_kv, addr) = start();
        let mut client = Client::new(addr);
        let bulk = vec![b'v'; 64 << 20]; // MAX_BULK, accepted alone
        let mut request = b"*3\r\n$3\r\nSET\r\n".to_vec();
        request.extend(format!("${}\r\n", bulk.len()).bytes());
        request.extend_from_slice(&bulk);
        request.extend_from_slice(b"\r\n");
        // A second item as large would take the command past 128 MiB.
        request.extend(format!("${}\r\n", bulk.len()).bytes());
        client.0.get_mut().write_all(&request).unwrap();
        assert_eq!(client.line(), "-ERR Protocol error: command exceeds the query buffer limit\r\n");
        let mut rest = Vec::new();
        let _ = client.0.read_to_end(&mut rest);
        assert!(rest.is_empty(), "the connection stays open after the limit: {:?}", String::from_utf8_lossy(&rest));
        // One item of the largest size is still a command.
        let mut client = Client::new(addr);
        assert_eq!(client.ask(&[b"SET", b"big", &bulk]), "+OK\r\n");
        assert_eq!(client.ask(&[b"EXISTS", b"big"]), ":1\r\n");
    });
}

/// Issue 15: a client with a small receive buffer that pipelines `GET`s of a large
/// value and never reads blocked in a write while holding the map's lock, and every
/// other client's `GET` and `SET` waited behind it. Now the lock is released before the
/// reply is written.
#[test]
fn a_client_that_does_not_read_holds_up_no_one() {
    let _ = example_binary("kv");
    bounded(LIMIT, || {
        let (_kv, addr) = start();
        let mut writer = Client::new(addr);
        let value = vec![b'x'; 1 << 20];
        assert_eq!(writer.ask(&[b"SET", b"big", &value]), "+OK\r\n");

        // A small receive buffer, set before connecting, and 64 GETs it never reads.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stuck: TcpStream = socket.into();
        let gets: Vec<u8> = (0..64).flat_map(|_| command(&[b"GET", b"big"])).collect();
        stuck.write_all(&gets).unwrap();
        // Wait for the server to be stuck writing to it: it has answered part of the
        // first GET, so its handler is inside that write (or past the first reply).
        let mut first = [0; 16];
        stuck.set_read_timeout(Some(TIMEOUT)).unwrap();
        stuck.read_exact(&mut first).expect("the start of the first reply");
        assert_eq!(&first, b"$1048576\r\nxxxxxx");

        // Another client is served meanwhile, within its read timeout.
        let mut other = Client::new(addr);
        assert_eq!(other.ask(&[b"SET", b"k", b"1"]), "+OK\r\n");
        assert_eq!(other.ask(&[b"GET", b"k"]), "$1\r\n");
        assert_eq!(other.line(), "1\r\n");
        assert_eq!(other.ask(&[b"GET", b"big"]), "$1048576\r\n");
        drop(stuck);
    });
}

/// Found by a hostile review: clients that pipeline commands and never read their
/// replies held a worker each in a blocking write, well past the 10 s write timeout (each
/// write the kernel took a few bytes of started it again, and the flush after the failure
/// waited once more); with two of them, a pool of two answered no one for 25 s. Now a
/// batch's replies go out from the poller, the connection parked for room to send, and it
/// ends after 10 s without progress. A fresh client is answered meanwhile, on a pool of
/// one, well within the write timeout that used to hold it (3 s against 10).
#[test]
fn clients_that_pipeline_and_never_read_hold_no_worker() {
    use std::time::{Duration, Instant};
    let _ = example_binary("kv");
    bounded(LIMIT, || {
        let (_kv, addr) = start_with(&["--workers", "1"]);
        assert_eq!(Client::new(addr).ask(&[b"SET", b"v", &[b'v'; 2048]]), "+OK\r\n");
        // Small replies, and replies of 2 KiB: a batch of those fills the writer's
        // buffer, which then flushed, blocking, in the middle of the batch.
        let floods = [b"*1\r\n$4\r\nPING\r\n".repeat(1000), command(&[b"GET", b"v"]).repeat(1000)];
        let flooders: Vec<_> = floods
            .into_iter()
            .map(|flood| {
                let mut stuck = connect(addr);
                stuck.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
                // Sends until its own send blocks for a second: both socket buffers full.
                std::thread::spawn(move || {
                    while stuck.write_all(&flood).is_ok() {}
                    stuck
                })
            })
            .collect();
        let stuck: Vec<TcpStream> = flooders.into_iter().map(|f| f.join().unwrap()).collect();
        for round in 0..3 {
            let mut fresh = Client::new(addr);
            fresh.0.get_ref().set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let began = Instant::now();
            assert_eq!(fresh.ask(&[b"PING"]), "+PONG\r\n", "round {round}");
            assert!(began.elapsed() < Duration::from_secs(3), "round {round}: {:?}", began.elapsed());
        }
        drop(stuck);
    });
}

/// Integers are read as Redis reads them (`string2ll`): no leading zero, no sign but
/// `-`, no spaces. `INCR` of `007` is refused, as Redis refuses it, and leaves it be.
#[test]
fn incr_refuses_what_redis_refuses() {
    let _ = example_binary("kv");
    bounded(LIMIT, || {
        let (_kv, addr) = start();
        let mut client = Client::new(addr);
        for text in [&b"007"[..], b"-0", b"+1", b" 1", b"1 ", b"", b"9223372036854775808"] {
            assert_eq!(client.ask(&[b"SET", b"n", text]), "+OK\r\n");
            let reply = client.ask(&[b"INCR", b"n"]);
            assert_eq!(
                reply,
                "-ERR value is not an integer or out of range\r\n",
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(client.ask(&[b"GET", b"n"]), "$19\r\n", "the refused INCR changed the value");
        assert_eq!(client.line(), "9223372036854775808\r\n");
        for (text, next) in [(&b"0"[..], ":1\r\n"), (b"-1", ":0\r\n"), (b"7", ":8\r\n"), (b"-10", ":-9\r\n")] {
            assert_eq!(client.ask(&[b"SET", b"n", text]), "+OK\r\n");
            assert_eq!(client.ask(&[b"INCR", b"n"]), next, "{:?}", String::from_utf8_lossy(text));
        }
        // The same rule for the protocol's own lengths: `*01` is not an array length.
        client.0.get_mut().write_all(b"*01\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(client.line(), "-ERR Protocol error: invalid multibulk length\r\n");
    });
}

/// Clients park between commands: a pool of one worker serves several open connections
/// in turn, pipelined commands included (issue 13).
#[test]
fn one_worker_serves_many_open_connections() {
    bounded(LIMIT, || {
        let (_kv, addr) = start_with(&["--mode", "pool", "--workers", "1"]);
        let mut clients: Vec<Client> = (0..8).map(|_| Client::new(addr)).collect();
        for round in 0..3 {
            for (n, client) in clients.iter_mut().enumerate() {
                let value = format!("{n}-{round}");
                assert_eq!(client.ask(&[b"SET", b"k", value.as_bytes()]), "+OK\r\n");
                assert_eq!(client.ask(&[b"ECHO", value.as_bytes()]), format!("${}\r\n", value.len()));
                assert_eq!(client.line(), format!("{value}\r\n"));
            }
        }
        // Three commands in one write: three replies, in order.
        let client = &mut clients[0];
        let mut batch = command(&[b"PING"]);
        batch.extend(command(&[b"INCR", b"n"]));
        batch.extend(command(&[b"INCR", b"n"]));
        client.0.get_mut().write_all(&batch).unwrap();
        assert_eq!([client.line(), client.line(), client.line()], ["+PONG\r\n", ":1\r\n", ":2\r\n"]);
    });
}

/// Issue 19: a bulk string trickled a byte at a time held its worker for as long as it
/// took (90 s at a byte every 10 s). Commands are framed now: the server gathers a
/// command in the poller, so a pool of one worker answers a fresh client at once while
/// a command is half sent, and the half-sent command is answered once whole.
#[test]
fn a_half_sent_command_holds_no_worker() {
    let _ = example_binary("kv");
    bounded(LIMIT, || {
        let (_kv, addr) = start_with(&["--mode", "pool", "--workers", "1"]);
        let mut slow = Client::new(addr);
        let whole = command(&[b"SET", b"trickled", b"0123456789"]);
        let (first, rest) = whole.split_at(whole.len() - 6);
        slow.0.get_mut().write_all(first).unwrap();
        let mut fresh = Client::new(addr);
        assert_eq!(fresh.ask(&[b"PING"]), "+PONG\r\n", "a fresh client behind a half-sent command");
        for byte in rest {
            slow.0.get_mut().write_all(&[*byte]).unwrap();
            assert_eq!(fresh.ask(&[b"PING"]), "+PONG\r\n", "while the command trickles in");
        }
        assert_eq!(slow.line(), "+OK\r\n");
        assert_eq!(fresh.ask(&[b"GET", b"trickled"]), "$10\r\n");
    });
}
