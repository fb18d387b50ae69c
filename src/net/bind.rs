//! Creating and binding server sockets: options that must precede bind and listen
//! (through `socket2`), and errors that name the address.

use std::fmt;
#[cfg(unix)]
use std::fs;
use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use super::{DatagramSocket, Endpoint};
use crate::error::{Error, Result};
use crate::sys::{self, BorrowedSocket};

/// Socket options applied when the server socket is created, before bind and listen.
#[derive(Clone, Debug, Default)]
pub(crate) struct SocketOptions {
    pub(crate) backlog: i32,
    pub(crate) reuse_address: Option<bool>,
    pub(crate) reuse_port: bool,
    pub(crate) only_v6: Option<bool>,
    /// Permission bits for a Unix socket file.
    #[cfg(unix)]
    pub(crate) mode: Option<u32>,
    pub(crate) before_bind: Option<BeforeBind>,
}

/// The user's hook that runs on a new server socket before it is bound.
#[derive(Clone)]
pub(crate) struct BeforeBind(pub(crate) Arc<dyn Fn(BorrowedSocket<'_>) -> io::Result<()> + Send + Sync>);

impl fmt::Debug for BeforeBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BeforeBind")
    }
}

impl SocketOptions {
    /// Runs the `before_bind` hook, if any, on a socket about to be bound.
    pub(crate) fn before_bind(&self, socket: &Socket) -> io::Result<()> {
        match &self.before_bind {
            #[cfg(unix)]
            Some(hook) => (hook.0)(std::os::fd::AsFd::as_fd(socket)),
            #[cfg(windows)]
            Some(hook) => (hook.0)(std::os::windows::io::AsSocket::as_socket(socket)),
            None => Ok(()),
        }
    }
}

/// What a builder was asked to bind, kept so that the same address can be bound again.
#[derive(Debug)]
pub(crate) enum BindTarget {
    /// Addresses to try in order, and the text the user gave (for error messages).
    Inet(io::Result<Vec<SocketAddr>>, String),
    #[cfg(unix)]
    Path(PathBuf),
    /// A socket the user bound (and for streams, set listening) themselves.
    Existing(Endpoint),
}

/// A freshly bound server socket.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) endpoint: Endpoint,
    /// The Unix socket file this server created, to remove on close.
    pub(crate) owned_path: Option<OwnedPath>,
}

/// Attaches the address to an I/O error from binding, naming "in use" when it is.
pub(crate) fn bind_error(addr: impl fmt::Display, source: io::Error) -> Error {
    let addr = addr.to_string();
    if source.kind() == io::ErrorKind::AddrInUse {
        Error::AddrInUse { addr, source }
    } else {
        Error::Bind { addr, source }
    }
}

/// A listening TCP socket on `addr`.
pub(crate) fn listen_tcp(addr: SocketAddr, options: &SocketOptions) -> Result<Endpoint> {
    let socket = inet_socket(addr, Type::STREAM, Protocol::TCP, options, true)?;
    socket.listen(options.backlog).map_err(|e| bind_error(addr, e))?;
    Ok(Endpoint::Tcp(socket.into()))
}

/// A bound UDP socket on `addr`. SO_REUSEADDR is off unless asked for: on UDP it would
/// let a second server bind the same port and silently split the traffic.
pub(crate) fn bind_udp(addr: SocketAddr, options: &SocketOptions) -> Result<Endpoint> {
    let socket = inet_socket(addr, Type::DGRAM, Protocol::UDP, options, false)?;
    Ok(Endpoint::Datagram(Arc::new(DatagramSocket::Udp(socket.into()))))
}

/// Creates an IP socket, sets the options that must precede bind, and binds it. On any
/// error the socket is dropped here, so a failed bind leaks no descriptor.
fn inet_socket(
    addr: SocketAddr,
    ty: Type,
    protocol: Protocol,
    options: &SocketOptions,
    reuse_address_default: bool,
) -> Result<Socket> {
    let setup = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
        if addr.is_ipv6() {
            if let Some(only_v6) = options.only_v6 {
                socket.set_only_v6(only_v6)?;
            }
        }
        sys::set_reuse_address(&socket, options.reuse_address.unwrap_or(reuse_address_default))?;
        if options.reuse_port {
            sys::set_reuse_port(&socket)?;
        }
        options.before_bind(&socket)?;
        Ok(socket)
    };
    let socket = setup().map_err(|e| bind_error(addr, e))?;
    socket.bind(&addr.into()).map_err(|e| bind_error(addr, explain_bind_error(addr, e)))?;
    Ok(socket)
}

/// Adds what to do to the errors a student meets first.
fn explain_bind_error(addr: SocketAddr, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::PermissionDenied && addr.port() != 0 && addr.port() < 1024 {
        let hint = "ports below 1024 need root or the CAP_NET_BIND_SERVICE capability; use a port from 1024 up";
        return io::Error::new(e.kind(), format!("{e}; {hint}"));
    }
    e
}

/// Tries each resolved address in turn, as `std::net::TcpListener::bind` does, and
/// returns the first that binds or the last error.
pub(crate) fn first_bound(
    addrs: io::Result<Vec<SocketAddr>>,
    text: &str,
    mut bind: impl FnMut(SocketAddr) -> Result<Endpoint>,
) -> Result<Endpoint> {
    let addrs = addrs.map_err(|source| Error::Bind { addr: text.to_string(), source })?;
    let mut last = None;
    for addr in addrs {
        match bind(addr) {
            Ok(endpoint) => return Ok(endpoint),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Bind {
        addr: text.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing"),
    }))
}

/// The socket file a server created, recorded by device and inode so that closing the
/// server removes that file and never one that replaced it.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct OwnedPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

#[cfg(unix)]
impl OwnedPath {
    pub(super) fn record(path: &Path) -> Option<OwnedPath> {
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

/// No socket files on Windows.
#[cfg(windows)]
#[derive(Debug)]
pub(crate) enum OwnedPath {}

#[cfg(windows)]
impl OwnedPath {
    pub(crate) fn remove(&self) {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_privileged_port_denied_says_what_to_do() {
        let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
        let low = explain_bind_error("0.0.0.0:80".parse().unwrap(), denied());
        assert!(low.to_string().contains("ports below 1024 need root or the CAP_NET_BIND_SERVICE capability"), "{low}");
        assert_eq!(low.kind(), io::ErrorKind::PermissionDenied);
        let high = explain_bind_error("0.0.0.0:8080".parse().unwrap(), denied());
        assert!(!high.to_string().contains("1024"), "{high}");
    }
}
