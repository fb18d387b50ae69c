//! Helpers shared by the integration tests (as mio's `tests/util`), each defined once:
//! real sockets on loopback, a deadline on every wait, and a deadline on every test
//! ([`bounded`]) that turns a hang into the failure of that one test.
//!
//! - this file: the per-test deadline, waits, clients, a server's own socket (Python's
//!   `fileno()`, on Unix and Windows), temporary paths, quiet panics;
//! - [`gate`]: holding handlers until the test releases them;
//! - [`modes`]: the dispatch modes every behaviour is checked in;
//! - [`serve`]: serve threads, stopping them, echo handlers, `handle_error` records;
//! - [`process`]: examples and other child processes;
//! - [`linux`]: what only `/proc` shows (threads, descriptors, CPU, wakeups).
#![allow(dead_code, unused_imports)]

pub mod gate;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod modes;
pub mod process;
pub mod serve;

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::ops::Deref;
#[cfg(unix)]
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::transport::Transport;
use socketserver::Server;

pub use gate::{Control, Gate};
#[cfg(target_os = "linux")]
pub use linux::{context_switches_of, cpu_time_of, open_fds, thread_dir, threads_named};
pub use modes::{Mode, MODES};
pub use serve::{
    assert_addr_in_use, assert_overlong_datagram_reported, datagram_commands, drop_within, echo_datagram, echo_line,
    echo_stream, serve_started, shutdown_within, spawn_serve, spawn_shutdown, stop, stop_background, stop_via, Report,
    Reported, Reports, OVERLONG_DATAGRAMS_TRUNCATED,
};

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline of an ordinary test: every wait in it is bounded by [`TIMEOUT`], so only
/// a hang gets here.
pub const LIMIT: Duration = Duration::from_secs(60);
/// How long a negative check ("nothing arrived", "has not returned yet") waits. A wrong
/// pass is possible on a slow machine, a wrong failure is not.
pub const NEGATIVE_WAIT: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// The per-test deadline
// ---------------------------------------------------------------------------------------

/// Held shared by every [`bounded`] test and exclusively by every [`bounded_alone`] one,
/// so a test that counts the process's descriptors or threads sees no other test's.
static EXCLUSIVE: RwLock<()> = RwLock::new(());
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// What a bounded test's body thread is doing, for the message when it runs out of time.
struct Session {
    id: u64,
    waiting_for: Arc<Mutex<String>>,
}

thread_local! {
    #[cfg_attr(windows, allow(clippy::missing_const_for_thread_local))] // const already; see src/handle.rs
    static SESSION: RefCell<Option<(u64, Arc<Mutex<String>>)>> = const { RefCell::new(None) };
}

#[derive(Clone, Copy)]
enum Access {
    Shared,
    Exclusive,
}

/// Runs the test `body` on a thread of its own and fails the test (only this one) if it
/// has not returned within `limit`, naming the test and what it was waiting for. A panic
/// in the body is the test's panic. On a timeout the child processes the body started
/// through [`process::Spawned`] are killed; its threads are left behind, stuck.
///
/// Replaces a watchdog that ended the whole test binary: the other tests' results are
/// kept, and the hung one says where it hung.
pub fn bounded<R: Send + 'static>(limit: Duration, body: impl FnOnce() -> R + Send + 'static) -> R {
    run_bounded(limit, Access::Shared, body)
}

/// As [`bounded`], with no other bounded test of this binary running meanwhile: for
/// tests that count the descriptors, threads or memory of the whole process.
pub fn bounded_alone<R: Send + 'static>(limit: Duration, body: impl FnOnce() -> R + Send + 'static) -> R {
    run_bounded(limit, Access::Exclusive, body)
}

