//! The round trip of a `writeln!` reply: one client sends a line, the server answers
//! `writeln!(req.writer(), "250 hello {} ok", name)`, the client waits for the reply,
//! `N` times over one connection. Issue 14 measured 43.9 ms per round trip here with an
//! unbuffered writer (three sends per reply, held by Nagle's algorithm and the client's
//! delayed ACK).
//!
//! ```sh
//! cargo run --release -p bench --bin writeln_rtt [-- N]
//! ```
//!
//! Rows: the default configuration; `nodelay(true)`; and a reply written as three
//! `write_all` calls, with the default and with `nodelay(true)`, the case a formatted
//! write in one send does not cover.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use socketserver::TcpServer;

fn run(label: &str, nodelay: Option<bool>, pieces: bool, n: usize) {
    let mut builder = TcpServer::builder("127.0.0.1:0");
    if let Some(nodelay) = nodelay {
        builder = builder.nodelay(nodelay);
    }
    let server = builder
        .bind(move |req| {
            let mut name = String::new();
            while req.reader().read_line(&mut name)? > 0 {
                if pieces {
                    req.writer().write_all(b"250 hello ")?;
                    req.writer().write_all(name.trim().as_bytes())?;
                    req.writer().write_all(b" ok\n")?;
                } else {
                    writeln!(req.writer(), "250 hello {} ok", name.trim())?;
                }
                name.clear();
            }
            Ok(())
        })
        .expect("bind");
    let addr = server.local_addr();
    let background = server.serve_in_background().expect("serve");
    let client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut writer = client;
    let mut reply = String::new();
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let start = Instant::now();
        writer.write_all(b"world\n").unwrap();
        reply.clear();
        reader.read_line(&mut reply).unwrap();
        assert_eq!(reply, "250 hello world ok\n");
        if i >= 10 {
            times.push(start.elapsed()); // the first 10 warm up
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    println!("| {label} | {median:.1?} | {p99:.1?} |");
    drop((reader, writer));
    background.stop().expect("stop");
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(200, |s| s.parse().expect("N"));
    println!("{n} round trips over one connection, after 10 to warm up\n");
    println!("| server | median | p99 |\n|---|---|---|");
    run("default, `writeln!`", None, false, n);
    run("`nodelay(true)`, `writeln!`", Some(true), false, n);
    run("`nodelay(false)`, three `write_all`", Some(false), true, n);
    run("`nodelay(true)`, three `write_all`", Some(true), true, n);
}
