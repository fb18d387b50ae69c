//! The pinger lab's checks. Each runs the student's `ping` against a UDP server of the
//! grader's (built with this crate's `UdpServer`, on 127.0.0.1:0) that echoes pings,
//! except those it is told to drop, delay or answer with strays, and returns a message
//! that says what the server did, what was expected and what came back.
//!
//! Included by `tests/lab_pinger.rs` (the student's code) and `tests/skeleton_pinger.rs`
//! (the untouched skeleton, which must fail).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socketserver::transport::Udp;
use socketserver::{BackgroundServer, UdpServer};

/// The lab's `ping`, as the checks call it.
pub type PingFn<R> = fn(SocketAddr, u32, Duration) -> io::Result<R>;

/// How much longer than `count × timeout` a `ping` may take before the grader gives up.
const SLACK: Duration = Duration::from_secs(5);

/// What the checks read from the lab's `Report` (the lab's own methods, through
/// [`impl_report!`]).
pub trait Report: Send + 'static {
    fn rtts(&self) -> Vec<Option<Duration>>;
    fn sent(&self) -> usize;
    fn received(&self) -> usize;
    fn loss_percent(&self) -> f64;
    fn min(&self) -> Option<Duration>;
    fn avg(&self) -> Option<Duration>;
    fn max(&self) -> Option<Duration>;
}

/// Implements [`Report`] for the lab's report type, by calling its own methods.
macro_rules! impl_report {
    ($report:ty) => {
        impl crate::grader::Report for $report {
            fn rtts(&self) -> Vec<Option<std::time::Duration>> {
                self.rtts.clone()
            }
            fn sent(&self) -> usize {
                <$report>::sent(self)
            }
            fn received(&self) -> usize {
                <$report>::received(self)
            }
            fn loss_percent(&self) -> f64 {
                <$report>::loss_percent(self)
            }
            fn min(&self) -> Option<std::time::Duration> {
                <$report>::min(self)
            }
            fn avg(&self) -> Option<std::time::Duration> {
                <$report>::avg(self)
            }
            fn max(&self) -> Option<std::time::Duration> {
                <$report>::max(self)
            }
        }
    };
}
pub(crate) use impl_report;

// ---------------------------------------------------------------------------------------
// The grader's server

/// What the grader's server does with each ping (by sequence number).
#[derive(Clone, Debug, Default)]
struct Plan {
    /// Every reply waits this long (so that an RTT has a lower bound).
    delay: Duration,
    /// Never answered.
    drop: Vec<u32>,
    /// Answered `late_by` after they arrived, while the client waits for a later ping.
    late: Vec<u32>,
    late_by: Duration,
    /// Answered with stray datagrams only, never with the reply.
    strays_only: Vec<u32>,
    /// Answered with stray datagrams first, then with the reply.
    strays_then_reply: Vec<u32>,
    /// Nothing is ever answered.
    silent: bool,
    /// From the first ping on, a stray datagram every 200 ms, and never a reply.
    noise: bool,
}

impl Plan {
    /// What the server does with ping `seq`, for messages.
    fn describe(&self, seq: u32) -> &'static str {
        if self.silent {
            "nothing"
        } else if self.noise {
            "no reply (strays only)"
        } else if self.drop.contains(&seq) {
            "dropped it"
        } else if self.late.contains(&seq) {
            "replied too late"
        } else if self.strays_only.contains(&seq) {
            "sent strays, no reply"
        } else if self.strays_then_reply.contains(&seq) {
            "sent strays, then the reply"
        } else {
            "replied"
        }
    }
}

/// The grader's server, running; stops (and ends its noise) when dropped.
struct Running {
    addr: SocketAddr,
    /// Every datagram the server received, in order.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop_noise: Arc<AtomicBool>,
    _server: BackgroundServer<Udp>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_noise.store(true, Ordering::SeqCst);
    }
}

