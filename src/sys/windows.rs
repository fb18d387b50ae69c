//! Windows: Winsock error codes, and sockets that inherit the listener's mode.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::windows::io::AsRawSocket;

use socket2::SockRef;

use super::{classify_kind, AcceptError};

/// A socket's `SOCKET` handle.
pub(crate) type RawSocket = std::os::windows::io::RawSocket;
/// A borrowed socket, as hooks receive it.
pub(crate) type BorrowedSocket<'a> = std::os::windows::io::BorrowedSocket<'a>;

// Winsock error codes (winerror.h), the ones accept and recvfrom report.
const WSAEBADF: i32 = 10009;
const WSAEINVAL: i32 = 10022;
const WSAEMFILE: i32 = 10024;
const WSAENOTSOCK: i32 = 10038;
const WSAENETRESET: i32 = 10052;
const WSAENOBUFS: i32 = 10055;
const WSAEMSGSIZE: i32 = 10040;

pub(crate) fn as_raw_socket(socket: &SockRef<'_>) -> RawSocket {
    socket.as_raw_socket()
}

/// An accepted socket inherits the listener's non-blocking mode on Windows.
pub(crate) fn accepted(socket: SockRef<'_>) -> io::Result<()> {
    socket.set_nonblocking(false)
}

/// Not set: on Windows `SO_REUSEADDR` lets a second socket bind a port in use (and
/// take its traffic), and a listener binds over `TIME_WAIT` connections without it, as
/// std's `TcpListener::bind` does.
pub(crate) fn set_reuse_address(_: &socket2::Socket, _: bool) -> io::Result<()> {
    Ok(())
}

/// Windows has no `SO_REUSEPORT` (its `SO_REUSEADDR` lets a second socket steal the
/// port, which is not the same): asking for it is an error, not a silent no-op.
pub(crate) fn set_reuse_port(_: &socket2::Socket) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "SO_REUSEPORT is not available on Windows"))
}

/// Windows cannot tell; the serve loop backs off instead of spinning.
pub(crate) fn is_shut_down_for_reading(_: &SockRef<'_>) -> bool {
    false
}

/// Windows cannot make a listener refuse without closing it: it refuses once closed,
/// when the serve loops return.
pub(crate) fn refuse_new_connections(_: SockRef<'_>) {}

/// `recvfrom` through std. A datagram longer than the buffer is `WSAEMSGSIZE` on Windows,
/// where Unix truncates it: std then gives neither its length nor its sender, so it is
/// reported as an `InvalidData` receive error (to `handle_error`) and not served.
pub(crate) fn recv_from_udp(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket.recv_from(buf) {
        Err(e) if e.raw_os_error() == Some(WSAEMSGSIZE) => {
            // The data is gone from the queue but its start is in `buf`; the sender can
            // only be learned with a peek, which would see the next datagram. Report it.
            Err(io::Error::new(io::ErrorKind::InvalidData, format!("datagram longer than {} bytes: {e}", buf.len())))
        }
        other => other,
    }
}

/// Windows has no `MSG_DONTWAIT`: the socket is non-blocking for the one call, and
/// blocking again after it (the call's own result wins over a failure to restore).
fn without_waiting<T>(socket: &SockRef<'_>, call: impl FnOnce(&socket2::Socket) -> io::Result<T>) -> io::Result<T> {
    socket.set_nonblocking(true)?;
    let result = call(socket);
    let restored = socket.set_nonblocking(false);
    let value = result?;
    restored.map(|()| value)
}

/// A read without waiting is three calls here (non-blocking, read, blocking again): not
/// worth trying after each exchange; the poller says when bytes are there.
pub(crate) const CHEAP_READ_WITHOUT_WAITING: bool = false;

/// `polling`'s IOCP backend starts an arm's AFD poll at once only if a wait is under
/// way; otherwise it queues the arm for the next wait to start, before it blocks. It
/// asks whether a wait is under way, then queues, and a wait that begins between the two
/// takes the queue before the arm is in it, and blocks without it (polling 3.11,
/// `Poller::update_packet`; mio queues first and asks after). A connection parked on one
/// thread as the serve loop went back to its wait on another then waited, unreported,
/// for the next event of any kind. So an arm made while a wait may be under way wakes
/// it (`net::Station::arm`); the wait starts the queued arm as it begins again.
pub(crate) const ARM_MAY_MISS_A_STARTING_WAIT: bool = true;

/// Reads what has arrived, without waiting.
pub(crate) fn recv_nonblocking(socket: &SockRef<'_>, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    without_waiting(socket, |mut s| s.read(buf))
}

/// Writes what the socket takes now, without waiting.
pub(crate) fn send_nonblocking(socket: &SockRef<'_>, buf: &[u8]) -> io::Result<usize> {
    use std::io::Write;
    without_waiting(socket, |mut s| s.write(buf))
}

pub(crate) fn classify_accept_error(e: &io::Error) -> AcceptError {
    if let Some(class) = classify_kind(e) {
        return class;
    }
    match e.raw_os_error() {
        Some(WSAEMFILE | WSAENOBUFS) => AcceptError::Exhausted,
        Some(WSAEBADF | WSAEINVAL | WSAENOTSOCK) => AcceptError::Fatal,
        // A UDP socket reports an ICMP "port unreachable" for an earlier send as an error
        // of the next receive: nothing to do with this receive.
        Some(WSAENETRESET) => AcceptError::Retry,
        _ => AcceptError::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winsock_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify_accept_error(&os(WSAEMFILE)), AcceptError::Exhausted);
        assert_eq!(classify_accept_error(&os(WSAENOBUFS)), AcceptError::Exhausted);
        assert_eq!(classify_accept_error(&os(WSAENOTSOCK)), AcceptError::Fatal);
        assert_eq!(classify_accept_error(&os(10035)), AcceptError::Retry, "WSAEWOULDBLOCK");
        assert_eq!(classify_accept_error(&os(10054)), AcceptError::Retry, "WSAECONNRESET");
    }
}
