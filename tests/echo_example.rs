//! The `echo` example, run as a child process and held to its contract: the listening
//! line, echoing on TCP, UDP and Unix sockets, the three dispatch modes, shutdown on
//! SIGINT and SIGTERM with a 2 s grace, argument errors, addresses in use, and an idle
//! process that burns no CPU.
//!
//! The example is built once per test run with `cargo build --example echo` into the
//! target directory of the tests. Every wait has a deadline, every child process is
//! killed when its guard drops, and only `127.0.0.1:0`, `[::1]:0` and temporary Unix
//! paths are bound.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::{connect, connect_unix, join_within, temp_socket_path, udp_client, watchdog, Watchdog, TIMEOUT};

/// How long a queued client is watched to make sure it gets no echo yet. A wrong pass
/// is possible on a slow machine, a wrong failure is not.
const NOT_YET: Duration = Duration::from_millis(500);
/// The example's shutdown grace period.
const GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// Building and running the example
// ---------------------------------------------------------------------------------------

fn echo_binary() -> PathBuf {
    support::example_binary("echo")
}

/// Runs `command` to its end within `limit`, returning its status, stdout and stderr.
fn run_to_exit(mut command: Command, limit: Duration) -> (ExitStatus, String, String) {
    let finished = support::run_to_exit(&mut command, b"", limit);
    (finished.status, finished.stdout, finished.stderr)
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
    run_to_exit(echo_command(args), TIMEOUT)
}

/// Builds the example, then arms a watchdog: a hang that slipped past every deadline
/// still ends the run.
fn start_test(name: &'static str) -> Watchdog {
    echo_binary();
    watchdog(name, Duration::from_secs(90))
}

/// A running echo example. Dropping it kills the process and reaps it.
struct Echo {
    child: Child,
    args: Vec<String>,
    /// What follows `listening on ` on the first stdout line.
    url: String,
    stderr: Option<JoinHandle<String>>,
}

impl Echo {
    /// Starts the example and waits for its `listening on URL` line.
    fn start(args: &[&str]) -> Echo {
        let mut command = echo_command(args);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn the echo example");
        let stdout = child.stdout.take().unwrap();
        let stderr = support::read_pipe(child.stderr.take().unwrap());
        let (lines, first_line) = mpsc::channel();
        thread::spawn(move || {
            let mut stdout = io::BufReader::new(stdout);
            let mut line = String::new();
            let result = io::BufRead::read_line(&mut stdout, &mut line).map(|_| line);
            let _ = lines.send(result);
            // Keep draining so the child never blocks on a full pipe.
            let _ = io::copy(&mut stdout, &mut io::sink());
        });
        let mut echo = Echo {
            child,
            args: args.iter().map(|a| a.to_string()).collect(),
            url: String::new(),
            stderr: Some(stderr),
        };
        let line = match first_line.recv_timeout(TIMEOUT) {
            Ok(Ok(line)) if line.is_empty() => {
                let status = echo.wait_exit(TIMEOUT);
                panic!("echo {args:?} exited ({status}) without printing a line; stderr: {}", echo.stderr_text())
            }
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading the stdout of echo {args:?}: {e}"),
            Err(_) => panic!("echo {args:?} printed no line within {TIMEOUT:?}"),
        };
        assert!(line.ends_with('\n'), "the first stdout line {line:?} is not a whole line");
        let url = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the first stdout line of echo {args:?} is {line:?}, not `listening on URL`"));
        echo.url = url.to_string();
        echo
    }

    fn pid(&self) -> u32 {
        self.child.id()
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

    /// Sends a signal (`TERM`, `INT`) with the system's `kill`.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .stdin(Stdio::null())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {} failed: {status}", self.pid());
    }

    /// The exit status, if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to end, failing the test after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "echo {:?} still running after {limit:?}", self.args);
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the process to end and checks it exited with status 0.
    fn assert_clean_exit(&mut self, limit: Duration) {
        let status = self.wait_exit(limit);
        if status.code() != Some(0) {
            let stderr = self.stderr_text();
            panic!("echo {:?} ended with {status}, not status 0; stderr: {stderr}", self.args);
        }
    }

