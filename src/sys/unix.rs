//! Unix: Linux, macOS, the BSDs. Error numbers by name through rustix.

use std::io;
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use rustix::io::Errno;
use socket2::SockRef;

use super::{classify_kind, AcceptError};

/// A socket's descriptor.
pub(crate) type RawSocket = std::os::fd::RawFd;
/// A borrowed socket, as hooks receive it.
pub(crate) type BorrowedSocket<'a> = std::os::fd::BorrowedFd<'a>;

/// `sun_path` holds 108 bytes on Linux and 104 on macOS and the BSDs, the terminating
/// NUL included.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const MAX_UNIX_PATH: usize = 107;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const MAX_UNIX_PATH: usize = 103;

pub(crate) fn as_raw_socket(socket: &SockRef<'_>) -> RawSocket {
    socket.as_raw_fd()
}

/// macOS and the BSDs give an accepted socket the listener's `O_NONBLOCK`; Linux does
/// not. Handlers expect blocking connections.
pub(crate) fn accepted(socket: SockRef<'_>) -> io::Result<()> {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        Ok(())
    } else {
        socket.set_nonblocking(false)
    }
}

/// Linux reports a socket shut down for reading as readable, yet a non-blocking receive
/// on it says `EAGAIN`: `POLLRDHUP` tells the two apart.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn is_shut_down_for_reading(socket: &SockRef<'_>) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&**socket, PollFlags::RDHUP)];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(poll(&mut fds, Some(&now)), Ok(1) if fds[0].revents().contains(PollFlags::RDHUP))
}

/// macOS and the BSDs cannot tell (no `POLLRDHUP`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn is_shut_down_for_reading(_: &SockRef<'_>) -> bool {
    false
}

/// A read without waiting is one system call (`MSG_DONTWAIT`): cheap enough to try one
/// after each exchange before parking.
pub(crate) const CHEAP_READ_WITHOUT_WAITING: bool = true;

/// epoll and kqueue take an arm in the kernel, whichever thread makes it and whenever
/// the wait begins: a wait that begins as it is made sees it.
pub(crate) const ARM_MAY_MISS_A_STARTING_WAIT: bool = false;

/// Where the end of a parked TCP connection's stream (the client's FIN, or a reset) is
/// reported apart from its bytes (Linux): an epoll instance of its own that watches its
/// sockets for `EPOLLRDHUP` alone, edge-triggered, and is itself watched by the server's
/// poller.
///
/// Why: the server's poller watches parked TCP connections edge-triggered, so that one
/// that parks again costs no system call; it reports what *arrives*, and a read that
/// returns fewer bytes than it asked for is taken to have drained the socket. The
/// client's end of stream can come in the same event as its last bytes and break that:
/// the read took all the bytes, but cannot say whether the end came after them, and the
/// connection would wait for its idle timeout instead of ending. `EPOLLRDHUP` says it,
/// reported here a second time, so that a connection that runs when it comes is armed
/// again as it parks (the lot notes the report). `polling` does not give `EPOLLRDHUP`
/// (tokio keeps the same "read closed" state, from mio's `EPOLLRDHUP`). The hot path pays
/// no system call for it: one `epoll_ctl` adds a connection the first time it parks again
/// without arming, one removes it when it closes; and an arrival of bytes, signalled
/// with `EPOLLIN | EPOLLPRI | ...` but not `EPOLLRDHUP`, does not touch this instance.
///
/// Urgent data (`MSG_OOB`, whose mark stops a read short with the bytes after it still
/// queued) is not watched here: the server's poller reports it with the bytes
/// (`EPOLLPRI`, `net::Reported::urgent`). It was, until a profile showed what it cost:
/// every arrival of bytes carries `EPOLLPRI` among its flags, so each queued the socket
/// here, and the server's next wait polled it a second time to find nothing (3.5 % of a
/// busy server's samples).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Debug)]
pub(crate) struct EndWatch(std::os::fd::OwnedFd);

