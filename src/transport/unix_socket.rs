//! Unix-domain sockets: stream and datagram, and the socket file they leave behind.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net as unix;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use socket2::{Domain, SockAddr, Socket, Type};

use super::{bind_error, sealed, Address, BindTarget, Bound, DatagramSocket, Endpoint, SocketOptions, Transport};
use crate::error::{Error, Result};
use crate::handler::{DatagramRequest, StreamRequest};

/// Unix stream sockets, the transport of [`UnixStreamServer`](crate::UnixStreamServer).
#[derive(Debug, Clone, Copy)]
pub enum UnixStream {}

/// Unix datagram sockets, the transport of
/// [`UnixDatagramServer`](crate::UnixDatagramServer).
#[derive(Debug, Clone, Copy)]
pub enum UnixDatagram {}

impl Transport for UnixStream {
    type Request = StreamRequest;
}

impl Transport for UnixDatagram {
    type Request = DatagramRequest;
}

impl sealed::Sealed for UnixStream {
    type Addr = PathBuf;

    fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound> {
        match target {
            BindTarget::Path(path) => bind_path(&path, Type::STREAM, options),
            BindTarget::Existing(endpoint) => Ok(Bound { endpoint, owned_path: None }),
            BindTarget::Inet(_, text) => unreachable!("Unix server bound to {text}"),
        }
    }

    fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound> {
        bind_path(&socket_path(local)?, Type::STREAM, options)
    }

    fn typed_addr(local: &Address) -> PathBuf {
        local.as_pathname().map(Path::to_path_buf).unwrap_or_default()
    }
}

impl sealed::Sealed for UnixDatagram {
    type Addr = PathBuf;

    fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound> {
        match target {
            BindTarget::Path(path) => bind_path(&path, Type::DGRAM, options),
            BindTarget::Existing(endpoint) => Ok(Bound { endpoint, owned_path: None }),
            BindTarget::Inet(_, text) => unreachable!("Unix server bound to {text}"),
        }
    }

    fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound> {
        bind_path(&socket_path(local)?, Type::DGRAM, options)
    }

    fn typed_addr(local: &Address) -> PathBuf {
        local.as_pathname().map(Path::to_path_buf).unwrap_or_default()
    }
}

fn socket_path(local: &Address) -> Result<PathBuf> {
    local.as_pathname().map(Path::to_path_buf).ok_or_else(|| Error::Bind {
        addr: local.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the socket has no path to bind again"),
    })
}

/// Binds a Unix socket at `path`, first clearing a stale socket file left by a server
/// that died. Anything else at the path is left alone and reported.
fn bind_path(path: &Path, ty: Type, options: &SocketOptions) -> Result<Bound> {
    let shown = path.display();
    // sun_path holds 108 bytes, the terminating NUL included.
    const MAX_PATH: usize = 107;
    let length = path.as_os_str().len();
    if length > MAX_PATH {
        let message = format!(
            "a Unix socket path may be at most {MAX_PATH} bytes and this one is {length}; \
             use a shorter path, or a relative one from a nearby working directory"
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
    let endpoint = if ty == Type::STREAM {
        Endpoint::UnixStream(unix::UnixListener::from(std::os::fd::OwnedFd::from(socket)))
    } else {
        Endpoint::Datagram(Arc::new(DatagramSocket::Unix(unix::UnixDatagram::from(std::os::fd::OwnedFd::from(socket)))))
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
    const EPROTOTYPE: i32 = 91;
    let addr = SockAddr::unix(path)?;
    let connect = |ty: Type| -> io::Result<()> {
        let socket = Socket::new(Domain::UNIX, ty, None)?;
        socket.set_nonblocking(true)?;
        socket.connect(&addr)
    };
    match connect(Type::STREAM) {
        Err(e) if e.raw_os_error() == Some(EPROTOTYPE) => connect(Type::DGRAM),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}

/// The socket file a server created, recorded by device and inode so that closing the
/// server removes that file and never one that replaced it.
#[derive(Debug)]
pub(crate) struct OwnedPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl OwnedPath {
    fn record(path: &Path) -> Option<OwnedPath> {
        let meta = fs::symlink_metadata(path).ok()?;
        Some(OwnedPath { path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() })
    }

    /// Removes the socket file if it is still the one this server created.
    pub(crate) fn remove(&self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}
