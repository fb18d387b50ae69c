//! The Daytime Protocol (RFC 867) over TCP and UDP at once: two servers in one process.
//!
//! Over TCP the server sends the date and time as one line as soon as a client connects,
//! then closes; over UDP it answers any datagram with that line. The time is UTC, as
//! `2026-11-25 14:03:09 UTC`, computed from the system clock alone.
//!
//! ```text
//! cargo run --example daytime [-- --addr HOST:PORT]   # default 127.0.0.1:1313 (13 needs root)
//! nc 127.0.0.1 1313                                   # TCP
//! echo | nc -u -w1 127.0.0.1 1313                     # UDP: any datagram
//! ```
//!
//! It prints `listening on tcp://ADDR`, then `listening on udp://ADDR`. With port 0 each
//! server gets a free port of its own.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use socketserver::{DatagramRequest, StreamRequest, TcpServer, UdpServer};

/// Now, as `YYYY-MM-DD HH:MM:SS UTC`. RFC 867 leaves the format free; this one sorts.
fn daytime() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, time) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", time / 3600, time / 60 % 60, time % 60)
}

/// The date `days` days after 1970-01-01, in the Gregorian calendar: Howard Hinnant's
/// `civil_from_days` (http://howardhinnant.github.io/date_algorithms.html), which counts
/// in 400-year eras of 146,097 days from 0000-03-01, so February is the year's last month.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of the era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of the era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the year from March 1st, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => "127.0.0.1:1313",
        [flag, addr] if flag == "--addr" => addr,
        _ => return Err("usage: daytime [--addr HOST:PORT]".into()),
    };
    // TCP: whatever the client sends is ignored; the server closes after the line.
    let tcp = TcpServer::bind_handler(addr, |req: &mut StreamRequest| -> io::Result<()> {
        write!(req.writer(), "{}\r\n", daytime())
    })?;
    // UDP: what `reply()` holds is sent back to the sender when the handler returns.
    let udp = UdpServer::bind_handler(addr, |req: &mut DatagramRequest| -> io::Result<()> {
        write!(req.reply(), "{}\r\n", daytime())
    })?;
    println!("listening on tcp://{}", tcp.local_addr());
    println!("listening on udp://{}", udp.local_addr());

    // The UDP server serves on a thread of its own; the guard stops it if main returns.
    let _udp = udp.serve_in_background()?;
    tcp.serve_forever()?; // until Ctrl-C
    Ok(())
}