fn run_bounded<R: Send + 'static>(limit: Duration, access: Access, body: impl FnOnce() -> R + Send + 'static) -> R {
    // libtest names each test's thread after the test.
    let test = thread::current().name().unwrap_or("(unnamed test)").to_string();
    let session = Session {
        id: SESSIONS.fetch_add(1, Ordering::Relaxed),
        waiting_for: Arc::new(Mutex::new("the test to start".to_string())),
    };
    let (done, finished) = mpsc::channel::<()>();
    let (id, note) = (session.id, session.waiting_for.clone());
    let body_thread = thread::Builder::new()
        .name(test.clone())
        .spawn(move || {
            SESSION.with(|s| *s.borrow_mut() = Some((id, note)));
            let _access = {
                let _wait = waiting_for("the other tests of this binary to let it run");
                match access {
                    Access::Shared => (Some(EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner)), None),
                    Access::Exclusive => (None, Some(EXCLUSIVE.write().unwrap_or_else(PoisonError::into_inner))),
                }
            };
            set_note("the test body (no wait announced)");
            let result = body();
            drop(done);
            result
        })
        .expect("spawn the test's thread");
    // A body that returns or panics drops `done`.
    match finished.recv_timeout(limit) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let what = session.waiting_for.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let killed = process::kill_children_of_session(session.id);
            panic!(
                "test {test} is still running after {limit:?}, waiting for {what}; killed {killed} child process(es)"
            );
        }
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            body_thread.join().unwrap_or_else(|payload| std::panic::resume_unwind(payload))
        }
    }
}

/// The session of the bounded test this thread runs, to hand to threads it starts.
pub fn current_session() -> Option<u64> {
    SESSION.with(|s| s.borrow().as_ref().map(|(id, _)| *id))
}

/// Spawns `f` on a scoped thread that belongs to the current bounded test, so child
/// processes it starts are killed if the test runs out of time.
pub fn spawn_scoped<'scope, 'env, T: Send + 'scope>(
    scope: &'scope thread::Scope<'scope, 'env>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> thread::ScopedJoinHandle<'scope, T> {
    let session = SESSION.with(|s| s.borrow().clone());
    scope.spawn(move || {
        SESSION.with(|s| *s.borrow_mut() = session);
        f()
    })
}

fn set_note(text: &str) {
    SESSION.with(|s| {
        if let Some((_, note)) = &*s.borrow() {
            *note.lock().unwrap_or_else(PoisonError::into_inner) = text.to_string();
        }
    });
}

/// Says what the test waits for, until the guard drops; shown if the test runs out of
/// time. Every wait helper here announces itself.
#[must_use]
pub fn waiting_for(what: impl Into<String>) -> Waiting {
    let what = what.into();
    set_note(&what);
    Waiting(what)
}

/// See [`waiting_for`].
pub struct Waiting(String);

impl Drop for Waiting {
    fn drop(&mut self) {
        set_note(&format!("nothing it announced (its last wait, for {}, had ended)", self.0));
    }
}

// ---------------------------------------------------------------------------------------
// Waits
// ---------------------------------------------------------------------------------------

/// Joins `handle`, failing the test if the thread has not ended within `limit`.
pub fn join_within<T: Send + 'static>(handle: JoinHandle<T>, limit: Duration) -> T {
    let _wait = waiting_for(format!("a thread to end (limit {limit:?})"));
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "thread did not finish within {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
    handle.join().unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// Waits until `condition` holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let _wait = waiting_for(what);
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on a helper thread, failing the test if it does not return within `limit`.
pub fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    join_within(thread::spawn(f), limit)
}

/// Receives from `rx` within [`TIMEOUT`], failing with `what` otherwise.
pub fn recv<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    let _wait = waiting_for(what);
    rx.recv_timeout(TIMEOUT).unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// Runs `f` on a helper thread and hands back a receiver for its result.
