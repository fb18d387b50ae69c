use std::fmt;
use std::net::SocketAddr;
#[cfg(unix)]
use std::os::unix::net as unix;

/// The address of a client or a server: an IP socket address or a Unix socket address.
///
/// Displays as `127.0.0.1:5000`, `[::1]:5000`, a Unix path, or `(unnamed)` for a Unix
/// client socket that was never bound.
#[derive(Clone, Debug)]
pub enum Address {
    /// A TCP or UDP address.
    Inet(SocketAddr),
    /// A Unix-domain socket address. Unix only.
    #[cfg(unix)]
    #[cfg_attr(docsrs, doc(cfg(unix)))]
    Unix(unix::SocketAddr),
}

impl Address {
    /// The IP socket address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            #[cfg(unix)]
            Address::Unix(_) => None,
        }
    }

    /// The IP address, if this is an IP socket address: on a TCP or UDP server,
    /// `req.client_addr().ip()` is always `Some`.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.as_inet().map(|a| a.ip())
    }

    /// The port, if this is an IP socket address.
    pub fn port(&self) -> Option<u16> {
        self.as_inet().map(|a| a.port())
    }

    /// The filesystem path, if this is a Unix address bound to one (always `None` on
    /// Windows).
    pub fn as_pathname(&self) -> Option<&std::path::Path> {
        match self {
            Address::Inet(_) => None,
            #[cfg(unix)]
            Address::Unix(a) => a.as_pathname(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => a.fmt(f),
            #[cfg(unix)]
            Address::Unix(a) => match a.as_pathname() {
                Some(p) => p.display().fmt(f),
                None => f.write_str("(unnamed)"),
            },
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Inet(a)
    }
}