impl Running {
    fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn serve(plan: Plan) -> Result<Running, String> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let stop_noise = Arc::new(AtomicBool::new(false));
    let noise_started = AtomicBool::new(false);
    let (log, stop) = (Arc::clone(&received), Arc::clone(&stop_noise));
    let server = UdpServer::bind("127.0.0.1:0", move |req| {
        let packet = req.packet().to_vec();
        log.lock().unwrap_or_else(PoisonError::into_inner).push(packet.clone());
        let Some(client) = req.client_addr().as_inet() else { return Ok(()) };
        let socket = req.socket().as_udp().expect("a UDP server's socket").try_clone()?;
        let seq = seq_of(&packet).unwrap_or(0);
        if plan.noise && !noise_started.swap(true, Ordering::SeqCst) {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    let _ = socket.send_to(b"noise: not a reply to anything", client);
                    thread::sleep(Duration::from_millis(200));
                }
            });
            return Ok(());
        }
        if plan.silent || plan.noise || plan.drop.contains(&seq) {
            return Ok(());
        }
        if plan.strays_only.contains(&seq) || plan.strays_then_reply.contains(&seq) {
            send_strays(&socket, client, seq, &packet)?;
            if plan.strays_only.contains(&seq) {
                return Ok(());
            }
        }
        if plan.late.contains(&seq) {
            let late_by = plan.late_by;
            thread::spawn(move || {
                thread::sleep(late_by);
                let _ = socket.send_to(&packet, client);
            });
            return Ok(());
        }
        thread::sleep(plan.delay);
        socket.send_to(&packet, client)?;
        Ok(())
    })
    .map_err(|e| format!("the grader could not start its UDP server: {e}"))?;
    let addr = server.local_addr();
    let server = server.serve_in_background().map_err(|e| format!("the grader could not start its UDP server: {e}"))?;
    Ok(Running { addr, received, stop_noise, _server: server })
}

/// Datagrams that are not the reply to ping `seq`: text from the server, bytes that are
/// not UTF-8, a "reply" to a ping never sent, and a copy of the right reply from another
/// address than the server's.
fn send_strays(socket: &UdpSocket, client: SocketAddr, seq: u32, packet: &[u8]) -> io::Result<()> {
    socket.send_to(b"hello, I am not a reply", client)?;
    socket.send_to(&[0xff, 0xfe, 0x00, 0x80], client)?;
    socket.send_to(format!("PING {} 0.000000", 1000 + seq).as_bytes(), client)?;
    UdpSocket::bind("127.0.0.1:0")?.send_to(packet, client)?;
    Ok(())
}

/// The sequence number of `PING <seq> ...`.
fn seq_of(packet: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(packet).ok()?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("PING"), Some(seq)) => seq.parse().ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Running the student's code, bounded

/// Calls `ping` on a thread of its own and waits at most `count × timeout + 5 s`.
fn run_ping<R: Report>(
    ping: PingFn<R>,
    addr: SocketAddr,
    count: u32,
    timeout: Duration,
) -> Result<(R, Duration), String> {
    let bound = timeout * count + SLACK;
    let call = format!("ping({addr}, {count}, {timeout:?})");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let start = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| ping(addr, count, timeout)));
        let _ = tx.send((result.map_err(|payload| panic_message(&*payload)), start.elapsed()));
    });
    match rx.recv_timeout(bound) {
        Ok((Ok(Ok(report)), elapsed)) => Ok((report, elapsed)),
        Ok((Ok(Err(e)), _)) => Err(format!(
            "{call} returned an error: {e} ({:?})\n  \
             hint: a lost ping is not an error: it is a `None` in the report. A read that timed out fails \
             with ErrorKind::WouldBlock on Linux (TimedOut on Windows): catch it.",
            e.kind()
        )),
        Ok((Err(message), _)) => Err(format!("{call} panicked: {message}")),
        Err(_) => Err(format!(
            "{call} did not return within {bound:?} ({count} pings x {timeout:?}, and 5 s more)\n  \
             hint: every wait needs a deadline: set_read_timeout with the time LEFT until this ping's \
             deadline, and a datagram that is not the reply must not start the wait over"
        )),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Calls one of the report's methods, a panic turned into a message.
fn call<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|payload| format!("Report::{name} panicked: {}", panic_message(&*payload)))
}

/// Compares the per-ping results with what the server did.
fn expect_lost(
    rtts: &[Option<Duration>],
    plan: &Plan,
    count: u32,
    lost: &[u32],
    timeout: Duration,
    hint: &str,
) -> Result<(), String> {
    let table = || {
        let mut t = String::from("  ping | the server                  | expected | your report\n");
        for seq in 1..=count {
            let want = if lost.contains(&seq) { "lost" } else { "an RTT" };
            let got = match rtts.get(seq as usize - 1) {
                Some(Some(rtt)) => format!("{rtt:?}"),
                Some(None) => "lost".to_string(),
                None => "(missing)".to_string(),
            };
            t.push_str(&format!("  {seq:>4} | {:<27} | {want:<8} | {got}\n", plan.describe(seq)));
        }
        t
    };
    if rtts.len() != count as usize {
        return Err(format!("{count} pings, but the report has {} results (rtts.len()):\n{}", rtts.len(), table()));
    }
    for seq in 1..=count {
        let rtt = rtts[seq as usize - 1];
        if lost.contains(&seq) != rtt.is_none() {
            return Err(format!("wrong result for ping {seq}:\n{}  hint: {hint}", table()));
        }
        if let Some(rtt) = rtt {
            if rtt > timeout + Duration::from_millis(500) {
                return Err(format!(
                    "ping {seq} has an RTT of {rtt:?}, over the timeout of {timeout:?}: a reply after the \
                     timeout counts as lost\n{}",
                    table()
                ));
            }
        }
    }
    Ok(())
}

