//! A retrying client, shown coping with a misbehaving network.
//!
//! ```text
//! cargo run --example retry
//! ```
//!
//! Two small clients a program can copy:
//!
//! - [`request`]: a line protocol over TCP. Connect with a timeout, send one line, read
//!   one reply line within a time limit. A failure that another try may fix (the
//!   connection refused or reset, no reply in time, the connection closed before the
//!   end of the reply) is retried with exponential backoff, up to a number of attempts
//!   and an overall deadline; one that it cannot fix (a reply that is not a line of at
//!   most `max_reply` bytes: `InvalidData`) fails at once.
//! - [`ping`] and [`Pinger`]: a datagram over UDP. Send, wait for the answer, send again
//!   if none comes; a sequence number in each datagram tells the answer from
//!   duplicates and late answers to earlier pings, which are ignored.
//!
//! `main` starts an echo server of this crate on `127.0.0.1:0` (TCP and UDP), puts a
//! `socketserver::testing::FaultProxy` in front of it, and runs the clients through one
//! fault after another, printing how many attempts each took and how long. It exits by
//! itself within a few seconds. `tests/retry_example.rs` tests the same clients against
//! each fault, with assertions.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

/// How hard a client tries.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Attempts in all, the first one included (at least 1).
    pub attempts: u32,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// How long the reply may take once the request is sent: the whole line (TCP), the
    /// answer before the datagram is sent again (UDP).
    pub reply_timeout: Duration,
    /// The pause after the first failed attempt, doubled after each later one...
    pub backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// The time limit over all attempts and pauses together.
    pub deadline: Duration,
    /// The longest reply accepted, in bytes (TCP: without the newline; UDP: the whole
    /// datagram). A longer one is `InvalidData`.
    pub max_reply: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            attempts: 4,
            connect_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(2),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            max_reply: 1024,
        }
    }
}

impl Policy {
    /// The pause after failed attempt number `attempt` (1 for the first):
    /// `backoff`, `2 × backoff`, `4 × backoff`... up to `max_backoff`.
    ///
    /// Clients that fail together retry together; a real client would also add a random
    /// part (jitter) so that they spread out. This one stays exact, so that its tests
    /// can measure it.
    pub fn pause(&self, attempt: u32) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff.saturating_mul(doubling).min(self.max_backoff)
    }
}

/// What happened on the way to a result (or an error).
#[derive(Debug, Default)]
pub struct Tally {
    /// Attempts made (TCP: connections; UDP: datagrams sent).
    pub attempts: u32,
    /// Why each failed attempt failed, in order.
    pub failures: Vec<Failure>,
    /// UDP: answers ignored because their sequence number was not the one awaited
    /// (duplicates, late answers to an earlier ping).
    pub ignored: u32,
}

/// One failed attempt.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong: `ConnectionRefused`, `ConnectionReset`, `TimedOut`,
    /// `UnexpectedEof` (the connection closed before the end of the reply)...
    pub kind: ErrorKind,
    /// The error's text.
    pub message: String,
    /// Bytes of the reply received before the failure (TCP; 0 for UDP).
    pub received: usize,
    /// How long the attempt took.
    pub took: Duration,
}

/// Whether another attempt may succeed where this one failed.
///
/// Yes for what the network or a restarting server does: refused, reset, aborted, a
/// timeout (`WouldBlock` is how Unix reports a read timeout), the end of the stream
/// before the reply. No for `InvalidData` (the server answered, wrongly: it will again),
/// `InvalidInput` and everything else.
pub fn retryable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::BrokenPipe
            | ErrorKind::TimedOut
            | ErrorKind::WouldBlock
            | ErrorKind::UnexpectedEof
            | ErrorKind::Interrupted
    )
}

/// Sends `line` to the line server at `addr` and returns its one-line reply (without
/// the line end), retrying as `policy` says.
///
/// # Errors
///
/// `InvalidInput` if `line` holds a newline; `InvalidData` at once for a reply longer
/// than `policy.max_reply` or not UTF-8; after the last attempt or at the deadline, the
/// last attempt's error, its kind kept (`TimedOut`, `ConnectionReset`...).
pub fn request(addr: SocketAddr, line: &str, policy: &Policy) -> io::Result<String> {
    request_tallied(addr, line, policy, &mut Tally::default())
}

