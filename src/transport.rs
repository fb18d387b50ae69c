//! Transports: where requests come from.
//!
//! Four transports share one serve loop. Each is a marker type ([`Tcp`], [`Udp`],
//! [`UnixStream`], [`UnixDatagram`]) that only knows how to bind its socket; what the
//! socket produces is one of two kinds, a stream connection ([`Connection`]) or a
//! datagram ([`DatagramSocket`]), and everything after that is transport-independent.
//! Stream transports hand a [`StreamRequest`] to the handler, datagram transports a
//! [`DatagramRequest`], so one handler serves TCP and Unix streams alike.

use std::fmt;
#[cfg(unix)]
use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::{Path, PathBuf};

#[cfg(unix)]
use socket2::Type;

#[cfg(unix)]
use crate::error::Error;
use crate::error::Result;
use crate::handler::sealed::RequestKind;
#[cfg(unix)]
use crate::net::bind_path;
use crate::net::{bind_udp, first_bound, listen_tcp, BindTarget, Bound, SocketOptions};
#[doc(no_inline)]
pub use crate::net::{Address, Connection, DatagramSocket};
use crate::request::{DatagramRequest, StreamRequest};

pub(crate) mod sealed {
    use super::*;

    /// The transport-specific half of [`Transport`]: binding, and the address type.
    /// Sealed: the serve loop relies on the four endpoints it knows.
    pub trait Sealed {
        /// The address type `local_addr` returns.
        type Addr: Clone + fmt::Debug + Send + Sync + 'static;
        /// Binds `target` with `options`.
        fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound>;
        /// Binds again the address an earlier `open` reported as `local`.
        fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound>;
        /// Converts the bound address to [`Sealed::Addr`].
        fn typed_addr(local: &Address) -> Self::Addr;
    }
}

/// A kind of socket a server can listen on: [`Tcp`], [`Udp`], [`UnixStream`] or
/// [`UnixDatagram`].
///
/// This trait is sealed; it exists so that [`Server`](crate::Server) can be written
/// once for all four (`TcpServer` is `Server<Tcp>`).
pub trait Transport: sealed::Sealed + Send + Sync + Sized + 'static {
    /// The request type handlers of this transport receive:
    /// [`StreamRequest`] or [`DatagramRequest`].
    type Request: RequestKind;
}

/// Transports over IP: [`Tcp`] and [`Udp`].
pub trait InetTransport: Transport {}

/// TCP, the transport of [`TcpServer`](crate::TcpServer).
#[derive(Debug, Clone, Copy)]
pub enum Tcp {}

/// UDP, the transport of [`UdpServer`](crate::UdpServer).
#[derive(Debug, Clone, Copy)]
pub enum Udp {}

/// Unix stream sockets, the transport of [`UnixStreamServer`](crate::UnixStreamServer).
/// Unix only.
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
#[derive(Debug, Clone, Copy)]
pub enum UnixStream {}

/// Unix datagram sockets, the transport of
/// [`UnixDatagramServer`](crate::UnixDatagramServer). Unix only.
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
#[derive(Debug, Clone, Copy)]
pub enum UnixDatagram {}

impl Transport for Tcp {
    type Request = StreamRequest;
}
impl Transport for Udp {
    type Request = DatagramRequest;
}
#[cfg(unix)]
impl Transport for UnixStream {
    type Request = StreamRequest;
}
#[cfg(unix)]
impl Transport for UnixDatagram {
    type Request = DatagramRequest;
}
impl InetTransport for Tcp {}
impl InetTransport for Udp {}

fn inet(local: &Address) -> SocketAddr {
    local.as_inet().expect("an IP server has an IP address")
}

#[cfg(unix)]
fn unix_path(local: &Address) -> PathBuf {
    local.as_pathname().map(Path::to_path_buf).unwrap_or_default()
}

/// The path to bind again, or an error for a socket that has none.
#[cfg(unix)]
fn socket_path(local: &Address) -> Result<PathBuf> {
    local.as_pathname().map(Path::to_path_buf).ok_or_else(|| Error::Bind {
        addr: local.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the socket has no path to bind again"),
    })
}

impl sealed::Sealed for Tcp {
    type Addr = SocketAddr;

    fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound> {
        let endpoint = match target {
            BindTarget::Inet(addrs, text) => first_bound(addrs, &text, |a| listen_tcp(a, options))?,
            BindTarget::Existing(endpoint) => endpoint,
            #[cfg(unix)]
            BindTarget::Path(p) => unreachable!("TCP bound to path {}", p.display()),
        };
        Ok(Bound { endpoint, owned_path: None })
    }

    fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound> {
        Ok(Bound { endpoint: listen_tcp(inet(local), options)?, owned_path: None })
    }

    fn typed_addr(local: &Address) -> SocketAddr {
        inet(local)
    }
}

impl sealed::Sealed for Udp {
    type Addr = SocketAddr;

    fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound> {
        let endpoint = match target {
            BindTarget::Inet(addrs, text) => first_bound(addrs, &text, |a| bind_udp(a, options))?,
            BindTarget::Existing(endpoint) => endpoint,
            #[cfg(unix)]
            BindTarget::Path(p) => unreachable!("UDP bound to path {}", p.display()),
        };
        Ok(Bound { endpoint, owned_path: None })
    }

    fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound> {
        Ok(Bound { endpoint: bind_udp(inet(local), options)?, owned_path: None })
    }

    fn typed_addr(local: &Address) -> SocketAddr {
        inet(local)
    }
}

/// The two Unix transports differ only in the socket type.
#[cfg(unix)]
macro_rules! unix_transport {
    ($transport:ty, $ty:expr) => {
        impl sealed::Sealed for $transport {
            type Addr = PathBuf;

            fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound> {
                match target {
                    BindTarget::Path(path) => bind_path(&path, $ty, options),
                    BindTarget::Existing(endpoint) => Ok(Bound { endpoint, owned_path: None }),
                    BindTarget::Inet(_, text) => unreachable!("Unix server bound to {text}"),
                }
            }

            fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound> {
                bind_path(&socket_path(local)?, $ty, options)
            }

            fn typed_addr(local: &Address) -> PathBuf {
                unix_path(local)
            }
        }
    };
}

#[cfg(unix)]
unix_transport!(UnixStream, Type::STREAM);
#[cfg(unix)]
unix_transport!(UnixDatagram, Type::DGRAM);
