//! The smallest TCP server: greets each client by the name it sends.
//! This is the README's first example.
//!
//! ```text
//! cargo run --example hello        # then: echo World | nc 127.0.0.1 9000
//! ```

use std::io::{self, BufRead, Write};

use socketserver::{StreamRequest, TcpServer};

fn main() -> Result<(), socketserver::Error> {
    let server = TcpServer::bind_handler("127.0.0.1:9000", |req: &mut StreamRequest| -> io::Result<()> {
        let mut name = String::new();
        req.reader().read_line(&mut name)?;
        writeln!(req.writer(), "Hello, {}!", name.trim())
    })?;
    println!("listening on tcp://{}", server.local_addr());
    server.serve_forever()
}
