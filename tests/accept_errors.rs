//! When accepting (or receiving) fails: out of descriptors the server backs off,
//! exponentially, without spinning, and recovers, in every mode and on a Unix stream
//! socket too; a non-blocking listener the user supplied blocks instead of spinning; a
//! UDP socket shut down from outside ends serving instead of failing in a loop.
//!
//! Linux only: the counts of wakeups and CPU time come from /proc.
#![cfg(target_os = "linux")]

mod support;

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socketserver::dispatch::{Dispatch, Pool};
use socketserver::transport::Transport;
use socketserver::{DatagramRequest, Error, Server, TcpServer, UdpServer, UnixStreamServer};
use support::linux::{cpu_ticks, fds_below, voluntary_switches};
use support::process::{rerun_this_test, Spawned};
use support::{
    bounded, connect, connect_unix, drop_within, echo_stream, join_within, round_trip, serve_started, stop, tcp_echo,
    wait_until, Mode, Reported, Reports, StreamClient, LIMIT, TIMEOUT,
};

// ---------------------------------------------------------------------------------------
// Out of descriptors, in a child process
// ---------------------------------------------------------------------------------------

/// Set in the child: `MODE tcp` or `MODE unix PATH`.
const EXHAUSTED_CHILD: &str = "SOCKETSERVER_EXHAUSTED_CHILD";
/// The child's descriptor limit (`ulimit -n`): enough for the test harness and the
/// server, small enough to fill with /dev/null at once.
const CHILD_FD_LIMIT: usize = 64;
/// How long the accept attempts are counted.
const WINDOW: Duration = Duration::from_secs(2);
/// The most accept attempts each accepting thread may make in [`WINDOW`]. The server
/// backs off from 5 ms, doubling to 1 s: about ten attempts in two seconds. A fixed 1 ms
/// retry makes about 2,000, a busy loop far more; the margin is wide for a loaded
/// machine.
const MOST_ATTEMPTS_PER_THREAD: u64 = 50;

/// The child's side: serve in `mode` with every descriptor taken, then give them back
/// when the parent writes a line, and stop at the end of its input.
fn exhausted_child(spec: &str) {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let dispatch = || -> Dispatch {
        match Mode::from_name(words[0]) {
            // Four workers, each backing off on its own: a worker giving back the place it
            // reserved for a failed accept must not cut the others' back-off short (with
            // that bug, four workers make 400 to 2,000 attempts in the window; two workers
            // fell into step only about every other run).
            Mode::Pool => Dispatch::from(Pool::new(4)),
            mode => mode.dispatch(),
        }
    };
    match words[1] {
        "tcp" => {
            let server = TcpServer::builder("127.0.0.1:0").dispatch(dispatch()).bind(echo_stream).unwrap();
            let addr = server.local_addr();
            serve_exhausted(server, &addr.to_string());
        }
        "unix" => {
            let server = UnixStreamServer::builder(words[2]).dispatch(dispatch()).bind(echo_stream).unwrap();
            serve_exhausted(server, words[2]);
        }
        other => panic!("unknown transport {other:?}"),
    }
}

fn serve_exhausted<T: Transport>(server: Server<T>, addr: &str) {
    let server = Arc::new(server);
    // Take every descriptor left: every accept now fails with EMFILE at once, whether or
    // not a connection waits.
    let mut taken = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => taken.push(file),
            Err(e) if e.raw_os_error() == Some(24) => break, // EMFILE
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
    let serve = support::spawn_serve(&server, "ae-serve");
    println!("exhausted {addr} ({} descriptors taken)", taken.len());
    let mut lines = io::stdin().lock().lines();
    let _ = lines.next(); // "release"
    drop(taken);
    println!("released");
    let _ = lines.next(); // end of input
    server.shutdown();
    serve.join().unwrap().expect("serve_forever");
    drop(lines);
    Arc::try_unwrap(server).expect("the last reference").close();
    println!("closed");
}

