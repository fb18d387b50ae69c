//! Python's `socketserver.UDPServer` example, server side: answers each datagram with
//! its text in upper case.
//!
//! Python: https://docs.python.org/3/library/socketserver.html#socketserver-udpserver-example
//!
//! ```python
//! import socketserver
//!
//! class MyUDPHandler(socketserver.BaseRequestHandler):
//!     def handle(self):
//!         data = self.request[0].strip()
//!         socket = self.request[1]
//!         print("{} wrote:".format(self.client_address[0]))
//!         print(data)
//!         socket.sendto(data.upper(), self.client_address)
//!
//! if __name__ == "__main__":
//!     HOST, PORT = "localhost", 9999
//!     with socketserver.UDPServer((HOST, PORT), MyUDPHandler) as server:
//!         server.serve_forever()
//! ```
//!
//! ```text
//! cargo run --example py_udp_server [-- --addr HOST:PORT]     # default localhost:9999
//! cargo run --example py_udp_client -- hello world with UDP   # in another terminal
//! ```

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use socketserver::{DatagramRequest, UdpServer};

/// Python's `MyUDPHandler.handle`. A datagram has no connection: Python's
/// `self.request` is the pair (data, socket), here `packet()` and `socket()`, and the
/// answer goes to the sender's address explicitly.
fn handle(req: &mut DatagramRequest) -> io::Result<()> {
    let data = String::from_utf8_lossy(req.packet()).trim().to_string(); // self.request[0]
    if let Some(client) = req.client_addr().as_inet() {
        println!("{} wrote:", client.ip());
    }
    println!("{data}");
    req.socket().send_to(data.to_uppercase().as_bytes(), req.client_addr())?; // self.request[1].sendto
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = UdpServer::bind_handler(&server_addrs()?[..], handle)?;
    println!("listening on udp://{}", server.local_addr());
    server.serve_forever()?; // until Ctrl-C
    Ok(())
}

/// `--addr HOST:PORT`, by default Python's `localhost:9999`. Python's `UDPServer` is
/// IPv4 (`address_family = AF_INET`), so a name's IPv4 addresses are tried first.
fn server_addrs() -> io::Result<Vec<SocketAddr>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => "localhost:9999",
        [flag, addr] if flag == "--addr" => addr,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "usage: py_udp_server [--addr HOST:PORT]")),
    };
    let mut addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    Ok(addrs)
}
