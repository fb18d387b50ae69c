//! The `echo` example, run as a child process and held to its contract: the listening
//! line, echoing on TCP, UDP and Unix sockets, the three dispatch modes, shutdown on
//! SIGINT and SIGTERM with a 2 s grace, argument errors, addresses in use, and an idle
//! process that burns no CPU.
//!
//! The example is built once per test run with `cargo build --example echo` into the
//! target directory of the tests. Every wait has a deadline, every child process is
//! killed when its guard drops, and only `127.0.0.1:0`, `[::1]:0` and temporary Unix
//! paths are bound.
//!
//! Unix only: every test runs the example as a child process (built by `cargo build`,
//! which a Windows test process under Wine cannot start) and most send it signals; the
//! example on Windows is checked by `.ci/cross echo-windows`.
#![cfg(unix)]

mod support;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use support::process::{example_binary, run_to_exit, Spawned};
use support::{
    bounded, connect, connect_unix, join_within, spawn_scoped, temp_socket_path, udp_client, wait_refused,
    wait_refused_unix, TIMEOUT,
};

/// How long a queued client is watched to make sure it gets no echo yet. A wrong pass
/// is possible on a slow machine, a wrong failure is not.
const NOT_YET: Duration = Duration::from_millis(500);
/// The example's shutdown grace period.
const GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// Building and running the example
// ---------------------------------------------------------------------------------------

fn echo_binary() -> PathBuf {
    example_binary("echo")
}

/// The example with `args`, ready to spawn.
fn echo_command(args: &[&str]) -> Command {
    let mut command = Command::new(echo_binary());
    // A panic would print a backtrace: more than the one line allowed on stderr.
    command.args(args).env("RUST_BACKTRACE", "1");
    command
}

/// Runs the example when it is expected to stop on its own (bad arguments, address in
/// use): its status, stdout and stderr.
fn run_echo_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let finished = run_to_exit(&mut echo_command(args), b"", TIMEOUT);
    (finished.status, finished.stdout, finished.stderr)
}

/// Builds the example (outside the deadline: a build may take long on a busy machine),
/// then runs the test `body` within 90 s.
fn echo_test(body: impl FnOnce() + Send + 'static) {
    echo_binary();
    bounded(Duration::from_secs(90), body);
}

/// A running echo example. Dropping it kills the process and reaps it.
struct Echo {
    process: Spawned,
    /// What follows `listening on ` on the first stdout line.
    url: String,
}

impl Deref for Echo {
    type Target = Spawned;
    fn deref(&self) -> &Spawned {
        &self.process
    }
}

impl DerefMut for Echo {
    fn deref_mut(&mut self) -> &mut Spawned {
        &mut self.process
    }
}

impl Echo {
    /// Starts the example and waits for its `listening on URL` line.
    fn start(args: &[&str]) -> Echo {
        let mut process = Spawned::start(echo_command(args));
        let url = process.listening();
        Echo { process, url }
    }

    /// The address of `tcp://IP:PORT`.
    fn tcp_addr(&self) -> SocketAddr {
        inet_url(&self.url, "tcp://")
    }

    /// The address of `udp://IP:PORT`.
    fn udp_addr(&self) -> SocketAddr {
        inet_url(&self.url, "udp://")
    }

    /// The path of `unix://PATH`.
    fn unix_path(&self) -> PathBuf {
        let path = self.url.strip_prefix("unix://").unwrap_or_else(|| panic!("{:?} is not a unix:// URL", self.url));
        PathBuf::from(path)
    }
}

