//! Socket activation: serve the sockets systemd passes (`LISTEN_FDS`).
//!
//! With socket activation the service manager binds the sockets, starts the server on
//! the first connection, and passes the listening sockets as descriptors 3, 4, ...;
//! the environment says how many (`LISTEN_FDS`), for which process (`LISTEN_PID`) and
//! under which names (`LISTEN_FDNAMES`). [`ListenFds::take`] reads them as
//! [`sd_listen_fds(3)`] does, and its typed takers give std sockets for
//! [`TcpServer::from_listener`](crate::TcpServer::from_listener) and the other
//! `from_*` constructors.
//!
//! # Examples
//!
//! Serve the socket systemd passes, or bind one when started by hand:
//!
//! ```no_run
//! use socketserver::activation::ListenFds;
//! use socketserver::TcpServer;
//!
//! let mut fds = ListenFds::take()?;
//! let builder = match fds.take_tcp_listener("web")? {
//!     Some(listener) => TcpServer::from_listener(listener),
//!     None => TcpServer::builder("127.0.0.1:8000"),
//! };
//! let server = builder.bind(|req| {
//!     std::io::copy(&mut req.reader(), &mut req.writer())?;
//!     Ok(())
//! })?;
//! server.serve_forever()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! with these two units (or, to try it without installing anything,
//! `systemd-socket-activate -l 8000 --fdname=web ./echo`):
//!
//! ```ini
//! # echo.socket
//! [Socket]
//! ListenStream=8000
//! FileDescriptorName=web
//!
//! [Install]
//! WantedBy=sockets.target
//!
//! # echo.service
//! [Service]
//! ExecStart=/usr/local/bin/echo
//! ```
//!
//! # Platform-specific behavior
//!
//! Linux. Without systemd (or another manager speaking the protocol) the variables are
//! absent and [`ListenFds::take`] returns an empty set, not an error.
//!
//! [`sd_listen_fds(3)`]: https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html

use std::env;
use std::fmt;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, SockRef, Type};

/// Takes ownership of a descriptor the service manager passed.
///
/// `OwnedFd::from_raw_fd` is one of the crate's two `unsafe` calls (the other puts a
/// socket in a poller, `net/ready.rs`): no safe API can take ownership of an inherited
/// descriptor.
#[allow(unsafe_code)]
fn own_inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: LISTEN_PID names this process, so the service manager that started it
    // passed descriptors 3..3 + LISTEN_FDS open, for it to own (sd_listen_fds(3)); the
    // caller has checked this one is an open socket. Nothing else in the process takes
    // them: `TAKEN` makes every later `take` find none. Should a later check
    // fail, the caller releases every descriptor with `into_raw_fd`, closing none.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Set by the first [`ListenFds::take`] of the process: the descriptors are owned once.
/// A flag rather than removing the variables, which is not thread-safe (see `take`).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// `LISTEN_PIDFDID` is newer systemd's stronger form of `LISTEN_PID`; checking it needs
/// a pidfd, so it is read but not checked.
const VARIABLES: [&str; 4] = ["LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The sockets passed to this process by socket activation: descriptors 3, 4, ... with
/// their names. Each can be taken once; those not taken are closed on drop.
///
/// Take them with the typed takers ([`take_tcp_listener`](ListenFds::take_tcp_listener),
/// [`take_udp_socket`](ListenFds::take_udp_socket),
/// [`take_unix_listener`](ListenFds::take_unix_listener),
/// [`take_unix_datagram`](ListenFds::take_unix_datagram)), which check what kind of
/// socket it is, or raw with [`take_fd`](ListenFds::take_fd).
///
/// # Examples
///
/// A server that only runs socket-activated (the [module docs](self) show one that
/// also runs without):
///
/// ```no_run
/// use std::io::Write;
/// use socketserver::activation::ListenFds;
/// use socketserver::TcpServer;
///
/// let mut fds = ListenFds::take()?;
/// let listener = fds.take_tcp_listener(0)?.expect("started by systemd with a ListenStream= socket");
/// let server = TcpServer::from_listener(listener).bind(|req| {
///     req.writer().write_all(b"hello\n")?;
///     Ok(())
/// })?;
/// server.serve_forever()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ListenFds {
    fds: Vec<Option<OwnedFd>>,
    names: Vec<String>,
}