pub fn start<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> mpsc::Receiver<R> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// Whether `e` is a read timeout (Linux says `WouldBlock`, other systems `TimedOut`).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// Connects to a TCP server with read and write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Connects to a Unix stream server with read and write timeouts set.
#[cfg(unix)]
pub fn connect_unix(path: &Path) -> UnixStream {
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

/// A Unix datagram client bound to a path of its own (an unnamed client cannot be
/// replied to), with a read timeout; the path is removed when the second value drops.
#[cfg(unix)]
pub fn unix_dgram_client(tag: &str) -> (UnixDatagram, TempPath) {
    let path = TempPath::socket(tag);
    let socket = UnixDatagram::bind(&path).expect("bind a Unix datagram client");
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    (socket, path)
}

/// Writes `message`, half-closes, and reads everything back.
pub fn round_trip(mut stream: impl Read + Write, message: &[u8], shutdown: impl FnOnce()) -> Vec<u8> {
    stream.write_all(message).unwrap();
    shutdown();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    reply
}

/// Connects, sends `message`, half-closes and reads the reply to its end.
pub fn tcp_echo(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let stream = connect(addr);
    round_trip(&stream, message, || stream.shutdown(Shutdown::Write).unwrap())
}

/// As [`tcp_echo`], over a Unix stream socket.
#[cfg(unix)]
pub fn unix_echo(path: &Path, message: &[u8]) -> Vec<u8> {
    let stream = connect_unix(path);
    round_trip(&stream, message, || stream.shutdown(Shutdown::Write).unwrap())
}

/// Sends `message` and reads until the server closes (it must close first).
pub fn ask(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut client = connect(addr);
    client.write_all(message).unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap_or_else(|e| panic!("reading the reply to {message:?}: {e}"));
    reply
}

/// Connects, sends `line` and a newline, half-closes and reads to the end; a reset
/// counts as an empty reply. The client's address (as the server sees it) and the
/// reply. A client the server turns away may see its write or half-close fail (the
/// server may have closed already): what it reads back says what happened.
pub fn request_line(addr: SocketAddr, line: &str) -> (SocketAddr, Vec<u8>) {
    let mut client = connect(addr);
    let local = client.local_addr().unwrap();
    let _ = client.write_all(format!("{line}\n").as_bytes());
    let _ = client.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    match client.read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => reply.clear(),
        Err(e) => panic!("reading the reply to {line:?}: {e}"),
    }
    (local, reply)
}

/// A stream client, TCP or Unix, as the tests drive it.
pub trait StreamClient: Read + Write + Send + Sized + 'static {
    /// Sets the read timeout.
    fn timeout(&self, timeout: Duration);
    /// Half-closes: the server reads end-of-file.
    fn close_write(&self);
    /// A second handle to the same connection.
    fn duplicate(&self) -> Self;
}

macro_rules! stream_client {
    ($($stream:ty),*) => {$(
        impl StreamClient for $stream {
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
    )*};
}

stream_client!(TcpStream);
#[cfg(unix)]
stream_client!(UnixStream);

/// Runs `f`; on Linux, also how many descriptors this process opened meanwhile (less
/// those it closed), to tell whether a server accepted a connection. Elsewhere `None`.
/// Run it under [`bounded_alone`], so no other test opens descriptors meanwhile.
pub fn descriptors_opened_by<R>(f: impl FnOnce() -> R) -> (R, Option<isize>) {
    #[cfg(target_os = "linux")]
    {
        let before = linux::open_fds() as isize;
        let result = f();
        let opened = linux::open_fds() as isize - before;
        (result, Some(opened))
    }
    #[cfg(not(target_os = "linux"))]
    {
        (f(), None)
    }
}

/// Reads a stream to its end as text.
pub fn read_text(mut stream: impl Read) -> String {
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read the reply");
    reply
}

/// Sends one datagram from `client` and returns the reply and where it came from.
pub fn udp_exchange(client: &UdpSocket, server: SocketAddr, message: &[u8]) -> (Vec<u8>, SocketAddr) {
    client.send_to(message, server).expect("send to the UDP server");
    let mut buf = vec![0; 65536];
    let (n, from) = client.recv_from(&mut buf).expect("a reply from the UDP server");
    buf.truncate(n);
    (buf, from)
}

/// One datagram from a fresh client; the reply must come from the server's address.
pub fn udp_echo_once(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let (reply, from) = udp_exchange(&udp_client(), addr, message);
    assert_eq!(from, addr, "the reply comes from the server's address");
    reply
}

/// Sends one datagram from `client` to the Unix datagram server at `server`; the reply.
#[cfg(unix)]
pub fn unix_dgram_exchange(client: &UnixDatagram, server: &Path, message: &[u8]) -> Vec<u8> {
    client.send_to(message, server).expect("send to the Unix datagram server");
    let mut buf = vec![0; 65536];
    let (n, _) = client.recv_from(&mut buf).expect("a reply from the Unix datagram server");
    buf.truncate(n);
    buf
}

/// A single connect to `addr` must be refused.
pub fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "connect to {addr}: {e}"),
        Ok(_) => panic!("connect to {addr} succeeded; expected ConnectionRefused"),
    }
}

