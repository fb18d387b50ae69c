//! The `retry` example's clients held to their contract against every fault of
//! `testing::FaultProxy`: TCP (latency, bandwidth, slicer, limit_data, reset_after_bytes,
//! reset_after, timeout, slow_close, refuse) and UDP (drop, duplicate, reorder,
//! truncate, timeout, latency). Each test asserts the outcome and what it cost: the
//! attempts made (counted by the client, and by the proxy or the server independently),
//! the time, the bytes received before a failure. Draws with a probability come from
//! the proxy's seed, so the number of attempts for a seed is the same on every run.
//!
//! The example's code is compiled into this test (`#[path]`), and the example itself is
//! run once as a process. Every wait is bounded by the policies' timeouts and each test
//! by [`bounded`]; only `127.0.0.1:0` is bound.

mod support;

#[path = "../examples/retry.rs"]
#[allow(dead_code)] // its `main` and `report` are for the example binary
mod retry;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socketserver::testing::{Fault, FaultProxy, Script, ScriptedServer, REORDER_HOLD};
use socketserver::transport::{Tcp, Udp};
use socketserver::BackgroundServer;

use retry::{demo, ping, request, request_tallied, Pinger, Policy, Tally};
use support::bounded;

/// The deadline of each test: far beyond what its policy allows.
const LIMIT: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Four attempts, 50, 100 then 200 ms apart; replies within 2 s.
fn patient() -> Policy {
    Policy {
        attempts: 4,
        connect_timeout: Duration::from_secs(2),
        reply_timeout: Duration::from_secs(2),
        backoff: ms(50),
        max_backoff: Duration::from_secs(1),
        deadline: Duration::from_secs(20),
        max_reply: 4096,
    }
}

/// As [`patient`], but each reply must come within 300 ms: for the faults that make
/// every attempt time out.
fn hasty() -> Policy {
    Policy { reply_timeout: ms(300), ..patient() }
}

/// The sum of the pauses after the first `failed` attempts.
fn pauses(policy: &Policy, failed: u32) -> Duration {
    (1..=failed).map(|n| policy.pause(n)).sum()
}

/// The example's TCP echo server behind a fresh proxy with `faults`, seeded with `seed`.
fn tcp_behind(faults: Vec<Fault>, seed: u64) -> (FaultProxy, BackgroundServer<Tcp>) {
    let (addr, server) = demo::tcp_echo().expect("the echo server starts");
    let proxy = FaultProxy::tcp(addr).expect("the proxy starts");
    proxy.seed(seed);
    for fault in faults {
        proxy.add(fault).expect("a TCP fault");
    }
    (proxy, server)
}

/// Runs `request` and measures it: the result, the tally, the time.
fn timed_request(addr: SocketAddr, line: &str, policy: &Policy) -> (std::io::Result<String>, Tally, Duration) {
    let mut tally = Tally::default();
    let began = Instant::now();
    let result = request_tallied(addr, line, policy, &mut tally);
    (result, tally, began.elapsed())
}

fn kinds(tally: &Tally) -> Vec<ErrorKind> {
    tally.failures.iter().map(|f| f.kind).collect()
}

/// `n` failed attempts, each ended by `kind` on Unix. Elsewhere (Windows, under Wine in
/// CI) by an error a retry may fix: a reset may be `ConnectionAborted` there, a connect
/// to a closed port a timeout (tests/faults.rs checks the kind of a reset on Unix only
/// too).
fn assert_failures(tally: &Tally, kind: ErrorKind, n: usize) {
    if cfg!(unix) {
        assert_eq!(kinds(tally), vec![kind; n], "{tally:?}");
    } else {
        assert_eq!(tally.failures.len(), n, "{tally:?}");
        for failure in &tally.failures {
            assert!(retry::retryable(&std::io::Error::from(failure.kind)), "{failure:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------------------

#[test]
fn without_faults_one_attempt_answers() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![], 0);
        let (reply, tally, _) = timed_request(proxy.addr(), "hello", &patient());
        assert_eq!(reply.expect("an answer"), "hello");
        assert_eq!((tally.attempts, proxy.connections()), (1, 1));
        assert!(tally.failures.is_empty());
    });
}

#[test]
fn latency_within_the_reply_timeout_costs_time_not_attempts() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::latency(ms(300), Duration::ZERO)], 0);
        let (reply, tally, took) = timed_request(proxy.addr(), "hello", &patient());
        assert_eq!(reply.expect("an answer, late"), "hello");
        assert_eq!(tally.attempts, 1);
        assert!(took >= ms(300), "the reply came after the 300 ms latency, not {took:?}");
    });
}