/// [`request`], counting the attempts and their failures in `tally`.
pub fn request_tallied(addr: SocketAddr, line: &str, policy: &Policy, tally: &mut Tally) -> io::Result<String> {
    if line.contains('\n') {
        return Err(io::Error::new(ErrorKind::InvalidInput, "a request is one line: it cannot hold a newline"));
    }
    let started = Instant::now();
    let deadline = started + policy.deadline;
    let mut attempt_number = 0;
    loop {
        attempt_number += 1;
        tally.attempts += 1;
        let began = Instant::now();
        let mut received = 0;
        let error = match attempt(addr, line, policy, deadline, &mut received) {
            Ok(reply) => return Ok(reply),
            Err(error) => error,
        };
        tally.failures.push(Failure {
            kind: error.kind(),
            message: error.to_string(),
            received,
            took: began.elapsed(),
        });
        if !retryable(&error) {
            return Err(error);
        }
        let pause = policy.pause(attempt_number);
        if attempt_number >= policy.attempts.max(1) || Instant::now() + pause >= deadline {
            return Err(give_up(error, attempt_number, started));
        }
        thread::sleep(pause);
    }
}

/// One attempt: a connection, the line, the reply line. `received` counts the reply's
/// bytes as they come.
fn attempt(
    addr: SocketAddr,
    line: &str,
    policy: &Policy,
    deadline: Instant,
    received: &mut usize,
) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, time_left(deadline)?.min(policy.connect_timeout))?;
    // The whole reply must come within reply_timeout: a timeout on each read alone would
    // let a server that sends a byte a second hold the client for ever.
    let asked = Instant::now();
    let reply_by = deadline.min(asked + policy.reply_timeout);
    stream.set_write_timeout(Some(time_left(reply_by)?))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0; 1024];
    loop {
        stream.set_read_timeout(Some(time_left(reply_by)?))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Unix reports a read timeout as WouldBlock, Windows as TimedOut: one kind here.
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let message = format!("no reply within {:.2?}", reply_by.saturating_duration_since(asked));
                return Err(io::Error::new(ErrorKind::TimedOut, message));
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            let message = format!("the connection closed after {} bytes, before the end of the reply", reply.len());
            return Err(io::Error::new(ErrorKind::UnexpectedEof, message));
        }
        reply.extend_from_slice(&buf[..n]);
        *received = reply.len();
        // One line is the reply: what may follow it is not read.
        if let Some(end) = reply.iter().position(|&b| b == b'\n') {
            reply.truncate(end);
            if reply.last() == Some(&b'\r') {
                reply.pop();
            }
            if reply.len() > policy.max_reply {
                break;
            }
            return String::from_utf8(reply)
                .map_err(|_| io::Error::new(ErrorKind::InvalidData, "a reply not in UTF-8"));
        }
        if reply.len() > policy.max_reply {
            break;
        }
    }
    Err(io::Error::new(ErrorKind::InvalidData, format!("a reply line longer than {} bytes", policy.max_reply)))
}

/// The time until `deadline`, or `TimedOut` if it has passed (a zero timeout would mean
/// "none" to some calls, an error to others).
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(ErrorKind::TimedOut, "the deadline has passed"));
    }
    Ok(left)
}

/// The last error, its kind kept, saying that the client gave up.
fn give_up(last: io::Error, attempts: u32, started: Instant) -> io::Error {
    let plural = if attempts == 1 { "" } else { "s" };
    let message = format!("gave up after {attempts} attempt{plural} in {:.2?}: {last}", started.elapsed());
    io::Error::new(last.kind(), message)
}

/// Sends `payload` to the UDP echo server at `addr` and returns the answer's payload,
/// sending again as `policy` says. One ping from a socket of its own: use a [`Pinger`]
/// for several.
///
/// # Errors
///
/// As [`Pinger::ping`].
pub fn ping(addr: SocketAddr, payload: &[u8], policy: &Policy) -> io::Result<Vec<u8>> {
    Pinger::new(addr)?.ping(payload, policy)
}

