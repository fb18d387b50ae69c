//! The platform interface: everything that differs between operating systems, behind one
//! seam (as mio's `sys/` and socket2's `sys/` do).
//!
//! Outside this module the crate speaks `std::io::ErrorKind` and the names below, never
//! an error number or a call that one platform alone has. The wake-up itself is the same
//! everywhere (a readiness poller, `crate::net::Readiness`); what differs is this:
//!
//! | item | what it does |
//! |---|---|
//! | `classify_accept_error(e)` | what the serve loop does about an error from `accept` or `recvfrom` ([`AcceptError`]) |
//! | `accepted(socket)` | makes an accepted connection blocking again where it inherits the listener's non-blocking mode (macOS, the BSDs, Windows; not Linux) |
//! | `set_reuse_address(socket, on)` | `SO_REUSEADDR` on Unix; nothing on Windows, where that option lets another socket take a port in use, and a listener binds over `TIME_WAIT` connections without it |
//! | `set_reuse_port(socket)` | `SO_REUSEPORT` on Unix; on Windows, which has no such option, an `Unsupported` error |
//! | `is_shut_down_for_reading(socket)` | whether a socket the poller calls readable, and that has nothing to receive, was shut down for reading by someone else (Linux can tell, through `POLLRDHUP`; elsewhere `false`, and the serve loop backs off instead of spinning) |
//! | `recv_from_udp(socket, buf)` | receives one UDP datagram and its sender |
//! | `send_nonblocking(socket, buf)` | writes what a blocking stream socket takes now (`WouldBlock` when its buffer is full): `send(MSG_DONTWAIT)` on Unix (with `MSG_NOSIGNAL` where there is one); on Windows the socket is made non-blocking for the write |
//! | `CHEAP_READ_WITHOUT_WAITING` | whether that read costs one system call (Unix: true; Windows: false, three), so the engine tries one after each exchange before parking |
//! | `ARM_MAY_MISS_A_STARTING_WAIT` | whether an arm made on one thread can be missed by a wait that another thread begins at that moment, so that the arm must wake the wait (Windows: true, `polling`'s IOCP backend defers such an arm to the next wait; epoll and kqueue take it in the kernel: false) |
//! | `EndWatch` | where the end of a parked TCP connection's stream is reported apart from its bytes, so that parked TCP connections can stay in the poller edge-triggered and park again with no system call (Linux: an epoll instance watching `EPOLLRDHUP`; urgent data, whose mark stops a read short, the server's poller reports itself with `EPOLLPRI`, see `net::Reported`; Unix streams are armed at each park, see `net::Station::register`); elsewhere none can be made, and parked connections are armed again, oneshot, at each park (Windows has no edge-triggered mode; on macOS and the BSDs it is not tested) |
//! | `recv_nonblocking(socket, buf)` | reads what a blocking stream socket has, without waiting (`WouldBlock` when nothing): one `recv(MSG_DONTWAIT)` on Unix; on Windows, which has no such flag, the socket is made non-blocking for the read |
//! | `refuse_new_connections(socket)` | at a shutdown, makes a socket the server bound refuse new connections at once, before the serve loops let go of it: Linux does (`shutdown(SHUT_RD)` on a listener resets new connections); elsewhere nothing, and the socket refuses when it closes, once the loops return |
//! | `is_wrong_socket_type(e)` | (Unix) a connect failed because the socket at a path is of the other type (`EPROTOTYPE`) |
//! | `MAX_UNIX_PATH` | (Unix) the longest socket path, in bytes, without the terminating NUL: 107 on Linux, 103 on macOS and the BSDs |
//! | `RawSocket`, `BorrowedSocket`, `as_raw_socket` | the descriptor (Unix) or `SOCKET` (Windows) of a socket, for hooks and `fileno()` |

#[cfg_attr(unix, path = "unix.rs")]
#[cfg_attr(windows, path = "windows.rs")]
mod imp;

#[cfg(not(any(unix, windows)))]
compile_error!("socketserver supports Unix (Linux, macOS, the BSDs) and Windows");

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use imp::EndWatch;
pub(crate) use imp::{
    accepted, as_raw_socket, classify_accept_error, is_shut_down_for_reading, recv_from_udp, recv_nonblocking,
    refuse_new_connections, send_nonblocking, set_reuse_address, set_reuse_port, BorrowedSocket, RawSocket,
    ARM_MAY_MISS_A_STARTING_WAIT, CHEAP_READ_WITHOUT_WAITING,
};

/// Where no end watch can be made, none exists: parked connections are armed again
/// (oneshot) each time they park, and need no separate watch of their ends. Windows:
/// IOCP, through `polling`, has no edge-triggered mode. macOS and the BSDs: `kqueue`'s
/// `EV_CLEAR` and `EV_EOF` would allow edge-triggered parking there too; it is not run in
/// this crate's tests.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[derive(Debug)]
pub(crate) enum EndWatch {}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl EndWatch {
    pub(crate) fn new() -> std::io::Result<EndWatch> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "parked connections are armed at each park here"))
    }

    pub(crate) fn fd(&self) -> BorrowedSocket<'_> {
        match *self {}
    }

    pub(crate) fn add(&self, _: &socket2::SockRef<'_>, _: usize) -> std::io::Result<()> {
        match *self {}
    }

    pub(crate) fn delete(&self, _: &socket2::SockRef<'_>) {
        match *self {}
    }

    pub(crate) fn drain(&self, _: impl FnMut(usize)) {
        match *self {}
    }
}
#[cfg(unix)]
pub(crate) use imp::{is_wrong_socket_type, MAX_UNIX_PATH};

/// What to do about an error from `accept` or `recvfrom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// Nothing is waiting (the socket is non-blocking), or the call was interrupted by a
    /// signal, or a connection was reset before it was accepted: wait, or try again.
    Retry,
    /// Out of descriptors or memory: back off, and try again.
    Exhausted,
    /// The listening socket itself is broken.
    Fatal,
    /// Anything else: report it and go on.
    Other,
}

/// The part of classifying that `io::ErrorKind` can tell on every platform.
fn classify_kind(e: &std::io::Error) -> Option<AcceptError> {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::WouldBlock
        | ErrorKind::TimedOut
        | ErrorKind::Interrupted
        | ErrorKind::ConnectionAborted
        | ErrorKind::ConnectionReset => Some(AcceptError::Retry),
        // A datagram socket shut down by someone else: it will never receive again (as a
        // listener in that state fails with EINVAL).
        ErrorKind::NotConnected => Some(AcceptError::Fatal),
        ErrorKind::OutOfMemory => Some(AcceptError::Exhausted),
        _ => None,
    }
}