#[test]
fn latency_beyond_the_reply_timeout_times_out_every_attempt() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::latency(Duration::from_secs(5), Duration::ZERO)], 0);
        let policy = Policy { attempts: 3, ..hasty() };
        let (reply, tally, took) = timed_request(proxy.addr(), "hello", &policy);
        let error = reply.expect_err("no reply within 300 ms");
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("gave up after 3 attempts"), "{error}");
        assert_eq!(kinds(&tally), [ErrorKind::TimedOut; 3]);
        assert_eq!(proxy.connections(), 3, "one connection per attempt");
        for failure in &tally.failures {
            assert!(failure.took >= ms(300), "each attempt waited its 300 ms: {failure:?}");
        }
        let least = 3 * ms(300) + pauses(&policy, 2);
        assert!(took >= least, "three timeouts and two pauses: at least {least:?}, took {took:?}");
    });
}

#[test]
fn bandwidth_a_slow_reply_within_the_timeout_is_one_attempt() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::bandwidth(4000)], 0);
        let line = "b".repeat(2000);
        let (reply, tally, took) = timed_request(proxy.addr(), &line, &patient());
        assert_eq!(reply.expect("the whole line"), line);
        assert_eq!(tally.attempts, 1);
        // 2001 bytes at 4000 B/s, the first 200-byte piece at once: 0.45 s at least.
        assert!(took >= ms(400), "2 kB at 4 kB/s took {took:?}");
    });
}

#[test]
fn bandwidth_too_slow_for_the_reply_timeout_is_cut_by_it() {
    bounded(LIMIT, || {
        // Bytes keep coming, so a timeout on each read alone would never fire; the client's
        // limit is on the whole reply.
        let (proxy, _server) = tcp_behind(vec![Fault::bandwidth(1000)], 0);
        let policy = Policy { attempts: 2, reply_timeout: ms(500), ..patient() };
        let line = "b".repeat(2000);
        let (reply, tally, took) = timed_request(proxy.addr(), &line, &policy);
        let error = reply.expect_err("2 kB at 1 kB/s do not fit in 500 ms");
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
        assert_eq!(kinds(&tally), [ErrorKind::TimedOut; 2]);
        for failure in &tally.failures {
            assert!(
                (1..2001).contains(&failure.received),
                "part of the reply came before the time ran out: {} bytes",
                failure.received
            );
        }
        assert!(
            took < Duration::from_secs(4),
            "each attempt ended at its 500 ms, not at the end of the reply: {took:?}"
        );
    });
}

#[test]
fn slicer_a_reply_in_pieces_is_put_together() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::slicer(3, ms(50))], 0);
        let line = "hello, sliced world"; // 20 bytes with the newline: 7 pieces
        let (reply, tally, took) = timed_request(proxy.addr(), line, &patient());
        assert_eq!(reply.expect("the line from its pieces"), line);
        assert_eq!(tally.attempts, 1);
        assert!(took >= ms(300), "7 pieces 50 ms apart, the last after 300 ms: {took:?}");
    });
}

#[test]
fn limit_data_every_connection_cut_fails_after_the_last_attempt() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::limit_data(5)], 0);
        let policy = patient();
        let (reply, tally, took) = timed_request(proxy.addr(), "hello, world", &policy);
        let error = reply.expect_err("every connection closes after 5 bytes");
        assert_eq!(error.kind(), ErrorKind::UnexpectedEof, "{error}");
        assert_eq!(kinds(&tally), [ErrorKind::UnexpectedEof; 4]);
        assert!(tally.failures.iter().all(|f| f.received == 5), "5 bytes, then the close: {:?}", tally.failures);
        assert_eq!(proxy.connections(), 4);
        assert!(took >= pauses(&policy, 3), "50 + 100 + 200 ms of pauses: {took:?}");
    });
}

#[test]
fn limit_data_on_one_connection_in_two_is_retried_until_one_is_whole() {
    bounded(LIMIT, || {
        // Seed 0 cuts the first two connections, not the third.
        let (proxy, _server) = tcp_behind(vec![Fault::limit_data(5).probability(0.5)], 10);
        let (reply, tally, _) = timed_request(proxy.addr(), "hello, world", &patient());
        assert_eq!(reply.expect("the third connection is whole"), "hello, world");
        assert_eq!(kinds(&tally), [ErrorKind::UnexpectedEof; 2]);
        assert_eq!((tally.attempts, proxy.connections()), (3, 3));
    });
}

