//! Helpers shared by the integration tests (as mio's `tests/util`): real sockets on
//! loopback, deadlines on every wait, and a watchdog that turns a hang into a failure.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Ends the whole test process if it is still alive after `limit`: a hang must fail
/// the run, not stall CI. Drop it when the test is done.
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
}

pub fn watchdog(name: &'static str, limit: Duration) -> Watchdog {
    let (done, wait) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            eprintln!("watchdog: test {name} still running after {limit:?}; aborting");
            std::process::exit(99);
        }
    });
    Watchdog { done: Some(done) }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
    }
}

/// Connects to a TCP server with read and write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Connects to a Unix stream server with read and write timeouts set.
pub fn connect_unix(path: &std::path::Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect unix");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// A UDP client on loopback with a read timeout.
pub fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket
}

/// Writes `message`, half-closes, and reads everything back.
pub fn round_trip(mut stream: impl Read + Write, message: &[u8], shutdown: impl FnOnce()) -> Vec<u8> {
    stream.write_all(message).unwrap();
    shutdown();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    reply
}

/// A fresh path for a Unix socket in the temp directory; removed beforehand.
pub fn temp_socket_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("ss-{}-{tag}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Joins `handle`, failing the test if the thread has not ended within `limit`.
pub fn join_within<T: Send + 'static>(handle: JoinHandle<T>, limit: Duration) -> T {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "thread did not finish within {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
    handle.join().expect("thread panicked")
}

/// Waits until `condition` holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The number of this process's threads whose name starts with `prefix` (Linux
/// truncates thread names to 15 bytes, so keep prefixes short and unique per test).
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with(prefix))
        .count()
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The `/proc/self/task/TID` folder of the one thread of this process named exactly
/// `name`.
pub fn thread_dir(name: &str) -> PathBuf {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        if comm.trim_end() == name {
            found.push(path);
        }
    }
    assert_eq!(found.len(), 1, "expected exactly one thread named {name:?}, found {found:?}");
    found.pop().unwrap()
}

/// `voluntary_ctxt_switches` of the one thread of this process named exactly `name`: a
/// blocked thread's count stays flat, a polling one's climbs.
pub fn context_switches_of(name: &str) -> u64 {
    let status = std::fs::read_to_string(thread_dir(name).join("status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .expect("voluntary_ctxt_switches in status")
        .trim()
        .parse()
        .unwrap()
}

/// A single connect to `addr` must be refused.
pub fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "connect to {addr}: {e}"),
        Ok(_) => panic!("connect to {addr} succeeded; expected ConnectionRefused"),
    }
}

/// Runs `f` on a helper thread, failing the test if it does not return within `limit`.
pub fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    join_within(thread::spawn(f), limit)
}