    /// Everything the process wrote to stderr; call it once the process has ended.
    fn stderr_text(&mut self) -> String {
        self.stderr.take().map(|h| join_within(h, TIMEOUT)).unwrap_or_default()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
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

/// A stream client: TCP or Unix.
trait Client: Read + Write + Send + Sized + 'static {
    fn timeout(&self, timeout: Duration);
    fn close_write(&self);
    fn duplicate(&self) -> Self;
}

impl Client for TcpStream {
    fn timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
    }
    fn close_write(&self) {
        self.shutdown(Shutdown::Write).expect("shutdown(Write)");
    }
    fn duplicate(&self) -> Self {
        self.try_clone().unwrap()
    }
}

impl Client for UnixStream {
    fn timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
    }
    fn close_write(&self) {
        self.shutdown(Shutdown::Write).expect("shutdown(Write)");
    }
    fn duplicate(&self) -> Self {
        self.try_clone().unwrap()
    }
}

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

/// Connects to a TCP port until the connection is refused, failing after `limit`.
fn wait_refused_tcp(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return,
            // A connect that races the listener's shutdown is reset rather than refused;
            // the next one must be refused.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connecting after the signal failed with {e}, not `connection refused`"),
            Ok(probe) => drop(probe),
        }
        assert!(Instant::now() < deadline, "new connections still accepted {limit:?} after the signal");
        thread::sleep(Duration::from_millis(10));
    }
}

