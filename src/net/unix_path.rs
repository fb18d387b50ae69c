//! Unix-domain server sockets and the socket file they leave behind.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net as unix;
use std::path::Path;
use std::sync::Arc;

use socket2::{Domain, SockAddr, Socket, Type};

use super::bind::{bind_error, Bound, OwnedPath, SocketOptions};
use super::{DatagramSocket, Endpoint};
use crate::error::{Error, Result};
use crate::sys;

/// Binds a Unix socket at `path` (listening, for `Type::STREAM`), first clearing a stale
/// socket file left by a server that died. Anything else at the path is left alone and
/// reported.
pub(crate) fn bind_path(path: &Path, ty: Type, options: &SocketOptions) -> Result<Bound> {
    let shown = path.display();
    let length = path.as_os_str().len();
    if length > sys::MAX_UNIX_PATH {
        let message = format!(
            "a Unix socket path may be at most {} bytes and this one is {length}; \
             use a shorter path, or a relative one from a nearby working directory",
            sys::MAX_UNIX_PATH
        );
        return Err(Error::Bind {
            addr: shown.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, message),
        });
    }
    clear_stale(path)?;
    let socket = Socket::new(Domain::UNIX, ty, None).map_err(|e| bind_error(&shown, e))?;
    options.before_bind(&socket).map_err(|e| bind_error(&shown, e))?;
    let addr = SockAddr::unix(path).map_err(|e| bind_error(&shown, e))?;
    socket.bind(&addr).map_err(|e| bind_error(&shown, e))?;
    // From here on the file is ours: remove it if anything else fails. The permission
    // bits are set before listening, so no client connects under the default ones.
    let owned_path = OwnedPath::record(path);
    let finish = || -> io::Result<()> {
        if let Some(mode) = options.mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
        if ty == Type::STREAM {
            socket.listen(options.backlog)?;
        }
        Ok(())
    };
    if let Err(e) = finish() {
        if let Some(owned) = owned_path {
            owned.remove();
        }
        return Err(bind_error(&shown, e));
    }
    let fd = OwnedFd::from(socket);
    let endpoint = if ty == Type::STREAM {
        Endpoint::UnixStream(unix::UnixListener::from(fd))
    } else {
        Endpoint::Datagram(Arc::new(DatagramSocket::Unix(unix::UnixDatagram::from(fd))))
    };
    Ok(Bound { endpoint, owned_path })
}

/// Removes `path` only if it is a socket file that no live server answers on.
///
/// A live socket is [`Error::AddrInUse`]; a regular file, a directory or anything else
/// is [`Error::Bind`] naming it, and is never deleted.
fn clear_stale(path: &Path) -> Result<()> {
    let shown = path.display();
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bind_error(&shown, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Bind {
            addr: shown.to_string(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; refusing to replace it",
            ),
        });
    }
    match probe(path) {
        Ok(()) => Err(Error::AddrInUse {
            addr: shown.to_string(),
            source: io::Error::new(io::ErrorKind::AddrInUse, "a live server answers at this path"),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Another process may have replaced the stale file since the probe; remove
            // only the file that was probed.
            match fs::symlink_metadata(path) {
                Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {
                    fs::remove_file(path).map_err(|e| bind_error(&shown, e))
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(bind_error(&shown, e)),
    }
}

/// Connects to the socket at `path` to learn whether a server is behind it. A stream
/// connect to a datagram socket fails with `EPROTOTYPE`, so that case tries again as a
/// datagram.
///
/// The connect is non-blocking: Linux makes a blocking connect wait while a live
/// listener's queue is full, and a full queue means "live" (`EAGAIN`). The price of
/// asking by connecting is that a live stream server sees one empty connection.
fn probe(path: &Path) -> io::Result<()> {
    let addr = SockAddr::unix(path)?;
    let connect = |ty: Type| -> io::Result<()> {
        let socket = Socket::new(Domain::UNIX, ty, None)?;
        socket.set_nonblocking(true)?;
        socket.connect(&addr)
    };
    match connect(Type::STREAM) {
        Err(e) if sys::is_wrong_socket_type(&e) => connect(Type::DGRAM),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}
