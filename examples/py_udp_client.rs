//! Python's `socketserver.UDPServer` example, client side: sends its arguments in one
//! datagram and prints the answer. Works with `py_udp_server`, and with Python's.
//!
//! Python: https://docs.python.org/3/library/socketserver.html#socketserver-udpserver-example
//!
//! ```python
//! import socket
//! import sys
//!
//! HOST, PORT = "localhost", 9999
//! data = " ".join(sys.argv[1:])
//!
//! # SOCK_DGRAM is the socket type to use for UDP sockets
//! sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
//!
//! # As you can see, there is no connect() call; UDP has no connections.
//! # Instead, data is directly sent to the recipient via sendto().
//! sock.sendto(bytes(data + "\n", "utf-8"), (HOST, PORT))
//! received = str(sock.recv(1024), "utf-8")
//!
//! print("Sent:     {}".format(data))
//! print("Received: {}".format(received))
//! ```
//!
//! ```text
//! cargo run --example py_udp_client -- [--addr HOST:PORT] hello world with UDP
//! ```

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, words) = match args.as_slice() {
        [flag, addr, words @ ..] if flag == "--addr" => (addr.as_str(), words),
        words => ("localhost:9999", words), // HOST, PORT
    };
    let data = words.join(" ");

    // Python's socket is AF_INET, so "localhost" means its IPv4 address.
    let mut server: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    server.sort_by_key(SocketAddr::is_ipv6);
    let server = *server.first().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    // No connect(): bind any local port of the same family, then send_to the server.
    let sock = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    // A lost datagram gets no answer; Python's client would wait forever.
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.send_to(format!("{data}\n").as_bytes(), server)?;
    let mut buf = [0; 1024];
    let n = sock.recv(&mut buf)?; // one datagram: the whole answer, unlike a TCP read

    println!("Sent:     {data}");
    println!("Received: {}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}
