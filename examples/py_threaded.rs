//! Python's `ThreadingMixIn` example: a threading server on a background thread, three
//! clients, then shutdown, all in one process. Each reply names the thread that served it.
//!
//! Python: https://docs.python.org/3/library/socketserver.html#asynchronous-mixins
//!
//! ```python
//! import socket
//! import threading
//! import socketserver
//!
//! class ThreadedTCPRequestHandler(socketserver.BaseRequestHandler):
//!     def handle(self):
//!         data = str(self.request.recv(1024), 'ascii')
//!         cur_thread = threading.current_thread()
//!         response = bytes("{}: {}".format(cur_thread.name, data), 'ascii')
//!         self.request.sendall(response)
//!
//! class ThreadedTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
//!     pass
//!
//! def client(ip, port, message):
//!     with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
//!         sock.connect((ip, port))
//!         sock.sendall(bytes(message, 'ascii'))
//!         response = str(sock.recv(1024), 'ascii')
//!         print("Received: {}".format(response))
//!
//! if __name__ == "__main__":
//!     # Port 0 means to select an arbitrary unused port
//!     HOST, PORT = "localhost", 0
//!
//!     server = ThreadedTCPServer((HOST, PORT), ThreadedTCPRequestHandler)
//!     with server:
//!         ip, port = server.server_address
//!         # Start a thread with the server -- that thread will then start one
//!         # more thread for each request
//!         server_thread = threading.Thread(target=server.serve_forever)
//!         # Exit the server thread when the main thread terminates
//!         server_thread.daemon = True
//!         server_thread.start()
//!         print("Server loop running in thread:", server_thread.name)
//!
//!         client(ip, port, "Hello World 1")
//!         client(ip, port, "Hello World 2")
//!         client(ip, port, "Hello World 3")
//!
//!         server.shutdown()
//! ```
//!
//! ```text
//! cargo run --example py_threaded
//! ```
//!
//! prints
//!
//! ```text
//! Server loop running in thread: server_thread
//! Received: socketserver-request-0: Hello World 1
//! Received: socketserver-request-0: Hello World 2
//! Received: socketserver-request-0: Hello World 3
//! ```
//!
//! Python prints `Thread-2`, `Thread-3`, `Thread-4`: a new thread per request. Here a
//! request thread that is done waits a few seconds for the next request, so one thread
//! often serves all three; `Threading::new().keep_alive(Duration::ZERO)` gives Python's
//! behavior.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use socketserver::{StreamRequest, ThreadingTcpServer};

/// Python's `ThreadedTCPRequestHandler.handle`; it runs on the request's own thread.
fn handle(req: &mut StreamRequest) -> io::Result<()> {
    let mut buf = [0; 1024];
    let n = req.connection().read(&mut buf)?; // self.request.recv(1024)
    let data = String::from_utf8_lossy(&buf[..n]);
    let cur_thread = thread::current();
    let response = format!("{}: {data}", cur_thread.name().unwrap_or("unnamed"));
    req.connection().write_all(response.as_bytes()) // sendall
}

fn client(addr: SocketAddr, message: &str) -> io::Result<()> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?; // never hang the example
    sock.write_all(message.as_bytes())?;
    // The server closes after its one answer: read until then, rather than one recv
    // that might return only part of it.
    let mut response = String::new();
    sock.read_to_string(&mut response)?;
    println!("Received: {response}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Port 0 means to select an arbitrary unused port. ThreadingTcpServer is
    // TcpServer::builder(addr).dispatch(Threading::new()): the mix-in is a value.
    let server = ThreadingTcpServer::bind_handler("localhost:0", handle)?;
    let addr = server.local_addr(); // server.server_address

    // A scoped thread may borrow `server`; the scope joins it before `main` goes on.
    thread::scope(|scope| -> Result<(), Box<dyn std::error::Error>> {
        // Start a thread with the server -- that thread will then start one more thread
        // for each request.
        let server_thread =
            thread::Builder::new().name("server_thread".to_string()).spawn_scoped(scope, || server.serve_forever())?;
        println!("Server loop running in thread: {}", server_thread.thread().name().unwrap_or("unnamed"));

        let clients = ["Hello World 1", "Hello World 2", "Hello World 3"].iter().try_for_each(|m| client(addr, m));

        // Stops accepting at once; serve_forever returns when the requests are done. Also
        // after a failed client: the scope would otherwise wait for serve_forever forever.
        server.shutdown();
        server_thread.join().expect("the server thread panicked")?;
        Ok(clients?)
    })?;
    Ok(()) // `server` is dropped here: the end of Python's `with server:`
}