fn inet_url(url: &str, scheme: &str) -> SocketAddr {
    let addr = url.strip_prefix(scheme).unwrap_or_else(|| panic!("{url:?} does not start with {scheme}"));
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{url:?}: {addr:?} is not IP:PORT: {e}"));
    assert_ne!(addr.port(), 0, "{url:?} shows port 0, not the real port");
    addr
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

use support::StreamClient as Client;

/// Sends `chunk` and reads the same bytes back before sending anything more.
fn assert_echoes(client: &mut impl Client, chunk: &[u8]) {
    client.write_all(chunk).expect("send");
    let mut back = vec![0; chunk.len()];
    client.read_exact(&mut back).unwrap_or_else(|e| panic!("no echo of a {}-byte chunk: {e}", chunk.len()));
    assert_eq!(back, chunk, "the echo differs from what was sent");
}

/// Sends `chunk` and checks that nothing comes back for a while: the client waits.
fn assert_no_echo_yet(client: &mut impl Client, chunk: &[u8]) {
    client.write_all(chunk).expect("send");
    client.timeout(NOT_YET);
    let mut buf = [0; 64];
    match client.read(&mut buf) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        Ok(n) => panic!("expected no echo yet, got {:?}", &buf[..n]),
        Err(e) => panic!("expected no echo yet, got error {e}"),
    }
    client.timeout(TIMEOUT);
}

/// Reads the echo of `chunk`, sent earlier.
fn assert_late_echo(client: &mut impl Client, chunk: &[u8]) {
    let mut back = vec![0; chunk.len()];
    client.read_exact(&mut back).unwrap_or_else(|e| panic!("the queued client got no echo: {e}"));
    assert_eq!(back, chunk);
}

/// Sends end-of-file and checks the server answers with end-of-file and nothing more.
fn assert_closes_after_eof(client: &mut impl Client) {
    client.close_write();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the server closes the connection after the client's EOF");
    assert!(rest.is_empty(), "unexpected bytes before EOF: {rest:?}");
}

/// The whole stream contract on one connection: interactive, binary-safe chunks, then a
/// bulk transfer while reading, then end-of-file both ways.
fn check_stream_echo(mut client: impl Client) {
    assert_echoes(&mut client, b"hello\n");
    assert_echoes(&mut client, b"\0");
    assert_echoes(&mut client, b"\xff\xfe\0binary\0\r\n\xff");
    let every_byte: Vec<u8> = (0..=255u8).collect();
    assert_echoes(&mut client, &every_byte);

    let bulk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = client.duplicate();
    let sent = bulk.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&sent).expect("send bulk");
        writer.close_write();
    });
    let mut back = Vec::new();
    client.read_to_end(&mut back).expect("read the bulk echo to EOF");
    join_within(sender, TIMEOUT);
    assert_eq!(back.len(), bulk.len(), "bulk echo length");
    assert!(back == bulk, "the bulk echo differs from what was sent");
}

/// Sends one datagram and returns the reply, checking it comes from `server`.
fn udp_round_trip(client: &UdpSocket, server: SocketAddr, payload: &[u8]) -> Vec<u8> {
    client.send_to(payload, server).expect("send a datagram");
    let mut buf = vec![0; 65536];
    let (n, from) =
        client.recv_from(&mut buf).unwrap_or_else(|e| panic!("no reply to a {}-byte datagram: {e}", payload.len()));
    assert_eq!(from, server, "the reply must come from the server's bound address");
    buf.truncate(n);
    buf
}

// ---------------------------------------------------------------------------------------
// The listening line
// ---------------------------------------------------------------------------------------

#[test]
fn prints_listening_line_with_the_real_address() {
    echo_test(|| {
        // No --proto: TCP. The line arrives while the process runs, so it was flushed.
        let tcp = Echo::start(&["--addr", "127.0.0.1:0"]);
        assert!(tcp.url.starts_with("tcp://127.0.0.1:"), "default protocol: {:?}", tcp.url);
        check_stream_echo(connect(tcp.tcp_addr()));

        let tcp = Echo::start(&["--proto", "tcp", "--addr", "127.0.0.1:0"]);
        assert!(tcp.url.starts_with("tcp://127.0.0.1:"), "{:?}", tcp.url);
        assert_echoes(&mut connect(tcp.tcp_addr()), b"port");

        let udp = Echo::start(&["--proto", "udp", "--addr", "127.0.0.1:0"]);
        assert!(udp.url.starts_with("udp://127.0.0.1:"), "{:?}", udp.url);
        assert_eq!(udp_round_trip(&udp_client(), udp.udp_addr(), b"port"), b"port");

        let path = temp_socket_path("echo-line");
        let unix = Echo::start(&["--proto", "unix", "--addr", path.to_str().unwrap()]);
        assert_eq!(unix.url, format!("unix://{}", path.display()));
        assert_echoes(&mut connect_unix(&unix.unix_path()), b"path");
        drop(unix);
        let _ = std::fs::remove_file(&path); // the killed process left it
    });
}

