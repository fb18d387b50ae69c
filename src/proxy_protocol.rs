//! The PROXY protocol (v1 and v2): the client's address, sent by a proxy in front.
//!
//! A TCP proxy (haproxy with `send-proxy` or `send-proxy-v2`, nginx with
//! `proxy_protocol on`, cloud load balancers) connects to the server itself, so the
//! server sees the proxy's address. With the PROXY protocol the proxy first sends one
//! header with the original source and destination; [`read_header`] reads it and leaves
//! the client's bytes that follow in the reader. The format is haproxy's
//! [proxy-protocol.txt].
//!
//! Available with the `proxy-protocol` feature.
//!
//! # Examples
//!
//! ```
//! use std::net::SocketAddr;
//! use socketserver::proxy_protocol::{read_header, ProxyHeader};
//!
//! let mut input: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
//! let header = read_header(&mut input)?;
//! assert_eq!(
//!     header,
//!     ProxyHeader::Proxied {
//!         source: SocketAddr::from(([192, 0, 2, 1], 56324)),
//!         destination: SocketAddr::from(([198, 51, 100, 2], 443)),
//!     }
//! );
//! assert_eq!(input, b"GET / HTTP/1.1\r\n"); // the client's bytes stay
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Security
//!
//! Anyone who can connect may send a header naming any address. A server should read
//! headers only from its proxies: [`Builder::trusted_proxies`] names them by address or
//! network ([`IpNet`]); a connection from anywhere else is refused, or served as a
//! direct client with its own address ([`Builder::allow_direct_clients`]), and never
//! gets to claim another. `.proxy_protocol(true)` alone trusts every peer: right only on
//! a port, or a Unix socket, that nothing but the proxy can reach.
//!
//! [`Builder::trusted_proxies`]: crate::Builder::trusted_proxies
//! [`Builder::allow_direct_clients`]: crate::Builder::allow_direct_clients
//!
//! [proxy-protocol.txt]: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

use std::fmt;
use std::io::{self, BufRead, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// How long a server waits for a peer's PROXY protocol header unless
/// [`Builder::proxy_header_timeout`](crate::Builder::proxy_header_timeout) says
/// otherwise: 10 seconds, from the connection's start to the header's end.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The 12 bytes that start a v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (`PROXY UNKNOWN` with two IPv6 addresses).
const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a PROXY protocol header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// The connection was relayed for a client: use these addresses instead of the
    /// connection's own.
    Proxied {
        /// The client's address, as the proxy saw it.
        source: SocketAddr,
        /// The address the client connected to: the proxy's listening address.
        destination: SocketAddr,
    },
    /// Use the connection's own addresses: a v2 `LOCAL` header (the proxy's own
    /// connection, such as a health check), v1 `UNKNOWN`, or a v2 header for a family
    /// other than IPv4 and IPv6 (`AF_UNSPEC`, `AF_UNIX`).
    Local,
}