#[cfg(any(target_os = "linux", target_os = "android"))]
impl EndWatch {
    pub(crate) fn new() -> io::Result<EndWatch> {
        Ok(EndWatch(rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)?))
    }

    /// The descriptor the server's poller watches: readable while an end is reported.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    /// Watches `socket`'s end under `key`. What came already is reported at once.
    pub(crate) fn add(&self, socket: &SockRef<'_>, key: usize) -> io::Result<()> {
        use rustix::event::epoll::{self, EventData, EventFlags};
        Ok(epoll::add(&self.0, &**socket, EventData::new_u64(key as u64), EventFlags::RDHUP | EventFlags::ET)?)
    }

    /// Stops watching `socket` (before it closes).
    pub(crate) fn delete(&self, socket: &SockRef<'_>) {
        let _ = rustix::event::epoll::delete(&self.0, &**socket);
    }

    /// Gives `each` the key of each connection whose end was reported since the last
    /// call, without waiting.
    pub(crate) fn drain(&self, mut each: impl FnMut(usize)) {
        use rustix::event::epoll;
        const BATCH: usize = 64;
        let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
        let mut events = Vec::with_capacity(BATCH);
        loop {
            events.clear();
            if epoll::wait(&self.0, rustix::buffer::spare_capacity(&mut events), Some(&zero)).is_err() {
                return;
            }
            events.iter().for_each(|event| each(event.data.u64() as usize));
            if events.len() < BATCH {
                return;
            }
        }
    }
}

/// Reads without waiting, leaving the socket blocking: `recv(2)` with `MSG_DONTWAIT`.
pub(crate) fn recv_nonblocking(socket: &SockRef<'_>, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::net::{recv, RecvFlags};
    loop {
        match recv(&**socket, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((read, _)) => return Ok(read),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes without waiting, leaving the socket blocking: `send(2)` with `MSG_DONTWAIT`,
/// and `MSG_NOSIGNAL` where there is one (elsewhere Rust programs ignore `SIGPIPE`).
pub(crate) fn send_nonblocking(socket: &SockRef<'_>, buf: &[u8]) -> io::Result<usize> {
    use rustix::net::{send, SendFlags};
    #[cfg(not(target_vendor = "apple"))]
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    #[cfg(target_vendor = "apple")]
    let flags = SendFlags::DONTWAIT;
    loop {
        match send(&**socket, buf, flags) {
            Ok(sent) => return Ok(sent),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `SO_REUSEADDR`: a restarted server binds while old connections sit in `TIME_WAIT`.
pub(crate) fn set_reuse_address(socket: &socket2::Socket, on: bool) -> io::Result<()> {
    socket.set_reuse_address(on)
}

/// `SO_REUSEPORT`: several sockets share the port and the kernel spreads connections.
pub(crate) fn set_reuse_port(socket: &socket2::Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

/// Linux resets connections to a listener shut down for reading, at once, even while
/// every serve loop is busy with a request; macOS and the BSDs answer `ENOTCONN` and go
/// on queueing, so there the socket refuses when it is closed.
pub(crate) fn refuse_new_connections(socket: SockRef<'_>) {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        // A datagram socket answers ENOTCONN, and then receives nothing more: also right.
        let _ = socket.shutdown(Shutdown::Read);
    }
}

/// `recvfrom` on a UDP socket, through rustix rather than std.
///
/// A receive on a socket someone else shut down returns no datagram and no sender. std's
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
    if let Some(class) = classify_kind(e) {
        return class;
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
    fn a_broken_socket_is_fatal_and_the_rest_is_retried_or_reported() {
        for errno in [Errno::BADF, Errno::INVAL, Errno::NOTSOCK, Errno::NOTCONN] {
            assert_eq!(classify_accept_error(&os(errno)), AcceptError::Fatal, "{errno:?}");
        }
        for errno in [Errno::INTR, Errno::CONNABORTED, Errno::AGAIN] {
            assert_eq!(classify_accept_error(&os(errno)), AcceptError::Retry, "{errno:?}");
        }
        assert_eq!(classify_accept_error(&os(Errno::PERM)), AcceptError::Other);
        assert!(is_wrong_socket_type(&os(Errno::PROTOTYPE)));
        assert!(!is_wrong_socket_type(&os(Errno::CONNREFUSED)));
    }
}
