//! A calculator speaking a line protocol: one command per line, one answer per line.
//!
//! ```text
//! cargo run --example calc [-- --addr HOST:PORT]    # default 127.0.0.1:7001
//! nc 127.0.0.1 7001
//! ```
//!
//! ```text
//! > ADD 1 2
//! < 3
//! > div 7 2                     # commands in any case; whole numbers (i64)
//! < 3
//! > DIV 1 0
//! < ERR division by zero
//! > POW 2 3
//! < ERR unknown command
//! > MUL 2 x
//! < ERR not a number: x
//! > QUIT
//! < BYE                         # and the server closes the connection
//! ```
//!
//! Commands: `ADD`, `SUB`, `MUL`, `DIV` (rounding toward zero), each with two numbers,
//! and `QUIT`. Other errors: `ERR ADD takes two numbers`, `ERR overflow`,
//! `ERR empty line`. A line over 1024 bytes gets `ERR line too long` and the connection
//! is closed, as the rest of such a line cannot be told from the next command.

use std::io::{self, Write};
use std::time::Duration;

use socketserver::{StreamRequest, ThreadingTcpServer};

const MAX_LINE: usize = 1024;
/// A client silent this long is disconnected, so idle connections cannot pile up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Evaluates one command line: the result, or why there is none.
fn calculate(line: &str) -> Result<i64, String> {
    let mut words = line.split_whitespace();
    let command = words.next().ok_or("empty line")?.to_ascii_uppercase();
    // `checked_*` return None on overflow instead of wrapping or panicking.
    let operation: fn(i64, i64) -> Option<i64> = match command.as_str() {
        "ADD" => i64::checked_add,
        "SUB" => i64::checked_sub,
        "MUL" => i64::checked_mul,
        "DIV" => i64::checked_div,
        _ => return Err("unknown command".to_string()),
    };
    let numbers = words
        .map(|word| word.parse::<i64>().map_err(|_| format!("not a number: {word}")))
        .collect::<Result<Vec<i64>, String>>()?;
    let [a, b] = numbers[..] else { return Err(format!("{command} takes two numbers")) };
    if command == "DIV" && b == 0 {
        return Err("division by zero".to_string());
    }
    operation(a, b).ok_or_else(|| "overflow".to_string())
}

/// One connection: answers lines until `QUIT`, end-of-file or a line too long.
fn handle(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded: a client that never sends a newline cannot fill the server's memory.
        match req.reader().read_line_bounded(&mut line, MAX_LINE) {
            Ok(0) => return Ok(()), // the client closed the connection
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return req.writer().write_all(b"ERR line too long\n"),
            Err(e) => return Err(e),
        }
        let line = String::from_utf8_lossy(&line);
        if line.trim().eq_ignore_ascii_case("QUIT") {
            return req.writer().write_all(b"BYE\n"); // the server closes after `handle`
        }
        match calculate(&line) {
            Ok(result) => writeln!(req.writer(), "{result}")?,
            Err(why) => writeln!(req.writer(), "ERR {why}")?,
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => "127.0.0.1:7001",
        [flag, addr] if flag == "--addr" => addr,
        _ => return Err("usage: calc [--addr HOST:PORT]".into()),
    };
    // A thread per connection, so one slow client does not hold up the others.
    let server = ThreadingTcpServer::builder(addr).read_timeout(IDLE_TIMEOUT).bind_handler(handle)?;
    println!("listening on tcp://{}", server.local_addr());
    server.serve_forever()?; // until Ctrl-C
    Ok(())
}
