//! A restart that refuses no client: the running program hands its listening sockets to
//! a new copy of itself, which accepts from them before the old one stops; the old one
//! then drains its connections and exits (Unix).
//!
//! The sockets are the same kernel sockets, shared by both programs for a moment: a
//! client that connects during the restart waits in their one accept queue, and
//! whichever program accepts it serves it. Nothing is closed and bound again, so no
//! connection is refused, as Perl's Net::Server does on `SIGHUP` and Cloudflare's
//! tableflip in Go. The sockets go over a Unix socket in a directory only this user can
//! enter (`SCM_RIGHTS`), so the new program needs no descriptor numbers and no `unsafe`.
//!
//! In the running program, on `SIGHUP` say, [`hand_over`] starts the new program and
//! returns once it holds the sockets; then shut this server down (it drains, within its
//! `shutdown_deadline`). In the new program, [`Inherited::receive`] at the start of
//! `main` gives the sockets, or `None` when it was started by hand; build the server
//! with `from_listener` (so that its shutdown leaves the shared socket open), then
//! [`Inherited::ready`]. The `restart` example does all of it:
//!
//! ```sh
//! cargo run --example restart -- --addr 127.0.0.1:9000 &
//! echo hi | nc -N 127.0.0.1 9000        # pid 1234: hi
//! kill -HUP %1                          # a new process serves; the old one drains and exits
//! echo hi | nc -N 127.0.0.1 9000        # pid 1240: hi
//! ```
//!
//! and `tests/restart.rs` drives clients through three restarts without a refused,
//! reset or unanswered request.
//!
//! # Platform-specific behavior
//!
//! Unix only. Windows can hand a socket to another process (`WSADuplicateSocket`), but
//! std cannot build a listener from what it gives, and the crate has no `unsafe` for it.
//!
//! Under systemd, a restart through systemd itself (`systemctl restart`, or after a
//! crash) closes the program's sockets, unless systemd holds them too: sockets of a
//! `.socket` unit, or sockets the program put in systemd's file descriptor store with
//! [`store_in_systemd`] (Linux). The next program then takes them with
//! [`activation::ListenFds`](crate::activation::ListenFds), and refuses no client
//! either.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage};

/// The environment variable that tells the new program where to receive its sockets.
pub const HANDOFF_VAR: &str = "SOCKETSERVER_HANDOFF";

/// At most this many sockets go over in one hand-over.
pub const MAX_SOCKETS: usize = 16;

/// How long the new program waits for the sockets once it has reached the old one.
const RECEIVE_WITHIN: Duration = Duration::from_secs(10);

/// What the new program writes once it serves.
const READY: &[u8] = b"ready\n";

