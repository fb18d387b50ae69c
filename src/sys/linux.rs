//! Linux (and Android): the wake-up is `shutdown(SHUT_RD)`; error numbers through rustix.

use std::io;
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::time::Duration;

use rustix::io::Errno;
use socket2::SockRef;

use super::AcceptError;

/// `sun_path` holds 108 bytes, the terminating NUL included.
pub(crate) const MAX_UNIX_PATH: usize = 107;

/// The shortest accept timeout set: `SO_RCVTIMEO` has microsecond resolution and zero
/// means "no timeout", so a sub-microsecond remainder would block forever.
const MIN_ACCEPT_TIMEOUT: Duration = Duration::from_millis(1);

/// `shutdown(fd, SHUT_RD)` on the server socket. Linux makes a blocked `accept` fail with
/// `EINVAL` and a blocked `recvfrom` return, and a listening socket answers new
/// connections with a reset from then on. One system call, no wake-up pipe, no polling;
/// the price is that the socket cannot listen again, so the next serve call binds anew.
pub(crate) fn wake(socket: SockRef<'_>) {
    // For an unconnected datagram socket Linux answers ENOTCONN but still wakes the
    // receiver ("a hack to wake up other listeners" in inet_shutdown), so the result
    // carries no information.
    let _ = socket.shutdown(Shutdown::Read);
}

/// `SO_RCVTIMEO`, which Linux also applies to `accept`.
pub(crate) fn set_accept_timeout(socket: SockRef<'_>, timeout: Option<Duration>) -> io::Result<()> {
    socket.set_read_timeout(timeout.map(|t| t.max(MIN_ACCEPT_TIMEOUT)))
}

/// `recvfrom` on a UDP socket, through rustix rather than std.
///
/// A receive woken by [`wake`] returns no datagram and no sender. std's
/// `UdpSocket::recv_from` then reads a sender address the kernel never wrote, and in
/// release builds panics on what it finds (Rust 1.95); rustix marks the address unset
/// first and reports it as absent, which becomes a `NotConnected` error here.
pub(crate) fn recv_from_udp(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    // The first value is what the buffer holds; the second, the datagram's length.
    let (n, _, sender) = rustix::net::recvfrom(socket, &mut *buf, rustix::net::RecvFlags::empty())?;
    match sender.and_then(|sender| SocketAddr::try_from(sender).ok()) {
        Some(sender) => Ok((n, sender)),
        None => Err(io::Error::new(io::ErrorKind::NotConnected, "no datagram: the socket was shut down")),
    }
}

pub(crate) fn classify_accept_error(e: &io::Error) -> AcceptError {
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => return AcceptError::Retry,
        // A UDP socket shut down by someone else, outside a shutdown: it will never
        // receive again (as a listener in that state fails with EINVAL).
        io::ErrorKind::NotConnected => return AcceptError::Fatal,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return AcceptError::Timeout,
        _ => {}
    }
    match Errno::from_io_error(e) {
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => AcceptError::Exhausted,
        Some(Errno::BADF | Errno::INVAL | Errno::NOTSOCK) => AcceptError::Fatal,
        _ => AcceptError::Other,
    }
}

pub(crate) fn is_wrong_socket_type(e: &io::Error) -> bool {
    Errno::from_io_error(e) == Some(Errno::PROTOTYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno.raw_os_error())
    }

    #[test]
    fn running_out_of_descriptors_or_memory_backs_off() {
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            assert_eq!(classify_accept_error(&os(errno)), AcceptError::Exhausted, "{errno:?}");
        }
    }

    #[test]
    fn a_broken_socket_is_fatal_and_the_rest_is_reported() {
        for errno in [Errno::BADF, Errno::INVAL, Errno::NOTSOCK, Errno::NOTCONN] {
            assert_eq!(classify_accept_error(&os(errno)), AcceptError::Fatal, "{errno:?}");
        }
        assert_eq!(classify_accept_error(&os(Errno::INTR)), AcceptError::Retry);
        assert_eq!(classify_accept_error(&os(Errno::CONNABORTED)), AcceptError::Retry);
        assert_eq!(classify_accept_error(&os(Errno::AGAIN)), AcceptError::Timeout);
        assert_eq!(classify_accept_error(&os(Errno::PERM)), AcceptError::Other);
        assert!(is_wrong_socket_type(&os(Errno::PROTOTYPE)));
        assert!(!is_wrong_socket_type(&os(Errno::CONNREFUSED)));
    }
}