/// The parent's side: runs the child for `mode` and `transport`, counts its accept
/// attempts while it is out of descriptors, then checks that a client waiting meanwhile
/// and a new one are served once descriptors are free, and that the child said it was
/// backing off once per accepting thread.
fn backs_off_exponentially(test: &str, mode: Mode, transport: &str) {
    if let Ok(spec) = std::env::var(EXHAUSTED_CHILD) {
        return exhausted_child(&spec);
    }
    bounded(LIMIT, {
        let (test, transport) = (test.to_string(), transport.to_string());
        move || {
            let path = support::TempPath::socket("ae-unix");
            let spec = match transport.as_str() {
                "tcp" => format!("{mode} tcp"),
                _ => format!("{mode} unix {}", path.display()),
            };
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!(r#"ulimit -n {CHILD_FD_LIMIT} && exec "$0" "$@""#))
                .arg(rerun_this_test(&test).get_program())
                .args(rerun_this_test(&test).get_args())
                .env(EXHAUSTED_CHILD, &spec)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = Spawned::start_piped(command);
            let mut stdin = child.take_stdin().expect("the child's stdin");
            // libtest prints "test NAME ... " on the line before the child's own output.
            let line = loop {
                let line = child.line();
                if let Some((_, rest)) = line.split_once("exhausted ") {
                    break rest.to_string();
                }
            };
            let addr = line.split_whitespace().next().unwrap().to_string();
            let pid = child.pid();

            let (switches, ticks) = (voluntary_switches(pid), cpu_ticks(pid));
            thread::sleep(WINDOW);
            let attempts = voluntary_switches(pid) - switches;
            let used = cpu_ticks(pid) - ticks;
            let threads = if matches!(mode, Mode::Pool) { 4 } else { 1 }; // the pool's four workers each accept
            eprintln!("{mode} {transport}: out of descriptors for {WINDOW:?}: {attempts} wakeups, {used} ticks of CPU");
            assert!(
                attempts <= MOST_ATTEMPTS_PER_THREAD * threads,
                "{mode} {transport}: {attempts} accept attempts in {WINDOW:?} out of descriptors ({threads} accepting \
                 thread(s)): the back-off does not grow"
            );
            assert!(
                used < 20,
                "{mode} {transport}: the exhausted server used {used} ticks (10 ms each) of CPU: it spins"
            );

            // A client waits meanwhile; it is served once descriptors are free again.
            let what = format!("{mode} {transport}");
            match transport.as_str() {
                "tcp" => served_after_release(|| connect(addr.parse().unwrap()), &mut stdin, &mut child, &what),
                _ => served_after_release(|| connect_unix(Path::new(&addr)), &mut stdin, &mut child, &what),
            }

            drop(stdin); // the child stops
            child.wait_for_line("closed");
            let status = child.wait_exit(TIMEOUT);
            let stderr = child.stderr_text();
            assert!(status.success(), "{mode} {transport}: the child ended with {status}; stderr:\n{stderr}");
            let warnings = stderr.matches("backing off until resources free up").count() as u64;
            assert!(
                (1..=threads).contains(&warnings),
                "{mode} {transport}: {warnings} back-off warnings from {threads} accepting thread(s), not one per \
                 burst:\n{stderr}"
            );
        }
    });
}

/// A client connected while the server is out of descriptors waits, and is served once
/// the child gives them back (told through `stdin`); so is a new one.
fn served_after_release<C: StreamClient>(
    connect: impl Fn() -> C,
    stdin: &mut impl Write,
    child: &mut Spawned,
    what: &str,
) {
    let echo = |client: &mut C, message: &[u8]| {
        client.write_all(message).unwrap();
        let mut back = vec![0; message.len()];
        client.read_exact(&mut back).unwrap_or_else(|e| panic!("{what}: no echo: {e}"));
        assert_eq!(back, message);
        client.close_write();
    };
    let mut waiting = connect();
    writeln!(stdin, "release").unwrap();
    assert_eq!(child.line().trim_end(), "released");
    echo(&mut waiting, b"waited");
    echo(&mut connect(), b"after the exhaustion");
}

macro_rules! back_off_tests {
    ($($name:ident: $mode:ident, $transport:literal;)*) => {$(
        #[test]
        fn $name() {
            backs_off_exponentially(stringify!($name), Mode::$mode, $transport);
        }
    )*};
}

back_off_tests! {
    out_of_descriptors_a_sequential_tcp_server_backs_off_exponentially: Sequential, "tcp";
    out_of_descriptors_a_threading_tcp_server_backs_off_exponentially: Threading, "tcp";
    out_of_descriptors_a_pool_tcp_server_backs_off_exponentially: Pool, "tcp";
    out_of_descriptors_a_sequential_unix_server_backs_off_exponentially: Sequential, "unix";
    out_of_descriptors_a_threading_unix_server_backs_off_exponentially: Threading, "unix";
    out_of_descriptors_a_pool_unix_server_backs_off_exponentially: Pool, "unix";
}

// ---------------------------------------------------------------------------------------
// Out of descriptors, the echo example with clients holding them
// ---------------------------------------------------------------------------------------

/// The echo example's descriptor limit.
const FD_LIMIT: usize = 40;

/// Starts the echo example under `ulimit -n FD_LIMIT` and returns it with its address.
fn limited_echo() -> (Spawned, SocketAddr) {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(r#"ulimit -n {FD_LIMIT} && exec "$0" "$@""#))
        .arg(support::process::example_binary("echo"))
        .args(["--addr", "127.0.0.1:0", "--mode", "threading"]);
    let mut echo = Spawned::start(command);
    let url = echo.listening();
    let addr = url.strip_prefix("tcp://").unwrap_or_else(|| panic!("not a tcp:// URL: {url:?}"));
    (echo, addr.parse().unwrap())
}

/// Whether the byte sent on `client` has come back, without waiting.
fn echoed(client: &mut TcpStream) -> bool {
    client.set_nonblocking(true).unwrap();
    let mut byte = [0];
    let echoed = match client.read(&mut byte) {
        Ok(n) => n == 1,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("a client of the exhausted server failed: {e}"),
    };
    client.set_nonblocking(false).unwrap();
    echoed
}

/// Out of descriptors because its clients hold them all, `accept` fails at once with
/// `EMFILE` while connections wait: a loop that retried at once would burn a core. The
/// server must back off, then serve the waiting connections and new ones once
/// descriptors are free again.
#[test]
fn out_of_descriptors_the_echo_example_backs_off_and_recovers() {
    support::process::example_binary("echo");
    bounded(Duration::from_secs(120), || {
        let (echo, addr) = limited_echo();
        let pid = echo.pid();

        // One echoed client after another, until the child holds its last descriptor.
        let mut accepted = Vec::new();
        while fds_below(pid, FD_LIMIT) < FD_LIMIT {
            assert!(accepted.len() < FD_LIMIT, "{} clients served and the child is below its limit", accepted.len());
            let mut client = connect(addr);
            client.write_all(b"x").unwrap();
            wait_until(TIMEOUT, "an echo or the descriptor limit", || {
                echoed(&mut client) || fds_below(pid, FD_LIMIT) >= FD_LIMIT
            });
            accepted.push(client);
        }
        // These complete their handshake in the kernel and wait in the backlog.
        let mut waiting: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
        for client in &mut waiting {
            client.write_all(b"w").unwrap();
        }

        let before = cpu_ticks(pid);
        thread::sleep(Duration::from_secs(1));
        let used = cpu_ticks(pid) - before;
        eprintln!("out of descriptors for 1 s, the server used {used} ticks (10 ms each) of CPU");
        assert!(used < 10, "the exhausted server used {used} ticks (10 ms each) of CPU in one second: it spins");
        assert_eq!(fds_below(pid, FD_LIMIT), FD_LIMIT, "the child should still be out of descriptors");
        for client in &mut waiting {
            assert!(!echoed(client), "a client was served while the server had no descriptor left");
        }

        drop(accepted);
        for (n, client) in waiting.iter_mut().enumerate() {
            let mut byte = [0];
            client.read_exact(&mut byte).unwrap_or_else(|e| panic!("waiting client {n} was never served: {e}"));
            assert_eq!(&byte, b"w");
        }
        let client = connect(addr);
        let reply = round_trip(&client, b"after the exhaustion", || client.shutdown(Shutdown::Write).unwrap());
        assert_eq!(reply, b"after the exhaustion");
        drop(echo);
    });
}

// ---------------------------------------------------------------------------------------
// Sockets in a state the server did not put them in
// ---------------------------------------------------------------------------------------

/// Was: `accept` on a non-blocking listener the user supplied returned `WouldBlock` at
/// once, and the loop retried without sleeping. The server puts it in blocking mode.
#[test]
fn a_non_blocking_listener_from_the_user_blocks_instead_of_spinning() {
    bounded(LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Arc::new(TcpServer::from_listener(listener).bind(echo_stream).unwrap());
        let serve = serve_started(&server, "ae-nonblock");
        assert_eq!(tcp_echo(addr, b"warm up"), b"warm up");
        thread::sleep(Duration::from_millis(100));
        let switches = support::context_switches_of("ae-nonblock");
        let cpu = support::cpu_time_of("ae-nonblock");
        thread::sleep(Duration::from_millis(500));
        let woke = support::context_switches_of("ae-nonblock") - switches;
        let busy = support::cpu_time_of("ae-nonblock") - cpu;
        eprintln!("non-blocking listener: {woke} wakeups and {busy:?} of CPU in 500 ms idle");
        // A spinning loop retries accept() without sleeping: few voluntary switches, but
        // the CPU time gives it away. A blocked thread uses none.
        assert!(woke <= 2, "the idle serve thread woke {woke} times in 500 ms");
        assert!(busy < Duration::from_millis(50), "the idle serve thread used {busy:?} of CPU in 500 ms");
        assert_eq!(tcp_echo(addr, b"still served"), b"still served");
        stop(&server, serve);
        drop_within(server);
    });
}

/// Was: a UDP socket shut down by someone else (not by `shutdown`) never receives again,
/// and the loop reported "no datagram" for ever. serve_forever returns an error instead.
#[test]
fn udp_socket_shut_down_from_outside_ends_serving() {
    bounded(LIMIT, || {
        let reports = Reports::default();
        let server = Arc::new(
            UdpServer::builder("127.0.0.1:0")
                .handle_error(reports.hook())
                .bind(|_: &mut DatagramRequest| Ok(()))
                .unwrap(),
        );
        let serve = serve_started(&server, "ae-udp");
        // SAFETY: the server owns the descriptor and outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(server.as_raw_fd()) };
        // Linux answers ENOTCONN for an unconnected UDP socket but shuts it down all the same.
        let _ = socket2::SockRef::from(&fd).shutdown(Shutdown::Read);
        let result = join_within(serve, TIMEOUT);
        assert!(matches!(result, Err(Error::Accept(_))), "{result:?}");
        let reported = reports.take_reported();
        assert!(reported.len() < 5, "the broken socket was reported in a loop: {reported:?}");
        assert!(reported.iter().all(|r| matches!(r, Reported::Accept(_))), "{reported:?}");
        drop_within(server);
    });
}