#[test]
fn reset_after_bytes_is_retried_and_the_bytes_before_it_counted() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::reset_after_bytes(5)], 0);
        let (reply, tally, _) = timed_request(proxy.addr(), "hello, world", &patient());
        let error = reply.expect_err("every connection is reset after 5 bytes");
        assert_failures(&tally, ErrorKind::ConnectionReset, 4);
        assert_eq!(error.kind(), tally.failures[3].kind, "the last attempt's error: {error}");
        // The reset may overtake the 5 bytes: the kernel drops what was not read yet.
        assert!(tally.failures.iter().all(|f| f.received <= 5), "{:?}", tally.failures);
        eprintln!("bytes before each reset: {:?}", tally.failures.iter().map(|f| f.received).collect::<Vec<_>>());
        assert_eq!(proxy.connections(), 4);

        let (proxy, _server) = tcp_behind(vec![Fault::reset_after_bytes(5).probability(0.5)], 10);
        let (reply, tally, _) = timed_request(proxy.addr(), "hello, world", &patient());
        assert_eq!(reply.expect("seed 10: the third connection is not reset"), "hello, world");
        assert_failures(&tally, ErrorKind::ConnectionReset, 2);
    });
}

#[test]
fn reset_after_a_time_is_noticed_at_once_not_at_the_timeout() {
    bounded(LIMIT, || {
        // The reply would take 5 s; the connection is reset after 200 ms.
        let faults = vec![Fault::reset_after(ms(200)), Fault::latency(Duration::from_secs(5), Duration::ZERO)];
        let (proxy, _server) = tcp_behind(faults, 0);
        let policy = Policy { attempts: 3, ..patient() };
        let (reply, tally, took) = timed_request(proxy.addr(), "hello", &policy);
        let error = reply.expect_err("every connection is reset");
        assert_failures(&tally, ErrorKind::ConnectionReset, 3);
        assert_eq!(error.kind(), tally.failures[2].kind, "the last attempt's error: {error}");
        for failure in &tally.failures {
            assert!(failure.took >= ms(200), "reset 200 ms after the connect: {failure:?}");
            assert!(failure.took < policy.reply_timeout, "the reset ends the wait, not the 2 s timeout: {failure:?}");
        }
        assert!(took >= 3 * ms(200) + pauses(&policy, 2), "{took:?}");

        let faults = vec![Fault::reset_after(ms(100)).probability(0.5), Fault::latency(ms(300), Duration::ZERO)];
        let (proxy, _server) = tcp_behind(faults, 10);
        let (reply, tally, took) = timed_request(proxy.addr(), "hello", &patient());
        assert_eq!(reply.expect("seed 10: the third connection is not reset"), "hello");
        assert_failures(&tally, ErrorKind::ConnectionReset, 2);
        assert!(took >= 2 * ms(100) + pauses(&patient(), 2) + ms(300), "{took:?}");
    });
}

#[test]
fn timeout_gives_up_after_the_attempts() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::timeout()], 0);
        let policy = Policy { attempts: 3, ..hasty() };
        let (reply, tally, took) = timed_request(proxy.addr(), "hello", &policy);
        let error = reply.expect_err("the server never answers");
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
        assert_eq!(kinds(&tally), [ErrorKind::TimedOut; 3]);
        assert_eq!(proxy.connections(), 3);
        assert!(tally.failures.iter().all(|f| f.received == 0));
        let least = 3 * ms(300) + pauses(&policy, 2);
        assert!(took >= least, "at least {least:?}, took {took:?}");
    });
}

#[test]
fn timeout_gives_up_at_the_deadline_before_the_attempts_run_out() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::timeout()], 0);
        let policy = Policy { attempts: 100, deadline: Duration::from_secs(1), ..hasty() };
        let (reply, tally, took) = timed_request(proxy.addr(), "hello", &policy);
        let error = reply.expect_err("the server never answers");
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
        // 300 ms, 50 ms, 300 ms, 100 ms, then the third attempt has 250 ms left.
        assert!((2..=4).contains(&tally.attempts), "the deadline ended it after {} attempts", tally.attempts);
        assert!(took >= ms(800), "not before the deadline's end (or the last pause's): {took:?}");
        assert!(took < Duration::from_secs(3), "the 1 s deadline, not 100 attempts: {took:?}");
    });
}

