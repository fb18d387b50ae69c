use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use crate::handle::ServerHandle;
use crate::net::{Address, DatagramSocket};

/// One datagram, as a handler sees it (Python's `DatagramRequestHandler`).
///
/// It gives the packet, a reply buffer, the server's socket and the sender's address.
/// If the handler touched the reply buffer (called [`DatagramRequest::reply`]), its
/// contents are sent back to the sender in one datagram once the handler is done, even
/// when empty.
///
/// # Python
///
/// Python's `DatagramRequestHandler` always sends the contents of `wfile`, so a handler
/// that writes nothing still sends an empty datagram. Here nothing is sent unless the
/// handler asked for a reply, which lets a handler stay silent (for a request it drops,
/// or a protocol with no replies); call `req.reply()` without writing to send the empty
/// one. A datagram longer than `max_packet_size` is cut to it, as in Python, but
/// [`truncated`](DatagramRequest::truncated) says so.
pub struct DatagramRequest {
    packet: Vec<u8>,
    truncated: bool,
    reply: Reply,
    client: Address,
    socket: Arc<DatagramSocket>,
    server: ServerHandle,
}

impl fmt::Debug for DatagramRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramRequest")
            .field("client", &self.client)
            .field("packet_len", &self.packet.len())
            .field("reply_len", &self.reply.len())
            .finish()
    }
}

impl DatagramRequest {
    pub(crate) fn new(
        mut packet: Vec<u8>,
        max_packet_size: usize,
        client: Address,
        socket: Arc<DatagramSocket>,
        server: ServerHandle,
    ) -> Self {
        let truncated = packet.len() > max_packet_size;
        packet.truncate(max_packet_size);
        DatagramRequest { packet, truncated, reply: Reply::default(), client, socket, server }
    }

    /// Whether the datagram was longer than the server's `max_packet_size`, so that
    /// [`packet`](DatagramRequest::packet) holds only its first bytes. Python truncates
    /// silently; here the handler can tell, and answer with an error instead of acting
    /// on half a message. (On Windows, a datagram more than one byte too long does not
    /// reach the handler: see [`Builder::max_packet_size`](crate::Builder::max_packet_size).)
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The datagram's bytes (Python's `self.request[0]`, or `rfile`), truncated to the
    /// server's `max_packet_size`.
    #[doc(alias = "rfile")]
    #[doc(alias = "data")]
    pub fn packet(&self) -> &[u8] {
        &self.packet
    }

    /// The reply (Python's `wfile`): `&Reply` is [`Write`], so
    /// `req.reply().write_all(req.packet())` and
    /// `writeln!(req.reply(), "{}", req.client_addr())` answer from the request in one
    /// statement. Calling this marks the reply to be sent to the sender when the request
    /// finishes, even if nothing is written (an empty datagram is then sent).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::net::UdpSocket;
    ///
    /// let server = socketserver::UdpServer::bind("127.0.0.1:0", |req| {
    ///     req.reply().write_all(&req.packet().to_ascii_uppercase())?;
    ///     write!(req.reply(), " from port {}", req.client_addr().port().unwrap())?;
    ///     Ok(())
    /// })?;
    /// let addr = server.local_addr();
    /// let background = server.serve_in_background()?;
    /// let client = UdpSocket::bind("127.0.0.1:0")?;
    /// client.send_to(b"ping", addr)?;
    /// let mut reply = [0; 64];
    /// let n = client.recv(&mut reply)?;
    /// let port = client.local_addr()?.port();
    /// assert_eq!(&reply[..n], format!("PING from port {port}").as_bytes());
    /// background.stop()?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    #[doc(alias = "wfile")]
    pub fn reply(&self) -> &Reply {
        self.reply.wanted.set(true);
        &self.reply
    }

    /// The packet and the reply buffer at once, as a `Vec` to edit in place. Marks the
    /// reply to be sent, as [`reply`](DatagramRequest::reply) does, which lends the
    /// reply together with [`packet`](DatagramRequest::packet) too.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::UdpServer;
    ///
    /// let server = UdpServer::bind("127.0.0.1:0", |req| {
    ///     let (packet, reply) = req.packet_and_reply();
    ///     reply.extend_from_slice(packet);
    ///     Ok(())
    /// })?;
    /// # drop(server);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn packet_and_reply(&mut self) -> (&[u8], &mut Vec<u8>) {
        self.reply.wanted.set(true);
        (&self.packet, self.reply.bytes.get_mut())
    }

    /// The server's socket (Python's `self.request[1]`), for sends beyond the reply.
    pub fn socket(&self) -> &DatagramSocket {
        &self.socket
    }

    /// The sender's address (Python's `client_address`).
    #[doc(alias = "client_address")]
    pub fn client_addr(&self) -> &Address {
        &self.client
    }

    /// A handle to the server (Python's `self.server`).
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// The reply the server's last step sends to the client: `None` when the handler
    /// did not ask for one.
    pub(crate) fn wanted_reply(&self) -> Option<Vec<u8>> {
        self.reply.wanted.get().then(|| self.reply.bytes.borrow().clone())
    }

    /// The server's last step: send the reply, if the handler asked for one.
    pub(crate) fn respond(&mut self) -> io::Result<()> {
        if self.reply.wanted.get() {
            let sent = self.socket.send_to(self.reply.bytes.get_mut(), &self.client)?;
            self.server.control().counters.bytes_out.fetch_add(sent as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The reply to a datagram (Python's `wfile`), from [`DatagramRequest::reply`]: bytes
/// that the server sends back to the sender in one datagram when the handler is done.
///
/// `&Reply` is [`Write`] (each write appends), so a handler writes its reply while it
/// reads the packet and the sender's address; every method takes `&self`.
///
/// # Errors
///
/// A write from inside another write on the same reply (a `Display` impl that writes
/// to the reply it is being formatted into) fails with
/// [`ErrorKind::Other`](io::ErrorKind::Other).
#[derive(Default)]
pub struct Reply {
    bytes: RefCell<Vec<u8>>,
    /// The handler asked for the reply, so it is sent, even empty.
    wanted: Cell<bool>,
}

impl Reply {
    /// Appends `bytes` to the reply.
    pub fn extend_from_slice(&self, bytes: &[u8]) {
        if let Ok(mut reply) = self.bytes.try_borrow_mut() {
            reply.extend_from_slice(bytes);
        }
    }

    /// The reply's length so far, in bytes.
    pub fn len(&self) -> usize {
        self.bytes.try_borrow().map_or(0, |reply| reply.len())
    }

    /// Whether nothing has been written to the reply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the reply (it is still sent, empty, unless more is written).
    pub fn clear(&self) {
        if let Ok(mut reply) = self.bytes.try_borrow_mut() {
            reply.clear();
        }
    }

    /// A copy of the reply so far.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes.try_borrow().map(|reply| reply.clone()).unwrap_or_default()
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("len", &self.len()).finish()
    }
}

impl Write for &Reply {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut reply = self.bytes.try_borrow_mut().map_err(|_| {
            io::Error::other("the reply was written to while it was writing (from a `Display` impl being written?)")
        })?;
        reply.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Reply {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.get_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