/// A UDP client that numbers its pings: a datagram is `SEQ LEN PAYLOAD` (the sequence
/// number and the payload's length in decimal, a space after each), and the server
/// sends it back. An answer whose number is not the one awaited is a duplicate or a
/// late answer to an earlier ping, and is ignored. An answer whose payload is shorter
/// than the length it announces was cut on the way (a buffer too small somewhere):
/// sending again would not mend that, so it is `InvalidData` at once.
#[derive(Debug)]
pub struct Pinger {
    socket: UdpSocket,
    next: u64,
}

impl Pinger {
    /// A socket on an ephemeral port, connected to `server`: it receives only what comes
    /// from there. On loopback for a server on loopback, so that nothing listens beyond
    /// the machine.
    pub fn new(server: SocketAddr) -> io::Result<Pinger> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) if server.ip().is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) if server.ip().is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(server)?;
        Ok(Pinger { socket, next: 1 })
    }

    /// Sends `payload` and returns the answer's payload.
    ///
    /// # Errors
    ///
    /// `InvalidData` at once for an answer cut short, longer than `policy.max_reply` or
    /// not of this protocol; `TimedOut` when no answer came after the last attempt or
    /// by the deadline; `InvalidInput` for a datagram longer than `policy.max_reply`.
    pub fn ping(&mut self, payload: &[u8], policy: &Policy) -> io::Result<Vec<u8>> {
        self.ping_tallied(payload, policy, &mut Tally::default())
    }

    /// [`Pinger::ping`], counting in `tally` the datagrams sent, the attempts that got no
    /// answer and the answers ignored.
    pub fn ping_tallied(&mut self, payload: &[u8], policy: &Policy, tally: &mut Tally) -> io::Result<Vec<u8>> {
        let seq = self.next;
        self.next += 1;
        let mut datagram = format!("{seq} {} ", payload.len()).into_bytes();
        datagram.extend_from_slice(payload);
        if datagram.len() > policy.max_reply {
            let message = format!("a ping of {} bytes, more than max_reply ({})", datagram.len(), policy.max_reply);
            return Err(io::Error::new(ErrorKind::InvalidInput, message));
        }
        let started = Instant::now();
        let deadline = started + policy.deadline;
        // One byte more than the longest answer: a datagram that fills it is too long
        // (recv would cut it to the buffer without a word).
        let mut buf = vec![0; policy.max_reply + 1];
        let mut attempt_number = 0;
        loop {
            attempt_number += 1;
            tally.attempts += 1;
            let began = Instant::now();
            let last = attempt_number >= policy.attempts.max(1);
            // The pause before sending again is spent listening: an answer to this
            // datagram that comes late is as good as one in time.
            let pause = if last { Duration::ZERO } else { policy.pause(attempt_number) };
            let wait_until = deadline.min(began + policy.reply_timeout + pause);
            let outcome = match self.socket.send(&datagram) {
                Ok(_) => self.answer(seq, wait_until, &mut buf, tally),
                Err(e) => Err(e),
            };
            let error = match outcome {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            tally.failures.push(Failure {
                kind: error.kind(),
                message: error.to_string(),
                received: 0,
                took: began.elapsed(),
            });
            if !retryable(&error) {
                return Err(error);
            }
            if last || Instant::now() >= deadline {
                return Err(give_up(error, attempt_number, started));
            }
            // A refusal (the ICMP error of a datagram nobody received) comes at once:
            // wait out the attempt before sending again, as after a timeout.
            thread::sleep(wait_until.saturating_duration_since(Instant::now()));
        }
    }

    /// Receives until the answer numbered `seq` comes, ignoring others, or `wait_until`.
    fn answer(&self, seq: u64, wait_until: Instant, buf: &mut [u8], tally: &mut Tally) -> io::Result<Vec<u8>> {
        let waited = wait_until.saturating_duration_since(Instant::now());
        loop {
            let left = wait_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(ErrorKind::TimedOut, format!("no answer within {waited:.2?}")));
            }
            self.socket.set_read_timeout(Some(left))?;
            let n = match self.socket.recv(buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == buf.len() {
                let message = format!("an answer longer than {} bytes", buf.len() - 1);
                return Err(io::Error::new(ErrorKind::InvalidData, message));
            }
            let (number, len, answer) = parse_answer(&buf[..n])?;
            if number != seq {
                tally.ignored += 1;
                continue;
            }
            if answer.len() as u64 != len {
                let message = format!("an answer cut short: {} of its {len} bytes", answer.len());
                return Err(io::Error::new(ErrorKind::InvalidData, message));
            }
            return Ok(answer.to_vec());
        }
    }
}