#[test]
fn ipv6_address_is_printed_in_brackets() {
    echo_test(|| {
        if TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skipped: this machine cannot bind [::1]");
            return;
        }
        let echo = Echo::start(&["--addr", "[::1]:0"]);
        assert!(echo.url.starts_with("tcp://[::1]:"), "{:?}", echo.url);
        let addr = echo.tcp_addr();
        assert!(addr.is_ipv6() && addr.ip().is_loopback(), "{addr}");
        let mut client = connect(addr);
        assert_echoes(&mut client, b"six\0\xff");
        assert_closes_after_eof(&mut client);
    });
}

// ---------------------------------------------------------------------------------------
// Echoing
// ---------------------------------------------------------------------------------------

#[test]
fn tcp_echoes_every_byte_as_it_arrives_until_eof() {
    echo_test(|| {
        for mode in ["sequential", "threading", "pool"] {
            let echo = Echo::start(&["--proto", "tcp", "--mode", mode, "--addr", "127.0.0.1:0"]);
            check_stream_echo(connect(echo.tcp_addr()));
            // A connection with no bytes at all: EOF answered by EOF.
            assert_closes_after_eof(&mut connect(echo.tcp_addr()));
        }
    });
}

#[test]
fn unix_echoes_every_byte_as_it_arrives_until_eof() {
    echo_test(|| {
        for mode in ["sequential", "threading", "pool"] {
            let path = temp_socket_path("echo-unix");
            let echo = Echo::start(&["--proto", "unix", "--mode", mode, "--addr", path.to_str().unwrap()]);
            check_stream_echo(connect_unix(&path));
            assert_closes_after_eof(&mut connect_unix(&path));
            drop(echo);
            let _ = std::fs::remove_file(&path); // the killed process left it
        }
    });
}

#[test]
fn udp_replies_to_each_datagram_from_the_bound_address() {
    echo_test(|| {
        let echo = Echo::start(&["--proto", "udp", "--addr", "127.0.0.1:0"]);
        let server = echo.udp_addr();
        let client = udp_client();

        assert_eq!(udp_round_trip(&client, server, b"ping"), b"ping");
        assert_eq!(udp_round_trip(&client, server, b"\0\xff\0\xfe"), b"\0\xff\0\xfe");
        assert_eq!(udp_round_trip(&client, server, b""), b"", "an empty datagram gets an empty reply");

        let exact: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        assert_eq!(udp_round_trip(&client, server, &exact), exact, "an 8192-byte datagram comes back whole");
        let long: Vec<u8> = (0..10_000u32).map(|i| (i % 247) as u8).collect();
        let reply = udp_round_trip(&client, server, &long);
        assert_eq!(reply.len(), 8192, "a longer datagram is truncated to 8192 bytes");
        assert_eq!(reply, long[..8192], "the truncated reply is the datagram's first 8192 bytes");

        // Each sender gets its own reply.
        let other = udp_client();
        assert_eq!(udp_round_trip(&other, server, b"second sender"), b"second sender");
    });
}

