//! Python's `socketserver.TCPServer` example, client side: sends its arguments as one
//! line and prints the server's answer. Works with `py_tcp_server` and
//! `py_tcp_stream_server`, and with Python's own servers.
//!
//! Python: https://docs.python.org/3/library/socketserver.html#socketserver-tcpserver-example
//!
//! ```python
//! import socket
//! import sys
//!
//! HOST, PORT = "localhost", 9999
//! data = " ".join(sys.argv[1:])
//!
//! # Create a socket (SOCK_STREAM means a TCP socket)
//! with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
//!     # Connect to server and send data
//!     sock.connect((HOST, PORT))
//!     sock.sendall(bytes(data + "\n", "utf-8"))
//!
//!     # Receive data from the server and shut down
//!     received = str(sock.recv(1024), "utf-8")
//!
//! print("Sent:     {}".format(data))
//! print("Received: {}".format(received))
//! ```
//!
//! ```text
//! cargo run --example py_tcp_client -- [--addr HOST:PORT] hello world with TCP
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, words) = match args.as_slice() {
        [flag, addr, words @ ..] if flag == "--addr" => (addr.as_str(), words),
        words => ("localhost:9999", words), // HOST, PORT
    };
    let data = words.join(" ");

    // `connect` tries each address of the name in turn, IPv4 or IPv6.
    let mut sock = TcpStream::connect(addr)?;
    // Python's client would wait forever for a server that never answers.
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.write_all(format!("{data}\n").as_bytes())?;

    // Up to 1024 bytes, as Python's `recv(1024)`, but until the server closes: one read
    // may return only part of the answer, since TCP carries bytes, not messages.
    let mut received = Vec::new();
    sock.take(1024).read_to_end(&mut received)?;

    println!("Sent:     {data}");
    println!("Received: {}", String::from_utf8_lossy(&received));
    Ok(())
}