/// Starts `command`, the new program, and hands it `sockets`, each under a name; returns
/// once it has said it serves ([`Inherited::ready`]), at most `within` after the start.
/// Then shut this server down: the new program accepts already.
///
/// The sockets stay open here too, and this program goes on accepting until it shuts
/// down: both accept from the same queue for that moment.
///
/// # Errors
///
/// `InvalidInput` for more than [`MAX_SOCKETS`] sockets or a name longer than 255 bytes
/// or with a newline;
/// `TimedOut` if the new program did not say ready within `within` (it is killed), an
/// error naming how it ended if it exited first, and the errors of starting it. This
/// program's sockets are untouched by any error: it goes on serving.
pub fn hand_over(mut command: Command, sockets: &[(&str, BorrowedFd<'_>)], within: Duration) -> io::Result<Child> {
    if sockets.len() > MAX_SOCKETS || sockets.iter().any(|(name, _)| name.contains('\n') || name.len() > 255) {
        let message = format!("at most {MAX_SOCKETS} sockets, named in at most 255 bytes without a newline");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    let deadline = Instant::now() + within;
    let place = Place::new()?;
    let listener = UnixListener::bind(place.socket())?;
    listener.set_nonblocking(true)?;
    // This process's id first: only its own child takes the hand-over, not a program
    // that child starts in turn (which inherits the variable).
    let mut value = OsString::from(format!("{}:", std::process::id()));
    value.push(place.socket());
    command.env(HANDOFF_VAR, value);
    let mut child = command.spawn()?;
    let result = (|| {
        let mut channel = accept_within(&listener, &mut child, deadline)?;
        let names: String = sockets.iter().map(|(name, _)| format!("{name}\n")).collect();
        let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|(_, fd)| *fd).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("the sockets do not fit in one message"));
        }
        let header = format!("{}\n{names}", fds.len());
        let flags = rustix::net::SendFlags::empty();
        if rustix::net::sendmsg(&channel, &[IoSlice::new(header.as_bytes())], &mut control, flags).is_err() {
            return Err(ended(&mut child)); // it went away: say how
        }
        // Its answer, within what is left of `within`.
        channel.set_read_timeout(Some(left(deadline)?))?;
        let mut answer = [0; READY.len()];
        match channel.read_exact(&mut answer) {
            Ok(()) if answer == *READY => Ok(()),
            Ok(()) => Err(io::Error::other("the new program answered something other than ready")),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Err(timed_out()),
            Err(_) => Err(ended(&mut child)),
        }
    })();
    match result {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// The command that runs this program again with the same arguments: for
/// [`hand_over`].
///
/// The program is found by the path it was started with (`argv[0]`, against the
/// current directory if relative), so that a new version installed at that path, or a
/// `current` symlink switched to a new release, is what starts. Started through `PATH`
/// (no `/` in `argv[0]`), it is the running executable
/// ([`std::env::current_exe`], whose `" (deleted)"` mark, once the file was replaced,
/// is dropped to name the new file at the same path). To start something else, give
/// [`hand_over`] a `Command` of your own.
///
/// # Errors
///
/// [`std::env::current_exe`]'s and [`std::env::current_dir`]'s.
pub fn this_program() -> io::Result<Command> {
    let mut args = std::env::args_os();
    let started_as = args.next().map(PathBuf::from).filter(|path| path.as_os_str().as_encoded_bytes().contains(&b'/'));
    let program = match started_as {
        Some(path) if path.is_absolute() => path,
        Some(path) => std::env::current_dir()?.join(path),
        None => {
            let exe = std::env::current_exe()?;
            match exe.to_str().and_then(|text| text.strip_suffix(" (deleted)")) {
                Some(replaced) => PathBuf::from(replaced),
                None => exe,
            }
        }
    };
    let mut command = Command::new(program);
    command.args(args.collect::<Vec<OsString>>());
    Ok(command)
}

/// Where systemd runs this program (`NOTIFY_SOCKET` is set): keeps `sockets` in
/// systemd's file descriptor store, each under its name, so that a restart through
/// systemd (`systemctl restart`, a crash) gives them back to the next program, which
/// takes them with [`ListenFds::take`](crate::activation::ListenFds::take) by name; the
/// sockets stay open between the two, so clients wait instead of being refused. The
/// service needs `FileDescriptorStoreMax=` (the number of sockets, or more) in its
/// unit. `Ok(false)` without `NOTIFY_SOCKET`: not under systemd, nothing done.
///
/// Linux only.
///
/// # Errors
///
/// `InvalidInput` for a name systemd does not take (empty, longer than 255 bytes, with a
/// `:` or a character that is not printable ASCII); the errors of sending.
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub fn store_in_systemd(sockets: &[(&str, BorrowedFd<'_>)]) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(notify_socket) => notify_fd_store(&notify_socket, sockets).map(|()| true),
        None => Ok(false),
    }
}

/// Sends each of `sockets` to the service manager's notification socket at
/// `notify_socket` (a path, or `@name` for an abstract socket) as systemd's
/// `sd_pid_notify_with_fds` does: `FDSTORE=1` and `FDNAME=` with the descriptor.
/// [`store_in_systemd`] with the socket given rather than read from `NOTIFY_SOCKET`.
///
/// Linux only.
///
/// # Errors
///
/// As [`store_in_systemd`].
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub fn notify_fd_store(notify_socket: &std::ffi::OsStr, sockets: &[(&str, BorrowedFd<'_>)]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    for (name, _) in sockets {
        let valid = !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !valid {
            let message = format!("systemd does not take {name:?} as a descriptor name");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
    }
    let bytes = notify_socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => rustix::net::SocketAddrUnix::new_abstract_name(name)?,
        None => rustix::net::SocketAddrUnix::new(bytes)?,
    };
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    for (name, fd) in sockets {
        let state = format!("FDSTORE=1\nFDNAME={name}\n");
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [*fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
        rustix::net::sendmsg_addr(
            &socket,
            &addr,
            &[IoSlice::new(state.as_bytes())],
            &mut control,
            rustix::net::SendFlags::empty(),
        )?;
    }
    Ok(())
}

/// The sockets the old program handed over, in the new one.
pub struct Inherited {
    fds: Vec<Option<OwnedFd>>,
    names: Vec<String>,
    channel: UnixStream,
}

impl fmt::Debug for Inherited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inherited").field("names", &self.names).finish_non_exhaustive()
    }
}

impl Inherited {
    /// Receives the sockets, when this program was started by [`hand_over`] (its
    /// environment names where from); `None` otherwise. Call it at the start of `main`.
    ///
    /// # Errors
    ///
    /// The old program could not be reached, or sent what is not a hand-over.
    pub fn receive() -> io::Result<Option<Inherited>> {
        use std::os::unix::ffi::OsStrExt;
        let Some(value) = std::env::var_os(HANDOFF_VAR) else { return Ok(None) };
        let bytes = value.as_bytes();
        let at = bytes.iter().position(|&b| b == b':');
        let (pid, place) = match at {
            Some(at) => (std::str::from_utf8(&bytes[..at]).ok().and_then(|p| p.parse::<u32>().ok()), &bytes[at + 1..]),
            None => (None, bytes),
        };
        let Some(pid) = pid else {
            let message = format!("{HANDOFF_VAR}={value:?} is not PID:PATH");
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        };
        if std::os::unix::process::parent_id() != pid {
            return Ok(None); // for a program started by the process that handed over
        }
        let place = std::path::Path::new(std::ffi::OsStr::from_bytes(place));
        let channel = UnixStream::connect(place)
            .map_err(|e| io::Error::new(e.kind(), format!("reaching the old program at {}: {e}", place.display())))?;
        channel.set_read_timeout(Some(RECEIVE_WITHIN))?;
        let mut bytes = vec![0; 64 * 1024];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        let flags = RecvFlags::CMSG_CLOEXEC;
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        let flags = RecvFlags::empty();
        let received = rustix::net::recvmsg(&channel, &mut [IoSliceMut::new(&mut bytes)], &mut control, flags)
            .map_err(io::Error::from)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the old program sent no sockets within {RECEIVE_WITHIN:?}"),
                ),
                _ => e,
            })?;
        let cut = rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC;
        if received.flags.intersects(cut) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a hand-over longer than this program takes"));
        }
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = message {
                fds.extend(passed);
            }
        }
        for fd in &fds {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
        }
        let text = String::from_utf8_lossy(&bytes[..received.bytes]);
        let mut lines = text.lines();
        let count: Option<usize> = lines.next().and_then(|n| n.parse().ok());
        let names: Vec<String> = lines.map(str::to_string).collect();
        if count != Some(fds.len()) || names.len() != fds.len() {
            let message = format!("a hand-over names {} socket(s) and passes {}", names.len(), fds.len());
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        Ok(Some(Inherited { fds: fds.into_iter().map(Some).collect(), names, channel }))
    }

    /// The names of the sockets, in the order they were handed over.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Takes the socket named `name` as a TCP listener; `None` if there is none by that
    /// name or it was taken. The socket is whatever the old program passed: a TCP
    /// listener if it is the same program.
    pub fn take_tcp_listener(&mut self, name: &str) -> Option<TcpListener> {
        self.take(name).map(TcpListener::from)
    }

    /// Takes the socket named `name` as a UDP socket.
    pub fn take_udp_socket(&mut self, name: &str) -> Option<UdpSocket> {
        self.take(name).map(UdpSocket::from)
    }

    /// Takes the socket named `name` as a Unix listener.
    pub fn take_unix_listener(&mut self, name: &str) -> Option<UnixListener> {
        self.take(name).map(UnixListener::from)
    }

    fn take(&mut self, name: &str) -> Option<OwnedFd> {
        let at = self.names.iter().position(|n| n == name)?;
        self.fds[at].take()
    }

    /// Tells the old program that this one serves (its server is built on the sockets):
    /// the old one then stops accepting and drains. The sockets not taken are closed.
    ///
    /// # Errors
    ///
    /// The old program is gone (it gave up waiting, or was stopped).
    pub fn ready(mut self) -> io::Result<()> {
        self.channel.write_all(READY)
    }
}

