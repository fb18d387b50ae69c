//! Python's `socketserver.TCPServer` example, server side with `BaseRequestHandler`:
//! each client sends one message and gets it back in upper case.
//!
//! Python: https://docs.python.org/3/library/socketserver.html#socketserver-tcpserver-example
//!
//! ```python
//! import socketserver
//!
//! class MyTCPHandler(socketserver.BaseRequestHandler):
//!     def handle(self):
//!         # self.request is the TCP socket connected to the client
//!         self.data = self.request.recv(1024).strip()
//!         print("{} wrote:".format(self.client_address[0]))
//!         print(self.data)
//!         # just send back the same data, but upper-cased
//!         self.request.sendall(self.data.upper())
//!
//! if __name__ == "__main__":
//!     HOST, PORT = "localhost", 9999
//!     with socketserver.TCPServer((HOST, PORT), MyTCPHandler) as server:
//!         server.serve_forever()
//! ```
//!
//! ```text
//! cargo run --example py_tcp_server [-- --addr HOST:PORT]     # default localhost:9999
//! cargo run --example py_tcp_client -- hello world with TCP   # in another terminal
//! ```
//!
//! Python prints the data as `b'hello world with TCP'`; this prints the text. Ctrl-C ends it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};

use socketserver::{StreamRequest, TcpServer};

/// Python's `MyTCPHandler.handle`. A function works as well as a closure or a type.
fn handle(req: &mut StreamRequest) -> io::Result<()> {
    let mut socket = req.connection(); // self.request
    let mut buf = [0; 1024];
    // One read returns what has arrived so far: for a short message, all of it (TCP does
    // not promise that; the StreamRequestHandler version reads up to the newline).
    let n = socket.read(&mut buf)?; // recv(1024)
    let data = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    if let Some(client) = req.client_addr().as_inet() {
        println!("{} wrote:", client.ip()); // self.client_address[0]
    }
    println!("{data}");
    // After `handle` returns, the server closes the connection, as Python's does.
    socket.write_all(data.to_uppercase().as_bytes()) // sendall
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TcpServer::bind_handler(&server_addrs()?[..], handle)?;
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
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "usage: py_tcp_server [--addr HOST:PORT]")),
    };
    let mut addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    Ok(addrs)
}
