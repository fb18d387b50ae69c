//! The pinger lab's reference solution: a UDP ping client (after Kurose-Ross's "UDP
//! Pinger" lab). See `labs/pinger.md`.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
        self.rtts.iter().flatten().count()
    }

    /// The share of pings lost, in percent (0.0 to 100.0); 0.0 when none was sent.
    pub fn loss_percent(&self) -> f64 {
        if self.sent() == 0 {
            return 0.0;
        }
        (self.sent() - self.received()) as f64 * 100.0 / self.sent() as f64
    }

    /// The shortest round-trip time, `None` if no ping was answered.
    pub fn min(&self) -> Option<Duration> {
        self.rtts.iter().flatten().min().copied()
    }

    /// The mean round-trip time of the answered pings, `None` if none was.
    pub fn avg(&self) -> Option<Duration> {
        let answered = u32::try_from(self.received()).ok().filter(|&n| n > 0)?;
        Some(self.rtts.iter().flatten().sum::<Duration>() / answered)
    }

    /// The longest round-trip time, `None` if no ping was answered.
    pub fn max(&self) -> Option<Duration> {
        self.rtts.iter().flatten().max().copied()
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
/// every interface.
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
    // The time in the message is for people (and servers) to read, as in Kurose-Ross's
    // Python client (`time.time()`); the RTT is measured with the monotonic clock.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let message = format!("PING {seq} {:.6}", now.as_secs_f64());
    let sent_at = Instant::now();
    socket.send_to(message.as_bytes(), server)?;
    Ok(sent_at)
}

/// Waits until the reply to ping `seq` arrives (returns when it did) or `deadline`
/// passes (`None`). Datagrams from elsewhere, replies to other pings and garbage are
/// skipped, and do not extend the wait.
fn wait_for_reply(socket: &UdpSocket, server: SocketAddr, seq: u32, deadline: Instant) -> io::Result<Option<Instant>> {
    let mut buf = [0; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None); // (a zero read timeout would be an error: check first)
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == server && reply_seq(&buf[..n]) == Some(seq) => return Ok(Some(Instant::now())),
            Ok(_) => continue, // not the reply we wait for: a late one, or a stranger's
            // A timed-out read: WouldBlock on Unix, TimedOut on Windows.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The sequence number of a reply (`PING <seq> <time>`), `None` if it is not one.
fn reply_seq(datagram: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("PING"), Some(seq)) => seq.parse().ok(),
        _ => None,
    }
}
