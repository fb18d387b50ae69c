//! The platform interface: everything that differs between operating systems, behind one
//! seam (as mio's `sys/` and socket2's `sys/` do).
//!
//! Outside this module the crate speaks `std::io::ErrorKind` and the names below, never
//! an error number or a system call that one platform alone has. Each platform supplies:
//!
//! | item | what it does |
//! |---|---|
//! | `wake(socket)` | wakes every thread blocked in `accept`/`recvfrom` on a server socket, without closing it, and makes a listening socket refuse new connections |
//! | `set_accept_timeout(socket, timeout)` | bounds how long one `accept`/`recvfrom` blocks (`None`: until a request or `wake`) |
//! | `recv_from_udp(socket, buf)` | receives one UDP datagram and its sender; a receive that `wake` ended is `NotConnected` |
//! | `classify_accept_error(e)` | what the serve loop does about an error from `accept` or `recvfrom` ([`AcceptError`]) |
//! | `is_wrong_socket_type(e)` | a connect failed because the socket at a Unix path is of the other type (`EPROTOTYPE`) |
//! | `MAX_UNIX_PATH` | the longest Unix socket path, in bytes, without the terminating NUL |
//!
//! # Platform-specific behavior
//!
//! Linux only, for now: the wake-up relies on Linux ending a blocked `accept` and
//! `recvfrom` when the socket is shut down for reading, which other systems do not do.
//! Another platform gets a file here (`unix.rs`, `windows.rs`) and a line below.

#[cfg_attr(any(target_os = "linux", target_os = "android"), path = "linux.rs")]
mod imp;

#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!(
    "socketserver supports Linux only so far: its shutdown wakes a blocked accept with \
     shutdown(SHUT_RD), which other systems ignore. Portability to macOS, FreeBSD and \
     Windows is the next step (see the crate's issue tracker)."
);

pub(crate) use imp::{
    classify_accept_error, is_wrong_socket_type, recv_from_udp, set_accept_timeout, wake, MAX_UNIX_PATH,
};

/// What to do about an error from `accept` or `recvfrom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// Interrupted by a signal, or a connection reset before it was accepted.
    Retry,
    /// The receive timeout fired.
    Timeout,
    /// Out of descriptors or memory: wait, and try again.
    Exhausted,
    /// The listening socket itself is broken.
    Fatal,
    /// Anything else: report it and go on.
    Other,
}