impl ListenFds {
    /// Takes the descriptors passed to this process, as `sd_listen_fds(3)` does: reads
    /// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` and sets `FD_CLOEXEC` on each
    /// descriptor. The first call in a process takes them; any later call returns an
    /// empty set, so no descriptor is owned twice.
    ///
    /// Without `LISTEN_PID`, or when it names another process, the set is empty. Names
    /// default to `"unknown"` when `LISTEN_FDNAMES` is absent, as in systemd.
    ///
    /// The variables stay in the environment (`sd_listen_fds` with `unset_environment`
    /// false). Removing them would be [`std::env::remove_var`], which is `unsafe` since
    /// Rust 2024: most C libraries do not synchronize the environment with threads reading
    /// it. Leaving them is harmless to child processes, because `LISTEN_PID` names this
    /// process and a child has another id. A program that replaces itself with `exec`
    /// keeps its id: remove them from the `Command` it runs
    /// ([`env_remove`](std::process::Command::env_remove)), or set them anew for the
    /// sockets it hands on.
    ///
    /// # Errors
    ///
    /// [`InvalidData`](io::ErrorKind::InvalidData) if a variable is malformed or
    /// `LISTEN_FDNAMES` does not name every descriptor;
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) naming the descriptor if one is not
    /// an open socket (systemd's `ListenFIFO=` and `ListenSpecial=` are not supported).
    /// The descriptors count as taken even then, and none is closed.
    ///
    /// # Notes
    ///
    /// Call it once per process, rather than also using another library that takes the
    /// same descriptors.
    pub fn take() -> io::Result<ListenFds> {
        let read = |key: &str| match env::var(key) {
            Ok(value) => Ok(Some(value)),
            Err(env::VarError::NotPresent) => Ok(None),
            Err(env::VarError::NotUnicode(_)) => Err(invalid_data(format!("{key} is not valid UTF-8"))),
        };
        let [pid, _, count, names] = VARIABLES.map(read);
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(ListenFds { fds: Vec::new(), names: Vec::new() });
        }
        let names = parse(pid?.as_deref(), count?.as_deref(), names?.as_deref(), std::process::id())?;
        let mut fds = Vec::new();
        for (fd, name) in (FIRST_FD..).zip(&names) {
            // Before owning it, make sure the descriptor is open and a socket, in safe
            // code: an environment that overstates LISTEN_FDS must not make us own (and
            // later close) a closed or unrelated descriptor.
            let is_socket = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                for fd in fds {
                    let _ = OwnedFd::into_raw_fd(fd);
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "socket activation: LISTEN_FDS passes descriptor {fd} ({name:?}), which is not an open socket"
                    ),
                ));
            }
            let owned = own_inherited(fd);
            let checked = check_socket(&owned, fd, name);
            fds.push(owned);
            if let Err(e) = checked {
                for fd in fds {
                    let _ = fd.into_raw_fd();
                }
                return Err(e);
            }
        }
        Ok(ListenFds { fds: fds.into_iter().map(Some).collect(), names })
    }

    /// The number of descriptors passed, taken or not.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether no descriptor was passed: the process was not socket-activated.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The descriptors' names, in order (systemd's `FileDescriptorName=`, by default the
    /// socket unit's name; `"unknown"` when the manager sent none). Names may repeat.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Takes a passed descriptor as it is, whatever it is.
    ///
    /// `which` is an index (`0` is the first descriptor, number 3) or a name, which
    /// selects the first descriptor of that name not yet taken. `None` if there is no
    /// such descriptor or it was taken already.
    pub fn take_fd(&mut self, which: impl Selector) -> Option<OwnedFd> {
        let index = which.index(self)?;
        self.fds[index].take()
    }

    /// Takes a listening TCP socket (IPv4 or IPv6), for
    /// [`TcpServer::from_listener`](crate::TcpServer::from_listener).
    ///
    /// `which` selects the descriptor as in [`take_fd`](ListenFds::take_fd); `Ok(None)`
    /// if there is none.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) if the selected socket is of
    /// another kind, naming both; the descriptor stays in the set.
    pub fn take_tcp_listener(&mut self, which: impl Selector) -> io::Result<Option<TcpListener>> {
        Ok(self.take_kind(which, Kind::TcpListener)?.map(TcpListener::from))
    }

    /// Takes a UDP socket (IPv4 or IPv6), for
    /// [`UdpServer::from_socket`](crate::UdpServer::from_socket).
    ///
    /// # Errors
    ///
    /// As [`take_tcp_listener`](ListenFds::take_tcp_listener).
    pub fn take_udp_socket(&mut self, which: impl Selector) -> io::Result<Option<UdpSocket>> {
        Ok(self.take_kind(which, Kind::Udp)?.map(UdpSocket::from))
    }

    /// Takes a listening Unix stream socket, for
    /// [`UnixStreamServer::from_listener`](crate::UnixStreamServer::from_listener).
    ///
    /// # Errors
    ///
    /// As [`take_tcp_listener`](ListenFds::take_tcp_listener).
    pub fn take_unix_listener(&mut self, which: impl Selector) -> io::Result<Option<UnixListener>> {
        Ok(self.take_kind(which, Kind::UnixListener)?.map(UnixListener::from))
    }

    /// Takes a Unix datagram socket, for
    /// [`UnixDatagramServer::from_socket`](crate::UnixDatagramServer::from_socket).
    ///
    /// # Errors
    ///
    /// As [`take_tcp_listener`](ListenFds::take_tcp_listener).
    pub fn take_unix_datagram(&mut self, which: impl Selector) -> io::Result<Option<UnixDatagram>> {
        Ok(self.take_kind(which, Kind::UnixDatagram)?.map(UnixDatagram::from))
    }

    fn take_kind(&mut self, which: impl Selector, want: Kind) -> io::Result<Option<OwnedFd>> {
        let Some(index) = which.index(self) else { return Ok(None) };
        let Some(fd) = &self.fds[index] else { return Ok(None) };
        let kind = Kind::of(fd)?;
        if kind != want {
            let fd = FIRST_FD + index as RawFd;
            let message = format!("descriptor {fd} ({:?}) is {kind}, not {want}", self.names[index]);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("socket activation: {message}")));
        }
        Ok(self.fds[index].take())
    }
}

