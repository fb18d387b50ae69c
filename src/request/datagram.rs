use std::fmt;
use std::io;
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
    reply: Vec<u8>,
    reply_wanted: bool,
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
        DatagramRequest { packet, truncated, reply: Vec::new(), reply_wanted: false, client, socket, server }
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

    /// The reply buffer (Python's `wfile`). Calling this marks the reply to be sent to
    /// the sender when the request finishes, even if nothing is written (an empty
    /// datagram is then sent).
    #[doc(alias = "wfile")]
    pub fn reply(&mut self) -> &mut Vec<u8> {
        self.reply_wanted = true;
        &mut self.reply
    }

    /// The packet and the reply buffer at once, to answer from the packet without
    /// copying it first (the borrow checker will not lend `packet()` and `reply()`
    /// together). Marks the reply to be sent, as [`reply`](DatagramRequest::reply) does.
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
        self.reply_wanted = true;
        (&self.packet, &mut self.reply)
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

    /// The server's last step: send the reply, if the handler asked for one.
    pub(crate) fn respond(&mut self) -> io::Result<()> {
        if self.reply_wanted {
            self.socket.send_to(&self.reply, &self.client)?;
        }
        Ok(())
    }
}