#[test]
fn slow_close_the_client_does_not_wait_for_the_end_of_the_stream() {
    bounded(LIMIT, || {
        // A server that answers, then closes: a client reading to the end of the stream
        // would wait for the late close; one reading one line does not.
        let script = || Script::new().expect_line("hello").reply("hello\n").close();
        let server = ScriptedServer::tcp([script(), script()]).expect("a scripted server");
        let proxy = FaultProxy::tcp(server.addr()).expect("the proxy starts");
        let late = Duration::from_secs(2);
        proxy.add(Fault::slow_close(late)).expect("a TCP fault");

        let (reply, tally, took) = timed_request(proxy.addr(), "hello", &patient());
        assert_eq!(reply.expect("an answer"), "hello");
        assert_eq!(tally.attempts, 1);
        assert!(took < late, "one line read, the close not awaited: {took:?}");

        let began = Instant::now();
        let mut stream = TcpStream::connect(proxy.addr()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        std::io::Write::write_all(&mut stream, b"hello\n").expect("send");
        let mut all = String::new();
        std::io::Read::read_to_string(&mut stream, &mut all).expect("the stream to its end");
        assert_eq!(all, "hello\n");
        assert!(began.elapsed() >= late, "reading to the end waits for the close: {:?}", began.elapsed());
        drop(stream);
        let transcript = server.verify().expect("both clients followed the script");
        assert_eq!(transcript.conversations.len(), 2);
    });
}

#[test]
fn refuse_every_connection_fails_after_the_last_attempt() {
    bounded(LIMIT, || {
        let (proxy, _server) = tcp_behind(vec![Fault::refuse()], 0);
        let policy = patient();
        let (reply, tally, took) = timed_request(proxy.addr(), "hello", &policy);
        let error = reply.expect_err("every connection is reset at once");
        assert!(retry::retryable(&error), "{error}");
        assert_ne!(error.kind(), ErrorKind::TimedOut, "refused at once, not left silent: {error}");
        assert_eq!(tally.attempts, 4);
        assert_eq!(proxy.connections(), 4);
        assert!(took >= pauses(&policy, 3), "{took:?}");
        assert!(took < Duration::from_secs(2), "no attempt waited for a timeout: {took:?}");

        // A server restarting: one connection in two refused (seed 10: the first two).
        let (proxy, _server) = tcp_behind(vec![Fault::refuse().probability(0.5)], 10);
        let (reply, tally, _) = timed_request(proxy.addr(), "hello", &patient());
        assert_eq!(reply.expect("the third connection goes through"), "hello");
        assert_eq!((tally.attempts, tally.failures.len()), (3, 2));
    });
}

#[test]
fn nothing_listening_is_refused_and_retried() {
    bounded(LIMIT, || {
        // A port that was just free: nothing listens on it now.
        let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let policy = Policy { attempts: 3, ..patient() };
        let (reply, tally, took) = timed_request(addr, "hello", &policy);
        let error = reply.expect_err("nobody there");
        assert!(retry::retryable(&error), "{error}");
        assert_failures(&tally, ErrorKind::ConnectionRefused, 3);
        assert!(took >= pauses(&policy, 2), "{took:?}");
    });
}

#[test]
fn a_reply_too_long_fails_at_once() {
    bounded(LIMIT, || {
        let long = format!("{}\n", "x".repeat(5000));
        let server = ScriptedServer::tcp([Script::new().expect_line("hello").reply(&long)]).expect("a scripted server");
        let (reply, tally, _) = timed_request(server.addr(), "hello", &patient());
        let error = reply.expect_err("5000 bytes, more than max_reply");
        assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
        assert_eq!(tally.attempts, 1, "another attempt would get the same reply");
        server.verify().expect("one connection, as scripted");

        let error = request(SocketAddr::from(([127, 0, 0, 1], 9)), "two\nlines", &patient()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "nothing sent: {error}");
    });
}

// ---------------------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------------------

/// The example's UDP echo server behind a fresh proxy with `fault`, seeded with `seed`,
/// and the count of datagrams the server received.
fn udp_behind(fault: Option<Fault>, seed: u64) -> (FaultProxy, Arc<AtomicUsize>, BackgroundServer<Udp>) {
    let received = Arc::new(AtomicUsize::new(0));
    let (addr, server) = demo::udp_echo(received.clone()).expect("the echo server starts");
    let proxy = FaultProxy::udp(addr).expect("the proxy starts");
    proxy.seed(seed);
    if let Some(fault) = fault {
        proxy.add(fault).expect("a UDP fault");
    }
    (proxy, received, server)
}

/// `count` pings on one pinger, each checked to get its own payload back; the tally.
fn pings(pinger: &mut Pinger, count: usize, policy: &Policy) -> Tally {
    let mut tally = Tally::default();
    for i in 0..count {
        let payload = format!("ping {i}");
        let answer = pinger.ping_tallied(payload.as_bytes(), policy, &mut tally);
        assert_eq!(answer.expect("an answer"), payload.as_bytes(), "ping {i} got another ping's answer");
    }
    tally
}

#[test]
fn udp_without_faults_one_datagram_each() {
    bounded(LIMIT, || {
        let (proxy, received, _server) = udp_behind(None, 0);
        assert_eq!(ping(proxy.addr(), b"hello", &patient()).expect("an answer"), b"hello");
        let tally = pings(&mut Pinger::new(proxy.addr()).expect("a socket"), 5, &patient());
        assert_eq!((tally.attempts, tally.ignored), (5, 0));
        assert_eq!(received.load(Ordering::SeqCst), 6);
    });
}

#[test]
fn udp_drop_every_ping_answered_with_resends_for_the_seed() {
    bounded(LIMIT, || {
        // One datagram in three lost each way. For seed 3 and these ten pings, the proxy
        // drops 2 on the way up and 3 on the way back: 5 resends.
        let fault = Fault::drop_datagrams().both_ways().probability(0.3);
        let (proxy, received, _server) = udp_behind(Some(fault), 3);
        let policy = Policy { reply_timeout: ms(400), max_backoff: ms(100), ..patient() };
        let began = Instant::now();
        let tally = pings(&mut Pinger::new(proxy.addr()).expect("a socket"), 10, &policy);
        let resends = tally.attempts - 10;
        eprintln!("10 pings: {resends} resends in {:?}", began.elapsed());
        assert_eq!(resends, 5, "seed 3 loses 5 datagrams of these pings: {tally:?}");
        assert_eq!(tally.failures.len(), 5, "each resend follows an attempt that got no answer");
        assert_eq!(received.load(Ordering::SeqCst), 13, "15 sent, 2 lost on the way to the server");
        assert!(began.elapsed() >= 4 * ms(400), "four waits for an answer that never came");
    });
}

#[test]
fn udp_duplicate_answers_are_ignored_by_the_next_ping() {
    bounded(LIMIT, || {
        let (proxy, received, _server) = udp_behind(Some(Fault::duplicate()), 0);
        let tally = pings(&mut Pinger::new(proxy.addr()).expect("a socket"), 5, &patient());
        // Each answer comes twice: the second copy of answers 1 to 4 is read, and
        // ignored, by the next ping (the fifth's is never read).
        assert_eq!((tally.attempts, tally.ignored), (5, 4), "{tally:?}");
        assert_eq!(received.load(Ordering::SeqCst), 5, "no resend");
    });
}

#[test]
fn udp_reorder_a_late_answer_is_not_taken_for_the_next_one() {
    bounded(LIMIT, || {
        let (proxy, received, _server) = udp_behind(Some(Fault::reorder()), 0);
        let mut pinger = Pinger::new(proxy.addr()).expect("a socket");
        // The proxy holds each answer until the next one passes it, or for REORDER_HOLD.
        // The first ping does not wait that long: its answer comes during a later ping.
        let impatient = Policy { attempts: 1, reply_timeout: ms(1), ..patient() };
        let first = pinger.ping(b"first", &impatient).expect_err("held back longer than 1 ms");
        assert_eq!(first.kind(), ErrorKind::TimedOut, "{first}");
        let mut tally = Tally::default();
        let answer = pinger.ping_tallied(b"second", &patient(), &mut tally).expect("an answer");
        assert_eq!(answer, b"second");
        let began = Instant::now();
        let answer = pinger.ping_tallied(b"third", &patient(), &mut tally).expect("an answer");
        assert_eq!(answer, b"third");
        assert!(began.elapsed() >= REORDER_HOLD, "the last answer was held back: {:?}", began.elapsed());
        // The first answer came after the second (swapped) or during the second ping:
        // either way one answer was ignored, and no ping took another's.
        assert_eq!(tally.ignored, 1, "{tally:?}");
        assert_eq!(tally.attempts, 2, "no resend");
        assert_eq!(received.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn udp_truncate_a_cut_answer_fails_at_once() {
    bounded(LIMIT, || {
        let (proxy, received, _server) = udp_behind(Some(Fault::truncate(8)), 0);
        let mut tally = Tally::default();
        let mut pinger = Pinger::new(proxy.addr()).expect("a socket");
        let error = pinger.ping_tallied(b"hello, world", &patient(), &mut tally).expect_err("cut to 8 bytes");
        assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
        // "1 12 hello, world" cut to "1 12 hel".
        assert!(error.to_string().contains("3 of its 12 bytes"), "{error}");
        assert_eq!(tally.attempts, 1, "sent once: a resend would be cut the same way");
        assert_eq!(received.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn udp_timeout_gives_up_after_the_attempts() {
    bounded(LIMIT, || {
        // The answers are lost: the server gets every datagram, the client no answer.
        let (proxy, received, _server) = udp_behind(Some(Fault::timeout()), 0);
        let policy = Policy { attempts: 3, ..hasty() };
        let mut tally = Tally::default();
        let began = Instant::now();
        let error = Pinger::new(proxy.addr())
            .expect("a socket")
            .ping_tallied(b"hello", &policy, &mut tally)
            .expect_err("nothing comes back");
        let took = began.elapsed();
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
        assert_eq!(kinds(&tally), [ErrorKind::TimedOut; 3]);
        assert_eq!(received.load(Ordering::SeqCst), 3, "every datagram reached the server");
        // The pauses are spent listening for a late answer.
        let least = 3 * ms(300) + pauses(&policy, 2);
        assert!(took >= least, "at least {least:?}, took {took:?}");
    });
}

#[test]
fn udp_latency_within_the_timeout_is_one_datagram() {
    bounded(LIMIT, || {
        let (proxy, received, _server) = udp_behind(Some(Fault::latency(ms(300), Duration::ZERO)), 0);
        let mut tally = Tally::default();
        let began = Instant::now();
        let answer = Pinger::new(proxy.addr()).expect("a socket").ping_tallied(b"hello", &patient(), &mut tally);
        assert_eq!(answer.expect("an answer, late"), b"hello");
        assert!(began.elapsed() >= ms(300), "{:?}", began.elapsed());
        assert_eq!((tally.attempts, received.load(Ordering::SeqCst)), (1, 1));
    });
}

// ---------------------------------------------------------------------------------------
// The example as a process
// ---------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn the_example_runs_every_case_and_exits() {
    use support::process::{example_binary, run_to_exit};
    let binary = example_binary("retry");
    bounded(LIMIT, move || {
        let began = Instant::now();
        let finished = run_to_exit(&mut std::process::Command::new(binary), b"", Duration::from_secs(40));
        let took = began.elapsed();
        assert!(finished.status.success(), "{}; stderr: {}", finished.status, finished.stderr);
        let out = finished.stdout;
        let expected = [
            "tcp no fault: ok, a 5-byte reply; 1 attempt in",
            "tcp latency 200 ms: ok",
            "tcp bandwidth 4 kB/s, a 1 kB line: ok, a 1000-byte reply; 1 attempt in",
            "tcp slicer: 3 bytes every 20 ms: ok",
            "tcp limit_data 5 bytes, one connection in two: ok, a 5-byte reply; 3 attempts in",
            "tcp reset_after_bytes 5, one connection in two: ok, a 5-byte reply; 3 attempts in",
            "tcp reset_after 50 ms of a 200 ms latency, one connection in two: ok, a 5-byte reply; 3 attempts in",
            "tcp slow_close 1 s (the client does not wait for the close): ok",
            "tcp refuse, one connection in two: ok, a 5-byte reply; 3 attempts in",
            "tcp timeout: the server never answers: failed: gave up after",
            "udp drop one datagram in three: ok, 5 answers; 7 attempts, 0 ignored",
            "udp duplicate every answer: ok, 5 answers; 5 attempts, 4 ignored",
            "udp reorder: each answer held until the next or 100 ms: ok, 5 answers; 5 attempts",
            "udp truncate the answers to 6 bytes: failed: an answer cut short: 2 of its 6 bytes; 1 attempt,",
            "udp timeout: nothing comes back: failed: gave up after",
        ];
        let lines: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(lines.len(), expected.len(), "one line per case:\n{out}");
        for (line, start) in lines.iter().zip(expected) {
            assert!(line.starts_with(start), "expected a line starting {start:?}, got {line:?}");
        }
        assert!(took < Duration::from_secs(20), "the example should exit within seconds: {took:?}");
    });
}