/// Checks the report's statistics against its own per-ping results.
fn expect_statistics<R: Report>(report: &R, context: &str) -> Result<(), String> {
    let rtts = report.rtts();
    let answered: Vec<Duration> = rtts.iter().flatten().copied().collect();
    let sent = rtts.len();
    let received = answered.len();
    let loss = if sent == 0 { 0.0 } else { (sent - received) as f64 * 100.0 / sent as f64 };
    let min = answered.iter().min().copied();
    let max = answered.iter().max().copied();
    let avg = if answered.is_empty() { None } else { Some(answered.iter().sum::<Duration>() / received as u32) };
    let wrong = |what: &str, want: String, got: String| {
        Err(format!("{context}: rtts = {rtts:?}\n  {what} should be {want}, your report says {got}"))
    };
    let got = call("sent", || report.sent())?;
    if got != sent {
        return wrong("sent()", sent.to_string(), got.to_string());
    }
    let got = call("received", || report.received())?;
    if got != received {
        return wrong("received()", received.to_string(), got.to_string());
    }
    let got = call("loss_percent", || report.loss_percent())?;
    if (got - loss).abs() > 1e-6 {
        return wrong("loss_percent()", format!("{loss}"), format!("{got}"));
    }
    let got = call("min", || report.min())?;
    if got != min {
        return wrong("min()", format!("{min:?}"), format!("{got:?}"));
    }
    let got = call("max", || report.max())?;
    if got != max {
        return wrong("max()", format!("{max:?}"), format!("{got:?}"));
    }
    let got = call("avg", || report.avg())?;
    let close = match (got, avg) {
        // Not `Duration::abs_diff`: it needs Rust 1.81, and the labs build on 1.78.
        (Some(a), Some(b)) => a.max(b) - a.min(b) <= Duration::from_micros(1),
        (a, b) => a == b,
    };
    if !close {
        return wrong("avg()", format!("{avg:?}"), format!("{got:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The checks

/// Every ping is answered (after 50 ms): every result is an RTT between 50 ms and the
/// timeout, and the pings themselves are `PING <seq> <time>` with seq 1, 2, 3, ...
pub fn all_answered<R: Report>(ping: PingFn<R>) -> Result<(), String> {
    let plan = Plan { delay: Duration::from_millis(50), ..Plan::default() };
    let server = serve(plan.clone())?;
    let (count, timeout) = (5, Duration::from_secs(2));
    let (report, _) = run_ping(ping, server.addr, count, timeout)?;
    let received = server.received();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    for (i, packet) in received.iter().enumerate() {
        let text = String::from_utf8_lossy(packet);
        let words: Vec<&str> = text.split_whitespace().collect();
        let want_seq = (i + 1).to_string();
        let time_ok = words.get(2).and_then(|t| t.parse::<f64>().ok()).is_some_and(|t| (t - now).abs() < 86_400.0);
        if words.len() != 3 || words[0] != "PING" || words[1] != want_seq || !time_ok {
            return Err(format!(
                "datagram {} the server received was {text:?}\n  expected `PING {want_seq} <time>`, the time in \
                 seconds since 1970 like Python's time.time() (for example `PING {want_seq} {now:.6}`)",
                i + 1
            ));
        }
    }
    if received.len() != count as usize {
        return Err(format!("ping(.., {count}, ..) sent {} datagrams to the server, expected {count}", received.len()));
    }
    let rtts = report.rtts();
    expect_lost(&rtts, &plan, count, &[], timeout, "every ping was answered within about 50 ms")?;
    if let Some(rtt) = rtts.iter().flatten().find(|rtt| **rtt < Duration::from_millis(45)) {
        return Err(format!(
            "an RTT of {rtt:?}, but the server waited 50 ms before each reply: rtts = {rtts:?}\n  \
             hint: take Instant::now() just before send_to and again when the reply arrives"
        ));
    }
    expect_statistics(&report, "every ping answered")
}

/// The server drops pings 2, 5 and 6 of 8: exactly those are lost.
pub fn lost_pings_are_the_dropped_ones<R: Report>(ping: PingFn<R>) -> Result<(), String> {
    let plan = Plan { drop: vec![2, 5, 6], ..Plan::default() };
    let server = serve(plan.clone())?;
    let (count, timeout) = (8, Duration::from_secs(1));
    let (report, _) = run_ping(ping, server.addr, count, timeout)?;
    expect_lost(
        &report.rtts(),
        &plan,
        count,
        &[2, 5, 6],
        timeout,
        "a ping whose reply does not come within the timeout is lost (None); the next ping is sent then",
    )?;
    expect_statistics(&report, "pings 2, 5 and 6 of 8 dropped")
}

/// The reply to ping 2 comes 1.5 s late, while the client waits for ping 3 (dropped):
/// it must not count as the reply to 3 (match replies by sequence number).
pub fn late_reply_is_not_counted<R: Report>(ping: PingFn<R>) -> Result<(), String> {
    let plan = Plan { late: vec![2], late_by: Duration::from_millis(1500), drop: vec![3], ..Plan::default() };
    let server = serve(plan.clone())?;
    let (count, timeout) = (5, Duration::from_secs(1));
    let (report, _) = run_ping(ping, server.addr, count, timeout)?;
    expect_lost(
        &report.rtts(),
        &plan,
        count,
        &[2, 3],
        timeout,
        "the reply to ping 2 arrived after its timeout, while your client waited for ping 3, which the server \
         dropped: a reply counts only for the ping with its sequence number",
    )
}

/// Ping 2 gets only stray datagrams (text, bytes that are not UTF-8, `PING 1002 ...`,
/// and a copy of its reply from another address), ping 3 strays and then its reply:
/// 2 is lost, 3 is answered, and nothing crashes.
pub fn stray_datagrams_are_ignored<R: Report>(ping: PingFn<R>) -> Result<(), String> {
    let plan = Plan { strays_only: vec![2], strays_then_reply: vec![3], ..Plan::default() };
    let server = serve(plan.clone())?;
    let (count, timeout) = (4, Duration::from_secs(1));
    let (report, _) = run_ping(ping, server.addr, count, timeout)?;
    expect_lost(
        &report.rtts(),
        &plan,
        count,
        &[2],
        timeout,
        "the strays were \"hello, I am not a reply\", the bytes ff fe 00 80, `PING 1002 0.000000` from the \
         server, and a copy of the right reply sent from ANOTHER address than the server's: a reply comes from \
         the server's address (recv_from says who sent it) and carries the ping's sequence number; skip the \
         rest and keep waiting until the deadline",
    )
}

/// The server never replies but sends a stray datagram every 200 ms: the client must
/// still give up on each ping at its deadline (3 pings × 1 s, 5 s of slack).
pub fn strays_do_not_extend_the_wait<R: Report>(ping: PingFn<R>) -> Result<(), String> {
    let plan = Plan { noise: true, ..Plan::default() };
    let server = serve(plan.clone())?;
    let (count, timeout) = (3, Duration::from_secs(1));
    let (report, _) = run_ping(ping, server.addr, count, timeout)?;
    expect_lost(
        &report.rtts(),
        &plan,
        count,
        &[1, 2, 3],
        timeout,
        "the server sent \"noise: not a reply to anything\" every 200 ms and never a reply",
    )
}

/// The server answers nothing: every ping is lost, and `ping` returns after about
/// `count × timeout` (not at once: it waited; not much later: it used a timeout).
pub fn silent_server_all_lost<R: Report>(ping: PingFn<R>) -> Result<(), String> {
    let plan = Plan { silent: true, ..Plan::default() };
    let server = serve(plan.clone())?;
    let (count, timeout) = (3, Duration::from_millis(500));
    let (report, elapsed) = run_ping(ping, server.addr, count, timeout)?;
    expect_lost(&report.rtts(), &plan, count, &[1, 2, 3], timeout, "the server answered nothing")?;
    let least = (timeout * count).mul_f64(0.8);
    if elapsed < least {
        return Err(format!(
            "ping(.., {count}, {timeout:?}) returned after {elapsed:?} from a server that answers nothing: it \
             should wait about {timeout:?} for each ping\n  hint: set_read_timeout(Some(time left)) before recv_from"
        ));
    }
    expect_statistics(&report, "a server that answers nothing")
}

/// The statistics of reports built by hand: sent, received, loss, min/avg/max.
pub fn statistics<R: Report>(make: fn(Vec<Option<Duration>>) -> R) -> Result<(), String> {
    let ms = Duration::from_millis;
    let cases = [
        vec![Some(ms(10)), None, Some(ms(30)), Some(ms(20)), None],
        vec![Some(ms(7))],
        vec![None, None, None],
        vec![Some(Duration::from_micros(1500)), Some(Duration::from_micros(2500)), None, None],
        vec![],
    ];
    for rtts in cases {
        expect_statistics(&make(rtts), "a report built by hand")?;
    }
    Ok(())
}
