//! Python's `socketserver.TCPServer` example, server side with `StreamRequestHandler`:
//! the same upper-casing server, reading a line from `rfile` and writing to `wfile`.
//!
//! Python: https://docs.python.org/3/library/socketserver.html#socketserver-tcpserver-example
//!
//! ```python
//! class MyTCPHandler(socketserver.StreamRequestHandler):
//!     def handle(self):
//!         # self.rfile is a file-like object created by the handler;
//!         # we can now use e.g. readline() instead of raw recv() calls
//!         self.data = self.rfile.readline().strip()
//!         print("{} wrote:".format(self.client_address[0]))
//!         print(self.data)
//!         # Likewise, self.wfile is a file-like object used to write back
//!         # to the client
//!         self.wfile.write(self.data.upper())
//! ```
//!
//! (The rest, `TCPServer(("localhost", 9999), MyTCPHandler)` and `serve_forever()`, is
//! as in `py_tcp_server`.)
//!
//! ```text
//! cargo run --example py_tcp_stream_server [-- --addr HOST:PORT]   # default localhost:9999
//! cargo run --example py_tcp_client -- python is nice             # in another terminal
//! ```

use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, ToSocketAddrs};

use socketserver::{RequestHandler, StreamRequest, TcpServer};

/// Python's handler class. The server keeps this one value for every request, so it has
/// no fields here: what Python stores on `self` per request is a local of `handle`.
struct MyTcpHandler;

impl RequestHandler<StreamRequest> for MyTcpHandler {
    fn handle(&self, req: &mut StreamRequest) -> socketserver::HandlerResult {
        // `reader()` is rfile: buffered, so `read_line` reads until the newline, however
        // the bytes arrive. (Newer Python docs cap the line: `readline(10000)`; here that
        // is `req.reader().read_line_bounded(&mut buf, 10_000)`.)
        let mut line = String::new();
        req.reader().read_line(&mut line)?; // self.rfile.readline()
        let data = line.trim();
        if let Some(client) = req.client_addr().as_inet() {
            println!("{} wrote:", client.ip());
        }
        println!("{data}");
        req.writer().write_all(data.to_uppercase().as_bytes())?; // self.wfile.write(...)
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TcpServer::bind_handler(&server_addrs()?[..], MyTcpHandler)?;
    println!("listening on tcp://{}", server.local_addr());
    server.serve_forever()?; // until Ctrl-C
    Ok(())
}

/// `--addr HOST:PORT`, by default Python's `localhost:9999`. Python's `TCPServer` is
/// IPv4 (`address_family = AF_INET`), so a name's IPv4 addresses are tried first.
fn server_addrs() -> io::Result<Vec<SocketAddr>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => "localhost:9999",
        [flag, addr] if flag == "--addr" => addr,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "usage: py_tcp_stream_server [--addr HOST:PORT]")),
    };
    let mut addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    Ok(addrs)
}
