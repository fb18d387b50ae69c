//! The pinger lab: a UDP ping client (after Kurose-Ross's "UDP Pinger" lab).
//!
//! Read `labs/pinger.md` first. Complete the parts marked `TODO(n)`, in order, and
//! grade your work with `cargo test -p labs --test lab_pinger`. Keep the public API
//! (`ping`, `Report` and its methods) as it is: the grader calls it.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// What `ping` found: one entry per ping sent, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `rtts[i]` is the round-trip time of the ping with sequence number `i + 1`, or
    /// `None` if no reply to it came within the timeout (lost).
    pub rtts: Vec<Option<Duration>>,
}

impl Report {
    /// How many pings were sent.
    pub fn sent(&self) -> usize {
        self.rtts.len()
    }

    /// How many pings were answered in time.
    pub fn received(&self) -> usize {
        // TODO(4): count the answered pings (the `Some`s).
        todo!("TODO(4): Report::received, from {} results", self.rtts.len())
    }

    /// The share of pings lost, in percent (0.0 to 100.0); 0.0 when none was sent.
    pub fn loss_percent(&self) -> f64 {
        // TODO(4): lost / sent * 100, careful with nothing sent.
        todo!("TODO(4): Report::loss_percent, from {} results", self.rtts.len())
    }

    /// The shortest round-trip time, `None` if no ping was answered.
    pub fn min(&self) -> Option<Duration> {
        // TODO(4): hint: `self.rtts.iter().flatten()` walks the answered ones.
        todo!("TODO(4): Report::min, from {} results", self.rtts.len())
    }

    /// The mean round-trip time of the answered pings, `None` if none was.
    pub fn avg(&self) -> Option<Duration> {
        // TODO(4): a `Duration` can be summed, and divided by a `u32`.
        todo!("TODO(4): Report::avg, from {} results", self.rtts.len())
    }

    /// The longest round-trip time, `None` if no ping was answered.
    pub fn max(&self) -> Option<Duration> {
        // TODO(4)
        todo!("TODO(4): Report::max, from {} results", self.rtts.len())
    }
}

/// Prints what `ping` prints: a line per ping, then the summary.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rtt) in self.rtts.iter().enumerate() {
            match rtt {
                Some(rtt) => writeln!(f, "ping {}: reply in {:.3} ms", i + 1, ms(*rtt))?,
                None => writeln!(f, "ping {}: request timed out", i + 1)?,
            }
        }
        write!(f, "{} sent, {} received, {:.1}% lost", self.sent(), self.received(), self.loss_percent())?;
        if let (Some(min), Some(avg), Some(max)) = (self.min(), self.avg(), self.max()) {
            write!(f, "; rtt min/avg/max = {:.3}/{:.3}/{:.3} ms", ms(min), ms(avg), ms(max))?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends `count` pings (`PING <seq> <time>`, seq from 1) to `server` one after the
/// other, waits up to `timeout` for each reply, and reports the round-trip times.
///
/// # Errors
/// An error of the socket itself (binding, sending, a failed receive); a lost ping is
/// not an error but a `None` in the report.
pub fn ping(server: SocketAddr, count: u32, timeout: Duration) -> io::Result<Report> {
    let socket = UdpSocket::bind(local_addr_for(server))?;
    let mut rtts = Vec::new();
    for seq in 1..=count {
        let sent_at = send_ping(&socket, server, seq)?;
        rtts.push(wait_for_reply(&socket, server, seq, sent_at + timeout)?.map(|at| at - sent_at));
    }
    Ok(Report { rtts })
}

/// The address to bind the client's socket to: any free port, on loopback when the
/// server is on loopback (so that the socket cannot be reached from outside), else on
/// every interface. (Given.)
fn local_addr_for(server: SocketAddr) -> SocketAddr {
    let ip = match server {
        _ if server.ip().is_loopback() => server.ip(),
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

/// Sends ping `seq` and returns when it left.
fn send_ping(socket: &UdpSocket, server: SocketAddr, seq: u32) -> io::Result<Instant> {
    // TODO(1): build `PING <seq> <time>`, the time in seconds since the Unix epoch with
    // a fraction, as Python's `time.time()` gives it (`SystemTime::now()
    // .duration_since(UNIX_EPOCH)`, then `as_secs_f64()`), send it to `server` with
    // `send_to`, and return `Instant::now()` taken just before sending.
    todo!("TODO(1): send ping {seq} to {server} from {:?}", socket.local_addr())
}

/// Waits until the reply to ping `seq` arrives (returns when it did) or `deadline`
/// passes (`None`). Datagrams from elsewhere, replies to other pings and garbage are
/// skipped, and do not extend the wait.
fn wait_for_reply(socket: &UdpSocket, server: SocketAddr, seq: u32, deadline: Instant) -> io::Result<Option<Instant>> {
    // TODO(2): in a loop:
    //   - the time left is `deadline.saturating_duration_since(Instant::now())`; if it
    //     is zero, the ping is lost (`Ok(None)`): do not pass a zero duration to
    //     `set_read_timeout`, it is an error;
    //   - `socket.set_read_timeout(Some(left))`, then `socket.recv_from(&mut buf)`;
    //   - a read that timed out fails with `ErrorKind::WouldBlock` on Linux and macOS
    //     (`TimedOut` on Windows): the ping is lost; any other error is returned;
    //   - TODO(3): a datagram from `server` (compare the address `recv_from` gives)
    //     whose sequence number is `seq` is the reply: `Ok(Some(Instant::now()))`.
    //     Anything else (a late reply to an earlier ping, garbage, a stranger's
    //     datagram) is skipped: loop again, with the time that is left. Write a helper
    //     `fn reply_seq(datagram: &[u8]) -> Option<u32>` that reads the number: the
    //     datagram may be anything, not even UTF-8 (`std::str::from_utf8`,
    //     `split_whitespace`, `parse`, and `None` whenever something does not fit).
    todo!("TODO(2): wait for the reply to ping {seq} from {server} until {deadline:?} on {socket:?}")
}
