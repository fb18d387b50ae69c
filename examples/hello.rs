//! The smallest TCP server: greets each client by the name it sends.
//! This is the README's first example, as it stands there.
//!
//! ```text
//! cargo run --example hello        # then: echo World | nc 127.0.0.1 9000
//! ```

use std::io::{BufRead, Write};

use socketserver::TcpServer;

fn main() -> Result<(), socketserver::Error> {
    let server = TcpServer::bind("127.0.0.1:9000", |req| {
        let mut name = String::new();
        req.reader().read_line(&mut name)?;
        writeln!(req.writer(), "Hello, {}!", name.trim())?; // one send
        Ok(())
    })?;
    println!("listening on tcp://{}", server.local_addr());
    server.serve_forever()
}