/// Connects repeatedly until a connect to `addr` is refused, failing after `limit`;
/// returns how long that took. Connections that got in before are dropped, and a
/// handshake caught half-way by the listener's shutdown (a reset) is tried again.
pub fn wait_refused(addr: SocketAddr, limit: Duration) -> Duration {
    let _wait = waiting_for(format!("{addr} to refuse connections"));
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return start.elapsed(),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect to {addr}: unexpected error {e}"),
            Ok(_) => {}
        }
        assert!(start.elapsed() < limit, "new connections to {addr} still accepted after {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// As [`wait_refused`], for a Unix socket path.
#[cfg(unix)]
pub fn wait_refused_unix(path: &Path, limit: Duration) -> Duration {
    let _wait = waiting_for(format!("{} to refuse connections", path.display()));
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return start.elapsed(),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect to {}: unexpected error {e}", path.display()),
            Ok(_) => {}
        }
        assert!(start.elapsed() < limit, "new connections to {} still accepted after {limit:?}", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `path` is a socket file (not following a link).
#[cfg(unix)]
pub fn is_socket_file(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).map(|m| m.file_type().is_socket()).unwrap_or(false)
}

/// `len` bytes of a pattern that does not repeat every 256 bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------
// A server's own socket
// ---------------------------------------------------------------------------------------

/// A server's socket as Python's `fileno()` gives it: the descriptor (`AsRawFd`) on
/// Unix, the `SOCKET` (`AsRawSocket`) on Windows.
#[cfg(unix)]
pub type RawSocket = std::os::fd::RawFd;
/// A server's socket as Python's `fileno()` gives it: the descriptor (`AsRawFd`) on
/// Unix, the `SOCKET` (`AsRawSocket`) on Windows.
#[cfg(windows)]
pub type RawSocket = std::os::windows::io::RawSocket;

/// What [`fileno`] says of a server without a socket (between a shutdown and the next
/// serve call, and once closed): `-1` on Unix, `INVALID_SOCKET` on Windows.
#[cfg(unix)]
pub const NO_SOCKET: RawSocket = -1;
/// What [`fileno`] says of a server without a socket (between a shutdown and the next
/// serve call, and once closed): `-1` on Unix, `INVALID_SOCKET` on Windows.
#[cfg(windows)]
pub const NO_SOCKET: RawSocket = !0;

/// The server's socket, as Python's `fileno()`.
pub fn fileno<T: Transport>(server: &Server<T>) -> RawSocket {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        server.as_raw_fd()
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsRawSocket;
        server.as_raw_socket()
    }
}