/// Splits an answer `SEQ LEN PAYLOAD` into the number, the length it announces and the
/// payload as it came (shorter if cut on the way).
fn parse_answer(datagram: &[u8]) -> io::Result<(u64, u64, &[u8])> {
    let mut parts = datagram.splitn(3, |&b| b == b' ');
    let mut number = || -> Option<u64> { std::str::from_utf8(parts.next()?).ok()?.parse().ok() };
    let (Some(seq), Some(len)) = (number(), number()) else {
        let message = format!("not an answer of this protocol: {:?}", String::from_utf8_lossy(datagram));
        return Err(io::Error::new(ErrorKind::InvalidData, message));
    };
    let payload = parts.next().unwrap_or_default();
    if payload.len() as u64 > len {
        let message = format!("an answer longer than it says: {} bytes, not {len}", payload.len());
        return Err(io::Error::new(ErrorKind::InvalidData, message));
    }
    Ok((seq, len, payload))
}

// ---------------------------------------------------------------------------------------
// The demonstration: an echo server, a proxy in front, one fault after another
// ---------------------------------------------------------------------------------------

/// What `main` and the tests run the clients against.
pub mod demo {
    use std::io::{self, ErrorKind, Write};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use socketserver::dispatch::Threading;
    use socketserver::transport::{Tcp, Udp};
    use socketserver::{BackgroundServer, DatagramRequest, StreamRequest, TcpServer, UdpServer};

    /// The longest line the echo server reads.
    pub const MAX_LINE: usize = 64 * 1024;

    /// A TCP server that answers each line with the same line, a thread per connection.
    pub fn tcp_echo() -> io::Result<(SocketAddr, BackgroundServer<Tcp>)> {
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .bind_handler(echo_lines)
            .map_err(io::Error::other)?;
        let addr = server.local_addr();
        Ok((addr, server.serve_in_background().map_err(io::Error::other)?))
    }

