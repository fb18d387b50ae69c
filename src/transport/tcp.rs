//! TCP: `socket2` for the options that must precede bind and listen.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::{bind_error, sealed, Address, BindTarget, Bound, Endpoint, SocketOptions, Transport};
use crate::error::{Error, Result};
use crate::handler::StreamRequest;

/// TCP, the transport of [`TcpServer`](crate::TcpServer).
#[derive(Debug, Clone, Copy)]
pub enum Tcp {}

impl Transport for Tcp {
    type Request = StreamRequest;
}

impl sealed::Sealed for Tcp {
    type Addr = SocketAddr;

    fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound> {
        let endpoint = match target {
            BindTarget::Inet(addrs, text) => first_bound(addrs, &text, |a| listen(a, options))?,
            BindTarget::Existing(endpoint) => endpoint,
            BindTarget::Path(p) => unreachable!("TCP bound to path {}", p.display()),
        };
        Ok(Bound { endpoint, owned_path: None })
    }

    fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound> {
        let addr = local.as_inet().expect("a TCP server has an IP address");
        Ok(Bound { endpoint: listen(addr, options)?, owned_path: None })
    }

    fn typed_addr(local: &Address) -> SocketAddr {
        local.as_inet().expect("a TCP server has an IP address")
    }
}

fn listen(addr: SocketAddr, options: &SocketOptions) -> Result<Endpoint> {
    let socket = inet_socket(addr, Type::STREAM, Protocol::TCP, options, true)?;
    socket.listen(options.backlog).map_err(|e| bind_error(addr, e))?;
    Ok(Endpoint::Tcp(socket.into()))
}

/// Creates an IP socket, sets the options that must precede bind, and binds it. On any
/// error the socket is dropped here, so a failed bind leaks no descriptor.
pub(super) fn inet_socket(
    addr: SocketAddr,
    ty: Type,
    protocol: Protocol,
    options: &SocketOptions,
    reuse_address_default: bool,
) -> Result<Socket> {
    let setup = || -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
        if addr.is_ipv6() {
            if let Some(only_v6) = options.only_v6 {
                socket.set_only_v6(only_v6)?;
            }
        }
        socket.set_reuse_address(options.reuse_address.unwrap_or(reuse_address_default))?;
        if options.reuse_port {
            socket.set_reuse_port(true)?;
        }
        options.before_bind(&socket)?;
        Ok(socket)
    };
    let socket = setup().map_err(|e| bind_error(addr, e))?;
    socket.bind(&addr.into()).map_err(|e| bind_error(addr, explain_bind_error(addr, e)))?;
    Ok(socket)
}

/// Adds what to do to the errors a student meets first.
fn explain_bind_error(addr: SocketAddr, e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() != 0 && addr.port() < 1024 {
        let hint = "ports below 1024 need root or the CAP_NET_BIND_SERVICE capability; use a port from 1024 up";
        return std::io::Error::new(e.kind(), format!("{e}; {hint}"));
    }
    e
}

/// Tries each resolved address in turn, as `std::net::TcpListener::bind` does, and
/// returns the first that binds or the last error.
pub(super) fn first_bound(
    addrs: std::io::Result<Vec<SocketAddr>>,
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
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "address resolved to nothing"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_privileged_port_denied_says_what_to_do() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let low = explain_bind_error("0.0.0.0:80".parse().unwrap(), denied());
        assert!(low.to_string().contains("ports below 1024 need root or the CAP_NET_BIND_SERVICE capability"), "{low}");
        assert_eq!(low.kind(), std::io::ErrorKind::PermissionDenied);
        let high = explain_bind_error("0.0.0.0:8080".parse().unwrap(), denied());
        assert!(!high.to_string().contains("1024"), "{high}");
    }
}
