//! The `reuseport` example, run as a child process: several processes share one port,
//! the kernel spreads connections over them, SIGTERM stops them all cleanly, and
//! killing the supervisor outright still ends every worker.
//!
//! The example is built once per test run into the target directory of the tests, as in
//! `echo_example.rs`. Every wait has a deadline; the supervisor is killed when its guard
//! drops, and so are its workers if they are still alive then.
#![cfg(feature = "signals")]

mod support;

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::{assert_refused, connect, join_within, wait_until, watchdog, Watchdog, TIMEOUT};

// ---------------------------------------------------------------------------------------
// Building and running the example
// ---------------------------------------------------------------------------------------

/// The path of the built example, building it on first use.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build)
}

fn build() -> PathBuf {
    support::example_binary("reuseport")
}

/// Builds the example, then arms a watchdog: a hang that slipped past every deadline
/// still ends the run.
fn start_test(name: &'static str) -> Watchdog {
    binary();
    watchdog(name, Duration::from_secs(60))
}

/// A running supervisor. Dropping it kills the supervisor and any worker still alive.
struct Supervisor {
    child: Child,
    addr: SocketAddr,
    workers: Vec<u32>,
    stderr: Option<JoinHandle<String>>,
}

impl Supervisor {
    /// Starts the example with `--processes N` on a free port and waits for its
    /// `listening on tcp://ADDR (N processes)` line.
    fn start(processes: usize) -> Supervisor {
        let mut child = Command::new(binary())
            .args(["--processes", &processes.to_string(), "--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the reuseport example");
        let stdout = child.stdout.take().unwrap();
        // The workers share this pipe, so it ends once they all have exited.
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        let (lines, first_line) = mpsc::channel();
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let _ = lines.send(stdout.read_line(&mut line).map(|_| line));
            let _ = io::copy(&mut stdout, &mut io::sink());
        });
        let mut supervisor =
            Supervisor { child, addr: ([127, 0, 0, 1], 0).into(), workers: Vec::new(), stderr: Some(stderr) };
        let line = match first_line.recv_timeout(TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading the supervisor's stdout: {e}"),
            Err(_) => panic!("the supervisor printed no line within {TIMEOUT:?}"),
        };
        let suffix = format!(" ({processes} processes)\n");
        let addr = line
            .strip_prefix("listening on tcp://")
            .and_then(|rest| rest.strip_suffix(&suffix))
            .unwrap_or_else(|| panic!("the first stdout line is {line:?}, not `listening on tcp://ADDR{suffix}`"));
        supervisor.addr = addr.parse().unwrap_or_else(|e| panic!("{addr:?} in {line:?} is not IP:PORT: {e}"));
        assert_ne!(supervisor.addr.port(), 0, "{line:?} shows port 0, not the real port");
        supervisor.workers = children_of(supervisor.pid());
        assert_eq!(
            supervisor.workers.len(),
            processes - 1,
            "the supervisor has children {:?}, not {} workers",
            supervisor.workers,
            processes - 1
        );
        supervisor
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, name: &str) {
        let status =
            Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{name} {} failed: {status}", self.pid());
    }

    /// Waits for the supervisor to exit, failing after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the supervisor still runs {limit:?} later");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the processes wrote to stderr; call it once they have all ended.
    fn stderr_text(&mut self) -> String {
        self.stderr.take().map(|h| join_within(h, TIMEOUT)).unwrap_or_default()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // If the stdin pipe failed to end them, do not leave them behind.
        for &pid in &self.workers {
            if running(pid) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // proc(5): `pid (comm) state ppid ...`; comm may hold spaces, so split after ')'.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
        if fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(parent) {
            children.push(pid);
        }
    }
    children.sort_unstable();
    children
}

/// Whether `pid` is a process that has not exited. An orphaned worker that exited may
/// stay a zombie until init reaps it: that counts as exited.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 1..].trim_start().starts_with(['Z', 'X']),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Reads the `pid PID` greeting, echoes one line, and returns the pid.
fn pid_and_echo(client: &mut BufReader<std::net::TcpStream>, i: usize) -> u32 {
    let mut line = String::new();
    client.read_line(&mut line).unwrap_or_else(|e| panic!("connection {i}: no greeting: {e}"));
    let pid = line
        .strip_prefix("pid ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("connection {i}: greeting {line:?} is not `pid PID`"));
    let sent = format!("hello from connection {i}\n");
    client.get_mut().write_all(sent.as_bytes()).expect("send a line");
    let mut back = String::new();
    client.read_line(&mut back).unwrap_or_else(|e| panic!("connection {i}: no echo: {e}"));
    assert_eq!(back, sent, "connection {i}: the echo differs");
    pid
}

#[test]
fn connections_spread_over_processes_and_sigterm_stops_them_all() {
    let _dog = start_test("connections_spread_over_processes_and_sigterm_stops_them_all");
    let mut supervisor = Supervisor::start(2);
    let expected: BTreeSet<u32> = supervisor.workers.iter().copied().chain([supervisor.pid()]).collect();

    // All held open at once, so the 64 source ports, and with them the 4-tuples the
    // kernel hashes, are distinct.
    let mut clients: Vec<_> = (0..64).map(|_| BufReader::new(connect(supervisor.addr))).collect();
    let mut served = BTreeSet::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let pid = pid_and_echo(client, i);
        assert!(expected.contains(&pid), "connection {i} was served by pid {pid}, not one of {expected:?}");
        served.insert(pid);
    }
    // With 2 sockets, the hash sends all 64 connections to one of them with probability
    // 2 × 2^-64 = 2^-63: a failure here means the port is not shared.
    assert!(served.len() >= 2, "all 64 connections were served by {served:?}; processes: {expected:?}");
    for (i, client) in clients.iter_mut().enumerate() {
        client.get_ref().shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap_or_else(|e| panic!("connection {i}: not closed after EOF: {e}"));
        assert!(rest.is_empty(), "connection {i}: unexpected bytes before EOF: {rest:?}");
    }

    supervisor.signal("TERM");
    let status = supervisor.wait_exit(TIMEOUT);
    let stderr = supervisor.stderr_text();
    assert!(status.success(), "the supervisor ended with {status} after SIGTERM; stderr: {stderr}");
    // The supervisor waits for its workers before it exits, so they are gone already.
    for &pid in &supervisor.workers {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} outlived the supervisor's clean exit");
    }
    assert_refused(supervisor.addr);
}

#[test]
fn killing_the_supervisor_ends_every_worker() {
    let _dog = start_test("killing_the_supervisor_ends_every_worker");
    // Three processes: a worker must not hold the stdin pipe of another open.
    let mut supervisor = Supervisor::start(3);
    let mut client = BufReader::new(connect(supervisor.addr));
    pid_and_echo(&mut client, 0);
    drop(client);

    supervisor.child.kill().expect("SIGKILL the supervisor");
    supervisor.wait_exit(TIMEOUT);
    for &pid in &supervisor.workers {
        wait_until(TIMEOUT, &format!("worker {pid} to exit after the supervisor was killed"), || !running(pid));
    }
    // Nothing is left listening on the port.
    assert_refused(supervisor.addr);
    // Each worker shut down on its own terms and reported no error.
    let stderr = supervisor.stderr_text();
    assert!(stderr.is_empty(), "stderr: {stderr}");
}