/// Runs `f` on the server's socket through socket2 (`getsockname`, `getsockopt`). The
/// server must not shut down or close meanwhile: its socket would close under `f`.
pub fn with_socket<T: Transport, R>(server: &Server<T>, f: impl FnOnce(socket2::SockRef<'_>) -> R) -> R {
    let raw = fileno(server);
    assert_ne!(raw, NO_SOCKET, "the server has no socket");
    // SAFETY: the server owns the socket and outlives this borrow, and (as the caller
    // promises) does not close it meanwhile.
    #[cfg(unix)]
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    #[cfg(windows)]
    let socket = unsafe { std::os::windows::io::BorrowedSocket::borrow_raw(raw) };
    f(socket2::SockRef::from(&socket))
}

/// Waits up to `timeout` until one of `sockets` is readable, as a user's own event loop
/// does with `fileno()`: which ones are. With `poll(2)` on Unix, and on Windows with the
/// `polling` crate (the library's own dependency).
///
/// # Safety
/// Each socket must stay open until the call returns (its server must not shut down or
/// close meanwhile).
pub unsafe fn wait_readable(sockets: &[RawSocket], timeout: Duration) -> Vec<bool> {
    let _wait = waiting_for(format!("one of {} sockets to become readable", sockets.len()));
    #[cfg(unix)]
    {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        // SAFETY: the caller keeps each socket open for the call.
        let borrowed: Vec<_> = sockets.iter().map(|&fd| unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).collect();
        let mut fds: Vec<PollFd<'_>> = borrowed.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
        let timeout = Timespec::try_from(timeout).expect("a timeout poll(2) takes");
        poll(&mut fds, Some(&timeout)).expect("poll(2)");
        fds.iter().map(|fd| !fd.revents().is_empty()).collect()
    }
    #[cfg(windows)]
    {
        use polling::{Event, Events, Poller};
        let poller = Poller::new().expect("a poller");
        for (key, &socket) in sockets.iter().enumerate() {
            // SAFETY: the caller keeps each socket open for the call, and each is removed
            // from the poller before it returns.
            unsafe { poller.add(socket, Event::readable(key)) }.expect("register a socket with the poller");
        }
        let mut events = Events::new();
        poller.wait(&mut events, Some(timeout)).expect("wait on the poller");
        let mut ready = vec![false; sockets.len()];
        for event in events.iter() {
            ready[event.key] = true;
        }
        for &socket in sockets {
            // SAFETY: as above.
            let _ = poller.delete(unsafe { std::os::windows::io::BorrowedSocket::borrow_raw(socket) });
        }
        ready
    }
}

// ---------------------------------------------------------------------------------------
// Temporary paths
// ---------------------------------------------------------------------------------------

/// A fresh path in the temp directory (nothing there yet), unique in this process.
pub fn temp_path(tag: &str, extension: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("ss-{}-{tag}-{n}.{extension}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A fresh path for a Unix socket in the temp directory; removed beforehand.
pub fn temp_socket_path(tag: &str) -> PathBuf {
    temp_path(tag, "sock")
}

/// A path in the temp directory whose file or directory is removed when dropped.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl TempPath {
    /// A path for a Unix socket (not created).
    pub fn socket(tag: &str) -> TempPath {
        TempPath(temp_socket_path(tag))
    }

    /// A path for a file with this extension (not created).
    pub fn file(tag: &str, extension: &str) -> TempPath {
        TempPath(temp_path(tag, extension))
    }

    /// A new, empty directory.
    pub fn dir(tag: &str) -> TempPath {
        let path = temp_path(tag, "dir");
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempPath(path)
    }

    /// Takes over `path`: removed when dropped.
    pub fn of(path: PathBuf) -> TempPath {
        TempPath(path)
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    /// A path inside this directory not handed out before.
    pub fn unique(&self, name: &str) -> PathBuf {
        (0..).map(|n| self.0.join(format!("{n}-{name}"))).find(|p| !p.exists()).unwrap()
    }
}

impl Deref for TempPath {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.0).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Panics caused on purpose
// ---------------------------------------------------------------------------------------

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

/// The message of a caught panic's payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-string panic)".to_string())
}
