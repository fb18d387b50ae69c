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
use std::net::{self, SocketAddr, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net as unix;
#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(unix)]
use socket2::Type;

#[cfg(unix)]
use crate::error::Error;
use crate::error::Result;
use crate::handler::sealed::RequestKind;
#[cfg(unix)]
use crate::net::bind_path;
use crate::net::{bind_udp, first_bound, listen_tcp, BindTarget, Bound, Endpoint, SocketOptions};
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
        /// The socket of a server built with `from_listener` or `from_socket`.
        fn existing(socket: <Self as super::Transport>::Socket) -> Endpoint
        where
            Self: super::Transport;
    }

    /// How an address or a path given to `bind` becomes what the transport binds.
    pub trait Target<T> {
        fn target(self) -> BindTarget;
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
    /// The std socket a server of this transport serves, for
    /// [`from_listener`](crate::Server::from_listener) and
    /// [`from_socket`](crate::Server::from_socket): `TcpListener`, `UdpSocket`,
    /// `UnixListener` or `UnixDatagram`.
    type Socket;
}

/// What a server of transport `T` binds to: for [`Tcp`] and [`Udp`], anything
/// [`ToSocketAddrs`] takes (`"127.0.0.1:0"`, a `SocketAddr`, `("::1", 0)`); for
/// [`UnixStream`] and [`UnixDatagram`], a path (anything `AsRef<Path>`).
///
/// Sealed: implemented for those types, so that [`Server::bind`](crate::Server::bind)
/// and [`Server::builder`](crate::Server::builder) are written once for the four
/// transports. Anything else does not compile, with a message that says what each
/// transport binds to:
///
/// ```compile_fail
/// // error: a `Udp` server cannot bind to `&Path`
/// let server = socketserver::UdpServer::bind(std::path::Path::new("/tmp/echo.sock"), |_| Ok(()));
/// ```
#[diagnostic::on_unimplemented(
    message = "a `{T}` server cannot bind to `{Self}`",
    note = "TCP and UDP servers bind to what `ToSocketAddrs` takes (\"127.0.0.1:0\", a `SocketAddr`); Unix servers to a path"
)]
pub trait BindAddress<T: Transport>: sealed::Target<T> {}

impl<T: Transport, A: sealed::Target<T>> BindAddress<T> for A {}

impl<A: ToSocketAddrs + fmt::Debug> sealed::Target<Tcp> for A {
    fn target(self) -> BindTarget {
        inet_target(self)
    }
}

impl<A: ToSocketAddrs + fmt::Debug> sealed::Target<Udp> for A {
    fn target(self) -> BindTarget {
        inet_target(self)
    }
}

#[cfg(unix)]
impl<P: AsRef<Path>> sealed::Target<UnixStream> for P {
    fn target(self) -> BindTarget {
        BindTarget::Path(PathBuf::from(self.as_ref()))
    }
}

#[cfg(unix)]
impl<P: AsRef<Path>> sealed::Target<UnixDatagram> for P {
    fn target(self) -> BindTarget {
        BindTarget::Path(PathBuf::from(self.as_ref()))
    }
}

/// The addresses to try, and the text the user gave for error messages: `"127.0.0.1:80"`
/// without the quotes.
fn inet_target<A: ToSocketAddrs + fmt::Debug>(addr: A) -> BindTarget {
    let text = format!("{addr:?}").trim_matches('"').to_string();
    BindTarget::Inet(addr.to_socket_addrs().map(Iterator::collect), text)
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
    type Socket = net::TcpListener;
}
impl Transport for Udp {
    type Request = DatagramRequest;
    type Socket = net::UdpSocket;
}
#[cfg(unix)]
impl Transport for UnixStream {
    type Request = StreamRequest;
    type Socket = unix::UnixListener;
}
#[cfg(unix)]
impl Transport for UnixDatagram {
    type Request = DatagramRequest;
    type Socket = unix::UnixDatagram;
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

    fn existing(listener: net::TcpListener) -> Endpoint {
        Endpoint::Tcp(listener)
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

    fn existing(socket: net::UdpSocket) -> Endpoint {
        Endpoint::Datagram(Arc::new(DatagramSocket::Udp(socket)))
    }
}

/// The two Unix transports differ only in the socket type.
#[cfg(unix)]
macro_rules! unix_transport {
    ($transport:ty, $ty:expr, $existing:expr) => {
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

            fn existing(socket: <$transport as Transport>::Socket) -> Endpoint {
                $existing(socket)
            }
        }
    };
}

#[cfg(unix)]
unix_transport!(UnixStream, Type::STREAM, Endpoint::UnixStream);
#[cfg(unix)]
unix_transport!(UnixDatagram, Type::DGRAM, |socket| Endpoint::Datagram(Arc::new(DatagramSocket::Unix(socket))));