#[test]
fn udp_echoes_in_every_mode() {
    echo_test(|| {
        for mode in ["sequential", "threading", "pool"] {
            let echo = Echo::start(&["--proto", "udp", "--mode", mode, "--workers", "2", "--addr", "127.0.0.1:0"]);
            let client = udp_client();
            for payload in [&b"one"[..], b"", b"\xff\0three"] {
                assert_eq!(udp_round_trip(&client, echo.udp_addr(), payload), payload, "mode {mode}");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Dispatch modes
// ---------------------------------------------------------------------------------------

/// The sequential loop parks each connection between messages, so it serves several
/// open connections one message at a time, like Redis's single loop.
#[test]
fn sequential_mode_serves_open_connections_one_message_at_a_time() {
    echo_test(|| {
        let echo = Echo::start(&["--mode", "sequential", "--addr", "127.0.0.1:0"]);
        let mut first = connect(echo.tcp_addr());
        assert_echoes(&mut first, b"first");
        let mut second = connect(echo.tcp_addr());
        assert_echoes(&mut second, b"second, while first stays connected");
        assert_echoes(&mut first, b"first again");
        assert_closes_after_eof(&mut first);
        assert_echoes(&mut second, b"second again");
        assert_closes_after_eof(&mut second);
    });
}

#[test]
fn threading_mode_serves_clients_concurrently() {
    echo_test(|| {
        // Without --mode the example runs in threading mode.
        for args in [&["--addr", "127.0.0.1:0"][..], &["--mode", "threading", "--addr", "127.0.0.1:0"]] {
            let echo = Echo::start(args);
            let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(echo.tcp_addr())).collect();
            for (i, client) in clients.iter_mut().enumerate() {
                assert_echoes(client, format!("client {i} ({args:?})").as_bytes());
            }
            for (i, client) in clients.iter_mut().enumerate().rev() {
                assert_echoes(client, format!("client {i} again").as_bytes());
            }
            for client in &mut clients {
                assert_closes_after_eof(client);
            }
        }
    });
}

/// A pool of two parks connections between messages: more clients than workers keep
/// their connections open and every one is served (none waits in the backlog).
#[test]
fn pool_mode_serves_more_open_connections_than_workers() {
    echo_test(|| {
        let echo = Echo::start(&["--mode", "pool", "--workers", "2", "--addr", "127.0.0.1:0"]);
        let mut clients: Vec<TcpStream> = (0..5).map(|_| connect(echo.tcp_addr())).collect();
        for round in 0..3 {
            for (i, client) in clients.iter_mut().enumerate() {
                assert_echoes(client, format!("client {i} round {round}").as_bytes());
            }
        }
        for client in &mut clients {
            assert_closes_after_eof(client);
        }
    });
}

/// Without parking, a pool of two serves two clients at a time: the third waits in the
/// backlog until a worker is free.
#[test]
fn pool_mode_without_parking_serves_at_most_n_clients_at_once() {
    echo_test(|| {
        let echo = Echo::start(&["--mode", "pool", "--workers", "2", "--no-park", "--addr", "127.0.0.1:0"]);
        let mut first = connect(echo.tcp_addr());
        let mut second = connect(echo.tcp_addr());
        assert_echoes(&mut first, b"first");
        assert_echoes(&mut second, b"second");
        let mut third = connect(echo.tcp_addr());
        assert_no_echo_yet(&mut third, b"third");
        assert_echoes(&mut second, b"second still served");
        assert_closes_after_eof(&mut first);
        assert_late_echo(&mut third, b"third");
        assert_closes_after_eof(&mut second);
        assert_closes_after_eof(&mut third);
    });
}

// ---------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------

#[test]
fn signal_refuses_new_connections_at_once_in_every_mode() {
    echo_test(|| {
        for mode in ["sequential", "threading", "pool"] {
            let mut echo = Echo::start(&["--mode", mode, "--workers", "2", "--no-park", "--addr", "127.0.0.1:0"]);
            let mut client = connect(echo.tcp_addr());
            assert_echoes(&mut client, b"before");
            echo.signal("TERM");
            // The client's thread (--no-park) keeps the process in its grace period: a
            // refusal now is the server refusing, not a process that is gone.
            wait_refused(echo.tcp_addr(), Duration::from_millis(1500));
            assert!(echo.exited().is_none(), "mode {mode}: exited while a client was still connected");
            assert_echoes(&mut client, b"a running request goes on after the signal");
            assert_closes_after_eof(&mut client);
            echo.assert_clean_exit(TIMEOUT);
        }

        let path = temp_socket_path("echo-refuse");
        let mut echo = Echo::start(&["--proto", "unix", "--no-park", "--addr", path.to_str().unwrap()]);
        let mut client = connect_unix(&path);
        assert_echoes(&mut client, b"before");
        echo.signal("TERM");
        wait_refused_unix(&path, Duration::from_millis(1500));
        assert!(echo.exited().is_none(), "unix: exited while a client was still connected");
        assert_echoes(&mut client, b"a running request goes on after the signal");
        assert_closes_after_eof(&mut client);
        echo.assert_clean_exit(TIMEOUT);
    });
}

#[test]
fn signal_exits_promptly_once_the_last_client_leaves() {
    echo_test(|| {
        for (mode, signal) in [("threading", "INT"), ("threading", "TERM"), ("sequential", "TERM"), ("pool", "INT")] {
            let mut echo = Echo::start(&["--mode", mode, "--no-park", "--addr", "127.0.0.1:0"]);
            let mut client = connect(echo.tcp_addr());
            assert_echoes(&mut client, b"hello");
            let signalled = Instant::now();
            echo.signal(signal);
            // Leave only once the server has seen the signal, so a request is running then.
            wait_refused(echo.tcp_addr(), Duration::from_millis(1500));
            assert_closes_after_eof(&mut client);
            echo.assert_clean_exit(TIMEOUT);
            let took = signalled.elapsed();
            assert!(
                took < Duration::from_millis(1500),
                "{mode}, SIG{signal}: exit took {took:?}, not well before the grace"
            );
        }

        // With nothing running, UDP exits at once too.
        let mut echo = Echo::start(&["--proto", "udp", "--addr", "127.0.0.1:0"]);
        assert_eq!(udp_round_trip(&udp_client(), echo.udp_addr(), b"x"), b"x");
        let signalled = Instant::now();
        echo.signal("INT");
        echo.assert_clean_exit(TIMEOUT);
        let took = signalled.elapsed();
        assert!(took < Duration::from_millis(1500), "udp: exit took {took:?}");
    });
}

/// Parking clients between messages (the default but in threading mode), at a signal the
/// example closes an idle client at once (it has nothing running), and exits well before
/// the grace.
#[test]
fn signal_closes_parked_clients_at_once_in_every_mode() {
    echo_test(|| {
        for mode in ["sequential", "threading", "pool"] {
            let mut echo = Echo::start(&["--mode", mode, "--workers", "2", "--park", "--addr", "127.0.0.1:0"]);
            let mut client = connect(echo.tcp_addr());
            assert_echoes(&mut client, b"before");
            let signalled = Instant::now();
            echo.signal("TERM");
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).expect("the parked client is closed");
            assert!(rest.is_empty(), "mode {mode}: {rest:?}");
            echo.assert_clean_exit(TIMEOUT);
            let took = signalled.elapsed();
            assert!(took < GRACE / 2, "{mode}: exit took {took:?}, not well before the grace");
        }
    });
}

#[test]
fn signal_closes_a_lingering_client_at_the_grace_deadline() {
    echo_test(|| {
        thread::scope(|scope| {
            // A client that holds its thread (--no-park); a parked one is closed at once
            // (signal_closes_parked_clients_at_once_in_every_mode).
            for mode in ["sequential", "threading", "pool"] {
                spawn_scoped(scope, move || {
                    let mut echo = Echo::start(&["--mode", mode, "--no-park", "--addr", "127.0.0.1:0"]);
                    let mut client = connect(echo.tcp_addr());
                    assert_echoes(&mut client, b"staying");
                    let signalled = Instant::now();
                    echo.signal("TERM");
                    client.timeout(Duration::from_secs(8));
                    let mut buf = [0; 16];
                    match client.read(&mut buf) {
                        Ok(0) => {}
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                        Ok(n) => panic!("{mode}: unexpected bytes {:?}", &buf[..n]),
                        Err(e) => panic!("{mode}: the lingering client was not disconnected: {e}"),
                    }
                    let closed = signalled.elapsed();
                    assert!(closed >= GRACE * 3 / 4, "{mode}: disconnected after {closed:?}, before the 2 s grace");
                    echo.assert_clean_exit(Duration::from_secs(8).saturating_sub(signalled.elapsed()));
                    let took = signalled.elapsed();
                    assert!(took < Duration::from_secs(8), "{mode}: exit took {took:?}");
                });
            }
        });
    });
}

#[test]
fn clean_exit_removes_the_unix_socket_file() {
    echo_test(|| {
        let path = temp_socket_path("echo-cleanup");
        let arg = path.to_str().unwrap();
        for round in ["first", "second"] {
            let mut echo = Echo::start(&["--proto", "unix", "--addr", arg]);
            assert_eq!(echo.unix_path(), path, "{round} instance");
            let mut client = connect_unix(&path);
            assert_echoes(&mut client, round.as_bytes());
            assert_closes_after_eof(&mut client);
            echo.signal("TERM");
            echo.assert_clean_exit(TIMEOUT);
            assert!(
                std::fs::symlink_metadata(&path).is_err(),
                "{round} instance: {} still exists after a clean exit",
                path.display()
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Whether `text` contains `value` as a whole token, not inside a longer word.
fn names(text: &str, value: &str) -> bool {
    text.match_indices(value).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + value.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
        !word(before) && !word(after)
    })
}

#[test]
fn bad_arguments_exit_2_with_one_line_naming_the_value() {
    echo_test(|| {
        // A valid --addr comes first wherever possible, so an argument wrongly accepted can
        // never bind the default port 9999.
        let cases: &[(&[&str], &str)] = &[
            (&["--addr", "127.0.0.1:0", "--bogus"], "--bogus"),
            (&["--addr", "127.0.0.1:0", "extra"], "extra"),
            (&["--addr", "127.0.0.1:0", "--mode"], "--mode"),
            (&["--addr", "127.0.0.1:0", "--proto"], "--proto"),
            (&["--addr", "127.0.0.1:0", "--workers"], "--workers"),
            (&["--addr"], "--addr"),
            (&["--addr", "127.0.0.1:0", "--mode", "bogus"], "bogus"),
            (&["--addr", "127.0.0.1:0", "--proto", "sctp"], "sctp"),
            (&["--addr", "127.0.0.1:0", "--mode", "pool", "--workers", "0"], "0"),
            (&["--addr", "127.0.0.1:0", "--mode", "pool", "--workers", "many"], "many"),
            (&["--addr", "127.0.0.1:0", "--workers", "-3"], "-3"),
            (&["--addr", "not-an-address"], "not-an-address"),
            (&["--addr", "127.0.0.1:99999"], "127.0.0.1:99999"),
            (&["--addr", "127.0.0.1:http"], "127.0.0.1:http"),
            (&["--proto", "udp", "--addr", "not-an-address"], "not-an-address"),
            (&["--proto", "unix"], "--addr"),
        ];
        for &(args, value) in cases {
            let (status, stdout, stderr) = run_echo_to_exit(args);
            assert_eq!(status.code(), Some(2), "echo {args:?}: status {status}, stderr {stderr:?}");
            assert_eq!(stderr.lines().count(), 1, "echo {args:?}: stderr must be exactly one line: {stderr:?}");
            assert!(stderr.ends_with('\n'), "echo {args:?}: stderr {stderr:?} is not a whole line");
            assert!(names(&stderr, value), "echo {args:?}: stderr {stderr:?} does not name {value:?}");
            assert!(stdout.is_empty(), "echo {args:?}: nothing belongs on stdout, got {stdout:?}");
        }
    });
}

/// Checks that the example fails to start on `args` because the address is in use.
fn assert_in_use(args: &[&str]) {
    let (status, stdout, stderr) = run_echo_to_exit(args);
    assert!(
        status.code().is_some_and(|code| code != 0),
        "echo {args:?} on a taken address: status {status}, stdout {stdout:?}, stderr {stderr:?}"
    );
    assert!(stderr.contains("in use"), "echo {args:?}: stderr {stderr:?} does not say `in use`");
    assert!(!stdout.contains("listening"), "echo {args:?} claims to listen: {stdout:?}");
}

#[test]
fn tcp_address_in_use_is_an_error() {
    echo_test(|| {
        let first = Echo::start(&["--addr", "127.0.0.1:0"]);
        let taken = first.tcp_addr().to_string();
        assert_in_use(&["--addr", &taken]);
        assert_in_use(&["--proto", "tcp", "--mode", "sequential", "--addr", &taken]);
        assert_echoes(&mut connect(first.tcp_addr()), b"first still serves");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_in_use(&["--addr", &listener.local_addr().unwrap().to_string()]);
    });
}

#[test]
fn udp_address_in_use_is_an_error() {
    echo_test(|| {
        let first = Echo::start(&["--proto", "udp", "--addr", "127.0.0.1:0"]);
        let taken = first.udp_addr().to_string();
        assert_in_use(&["--proto", "udp", "--addr", &taken]);
        assert_eq!(udp_round_trip(&udp_client(), first.udp_addr(), b"still"), b"still");

        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_in_use(&["--proto", "udp", "--addr", &socket.local_addr().unwrap().to_string()]);
    });
}

#[test]
fn unix_live_path_in_use_is_an_error() {
    echo_test(|| {
        let path = temp_socket_path("echo-inuse");
        let arg = path.to_str().unwrap();
        let mut first = Echo::start(&["--proto", "unix", "--addr", arg]);
        assert_in_use(&["--proto", "unix", "--addr", arg]);
        // The failed second instance left the live server and its file alone.
        assert!(path.exists(), "the live socket file was removed");
        let mut client = connect_unix(&path);
        assert_echoes(&mut client, b"first still serves");
        assert_closes_after_eof(&mut client);
        first.signal("TERM");
        first.assert_clean_exit(TIMEOUT);
    });
}

// ---------------------------------------------------------------------------------------
// Idleness
// ---------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
use support::linux::{cpu_ticks, voluntary_switches};

#[cfg(target_os = "linux")]
/// Watches the process for a second of idleness: at most 2 ticks of CPU and a handful
/// of wakeups (a polling loop would make hundreds).
fn assert_idle(echo: &Echo, what: &str) {
    thread::sleep(Duration::from_millis(200)); // let the last request's thread settle
    let (ticks, switches) = (cpu_ticks(echo.pid()), voluntary_switches(echo.pid()));
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(echo.pid()) - ticks;
    let woke = voluntary_switches(echo.pid()).saturating_sub(switches);
    assert!(used <= 2, "{what}: {used} clock ticks of CPU in an idle second");
    assert!(woke <= 5, "{what}: {woke} voluntary context switches in an idle second");
}

#[cfg(target_os = "linux")]
#[test]
fn idle_server_uses_no_cpu() {
    echo_test(|| {
        thread::scope(|scope| {
            for mode in ["sequential", "threading", "pool"] {
                spawn_scoped(scope, move || {
                    let echo = Echo::start(&["--mode", mode, "--addr", "127.0.0.1:0"]);
                    assert_idle(&echo, &format!("tcp {mode}, no client"));
                    let mut client = connect(echo.tcp_addr());
                    assert_echoes(&mut client, b"then idle");
                    assert_idle(&echo, &format!("tcp {mode}, an idle client connected"));
                    assert_echoes(&mut client, b"still served");
                });
            }
            spawn_scoped(scope, || {
                let echo = Echo::start(&["--proto", "udp", "--addr", "127.0.0.1:0"]);
                assert_idle(&echo, "udp, before any datagram");
                assert_eq!(udp_round_trip(&udp_client(), echo.udp_addr(), b"x"), b"x");
                assert_idle(&echo, "udp, after a datagram");
            });
            spawn_scoped(scope, || {
                let path = temp_socket_path("echo-idle");
                let mut echo = Echo::start(&["--proto", "unix", "--addr", path.to_str().unwrap()]);
                let mut client = connect_unix(&path);
                assert_echoes(&mut client, b"then idle");
                assert_idle(&echo, "unix, an idle client connected");
                assert_closes_after_eof(&mut client);
                echo.signal("TERM");
                echo.assert_clean_exit(TIMEOUT);
            });
        });
    });
}