/// An IPv4 or IPv6 network, such as `10.0.0.0/8` or `2001:db8::/32`, or one address
/// (`192.0.2.7`, a `/32`; `::1`, a `/128`): who may send PROXY headers
/// ([`Builder::trusted_proxies`](crate::Builder::trusted_proxies)).
///
/// Written as `ADDRESS/PREFIX` or `ADDRESS`, as in haproxy's and nginx's configuration.
/// A network whose address has bits set past its prefix (`10.0.0.1/8`) is refused
/// rather than guessed at: write `10.0.0.0/8` for the network, `10.0.0.1/32` for the
/// host. An IPv4 network also contains the IPv4-mapped IPv6 form of its addresses
/// (`::ffff:10.1.2.3`), which a dual-stack listener reports for IPv4 peers.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use socketserver::proxy_protocol::IpNet;
///
/// let net: IpNet = "10.0.0.0/8".parse()?;
/// assert!(net.contains("10.1.2.3".parse::<IpAddr>()?));
/// assert!(net.contains("::ffff:10.1.2.3".parse::<IpAddr>()?));
/// assert!(!net.contains("11.0.0.1".parse::<IpAddr>()?));
/// assert!("10.0.0.1/8".parse::<IpNet>().is_err());
/// assert_eq!(IpNet::from("::1".parse::<IpAddr>()?).to_string(), "::1/128");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpNet {
    /// The network of `addr` with the first `prefix_len` bits fixed.
    ///
    /// # Errors
    /// [`IpNetError`] if `prefix_len` is longer than the address (32 bits for IPv4, 128
    /// for IPv6), or `addr` has bits set past it.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<IpNet, IpNetError> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let text = || format!("{addr}/{prefix_len}");
        if prefix_len > bits {
            return Err(IpNetError(format!("{:?}: the prefix is longer than {bits} bits", text())));
        }
        let net = IpNet { addr, prefix_len };
        if net.mask(addr) != bits_of(addr) {
            let host = IpNet { addr, prefix_len: bits };
            let network = IpNet::from_bits(addr.is_ipv4(), net.mask(addr), prefix_len);
            return Err(IpNetError(format!(
                "{:?} has bits set past its prefix: write {network} for the network, or {host} for the address",
                text()
            )));
        }
        Ok(net)
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// How many leading bits of an address are fixed.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4
    /// address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && self.mask(ip) == bits_of(self.addr)
    }

    /// `ip`'s bits with those past the prefix cleared.
    fn mask(&self, ip: IpAddr) -> u128 {
        let bits: u32 = if ip.is_ipv4() { 32 } else { 128 };
        let keep = u32::from(self.prefix_len).min(bits);
        let mask = if keep == 0 { 0 } else { u128::MAX << (bits - keep) } & (u128::MAX >> (128 - bits));
        bits_of(ip) & mask
    }

    fn from_bits(v4: bool, bits: u128, prefix_len: u8) -> IpNet {
        let addr = if v4 { IpAddr::V4(Ipv4Addr::from(bits as u32)) } else { IpAddr::V6(Ipv6Addr::from(bits)) };
        IpNet { addr, prefix_len }
    }
}

fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// One address: a `/32` or a `/128`.
impl From<IpAddr> for IpNet {
    fn from(addr: IpAddr) -> IpNet {
        IpNet { addr, prefix_len: if addr.is_ipv4() { 32 } else { 128 } }
    }
}

impl From<Ipv4Addr> for IpNet {
    fn from(addr: Ipv4Addr) -> IpNet {
        IpNet::from(IpAddr::V4(addr))
    }
}

