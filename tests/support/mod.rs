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

/// Builds the example `name` with this test binary's profile, target directory and
/// features, once per test binary, and returns its executable.
///
/// The cargo variables set for this test binary are not passed on: build scripts (such
/// as ring's, under the TLS example) rerun when they change, which would rebuild those
/// crates here and again at the next outer `cargo test`.
pub fn example_binary(name: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(binary) = built.get(name) {
        return binary.clone();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/TEST-HASH
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary lives in <profile>/deps");
    let profile = match profile_dir.file_name().and_then(|dir| dir.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(dir) => dir.to_string(),
        None => panic!("cannot tell the profile from {}", exe.display()),
    };
    // CARGO_TARGET_TMPDIR is <target>/tmp, whatever CARGO_TARGET_DIR or config said.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "--example", name, "--message-format", "json", "--profile", &profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_by_cargo = ["CARGO_PKG_", "CARGO_MANIFEST_"].iter().any(|prefix| key.starts_with(prefix))
            || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key);
        if set_by_cargo {
            cargo.env_remove(&*key);
        }
    }
    // The same features as the tests, so the library is not built a second time.
    for (on, feature) in
        [(cfg!(feature = "threadpool"), "threadpool"), (cfg!(feature = "proxy-protocol"), "proxy-protocol")]
    {
        if on {
            cargo.args(["--features", feature]);
        }
    }
    // A build may take long on a busy machine; test watchdogs are armed after it.
    let output = cargo.output().expect("run cargo build");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo build --example {name} failed ({}):\n{stderr}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let binary = stdout
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#) && line.contains(r#""kind":["example"]"#))
        .filter(|line| line.contains(&format!(r#""name":"{name}""#)))
        .find_map(json_executable)
        .unwrap_or_else(|| profile_dir.join("examples").join(name));
    assert!(binary.is_file(), "the {name} example is not at {}", binary.display());
    built.insert(name.to_string(), binary.clone());
    binary
}

/// The `"executable"` path of one line of cargo's JSON messages.
fn json_executable(line: &str) -> Option<PathBuf> {
    let start = line.find(r#""executable":""#)? + r#""executable":""#.len();
    let mut path = String::new();
    let mut chars = line[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(PathBuf::from(path)),
            '\\' => path.push(chars.next()?),
            c => path.push(c),
        }
    }
}

/// What a process that ran to its end printed.
pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end within `limit`, feeding it `stdin`, and returns what it
/// printed. A process still running at the limit is killed and fails the test.
pub fn run_to_exit(command: &mut std::process::Command, stdin: &[u8], limit: Duration) -> Finished {
    use std::process::Stdio;
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A process that stops reading its input must not block the test: write on a thread.
    thread::spawn(move || input.write_all(&stdin));
    let stdout = read_pipe(child.stdout.take().unwrap());
    let stderr = read_pipe(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Finished { status, stdout: join_within(stdout, TIMEOUT), stderr: join_within(stderr, TIMEOUT) }
}

/// Reads a pipe to its end on a thread, as text.
pub fn read_pipe(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Silences the panics a test binary causes on purpose, recognised by `marker` in their
/// message; every other panic is reported by the previous hook as usual. The hook is
/// process-wide, so it is installed once (with the first marker) and never restored.
pub fn quiet_panics_containing(marker: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !message.contains(marker) {
                previous(info);
            }
        }));
    });
}