/// As [`wait_refused_tcp`] for a Unix socket path.
fn wait_refused_unix(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match UnixStream::connect(path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return,
            // A connect that races the listener's shutdown is reset rather than refused;
            // the next one must be refused.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connecting after the signal failed with {e}, not `connection refused`"),
            Ok(probe) => drop(probe),
        }
        assert!(Instant::now() < deadline, "new connections still accepted {limit:?} after the signal");
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The listening line
// ---------------------------------------------------------------------------------------

#[test]
fn prints_listening_line_with_the_real_address() {
    let _dog = start_test("prints_listening_line_with_the_real_address");

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
}

#[test]
fn ipv6_address_is_printed_in_brackets() {
    let _dog = start_test("ipv6_address_is_printed_in_brackets");
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
}

// ---------------------------------------------------------------------------------------
// Echoing
// ---------------------------------------------------------------------------------------

#[test]
fn tcp_echoes_every_byte_as_it_arrives_until_eof() {
    let _dog = start_test("tcp_echoes_every_byte_as_it_arrives_until_eof");
    for mode in ["sequential", "threading", "pool"] {
        let echo = Echo::start(&["--proto", "tcp", "--mode", mode, "--addr", "127.0.0.1:0"]);
        check_stream_echo(connect(echo.tcp_addr()));
        // A connection with no bytes at all: EOF answered by EOF.
        assert_closes_after_eof(&mut connect(echo.tcp_addr()));
    }
}

#[test]
fn unix_echoes_every_byte_as_it_arrives_until_eof() {
    let _dog = start_test("unix_echoes_every_byte_as_it_arrives_until_eof");
    for mode in ["sequential", "threading", "pool"] {
        let path = temp_socket_path("echo-unix");
        let echo = Echo::start(&["--proto", "unix", "--mode", mode, "--addr", path.to_str().unwrap()]);
        check_stream_echo(connect_unix(&path));
        assert_closes_after_eof(&mut connect_unix(&path));
        drop(echo);
        let _ = std::fs::remove_file(&path); // the killed process left it
    }
}

#[test]
fn udp_replies_to_each_datagram_from_the_bound_address() {
    let _dog = start_test("udp_replies_to_each_datagram_from_the_bound_address");
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
}

#[test]
fn udp_echoes_in_every_mode() {
    let _dog = start_test("udp_echoes_in_every_mode");
    for mode in ["sequential", "threading", "pool"] {
        let echo = Echo::start(&["--proto", "udp", "--mode", mode, "--workers", "2", "--addr", "127.0.0.1:0"]);
        let client = udp_client();
        for payload in [&b"one"[..], b"", b"\xff\0three"] {
            assert_eq!(udp_round_trip(&client, echo.udp_addr(), payload), payload, "mode {mode}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch modes
// ---------------------------------------------------------------------------------------

#[test]
fn sequential_mode_serves_one_client_at_a_time() {
    let _dog = start_test("sequential_mode_serves_one_client_at_a_time");
    let echo = Echo::start(&["--mode", "sequential", "--addr", "127.0.0.1:0"]);
    let mut first = connect(echo.tcp_addr());
    assert_echoes(&mut first, b"first");
    let mut second = connect(echo.tcp_addr());
    assert_no_echo_yet(&mut second, b"second");
    assert_echoes(&mut first, b"first again");
    assert_closes_after_eof(&mut first);
    assert_late_echo(&mut second, b"second");
    assert_echoes(&mut second, b"now served");
    assert_closes_after_eof(&mut second);
}

#[test]
fn threading_mode_serves_clients_concurrently() {
    let _dog = start_test("threading_mode_serves_clients_concurrently");
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
}

#[test]
fn pool_mode_serves_at_most_n_clients_at_once() {
    let _dog = start_test("pool_mode_serves_at_most_n_clients_at_once");
    let echo = Echo::start(&["--mode", "pool", "--workers", "2", "--addr", "127.0.0.1:0"]);
    let mut first = connect(echo.tcp_addr());
    let mut second = connect(echo.tcp_addr());
    assert_echoes(&mut first, b"first");
    assert_echoes(&mut second, b"second");
    let mut third = connect(echo.tcp_addr());
    assert_no_echo_yet(&mut third, b"third");
    assert_echoes(&mut second, b"second still served");
    assert_closes_after_eof(&mut first);
    assert_late_echo(&mut third, b"third");
    assert_echoes(&mut third, b"third served");
    assert_echoes(&mut second, b"second served");
    assert_closes_after_eof(&mut second);
    assert_closes_after_eof(&mut third);
}

// ---------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------

#[test]
fn signal_refuses_new_connections_at_once_in_every_mode() {
    let _dog = start_test("signal_refuses_new_connections_at_once_in_every_mode");
    for mode in ["sequential", "threading", "pool"] {
        let mut echo = Echo::start(&["--mode", mode, "--workers", "2", "--addr", "127.0.0.1:0"]);
        let mut client = connect(echo.tcp_addr());
        assert_echoes(&mut client, b"before");
        echo.signal("TERM");
        // The client keeps the process in its grace period: a refusal now is the server
        // refusing, not a process that is gone.
        wait_refused_tcp(echo.tcp_addr(), Duration::from_millis(1500));
        assert!(echo.exited().is_none(), "mode {mode}: exited while a client was still connected");
        assert_echoes(&mut client, b"a running request goes on after the signal");
        assert_closes_after_eof(&mut client);
        echo.assert_clean_exit(TIMEOUT);
    }

    let path = temp_socket_path("echo-refuse");
    let mut echo = Echo::start(&["--proto", "unix", "--addr", path.to_str().unwrap()]);
    let mut client = connect_unix(&path);
    assert_echoes(&mut client, b"before");
    echo.signal("TERM");
    wait_refused_unix(&path, Duration::from_millis(1500));
    assert!(echo.exited().is_none(), "unix: exited while a client was still connected");
    assert_echoes(&mut client, b"a running request goes on after the signal");
    assert_closes_after_eof(&mut client);
    echo.assert_clean_exit(TIMEOUT);
}

#[test]
fn signal_exits_promptly_once_the_last_client_leaves() {
    let _dog = start_test("signal_exits_promptly_once_the_last_client_leaves");
    for (mode, signal) in [("threading", "INT"), ("threading", "TERM"), ("sequential", "TERM"), ("pool", "INT")] {
        let mut echo = Echo::start(&["--mode", mode, "--addr", "127.0.0.1:0"]);
        let mut client = connect(echo.tcp_addr());
        assert_echoes(&mut client, b"hello");
        let signalled = Instant::now();
        echo.signal(signal);
        // Leave only once the server has seen the signal, so a request is running then.
        wait_refused_tcp(echo.tcp_addr(), Duration::from_millis(1500));
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
}

#[test]
fn signal_closes_a_lingering_client_at_the_grace_deadline() {
    let _dog = start_test("signal_closes_a_lingering_client_at_the_grace_deadline");
    thread::scope(|scope| {
        for mode in ["sequential", "threading", "pool"] {
            scope.spawn(move || {
                let mut echo = Echo::start(&["--mode", mode, "--addr", "127.0.0.1:0"]);
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
}

#[test]
fn clean_exit_removes_the_unix_socket_file() {
    let _dog = start_test("clean_exit_removes_the_unix_socket_file");
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
    let _dog = start_test("bad_arguments_exit_2_with_one_line_naming_the_value");
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
    let _dog = start_test("tcp_address_in_use_is_an_error");
    let first = Echo::start(&["--addr", "127.0.0.1:0"]);
    let taken = first.tcp_addr().to_string();
    assert_in_use(&["--addr", &taken]);
    assert_in_use(&["--proto", "tcp", "--mode", "sequential", "--addr", &taken]);
    assert_echoes(&mut connect(first.tcp_addr()), b"first still serves");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    assert_in_use(&["--addr", &listener.local_addr().unwrap().to_string()]);
}

#[test]
fn udp_address_in_use_is_an_error() {
    let _dog = start_test("udp_address_in_use_is_an_error");
    let first = Echo::start(&["--proto", "udp", "--addr", "127.0.0.1:0"]);
    let taken = first.udp_addr().to_string();
    assert_in_use(&["--proto", "udp", "--addr", &taken]);
    assert_eq!(udp_round_trip(&udp_client(), first.udp_addr(), b"still"), b"still");

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_in_use(&["--proto", "udp", "--addr", &socket.local_addr().unwrap().to_string()]);
}

#[test]
fn unix_live_path_in_use_is_an_error() {
    let _dog = start_test("unix_live_path_in_use_is_an_error");
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
}

// ---------------------------------------------------------------------------------------
// Idleness
// ---------------------------------------------------------------------------------------

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..].split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `fields[0]` is field 3, the state.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Voluntary context switches, summed over the process's threads.
fn voluntary_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status.lines().find_map(|line| line.strip_prefix("voluntary_ctxt_switches:")?.trim().parse::<u64>().ok())
        })
        .sum()
}

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

#[test]
fn idle_server_uses_no_cpu() {
    let _dog = start_test("idle_server_uses_no_cpu");
    thread::scope(|scope| {
        for mode in ["sequential", "threading", "pool"] {
            scope.spawn(move || {
                let echo = Echo::start(&["--mode", mode, "--addr", "127.0.0.1:0"]);
                assert_idle(&echo, &format!("tcp {mode}, no client"));
                let mut client = connect(echo.tcp_addr());
                assert_echoes(&mut client, b"then idle");
                assert_idle(&echo, &format!("tcp {mode}, an idle client connected"));
                assert_echoes(&mut client, b"still served");
            });
        }
        scope.spawn(|| {
            let echo = Echo::start(&["--proto", "udp", "--addr", "127.0.0.1:0"]);
            assert_idle(&echo, "udp, before any datagram");
            assert_eq!(udp_round_trip(&udp_client(), echo.udp_addr(), b"x"), b"x");
            assert_idle(&echo, "udp, after a datagram");
        });
        scope.spawn(|| {
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
}
