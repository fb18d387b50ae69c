use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::io::{ConnHandle, Reader, Writer};
use crate::handle::ServerHandle;
use crate::net::{Address, Connection};

/// One stream connection, as a handler sees it (Python's `StreamRequestHandler`).
///
/// It gives a buffered [`Reader`] (`rfile`), a [`Writer`] (`wfile`), the client's
/// address, the [`Connection`] itself for socket options, and a [`ServerHandle`].
/// When the handler is done the server flushes the writer, shuts the connection down
/// for writing (so the client sees end-of-file) and closes it.
pub struct StreamRequest {
    reader: Reader,
    writer: Writer,
    connection: Arc<Connection>,
    client: Address,
    /// The peer that connected, when a PROXY protocol header named another client.
    proxy: Option<Address>,
    server: ServerHandle,
}

impl fmt::Debug for StreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRequest").field("client", &self.client).field("connection", &self.connection).finish()
    }
}

impl StreamRequest {
    pub(crate) fn new(
        connection: Arc<Connection>,
        client: Address,
        server: ServerHandle,
        rbufsize: usize,
        wbufsize: usize,
        timeouts: (Option<Duration>, Option<Duration>),
    ) -> StreamRequest {
        let (read_timeout, write_timeout) = timeouts;
        let reader = Reader::new(ConnHandle::new(connection.clone(), read_timeout), rbufsize);
        let writer = Writer::new(ConnHandle::new(connection.clone(), write_timeout), wbufsize);
        StreamRequest { reader, writer, connection, client, proxy: None, server }
    }

    /// Sets a deadline for this request's reads and writes, or clears it with `None`.
    ///
    /// After `deadline`, reads and writes fail with [`TimedOut`](io::ErrorKind::TimedOut);
    /// before it, each waits at most the time left (or the server's `read_timeout` /
    /// `write_timeout`, if shorter). A per-read timeout alone cannot stop a client that
    /// sends one byte now and then; a deadline can. Set it again for each message of a
    /// keep-alive connection.
    ///
    /// # Examples
    ///
    /// Each request line must arrive within 10 seconds of the previous reply:
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::{Duration, Instant};
    ///
    /// let server = socketserver::TcpServer::bind("127.0.0.1:0", |req| {
    ///     let mut line = Vec::new();
    ///     loop {
    ///         req.set_deadline(Some(Instant::now() + Duration::from_secs(10)));
    ///         line.clear();
    ///         if req.reader().read_line_bounded(&mut line, 4096)? == 0 {
    ///             return Ok(());
    ///         }
    ///         req.writer().write_all(&line)?;
    ///     }
    /// })?;
    /// # drop(server);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.set_deadline(deadline);
        self.writer.set_deadline(deadline);
    }

    /// The buffered reader over the connection (Python's `rfile`).
    #[doc(alias = "rfile")]
    pub fn reader(&mut self) -> &mut Reader {
        &mut self.reader
    }

    /// The writer over the connection (Python's `wfile`).
    #[doc(alias = "wfile")]
    pub fn writer(&mut self) -> &mut Writer {
        &mut self.writer
    }

    /// The reader and the writer at once, for `io::copy(reader, writer)`.
    pub fn reader_and_writer(&mut self) -> (&mut Reader, &mut Writer) {
        (&mut self.reader, &mut self.writer)
    }

    /// The client's address (Python's `client_address`).
    #[doc(alias = "client_address")]
    pub fn client_addr(&self) -> &Address {
        &self.client
    }

    /// With the PROXY protocol on (`Builder::proxy_protocol`, feature
    /// `proxy-protocol`): the address of the proxy that connected, when its header named
    /// the real client, which [`client_addr`](StreamRequest::client_addr) then gives.
    /// `None` otherwise.
    pub fn proxy_addr(&self) -> Option<&Address> {
        self.proxy.as_ref()
    }

    /// Reads the PROXY protocol header that must open the connection, and takes the
    /// client's address from it. A proxy's health check (`LOCAL`) keeps the peer's.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) fn read_proxy_header(&mut self, within: Duration) -> io::Result<()> {
        use crate::proxy_protocol::{read_header, ProxyHeader};
        // A client that connects directly and sends nothing must not hold the thread.
        self.set_deadline(Some(Instant::now() + within));
        let header = read_header(&mut self.reader);
        self.set_deadline(None);
        if let ProxyHeader::Proxied { source, .. } = header? {
            self.proxy = Some(std::mem::replace(&mut self.client, Address::Inet(source)));
        }
        Ok(())
    }

    /// The connection (Python's `request`), for timeouts, `TCP_NODELAY` and the like.
    /// Reading from it directly bypasses the reader's buffer.
    #[doc(alias = "request")]
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A handle to the server (Python's `self.server`): its address, and `shutdown`.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// Flushes the writer, after `finish`.
    pub(crate) fn flush_writer(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}