/// Selects a passed descriptor: an index (`usize`, `0` for the first) or a name
/// (`&str`), which selects the first descriptor of that name not yet taken.
pub trait Selector: sealed::Sealed {}

impl Selector for usize {}
impl Selector for &str {}
impl Selector for &String {}

mod sealed {
    pub trait Sealed {
        /// The index selected, if in range.
        fn index(&self, fds: &super::ListenFds) -> Option<usize>;
    }

    impl Sealed for usize {
        fn index(&self, fds: &super::ListenFds) -> Option<usize> {
            Some(*self).filter(|&i| i < fds.fds.len())
        }
    }

    impl Sealed for &str {
        fn index(&self, fds: &super::ListenFds) -> Option<usize> {
            (0..fds.fds.len()).find(|&i| fds.names[i] == *self && fds.fds[i].is_some())
        }
    }

    impl Sealed for &String {
        fn index(&self, fds: &super::ListenFds) -> Option<usize> {
            self.as_str().index(fds)
        }
    }
}

/// The pure part of [`ListenFds::take`]: the three variables and this process's id in,
/// one name per passed descriptor out (none when the variables are not for this process).
fn parse(pid: Option<&str>, count: Option<&str>, names: Option<&str>, own_pid: u32) -> io::Result<Vec<String>> {
    let Some(pid_text) = pid else { return Ok(Vec::new()) };
    let pid = number(pid_text).ok_or_else(|| invalid_data(format!("LISTEN_PID={pid_text:?} is not a process id")))?;
    if pid != own_pid {
        return Ok(Vec::new());
    }
    let Some(count_text) = count else { return Ok(Vec::new()) };
    let count = number(count_text)
        .filter(|&n| n > 0 && n <= (RawFd::MAX - FIRST_FD) as u32)
        .ok_or_else(|| invalid_data(format!("LISTEN_FDS={count_text:?} is not a positive count")))?
        as usize;
    let names: Vec<String> = match names {
        None => return Ok(vec!["unknown".to_string(); count]),
        // As systemd: an empty list names no descriptor.
        Some("") => Vec::new(),
        Some(list) => list.split(':').map(str::to_string).collect(),
    };
    if names.len() != count {
        return Err(invalid_data(format!("LISTEN_FDNAMES has {} names for LISTEN_FDS={count}", names.len())));
    }
    Ok(names)
}