/// A directory of this user's alone, for the hand-over's Unix socket; removed on drop.
struct Place(PathBuf);

impl Place {
    fn new() -> io::Result<Place> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let name = format!(
            "socketserver-handoff-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            stamp.subsec_nanos()
        );
        // A Unix socket's path has room for about 100 bytes: under a long TMPDIR, /tmp.
        let mut base = std::env::temp_dir();
        if base.as_os_str().len() + name.len() + 3 > 100 {
            base = PathBuf::from("/tmp");
        }
        let dir = base.join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Place(dir))
    }

    fn socket(&self) -> PathBuf {
        self.0.join("s")
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The new program's connection: the listener does not block, and is looked at every
/// 20 ms until `deadline` or until the program exits (a wait of a restart, not of a
/// server at rest). On Linux, a connection from any other process than `child` is
/// closed unanswered (`SO_PEERCRED`): a stranger of the same user that found the
/// directory does not get the sockets.
fn accept_within(listener: &UnixListener, child: &mut Child, deadline: Instant) -> io::Result<UnixStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                if rustix::net::sockopt::socket_peercred(&stream)
                    .is_ok_and(|peer| peer.pid.as_raw_nonzero().get() as u32 != child.id())
                {
                    continue; // not the new program
                }
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(ended(child));
        }
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "the new program did not say ready in time"));
    }
    Ok(left)
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the new program did not say ready in time (it was stopped)")
}

/// How the new program ended, as an error; or that it let go of the hand-over.
fn ended(child: &mut Child) -> io::Error {
    match child.try_wait() {
        Ok(Some(status)) => io::Error::other(format!("the new program ended before it was ready: {status}")),
        Ok(None) => io::Error::other("the new program closed the hand-over without saying ready"),
        Err(e) => e,
    }
}