    /// Answers each line with the same line until the client closes.
    fn echo_lines(req: &mut StreamRequest) -> io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            match req.reader().read_line_bounded(&mut line, MAX_LINE) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // A line too long: no answer, the connection closed.
                Err(e) if e.kind() == ErrorKind::InvalidData => return Ok(()),
                Err(e) => return Err(e),
            }
            req.writer().write_all(&line)?;
            req.writer().flush()?;
        }
    }

    /// A UDP server that sends each datagram back; `received` counts them.
    pub fn udp_echo(received: Arc<AtomicUsize>) -> io::Result<(SocketAddr, BackgroundServer<Udp>)> {
        let server = UdpServer::bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
            received.fetch_add(1, Ordering::SeqCst);
            let (packet, reply) = req.packet_and_reply();
            reply.extend_from_slice(packet);
            Ok(())
        })
        .map_err(io::Error::other)?;
        let addr = server.local_addr();
        Ok((addr, server.serve_in_background().map_err(io::Error::other)?))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    use socketserver::testing::{Fault, FaultProxy};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    let (tcp_addr, _tcp_server) = demo::tcp_echo()?;
    let (udp_addr, _udp_server) = demo::udp_echo(Arc::new(AtomicUsize::new(0)))?;
    let policy = Policy {
        attempts: 4,
        reply_timeout: Duration::from_millis(300),
        backoff: Duration::from_millis(50),
        deadline: Duration::from_secs(1),
        ..Policy::default()
    };
    let ms = Duration::from_millis;
    println!("echo server on {tcp_addr} (TCP) and {udp_addr} (UDP); policy: {policy:?}");

    // (what is shown, the faults, the seed): with a probability below 1, the seed picks
    // which connections get the fault, the same ones on every run.
    let tcp_cases: Vec<(&str, Vec<Fault>, u64)> = vec![
        ("no fault", vec![], 0),
        ("latency 200 ms", vec![Fault::latency(ms(200), Duration::ZERO)], 0),
        ("bandwidth 4 kB/s, a 1 kB line", vec![Fault::bandwidth(4000)], 0),
        ("slicer: 3 bytes every 20 ms", vec![Fault::slicer(3, ms(20))], 0),
        ("limit_data 5 bytes, one connection in two", vec![Fault::limit_data(5).probability(0.5)], 10),
        ("reset_after_bytes 5, one connection in two", vec![Fault::reset_after_bytes(5).probability(0.5)], 10),
        (
            "reset_after 50 ms of a 200 ms latency, one connection in two",
            vec![Fault::reset_after(ms(50)).probability(0.5), Fault::latency(ms(200), Duration::ZERO)],
            10,
        ),
        ("slow_close 1 s (the client does not wait for the close)", vec![Fault::slow_close(ms(1000))], 0),
        ("refuse, one connection in two", vec![Fault::refuse().probability(0.5)], 10),
        ("timeout: the server never answers", vec![Fault::timeout()], 0),
    ];
    for (what, faults, seed) in tcp_cases {
        let proxy = FaultProxy::tcp(tcp_addr)?;
        proxy.seed(seed);
        for fault in faults {
            proxy.add(fault)?;
        }
        let line = if what.starts_with("bandwidth") { "x".repeat(1000) } else { "hello".to_string() };
        let mut tally = Tally::default();
        let began = Instant::now();
        let result = request_tallied(proxy.addr(), &line, &policy, &mut tally);
        report("tcp", what, &result.map(|reply| reply.len()), &tally, began.elapsed());
    }

    let udp_cases: Vec<(&str, Fault, u64)> = vec![
        ("drop one datagram in three", Fault::drop_datagrams().both_ways().probability(0.3), 3),
        ("duplicate every answer", Fault::duplicate(), 0),
        ("reorder: each answer held until the next or 100 ms", Fault::reorder(), 0),
        ("truncate the answers to 6 bytes", Fault::truncate(6), 0),
        ("timeout: nothing comes back", Fault::timeout(), 0),
    ];
    for (what, fault, seed) in udp_cases {
        let proxy = FaultProxy::udp(udp_addr)?;
        proxy.seed(seed);
        proxy.add(fault)?;
        let mut pinger = Pinger::new(proxy.addr())?;
        let mut tally = Tally::default();
        let began = Instant::now();
        // Five pings, one after another on one socket: an answer that comes twice, or
        // late, is seen by the next ping, which must not take it for its own.
        let mut result = Ok(0);
        for i in 0..5 {
            let payload = format!("ping {i}");
            result = pinger.ping_tallied(payload.as_bytes(), &policy, &mut tally).and_then(|answer| {
                match answer == payload.as_bytes() {
                    true => Ok(i + 1),
                    false => Err(io::Error::new(ErrorKind::InvalidData, "the answer to another ping")),
                }
            });
            if result.is_err() {
                break;
            }
        }
        report("udp", what, &result, &tally, began.elapsed());
    }
    Ok(())
}

/// One line about one case.
fn report(proto: &str, what: &str, result: &io::Result<usize>, tally: &Tally, took: Duration) {
    let failures: Vec<String> = tally.failures.iter().map(|f| format!("{:?}", f.kind)).collect();
    let outcome = match result {
        Ok(n) if proto == "tcp" => format!("ok, a {n}-byte reply"),
        Ok(n) => format!("ok, {n} answers"),
        Err(e) => format!("failed: {e}"),
    };
    let ignored = if proto == "udp" { format!(", {} ignored", tally.ignored) } else { String::new() };
    println!(
        "{proto} {what}: {outcome}; {} attempt{}{ignored} in {:.2} s; failed attempts: [{}]",
        tally.attempts,
        if tally.attempts == 1 { "" } else { "s" },
        took.as_secs_f64(),
        failures.join(", ")
    );
}