impl From<Ipv6Addr> for IpNet {
    fn from(addr: Ipv6Addr) -> IpNet {
        IpNet::from(IpAddr::V6(addr))
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<IpNet, IpNetError> {
        let bad =
            || IpNetError(format!("{text:?} is not a network: write an address or ADDRESS/PREFIX, like 10.0.0.0/8"));
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        match prefix {
            None => Ok(IpNet::from(addr)),
            // Decimal digits only: `u8::from_str` alone would take "+8".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                IpNet::new(addr, p.parse().map_err(|_| bad())?)
            }
            Some(_) => Err(bad()),
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a text or an address and prefix is not an [`IpNet`]; its message says what to
/// write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpNetError(String);

impl fmt::Display for IpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IpNetError {}

/// Reads one PROXY protocol header, v1 or v2, from the start of a connection.
///
/// It consumes exactly the header, TLV extensions included, and nothing after it: the
/// bytes that follow stay in `reader` for the handler. It never reads more than the
/// protocol allows before failing (107 bytes for v1; for v2 the 16 bytes of the fixed
/// part and the length it announces).
///
/// # Errors
///
/// - [`InvalidData`](io::ErrorKind::InvalidData), with a message starting "PROXY
///   protocol:", if the bytes are not a valid header: the connection must then be
///   closed, as the protocol requires. A v2 `PROXY` header that declares a datagram
///   (`DGRAM`, UDP) connection is one: this reads the header of a stream, and a proxy
///   relaying a stream never sends it.
/// - [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) if the connection ends inside the
///   header.
/// - Any error of `reader`, such as [`TimedOut`](io::ErrorKind::TimedOut) when a read
///   timeout expires (a plain socket's timeout is `WouldBlock` on Unix): set one, or a
///   peer that never sends a header holds the thread.
pub fn read_header<R: BufRead + ?Sized>(reader: &mut R) -> io::Result<ProxyHeader> {
    let first = loop {
        match reader.fill_buf() {
            Ok(buf) => break buf.first().copied(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    match first {
        Some(b'P') => read_v1(reader),
        Some(b'\r') => read_v2(reader),
        Some(_) => Err(invalid("the connection does not start with a PROXY protocol header".to_string())),
        None => Err(closed()),
    }
}

fn read_v1<R: BufRead + ?Sized>(reader: &mut R) -> io::Result<ProxyHeader> {
    let mut prefix = [0; V1_PREFIX.len()];
    read_exact(reader, &mut prefix)?;
    if prefix != V1_PREFIX {
        return Err(invalid(format!("{:?} is not the v1 header's \"PROXY \"", String::from_utf8_lossy(&prefix))));
    }
    let mut line = Vec::with_capacity(V1_MAX - V1_PREFIX.len());
    Read::take(&mut *reader, (V1_MAX - V1_PREFIX.len()) as u64).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() == V1_MAX - V1_PREFIX.len() {
            invalid(format!("no CRLF in the first {V1_MAX} bytes of a v1 header"))
        } else {
            closed()
        });
    }
    let fields = line.strip_suffix(b"\r\n").ok_or_else(|| invalid("v1 header ends in LF, not CRLF".to_string()))?;
    let fields = std::str::from_utf8(fields).map_err(|_| invalid("v1 header is not ASCII".to_string()))?;
    parse_v1(fields)
}

/// Parses what follows "PROXY " up to the CRLF.
fn parse_v1(fields: &str) -> io::Result<ProxyHeader> {
    let mut fields = fields.split(' ');
    let ip: fn(&str) -> Option<IpAddr> = match fields.next() {
        // The sender may leave the rest out, and the receiver must ignore it.
        Some("UNKNOWN") => return Ok(ProxyHeader::Local),
        Some("TCP4") => |s| s.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        Some("TCP6") => |s| s.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        Some(other) => return Err(invalid(format!("v1 protocol {other:?} is not TCP4, TCP6 or UNKNOWN"))),
        None => unreachable!("split yields at least one field"),
    };
    let fields: Vec<&str> = fields.collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(invalid(format!("v1 header has {} fields after the protocol, not 4", fields.len())));
    };
    let address = |what: &str, text: &str| {
        ip(text).ok_or_else(|| invalid(format!("v1 {what} address {text:?} does not match the protocol")))
    };
    let port = |what: &str, text: &str| {
        // Decimal digits without a leading zero: `u16::from_str` alone would take "+80" and "080".
        let canonical = text == "0" || (text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0'));
        let port = if canonical { text.parse::<u16>().ok() } else { None };
        port.ok_or_else(|| invalid(format!("v1 {what} port {text:?} is not a port")))
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(address("source", source)?, port("source", source_port)?),
        destination: SocketAddr::new(address("destination", destination)?, port("destination", destination_port)?),
    })
}

fn read_v2<R: BufRead + ?Sized>(reader: &mut R) -> io::Result<ProxyHeader> {
    let mut fixed = [0; 16];
    read_exact(reader, &mut fixed)?;
    if fixed[..12] != V2_SIGNATURE {
        return Err(invalid("the v2 signature is wrong".to_string()));
    }
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0xf);
    if version != 2 {
        return Err(invalid(format!("v2 header has version {version}, not 2")));
    }
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    match command {
        // LOCAL: the proxy's own connection; the address block is skipped unread.
        0x0 => return skip(reader, length).map(|()| ProxyHeader::Local),
        0x1 => {}
        _ => return Err(invalid(format!("v2 command {command:#x} is neither LOCAL nor PROXY"))),
    }
    let (family, protocol) = (fixed[13] >> 4, fixed[13] & 0xf);
    if family > 3 || protocol > 2 {
        return Err(invalid(format!("v2 family and protocol byte {:#04x} is undefined", fixed[13])));
    }
    if protocol == 2 {
        // A header read from a stream describes that stream: a UDP (or AF_UNIX datagram)
        // source is a lie, or a proxy misconfigured, and either way not this connection.
        return Err(invalid(format!(
            "v2 header declares a datagram (DGRAM) connection ({:#04x}) on a stream",
            fixed[13]
        )));
    }
    let ip_len = match (family, protocol) {
        (1, 1) => 4,
        (2, 1) => 16,
        // UNSPEC or AF_UNIX: the connection's own addresses apply.
        _ => return skip(reader, length).map(|()| ProxyHeader::Local),
    };
    // Two addresses, then two ports, in network byte order; TLVs after them.
    let needed = 2 * ip_len + 4;
    if length < needed {
        return Err(invalid(format!("v2 address block of {length} bytes is shorter than its family's {needed}")));
    }
    let mut block = [0; 36];
    read_exact(reader, &mut block[..needed])?;
    skip(reader, length - needed)?;
    let ip = |at: usize| match ip_len {
        4 => IpAddr::from(<[u8; 4]>::try_from(&block[at..at + 4]).unwrap()),
        _ => IpAddr::from(<[u8; 16]>::try_from(&block[at..at + 16]).unwrap()),
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(ip(0), port(2 * ip_len)),
        destination: SocketAddr::new(ip(ip_len), port(2 * ip_len + 2)),
    })
}

/// `read_exact`, with an end of stream reported as the header's.
fn read_exact<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<()> {
    reader.read_exact(buf).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { closed() } else { e })
}