/// A decimal number, digits only (`str::parse` would also take a leading `+`).
fn number(text: &str) -> Option<u32> {
    text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse().ok()).flatten()
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("socket activation: {message}"))
}

/// Checks that a passed descriptor is an open socket, and marks it close-on-exec.
fn check_socket(owned: &OwnedFd, fd: RawFd, name: &str) -> io::Result<()> {
    // Linux's error numbers.
    const EBADF: i32 = 9;
    const ENOTSOCK: i32 = 88;
    let socket = SockRef::from(owned);
    let what = match socket.r#type() {
        Ok(_) => return socket.set_cloexec(true),
        Err(e) if e.raw_os_error() == Some(EBADF) => "is not open (EBADF)",
        Err(e) if e.raw_os_error() == Some(ENOTSOCK) => "is not a socket (ENOTSOCK)",
        Err(e) => return Err(e),
    };
    let message = format!("socket activation: LISTEN_FDS passes descriptor {fd} ({name:?}), which {what}");
    Err(io::Error::new(io::ErrorKind::InvalidInput, message))
}

/// The kinds of socket the typed takers give, and a description of any other.
#[derive(Debug, PartialEq)]
enum Kind {
    TcpListener,
    Udp,
    UnixListener,
    UnixDatagram,
    Other(String),
}

