//! UDP.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Protocol, Type};

use super::tcp::{first_bound, inet_socket};
use super::{sealed, Address, BindTarget, Bound, DatagramSocket, Endpoint, SocketOptions, Transport};
use crate::error::Result;
use crate::handler::DatagramRequest;

/// UDP, the transport of [`UdpServer`](crate::UdpServer).
#[derive(Debug, Clone, Copy)]
pub enum Udp {}

impl Transport for Udp {
    type Request = DatagramRequest;
}

impl sealed::Sealed for Udp {
    type Addr = SocketAddr;

    fn open(target: BindTarget, options: &SocketOptions) -> Result<Bound> {
        let endpoint = match target {
            BindTarget::Inet(addrs, text) => first_bound(addrs, &text, |a| bind(a, options))?,
            BindTarget::Existing(endpoint) => endpoint,
            BindTarget::Path(p) => unreachable!("UDP bound to path {}", p.display()),
        };
        Ok(Bound { endpoint, owned_path: None })
    }

    fn reopen(local: &Address, options: &SocketOptions) -> Result<Bound> {
        let addr = local.as_inet().expect("a UDP server has an IP address");
        Ok(Bound { endpoint: bind(addr, options)?, owned_path: None })
    }

    fn typed_addr(local: &Address) -> SocketAddr {
        local.as_inet().expect("a UDP server has an IP address")
    }
}

/// Binds a UDP socket. SO_REUSEADDR is off unless asked for: on UDP it would let a
/// second server bind the same port and silently split the traffic.
fn bind(addr: SocketAddr, options: &SocketOptions) -> Result<Endpoint> {
    let socket = inet_socket(addr, Type::DGRAM, Protocol::UDP, options, false)?;
    Ok(Endpoint::Datagram(Arc::new(DatagramSocket::Udp(socket.into()))))
}
