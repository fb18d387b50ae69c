//! The `reuseport` example, run as a child process: several processes share one port,
//! the kernel spreads connections over them, SIGTERM stops them all cleanly, and
//! killing the supervisor outright still ends every worker.
//!
//! The example is built once per test run into the target directory of the tests, as in
//! `echo_example.rs`. Every wait has a deadline; the supervisor is killed when its guard
//! drops, and so are its workers if they are still alive then.
#![cfg(all(feature = "signals", target_os = "linux"))]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use support::linux::{children_of, running};
use support::process::{example_binary, Spawned};
use support::{assert_refused, bounded, connect, wait_until, TIMEOUT};

// ---------------------------------------------------------------------------------------
// Building and running the example
// ---------------------------------------------------------------------------------------

/// Builds the example (outside the deadline: a build may take long on a busy machine),
/// then runs the test `body` within 60 s.
fn reuseport_test(body: impl FnOnce() + Send + 'static) {
    example_binary("reuseport");
    bounded(Duration::from_secs(60), body);
}

/// A running supervisor. Dropping it kills the supervisor and any worker still alive.
struct Supervisor {
    process: Spawned,
    addr: SocketAddr,
    workers: Vec<u32>,
}

impl Supervisor {
    /// Starts the example with `--processes N` on a free port and waits for its
    /// `listening on tcp://ADDR (N processes)` line.
    fn start(processes: usize) -> Supervisor {
        let mut command = Command::new(example_binary("reuseport"));
        command.args(["--processes", &processes.to_string(), "--addr", "127.0.0.1:0"]);
        let mut process = Spawned::start(command);
        let url = process.listening();
        let suffix = format!(" ({processes} processes)");
        let addr = url
            .strip_prefix("tcp://")
            .and_then(|rest| rest.strip_suffix(&suffix))
            .unwrap_or_else(|| panic!("listening on {url:?}, not `tcp://ADDR{suffix}`"));
        let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr:?} in {url:?} is not IP:PORT: {e}"));
        assert_ne!(addr.port(), 0, "{url:?} shows port 0, not the real port");
        let workers = children_of(process.pid());
        assert_eq!(
            workers.len(),
            processes - 1,
            "the supervisor has children {workers:?}, not {} workers",
            processes - 1
        );
        Supervisor { process, addr, workers }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    /// Waits for the supervisor to exit, failing after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        self.process.wait_exit(limit)
    }

    /// Everything the processes wrote to stderr (the workers share the pipe, so it ends
    /// once they all have exited); call it once they have.
    fn stderr_text(&mut self) -> String {
        self.process.stderr_text()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // If the stdin pipe failed to end them, do not leave them behind.
        for &pid in &self.workers {
            if running(pid) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
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
    reuseport_test(|| {
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
    });
}

#[test]
fn killing_the_supervisor_ends_every_worker() {
    reuseport_test(|| {
        // Three processes: a worker must not hold the stdin pipe of another open.
        let mut supervisor = Supervisor::start(3);
        let mut client = BufReader::new(connect(supervisor.addr));
        pid_and_echo(&mut client, 0);
        drop(client);

        supervisor.signal("KILL");
        supervisor.wait_exit(TIMEOUT);
        for &pid in &supervisor.workers {
            wait_until(TIMEOUT, &format!("worker {pid} to exit after the supervisor was killed"), || !running(pid));
        }
        // Nothing is left listening on the port.
        assert_refused(supervisor.addr);
        // Each worker shut down on its own terms and reported no error.
        let stderr = supervisor.stderr_text();
        assert!(stderr.is_empty(), "stderr: {stderr}");
    });
}