/// Consumes `n` bytes without copying them.
fn skip<R: BufRead + ?Sized>(reader: &mut R, mut n: usize) -> io::Result<()> {
    while n > 0 {
        let available = match reader.fill_buf() {
            Ok([]) => return Err(closed()),
            Ok(buf) => buf.len().min(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        reader.consume(available);
        n -= available;
    }
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("PROXY protocol: {message}"))
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "PROXY protocol: the connection closed inside the header")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied { source: source.parse().unwrap(), destination: destination.parse().unwrap() }
    }

    /// Reads a header from `bytes` and returns it with what the reader left.
    fn read(bytes: &[u8]) -> (io::Result<ProxyHeader>, Vec<u8>) {
        let mut input = bytes;
        let header = read_header(&mut input);
        (header, input.to_vec())
    }

    fn error(bytes: &[u8]) -> io::Error {
        read(bytes).0.expect_err("a malformed header must be an error")
    }

    fn assert_invalid(bytes: &[u8], message: &str) {
        let e = error(bytes);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().starts_with("PROXY protocol: "), "{e}");
        assert!(e.to_string().contains(message), "{e:?} does not mention {message:?}");
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend([0x20 | command, family]);
        header.extend(u16::try_from(block.len()).unwrap().to_be_bytes());
        header.extend(block);
        header
    }

    // The examples of section 2.1 of proxy-protocol.txt.

    #[test]
    fn v1_tcp4() {
        let (header, rest) = read(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n");
        assert_eq!(header.unwrap(), proxied("192.168.0.1:56324", "192.168.0.11:443"));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn v1_tcp6() {
        let (header, rest) = read(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\nx");
        assert_eq!(header.unwrap(), proxied("[2001:db8::1]:65535", "[::1]:0"));
        assert_eq!(rest, b"x");
    }

    #[test]
    fn v1_longest_lines_are_accepted() {
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {ip} {ip} 65535 65535\r\n");
        assert_eq!(tcp6.len(), 104);
        assert_eq!(read(tcp6.as_bytes()).0.unwrap(), proxied(&format!("[{ip}]:65535"), &format!("[{ip}]:65535")));
        let unknown = format!("PROXY UNKNOWN {ip} {ip} 65535 65535\r\nrest");
        assert_eq!(unknown.len(), V1_MAX + 4);
        let (header, rest) = read(unknown.as_bytes());
        assert_eq!(header.unwrap(), ProxyHeader::Local);
        assert_eq!(rest, b"rest");
    }

    #[test]
    fn v1_unknown() {
        let (header, rest) = read(b"PROXY UNKNOWN\r\nhello");
        assert_eq!(header.unwrap(), ProxyHeader::Local);
        assert_eq!(rest, b"hello");
    }

    #[test]
    fn v1_without_crlf_in_107_bytes_is_invalid_and_reads_no_further() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(300, b'f');
        let mut input = &long[..];
        let e = read_header(&mut input).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("no CRLF in the first 107 bytes"), "{e}");
        assert_eq!(input.len(), 300 - V1_MAX, "read past the v1 maximum");
    }

    #[test]
    fn v1_malformed() {
        assert_invalid(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n", "LF, not CRLF");
        assert_invalid(b"PROXY UDP4 192.168.0.1 192.168.0.11 56324 443\r\n", "\"UDP4\" is not TCP4");
        assert_invalid(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n", "3 fields");
        assert_invalid(b"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n", "5 fields");
        assert_invalid(b"PROXY TCP4 ::1 ::1 56324 443\r\n", "source address \"::1\"");
        assert_invalid(b"PROXY TCP6 ::1 10.0.0.1 56324 443\r\n", "destination address \"10.0.0.1\"");
        assert_invalid(b"PROXY TCP4 192.168.0.1 192.168.0.011 56324 443\r\n", "\"192.168.0.011\"");
        assert_invalid(b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n", "source port \"056324\"");
        assert_invalid(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 +443\r\n", "destination port \"+443\"");
        assert_invalid(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 65536\r\n", "\"65536\"");
        assert_invalid(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\r\n", "\"443\\r\"");
        assert_invalid(b"PROXY\tTCP4 192.168.0.1 192.168.0.11 56324 443\r\n", "\"PROXY\\t\"");
    }

    #[test]
    fn not_a_proxy_header() {
        assert_invalid(b"GET / HTTP/1.1\r\n\r\n", "does not start with a PROXY protocol header");
        // A "P" that is not "PROXY " fails after 6 bytes, without waiting for a line end.
        assert_invalid(b"POST /", "\"POST /\"");
    }

    #[test]
    fn closed_inside_the_header() {
        for bytes in [&b""[..], b"PRO", b"PROXY TCP4 192.168.0.1", b"\r\n\r\n\0\r", &v2(1, 0x11, &[0; 12])[..20]] {
            let e = error(bytes);
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{bytes:?}: {e}");
            assert!(e.to_string().starts_with("PROXY protocol: "), "{e}");
        }
    }

    // v2, as haproxy sent it for a client at 172.19.0.1:42578 connecting to 172.19.0.3:80
    // (a capture from seriousben/experiment-proxy-protocol's README).
    const HAPROXY_V2_TCP4: [u8; 28] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c, 0xac, 0x13,
        0x00, 0x01, 0xac, 0x13, 0x00, 0x03, 0xa6, 0x52, 0x00, 0x50,
    ];

    #[test]
    fn v2_proxy_tcp4() {
        let mut bytes = HAPROXY_V2_TCP4.to_vec();
        bytes.extend(b"GET / HTTP/1.1\r\n");
        let (header, rest) = read(&bytes);
        assert_eq!(header.unwrap(), proxied("172.19.0.1:42578", "172.19.0.3:80"));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn v2_proxy_tcp6() {
        let mut block = Vec::new();
        block.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend(Ipv6Addr::LOCALHOST.octets());
        block.extend([0xdb, 0xd4, 0x01, 0xbb]);
        let (header, rest) = read(&[v2(1, 0x21, &block), b"after".to_vec()].concat());
        assert_eq!(header.unwrap(), proxied("[2001:db8::1]:56276", "[::1]:443"));
        assert_eq!(rest, b"after");
    }

    /// A header read from a stream that claims a UDP (or Unix datagram) source is
    /// refused: it cannot describe the stream it arrived on (issue 15).
    #[test]
    fn v2_dgram_on_a_stream_is_invalid() {
        let mut udp6 = Vec::new();
        udp6.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        udp6.extend(Ipv6Addr::LOCALHOST.octets());
        udp6.extend([0xdb, 0xd4, 0x01, 0xbb]);
        for (family, block) in [(0x12, HAPROXY_V2_TCP4[16..].to_vec()), (0x22, udp6), (0x32, vec![0; 216])] {
            assert_invalid(&v2(1, family, &block), "datagram (DGRAM) connection");
        }
        // LOCAL ignores the family and protocol byte altogether, DGRAM included.
        let (header, rest) = read(&[v2(0, 0x12, &HAPROXY_V2_TCP4[16..]), b"after".to_vec()].concat());
        assert_eq!(header.unwrap(), ProxyHeader::Local);
        assert_eq!(rest, b"after");
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut block = HAPROXY_V2_TCP4[16..].to_vec();
        block.extend([0x01, 0x00, 0x02, b'h', b'2']); // PP2_TYPE_ALPN "h2"
        block.extend([0x04, 0x00, 0x00]); // PP2_TYPE_NOOP, empty
        block.extend([0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]); // PP2_TYPE_CRC32C (not checked)
        let (header, rest) = read(&[v2(1, 0x11, &block), b"after".to_vec()].concat());
        assert_eq!(header.unwrap(), proxied("172.19.0.1:42578", "172.19.0.3:80"));
        assert_eq!(rest, b"after");
    }

    #[test]
    fn v2_local_ignores_the_address_block() {
        // A LOCAL header with no block, as health checks send it...
        let (header, rest) = read(&[v2(0, 0x00, &[]), b"after".to_vec()].concat());
        assert_eq!(header.unwrap(), ProxyHeader::Local);
        assert_eq!(rest, b"after");
        // ...and one with a block (and even an undefined family), which must be skipped.
        let (header, rest) = read(&[v2(0, 0xff, &HAPROXY_V2_TCP4[16..]), b"after".to_vec()].concat());
        assert_eq!(header.unwrap(), ProxyHeader::Local);
        assert_eq!(rest, b"after");
    }

    #[test]
    fn v2_unspec_and_unix_are_local() {
        for (family, block) in [(0x00, vec![]), (0x10, HAPROXY_V2_TCP4[16..].to_vec()), (0x31, vec![0; 216])] {
            let (header, rest) = read(&[v2(1, family, &block), b"after".to_vec()].concat());
            assert_eq!(header.unwrap(), ProxyHeader::Local, "{family:#x}");
            assert_eq!(rest, b"after");
        }
    }

    #[test]
    fn v2_malformed() {
        let mut bad_signature = HAPROXY_V2_TCP4;
        bad_signature[11] = b'X';
        assert_invalid(&bad_signature, "signature");
        let mut version_1 = HAPROXY_V2_TCP4;
        version_1[12] = 0x11;
        assert_invalid(&version_1, "version 1");
        assert_invalid(&v2(2, 0x11, &HAPROXY_V2_TCP4[16..]), "command 0x2");
        assert_invalid(&v2(1, 0x41, &HAPROXY_V2_TCP4[16..]), "0x41 is undefined");
        assert_invalid(&v2(1, 0x13, &HAPROXY_V2_TCP4[16..]), "0x13 is undefined");
        assert_invalid(&v2(1, 0x21, &HAPROXY_V2_TCP4[16..]), "12 bytes is shorter than its family's 36");
    }

    #[test]
    fn v2_truncated_tlvs_are_eof() {
        let mut bytes = v2(1, 0x11, &[HAPROXY_V2_TCP4[16..].to_vec(), vec![0x04, 0x00, 0x10]].concat());
        bytes.truncate(bytes.len() - 1);
        assert_eq!(error(&bytes).kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn networks_parse_contain_and_refuse_what_is_ambiguous() {
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.0")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")), "an IPv4 network holds no IPv6 address");
        assert!(net("192.0.2.7").contains(ip("::ffff:192.0.2.7")), "IPv4-mapped peers of a dual-stack socket");
        assert!(!net("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(net("::/0").contains(ip("::1")));
        assert!(net("::1").contains(ip("::1")) && !net("::1").contains(ip("127.0.0.1")));
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(net("10.0.0.0/8"), IpNet::new(ip("10.0.0.0"), 8).unwrap());
        for bad in ["", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/+8", "10.0.0.0/08x", "host/8", "10.0.0/8"] {
            let e = bad.parse::<IpNet>().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) || e.contains("prefix is longer"), "{bad:?}: {e}");
        }
        let e = "10.0.0.1/8".parse::<IpNet>().unwrap_err().to_string();
        assert!(e.contains("write 10.0.0.0/8 for the network, or 10.0.0.1/32 for the address"), "{e}");
        let e = "2001:db8::1/32".parse::<IpNet>().unwrap_err().to_string();
        assert!(e.contains("write 2001:db8::/32"), "{e}");
    }

    #[test]
    fn a_bufreader_keeps_the_bytes_after_the_header() {
        // The header and the client's first bytes arrive in one read; a tiny buffer
        // makes every field straddle a refill.
        for capacity in [1, 5, 64] {
            for bytes in [&b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"[..], &HAPROXY_V2_TCP4] {
                let input = [bytes, b"hello"].concat();
                let mut reader = BufReader::with_capacity(capacity, input.as_slice());
                assert!(matches!(read_header(&mut reader).unwrap(), ProxyHeader::Proxied { .. }));
                let mut rest = String::new();
                reader.read_to_string(&mut rest).unwrap();
                assert_eq!(rest, "hello", "capacity {capacity}");
            }
        }
    }
}