impl Kind {
    fn of(fd: &OwnedFd) -> io::Result<Kind> {
        let socket = SockRef::from(fd);
        let (domain, ty) = (socket.domain()?, socket.r#type()?);
        let inet = domain == Domain::IPV4 || domain == Domain::IPV6;
        let listening = ty == Type::STREAM && socket.is_listener()?;
        Ok(match (inet, domain == Domain::UNIX) {
            (true, _) if listening => Kind::TcpListener,
            (true, _) if ty == Type::DGRAM => Kind::Udp,
            (_, true) if listening => Kind::UnixListener,
            (_, true) if ty == Type::DGRAM => Kind::UnixDatagram,
            _ if ty == Type::STREAM => Kind::Other(format!("a non-listening socket ({domain:?}, {ty:?})")),
            _ => Kind::Other(format!("a socket ({domain:?}, {ty:?})")),
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::TcpListener => "a listening TCP socket",
            Kind::Udp => "a UDP socket",
            Kind::UnixListener => "a listening Unix stream socket",
            Kind::UnixDatagram => "a Unix datagram socket",
            Kind::Other(description) => description,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: u32 = 4242;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn error_of(pid: Option<&str>, count: Option<&str>, list: Option<&str>) -> String {
        let e = parse(pid, count, list, PID).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        e.to_string()
    }

    #[test]
    fn not_activated_is_empty() {
        assert_eq!(parse(None, None, None, PID).unwrap(), names(&[]));
        // Some variables without LISTEN_PID: not for anyone.
        assert_eq!(parse(None, Some("2"), Some("a:b"), PID).unwrap(), names(&[]));
        // LISTEN_PID without LISTEN_FDS.
        assert_eq!(parse(Some("4242"), None, None, PID).unwrap(), names(&[]));
    }

    #[test]
    fn variables_for_another_process_are_ignored() {
        // A child that inherited its parent's variables must not take the parent's fds.
        assert_eq!(parse(Some("4241"), Some("2"), Some("a:b"), PID).unwrap(), names(&[]));
        // Even malformed counts and names: they are not ours to judge.
        assert_eq!(parse(Some("1"), Some("x"), Some("a:b:c"), PID).unwrap(), names(&[]));
    }

    #[test]
    fn names_default_to_unknown() {
        assert_eq!(parse(Some("4242"), Some("2"), None, PID).unwrap(), names(&["unknown", "unknown"]));
    }

    #[test]
    fn names_are_split_on_colons_and_may_repeat() {
        let parsed = parse(Some("4242"), Some("3"), Some("web:admin:web"), PID).unwrap();
        assert_eq!(parsed, names(&["web", "admin", "web"]));
        // An empty name between colons is kept, so the positions still line up.
        assert_eq!(parse(Some("4242"), Some("2"), Some(":b"), PID).unwrap(), names(&["", "b"]));
    }

    #[test]
    fn malformed_variables_are_errors() {
        assert!(error_of(Some("me"), Some("1"), None).contains("LISTEN_PID=\"me\""));
        assert!(error_of(Some("4242"), Some("two"), None).contains("LISTEN_FDS=\"two\""));
        assert!(error_of(Some("4242"), Some("+1"), None).contains("LISTEN_FDS"));
        assert!(error_of(Some("4242"), Some("-1"), None).contains("LISTEN_FDS"));
        // sd_listen_fds(3) rejects a count of zero too.
        assert!(error_of(Some("4242"), Some("0"), None).contains("LISTEN_FDS=\"0\""));
        // A count that would run past the largest descriptor number.
        assert!(error_of(Some("4242"), Some("2147483646"), None).contains("LISTEN_FDS"));
    }

    #[test]
    fn names_must_match_the_count() {
        let message = error_of(Some("4242"), Some("2"), Some("web"));
        assert!(message.contains("1 names for LISTEN_FDS=2"), "{message}");
        assert!(error_of(Some("4242"), Some("1"), Some("a:b")).contains("2 names"));
        // An empty list names nothing, as in systemd.
        assert!(error_of(Some("4242"), Some("1"), Some("")).contains("0 names"));
    }

    #[test]
    fn kind_of_real_sockets() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (unix, _) = UnixDatagram::pair().unwrap();
        assert_eq!(Kind::of(&OwnedFd::from(tcp)).unwrap(), Kind::TcpListener);
        assert_eq!(Kind::of(&OwnedFd::from(udp)).unwrap(), Kind::Udp);
        assert_eq!(Kind::of(&OwnedFd::from(unix)).unwrap(), Kind::UnixDatagram);
        let connected = Kind::of(&OwnedFd::from(stream)).unwrap();
        assert_eq!(connected.to_string(), "a non-listening socket (AF_INET, SOCK_STREAM)");
    }

    #[test]
    fn selectors_skip_taken_descriptors() {
        let socket = || Some(OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap()));
        let mut fds = ListenFds { fds: vec![socket(), socket(), socket()], names: names(&["a", "b", "a"]) };
        use sealed::Sealed;
        assert_eq!("a".index(&fds), Some(0));
        assert!(fds.take_fd("a").is_some());
        // The second "a" now, and index 0 is in range but empty.
        assert_eq!("a".index(&fds), Some(2));
        assert!(fds.take_fd(0).is_none());
        assert_eq!(3usize.index(&fds), None);
        assert_eq!((&"b".to_string()).index(&fds), Some(1));
        // A wrong-kind taker fails, names the descriptor, and leaves it in place.
        let e = fds.take_tcp_listener("b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "socket activation: descriptor 4 (\"b\") is a UDP socket, not a listening TCP socket"
        );
        assert!(fds.take_udp_socket("b").unwrap().is_some());
        assert!(fds.take_udp_socket("b").unwrap().is_none());
        assert_eq!(fds.len(), 3);
    }
}
