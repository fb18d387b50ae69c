//! A test harness's server: start on a free port, use it, stop it, nothing left running.
//!
//! ```text
//! cargo run --example harness
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use socketserver::{dispatch::Threading, StreamRequest, TcpServer};

fn main() -> Result<(), socketserver::Error> {
    // Shared state the test can read: how many lines the server saw.
    let lines = Arc::new(AtomicUsize::new(0));
    let seen = lines.clone();
    let server = TcpServer::builder("127.0.0.1:0").dispatch(Threading::new()).bind_handler(
        move |req: &mut StreamRequest| -> io::Result<()> {
            let mut line = String::new();
            while req.reader().read_line(&mut line)? > 0 {
                seen.fetch_add(1, Ordering::Relaxed);
                req.writer().write_all(line.to_uppercase().as_bytes())?;
                line.clear();
            }
            Ok(())
        },
    )?;
    let addr = server.local_addr();
    let background = server.serve_in_background()?;

    // The code under test talks to a real server.
    let mut client = BufReader::new(TcpStream::connect(addr)?);
    for word in ["alpha", "beta"] {
        writeln!(client.get_mut(), "{word}")?;
        let mut reply = String::new();
        client.read_line(&mut reply)?;
        assert_eq!(reply.trim(), word.to_uppercase());
    }
    drop(client);

    background.stop()?; // shuts down, joins the serve thread and the request threads
    assert_eq!(lines.load(Ordering::Relaxed), 2);
    println!("served {} lines on {addr}; server stopped", lines.load(Ordering::Relaxed));
    Ok(())
}
