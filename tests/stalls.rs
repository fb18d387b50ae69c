//! No client can stall a worker: whatever holds one exchange holds only that exchange.
//! Each test reproduces one defect found by attacking parking (issue 19) and fails on
//! the engine that had it; all over real sockets.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::{Address, ByteOrder, Connection, Error, Frame, HandlerResult, StreamRequest, TcpServer};
use support::serve::{serve_started, stop};
use support::{bounded, connect, wait_until, Gate, LIMIT, NEGATIVE_WAIT, TIMEOUT};

/// The errors a server has reported, as text.
type Reported = Arc<Mutex<Vec<String>>>;

/// The errors a server reports, and a `handle_error` hook that records them.
fn reported_errors() -> (Reported, impl Fn(&Error, Option<&Address>) + Send + Sync + 'static) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    (errors, move |e: &Error, _: Option<&Address>| seen.lock().unwrap().push(e.to_string()))
}

/// How long a parked connection may stay idle in these tests.
const IDLE: Duration = Duration::from_millis(300);

/// A line protocol that parks between lines and answers `n: LINE` (n counting the
/// connection's lines); a line `slow` first passes `gate`, so that the test holds the
/// exchange as long as it likes.
fn gated_lines(gate: &Arc<Gate>) -> impl Fn(&mut StreamRequest) -> HandlerResult + Send + Sync + 'static + use<> {
    let gate = gate.clone();
    move |req: &mut StreamRequest| {
        let mut line = String::new();
        if req.reader().read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim() == "slow" {
            gate.pass("slow")?;
        }
        let seen = req.state::<u64>();
        *seen += 1;
        let n = *seen;
        write!(req.writer(), "{n}: {}", line.to_uppercase())?;
        req.park();
        Ok(())
    }
}

fn ask(client: &mut BufReader<TcpStream>, line: &str) -> String {
    client.get_mut().write_all(line.as_bytes()).unwrap();
    read_reply(client)
}

fn read_reply(client: &mut BufReader<TcpStream>) -> String {
    client.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reply = String::new();
    client.read_line(&mut reply).unwrap();
    reply
}

/// Requests that arrive on parked connections while every loop is busy with a long
/// exchange, and wait past their idle timeout, are served late, not dropped: the
/// engine used to expire them by the clock after the exchange, without asking whether
/// they had become readable (5 of 5 got end-of-file, and `handle` never ran).
#[test]
fn requests_that_arrive_while_every_loop_is_busy_are_served_late_not_dropped() {
    bounded(LIMIT, || {
        let modes: [(&str, Dispatch, usize); 2] =
            [("sequential", Dispatch::from(Sequential), 1), ("pool of 2", Dispatch::from(Pool::new(2)), 2)];
        for (mode, dispatch, loops) in modes {
            let gate = Gate::new();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(dispatch)
                    .idle_timeout(Some(IDLE))
                    .bind(gated_lines(&gate))
                    .unwrap(),
            );
            let control = gate.control();
            let serve = serve_started(&server, "stall-late");
            let addr = server.local_addr();
            let handle = server.handle();
            let mut parked: Vec<_> = (0..5).map(|_| BufReader::new(connect(addr))).collect();
            let mut slow: Vec<_> = (0..loops).map(|_| BufReader::new(connect(addr))).collect();
            for (n, client) in parked.iter_mut().chain(&mut slow).enumerate() {
                assert_eq!(ask(client, &format!("c{n}\n")), format!("1: C{n}\n"), "{mode}");
            }
            wait_until(TIMEOUT, "the clients to park", || handle.stats().parked == 5 + loops);
            // Every loop is held by a long exchange of a connection that was parked (the
            // poller reported it, as it reports those that follow)...
            for client in &mut slow {
                client.get_mut().write_all(b"slow\n").unwrap();
                control.expect_arrival("a long exchange");
            }
            // ...while the parked clients send their next request, and wait past their
            // idle timeout for it.
            for (n, client) in parked.iter_mut().enumerate() {
                client.get_mut().write_all(format!("again {n}\n").as_bytes()).unwrap();
            }
            thread::sleep(IDLE * 3);
            control.release(loops);
            for client in &mut slow {
                assert_eq!(read_reply(client), "2: SLOW\n", "{mode}");
            }
            for (n, client) in parked.iter_mut().enumerate() {
                assert_eq!(read_reply(client), format!("2: AGAIN {n}\n"), "{mode}: a request that arrived was dropped");
            }
            stop(&server, serve);
        }
    });
}

/// A pool worker busy with one long exchange holds only that exchange: connections
/// that parked after it accepted them are served at once by the other worker (they
/// used to wait for the worker that parked them).
#[test]
fn a_worker_busy_with_one_exchange_holds_no_other_connection() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server =
            Arc::new(TcpServer::builder("127.0.0.1:0").dispatch(Pool::new(2)).bind(gated_lines(&gate)).unwrap());
        let control = gate.control();
        let serve = serve_started(&server, "stall-busy");
        let addr = server.local_addr();
        let handle = server.handle();
        // Clients that park, accepted by either worker.
        let mut parked: Vec<_> = (0..8).map(|_| BufReader::new(connect(addr))).collect();
        for (n, client) in parked.iter_mut().enumerate() {
            assert_eq!(ask(client, &format!("c{n}\n")), format!("1: C{n}\n"));
        }
        wait_until(TIMEOUT, "the clients to park", || handle.stats().parked == 8);
        // Each parked client in turn holds a worker; all the others are still served.
        for held in 0..parked.len() {
            parked[held].get_mut().write_all(b"slow\n").unwrap();
            control.expect_arrival("a long exchange");
            for (n, client) in parked.iter_mut().enumerate().filter(|(n, _)| *n != held) {
                let reply = ask(client, &format!("hi {n}\n"));
                assert!(reply.ends_with(&format!("HI {n}\n")), "client {n} while {held} holds a worker: {reply:?}");
            }
            control.release(1);
            assert!(read_reply(&mut parked[held]).ends_with("SLOW\n"));
        }
        stop(&server, serve);
    });
}

/// `Threading::max_threads` bounds the threads running exchanges, not the connections:
/// clients parked idle hold no thread, and a new client is answered (it used to get no
/// answer while two idle clients were parked under `max_threads(2)`).
#[test]
fn max_threads_counts_no_parked_connection() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Threading::new().max_threads(2))
                .bind(gated_lines(&gate))
                .unwrap(),
        );
        let control = gate.control();
        let serve = serve_started(&server, "stall-maxthr");
        let addr = server.local_addr();
        let handle = server.handle();
        let mut idle: Vec<_> = (0..4).map(|_| BufReader::new(connect(addr))).collect();
        for (n, client) in idle.iter_mut().enumerate() {
            assert_eq!(ask(client, &format!("c{n}\n")), format!("1: C{n}\n"));
        }
        wait_until(TIMEOUT, "the clients to park", || handle.stats().parked == 4);
        let mut fresh = BufReader::new(connect(addr));
        assert_eq!(ask(&mut fresh, "new\n"), "1: NEW\n", "a new client beside idle parked ones");
        // The limit still holds for exchanges: two at the gate, a third waits.
        for client in idle.iter_mut().take(2) {
            client.get_mut().write_all(b"slow\n").unwrap();
            control.expect_arrival("an exchange under the limit");
        }
        idle[2].get_mut().write_all(b"slow\n").unwrap();
        control.assert_no_arrival("a third exchange under max_threads(2)");
        control.release(3);
        for client in idle.iter_mut().take(3) {
            assert_eq!(read_reply(client), "2: SLOW\n");
        }
        assert_eq!(control.high_water(), 2, "max_threads(2) ran more exchanges at once");
        stop(&server, serve);
    });
}

/// A sequential server runs one exchange at a time, also for a connection that
/// `process_request` runs beside its serve loop (it used to run both at once).
#[test]
fn process_request_beside_a_sequential_serve_loop_waits_its_turn() {
    bounded(LIMIT, || {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let gate = Gate::new();
        let (r, m, g) = (running.clone(), most.clone(), gate.clone());
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Sequential)
                .bind(move |req: &mut StreamRequest| -> HandlerResult {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    let mut line = String::new();
                    req.reader().read_line(&mut line)?;
                    if line.trim() == "slow" {
                        g.pass("slow")?;
                    }
                    r.fetch_sub(1, Ordering::SeqCst);
                    write!(req.writer(), "done {line}")?;
                    Ok(())
                })
                .unwrap(),
        );
        let control = gate.control();
        let serve = serve_started(&server, "stall-procreq");
        let mut served = BufReader::new(connect(server.local_addr()));
        served.get_mut().write_all(b"slow\n").unwrap();
        control.expect_arrival("the serve loop's exchange");

        // A connection of our own, run through process_request on another thread.
        let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let outward = TcpStream::connect(peer.local_addr().unwrap()).unwrap();
        let client_addr = outward.peer_addr().unwrap().into();
        let (mut theirs, _) = peer.accept().unwrap();
        theirs.write_all(b"outside\n").unwrap();
        let outside = {
            let server = server.clone();
            thread::spawn(move || server.process_request(Connection::Tcp(outward), client_addr))
        };
        thread::sleep(NEGATIVE_WAIT);
        assert_eq!(most.load(Ordering::SeqCst), 1, "process_request ran beside the serve loop's exchange");
        control.release(1);
        assert_eq!(read_reply(&mut served), "done slow\n");
        outside.join().unwrap().unwrap();
        let mut reply = String::new();
        theirs.set_read_timeout(Some(TIMEOUT)).unwrap();
        BufReader::new(theirs).read_line(&mut reply).unwrap();
        assert_eq!(reply, "done outside\n");
        assert_eq!(most.load(Ordering::SeqCst), 1, "two exchanges at once in a sequential server");
        stop(&server, serve);
    });
}

/// The same with a frame: the serve loop's connections park before each message, and
/// the loop takes them from the ready queue. It counted such a connection as running
/// only after it had looked for room, and a `process_request` that looked in between ran
/// beside it (one run in eleven of ten requests, found by a hostile review). A race of
/// timing: many rounds, each exchange long enough for an overlap to be seen.
#[test]
fn process_request_beside_a_framed_sequential_loop_waits_its_turn() {
    const ROUNDS: usize = 25;
    const EACH: usize = 4;
    bounded(LIMIT, || {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (r, m) = (running.clone(), most.clone());
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Sequential)
                .frame(Frame::lines(100))
                .bind(move |req: &mut StreamRequest| -> HandlerResult {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(2));
                    let mut line = String::new();
                    req.reader().read_line(&mut line)?;
                    r.fetch_sub(1, Ordering::SeqCst);
                    write!(req.writer(), "done {line}")?;
                    req.park();
                    Ok(())
                })
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-procreq-framed");
        let mut served: Vec<_> = (0..EACH).map(|_| BufReader::new(connect(server.local_addr()))).collect();
        let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        for round in 0..ROUNDS {
            let mut outside = Vec::new();
            for (n, client) in served.iter_mut().enumerate() {
                let outward = TcpStream::connect(peer.local_addr().unwrap()).unwrap();
                let client_addr = outward.peer_addr().unwrap().into();
                let (mut theirs, _) = peer.accept().unwrap();
                writeln!(theirs, "outside {round} {n}").unwrap();
                let server = server.clone();
                let run = thread::spawn(move || server.process_request(Connection::Tcp(outward), client_addr));
                outside.push((run, theirs));
                client.get_mut().write_all(format!("served {round} {n}\n").as_bytes()).unwrap();
            }
            for (n, client) in served.iter_mut().enumerate() {
                assert_eq!(read_reply(client), format!("done served {round} {n}\n"));
            }
            for (n, (run, theirs)) in outside.into_iter().enumerate() {
                run.join().unwrap().unwrap();
                let mut reply = String::new();
                theirs.set_read_timeout(Some(TIMEOUT)).unwrap();
                BufReader::new(theirs).read_line(&mut reply).unwrap();
                assert_eq!(reply, format!("done outside {round} {n}\n"));
            }
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "two exchanges at once in a sequential server");
        stop(&server, serve);
    });
}

/// Answers a line with the line upper-cased, and parks for the next.
fn upper_lines(req: &mut StreamRequest) -> HandlerResult {
    let mut line = String::new();
    req.reader().read_line(&mut line)?;
    write!(req.writer(), "{}", line.to_uppercase())?;
    req.park();
    Ok(())
}

/// An upper-casing line server with a declared frame, parking between lines.
fn framed_lines(
    mode: Dispatch,
    max: usize,
    idle: Option<Duration>,
) -> Arc<socketserver::Server<socketserver::transport::Tcp>> {
    Arc::new(
        TcpServer::builder("127.0.0.1:0")
            .dispatch(mode)
            .frame(Frame::lines(max))
            .idle_timeout(idle)
            .handle_error(|_, _| {})
            .bind(upper_lines)
            .unwrap(),
    )
}

/// A reply the handler left in the writer (`wbufsize`) when it parked goes out from the
/// poller, as a body from `send_from` does: a client that pipelines and never reads
/// holds no worker. The flush before the park used to block, with no write timeout for
/// ever, and a pool of one answered no one else.
#[test]
fn a_buffered_reply_to_a_client_that_does_not_read_holds_no_worker() {
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .frame(Frame::lines(100))
                .wbufsize(64 * 1024)
                .handle_error(|_, _| {})
                .bind(|req: &mut StreamRequest| -> HandlerResult {
                    let mut line = String::new();
                    req.reader().read_line(&mut line)?;
                    // Larger than both socket buffers fill with after a few.
                    req.writer().write_all(&[b'x'; 32 * 1024])?;
                    write!(req.writer(), "\n{line}")?;
                    req.park();
                    Ok(())
                })
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-buffered");
        let mut stuck = connect(server.local_addr());
        stuck.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
        // Lines until its own send blocks for a second: the server's replies fill both
        // socket buffers first, as it never reads.
        let lines = b"again\n".repeat(1000);
        while stuck.write_all(&lines).is_ok() {}
        let mut other = BufReader::new(connect(server.local_addr()));
        other.get_mut().write_all(b"other\n").unwrap();
        let mut reply = Vec::new();
        other.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
        other.read_until(b'\n', &mut reply).expect("the other client's reply");
        assert_eq!(reply.len(), 32 * 1024 + 1);
        assert_eq!(read_reply(&mut other), "other\n");
        drop(stuck);
        stop(&server, serve);
    });
}

/// A reply left in the writer that waits, parked, for the client's window when the
/// server stops is still sent whole within the stop's deadline, as a running request's
/// reply is (a body from `send_from` is cut at a stop; such a reply must not be).
#[test]
fn a_buffered_reply_waiting_for_the_client_is_sent_whole_at_a_stop() {
    // More than the socket buffers hold (the client's is kept small): the rest waits.
    const REPLY: usize = 8 << 20;
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .frame(Frame::lines(100))
                .wbufsize(2 * REPLY)
                .shutdown_deadline(TIMEOUT)
                .handle_error(|_, _| {})
                .bind(|req: &mut StreamRequest| -> HandlerResult {
                    let mut line = String::new();
                    req.reader().read_line(&mut line)?;
                    req.writer().write_all(&vec![b'x'; REPLY])?;
                    req.writer().write_all(b"\n")?;
                    req.park();
                    Ok(())
                })
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-buffered-stop");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.local_addr().into()).unwrap();
        let mut client: TcpStream = socket.into();
        client.write_all(b"go\n").unwrap();
        // The reply fills both socket buffers and waits, parked for writing.
        wait_until(TIMEOUT, "the connection to park for writing", || server.handle().stats().parked == 1);
        let stopping = {
            let server = server.clone();
            thread::spawn(move || server.shutdown())
        };
        let mut reply = Vec::new();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        client.read_to_end(&mut reply).expect("the reply, then the end");
        assert_eq!(reply.len(), REPLY + 1, "the reply was cut at the stop");
        stopping.join().unwrap();
        assert!(support::join_within(serve, TIMEOUT).is_ok());
    });
}

/// With a frame declared, a client whose every send completes one message and starts
/// the next holds no worker while its next message is incomplete: a pool of two with
/// two such clients, and a sequential server with one, answer a new client at once
/// (they used to answer nobody until the slow clients' lines were complete).
#[test]
fn a_half_sent_message_holds_no_worker_with_a_frame() {
    bounded(LIMIT, || {
        let modes: [(&str, Dispatch, usize); 2] =
            [("sequential", Dispatch::from(Sequential), 1), ("pool of 2", Dispatch::from(Pool::new(2)), 2)];
        for (mode, dispatch, loops) in modes {
            let server = framed_lines(dispatch, 64, None);
            let serve = serve_started(&server, "stall-frame");
            let addr = server.local_addr();
            // As many slow clients as loops: each sends a whole line and the start of
            // the next, and stops there.
            let mut slow: Vec<_> = (0..loops).map(|_| BufReader::new(connect(addr))).collect();
            for (n, client) in slow.iter_mut().enumerate() {
                assert_eq!(ask(client, &format!("first {n}\nsecond ha")), format!("FIRST {n}\n"), "{mode}");
            }
            let mut fresh = BufReader::new(connect(addr));
            assert_eq!(ask(&mut fresh, "fresh\n"), "FRESH\n", "{mode}: a new client behind half-sent messages");
            for (n, client) in slow.iter_mut().enumerate() {
                assert_eq!(ask(client, &format!("lf {n}\n")), format!("SECOND HALF {n}\n"), "{mode}");
            }
            stop(&server, serve);
        }
    });
}

/// A message longer than the frame's maximum is reported as `Error::Message` and its
/// connection closed, unread beyond the maximum; the server goes on serving others.
#[test]
fn a_message_longer_than_the_frame_closes_its_connection() {
    bounded(LIMIT, || {
        let (errors, record) = reported_errors();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(2))
                .frame(Frame::lines(64))
                .handle_error(record)
                .bind(upper_lines)
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-long");
        let addr = server.local_addr();
        let mut liar = BufReader::new(connect(addr));
        assert_eq!(ask(&mut liar, "short\n"), "SHORT\n");
        // Longer than 64 bytes with no newline: the server must not wait for one.
        liar.get_mut().write_all(&[b'x'; 100]).unwrap();
        liar.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut liar, &mut rest); // the end, or a reset
        assert!(rest.is_empty(), "no reply to an oversized message: {rest:?}");
        wait_until(TIMEOUT, "the error to be reported", || !errors.lock().unwrap().is_empty());
        let reported = errors.lock().unwrap().join("; ");
        assert!(reported.contains("line longer than 64 bytes"), "{reported}");
        let mut other = BufReader::new(connect(addr));
        assert_eq!(ask(&mut other, "next\n"), "NEXT\n");
        stop(&server, serve);
    });
}

/// With `bad_message`, a client whose message breaks the frame is told why before the
/// close, in every mode: on its first message (before `setup`), and on a message that
/// follows an answered one (parked, and pipelined behind it). The error is still
/// reported, and the server goes on serving others.
#[test]
fn bad_message_answers_an_oversized_message_before_the_close() {
    bounded(LIMIT, || {
        let modes: [(&str, Dispatch); 3] = [
            ("sequential", Dispatch::from(Sequential)),
            ("pool of 2", Dispatch::from(Pool::new(2))),
            ("threading", Dispatch::from(Threading::new())),
        ];
        for (mode, dispatch) in modes {
            let errors = Arc::new(AtomicUsize::new(0));
            let seen = errors.clone();
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(dispatch)
                    .frame(Frame::lines(64))
                    .bad_message(|error, reply| writeln!(reply, "ERR {error}"))
                    .handle_error(move |e, _| {
                        if matches!(e, socketserver::Error::Message(_)) {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                    .bind(upper_lines)
                    .unwrap(),
            );
            let serve = serve_started(&server, "stall-bad");
            let addr = server.local_addr();
            let told = |client: &mut BufReader<TcpStream>| {
                client.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut rest = String::new();
                std::io::Read::read_to_string(client, &mut rest).unwrap();
                rest
            };
            // The first message.
            let mut first = BufReader::new(connect(addr));
            first.get_mut().write_all(&[b'x'; 100]).unwrap();
            let rest = told(&mut first);
            assert!(rest.starts_with("ERR ") && rest.contains("longer than 64"), "{mode}, first message: {rest:?}");
            // After an answered message, parked.
            let mut later = BufReader::new(connect(addr));
            assert_eq!(ask(&mut later, "short\n"), "SHORT\n", "{mode}");
            later.get_mut().write_all(&[b'y'; 100]).unwrap();
            let rest = told(&mut later);
            assert!(rest.starts_with("ERR "), "{mode}, after a park: {rest:?}");
            // Pipelined behind a good one: the good one is answered, then the error.
            let mut piped = BufReader::new(connect(addr));
            let mut both = b"fine\n".to_vec();
            both.extend_from_slice(&[b'z'; 100]);
            piped.get_mut().write_all(&both).unwrap();
            let rest = told(&mut piped);
            assert!(rest.starts_with("FINE\nERR "), "{mode}, pipelined: {rest:?}");
            wait_until(TIMEOUT, "the three errors to be reported", || errors.load(Ordering::SeqCst) == 3);
            let mut other = BufReader::new(connect(addr));
            assert_eq!(ask(&mut other, "next\n"), "NEXT\n", "{mode}");
            stop(&server, serve);
        }
    });
}

/// A `bad_message` reply far larger than the client's window, to a client that reads
/// nothing, holds no thread: the reply is sent without waiting (what fits), the
/// connection closes, and the one worker serves the next client at once. A hook that
/// panics or fails after writing part of its reply sends nothing; it is reported, its
/// connection closed, and the server goes on.
#[test]
fn a_bad_message_reply_never_waits_for_the_client_and_a_failing_hook_sends_nothing() {
    bounded(LIMIT, || {
        let (reported, record) = reported_errors();
        let calls = AtomicUsize::new(0);
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .frame(Frame::lines(64))
                .bad_message(move |_, reply| match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => {
                        reply.resize(64 << 20, b'!');
                        Ok(())
                    }
                    1 => {
                        reply.extend_from_slice(b"half a repl");
                        panic!("the hook fails")
                    }
                    _ => {
                        reply.extend_from_slice(b"half a repl");
                        Err(std::io::Error::other("the hook gives up"))
                    }
                })
                .handle_error(record)
                .bind(upper_lines)
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-bad-big");
        let addr = server.local_addr();
        let mut silent = connect(addr);
        silent.write_all(&[b'x'; 100]).unwrap();
        wait_until(TIMEOUT, "the first error to be reported", || !reported.lock().unwrap().is_empty());
        // It has read nothing: the 64 MiB reply could not all go, and the worker is free.
        let mut other = BufReader::new(connect(addr));
        assert_eq!(ask(&mut other, "next\n"), "NEXT\n", "the one worker is not held by the silent client");
        silent.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut silent, &mut got); // what fitted, then the end (or a reset)
        assert!(!got.is_empty() && got.len() < 64 << 20, "only what the window took was sent: {} bytes", got.len());
        // The hook writes half a reply and panics, then half a reply and fails: each is
        // reported, and its connection closed with nothing sent (not the half).
        for (bad, what) in [(b'y', "the hook fails"), (b'z', "the hook gives up")] {
            let mut client = connect(addr);
            client.write_all(&[bad; 100]).unwrap();
            client.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut got = Vec::new();
            let _ = std::io::Read::read_to_end(&mut client, &mut got);
            assert!(got.is_empty(), "nothing from a hook that failed ({what}): {:?}", String::from_utf8_lossy(&got));
            wait_until(TIMEOUT, "the failure to be reported", || {
                reported.lock().unwrap().iter().any(|e| e.contains(what))
            });
        }
        assert_eq!(ask(&mut other, "again\n"), "AGAIN\n", "the server goes on");
        stop(&server, serve);
    });
}

/// A length-prefixed frame: messages split at any byte, or two in one segment, each
/// reach `handle` whole.
#[test]
fn a_length_prefix_frame_gathers_split_and_joined_messages() {
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .frame(Frame::length_prefix(2, ByteOrder::BigEndian, 1000))
                .bind(|req: &mut StreamRequest| -> HandlerResult {
                    let message = req.reader().fill_buf()?.to_vec();
                    let len = usize::from(u16::from_be_bytes([message[0], message[1]]));
                    let body = message[2..2 + len].to_vec();
                    req.reader().consume(2 + len);
                    req.writer().write_all(&body.to_ascii_uppercase())?;
                    req.writer().write_all(b"\n")?;
                    req.park();
                    Ok(())
                })
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-lenpfx");
        let mut client = BufReader::new(connect(server.local_addr()));
        let framed = |body: &[u8]| [&(body.len() as u16).to_be_bytes()[..], body].concat();
        let one = framed(b"split anywhere");
        for piece in one.chunks(3) {
            client.get_mut().write_all(piece).unwrap();
            client.get_mut().flush().unwrap();
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(read_reply(&mut client), "SPLIT ANYWHERE\n");
        client.get_mut().write_all(&[framed(b"two"), framed(b"in one")].concat()).unwrap();
        assert_eq!(read_reply(&mut client), "TWO\n");
        assert_eq!(read_reply(&mut client), "IN ONE\n");
        stop(&server, serve);
    });
}

/// A client that drips a byte now and then never completes its message: with a frame,
/// the idle timeout counts from the message's first byte, so it is closed, holding no
/// thread meanwhile (each byte would otherwise start its idle time again).
#[test]
fn a_slow_drip_is_closed_after_the_idle_timeout_from_its_first_byte() {
    bounded(LIMIT, || {
        // A maximum the drip never reaches before the test's own limit.
        let server = framed_lines(Dispatch::from(Pool::new(1)), 1 << 20, Some(IDLE));
        let serve = serve_started(&server, "stall-drip");
        let addr = server.local_addr();
        let mut drip = connect(addr);
        drip.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let start = std::time::Instant::now();
        let closed = loop {
            // The server's end shows as end-of-file, or as a failed write once it reset.
            let mut byte = [0u8; 1];
            if drip.write_all(b"z").is_err() || matches!(std::io::Read::read(&mut drip, &mut byte), Ok(0)) {
                break true;
            }
            if start.elapsed() > TIMEOUT {
                break false;
            }
            // Meanwhile the only worker serves others.
            let mut other = BufReader::new(connect(addr));
            assert_eq!(ask(&mut other, "hi\n"), "HI\n");
        };
        assert!(closed, "a dripping client was kept {:?}", start.elapsed());
        stop(&server, serve);
    });
}

/// Every stop is bounded in every mode, also with a handler that ignores its socket (it
/// sleeps): `BackgroundServer::stop` returns within its `stop_timeout` and a second more
/// and says requests were left running, and `shutdown` within the shutdown deadline and
/// a second more. They used to wait for the handler (20 s here) in sequential and pool
/// modes, and spend the bound twice with a thread per request.
#[test]
fn every_stop_is_bounded_with_a_handler_that_ignores_its_socket() {
    const DEAF: Duration = Duration::from_secs(20);
    const BOUND: Duration = Duration::from_secs(8);
    bounded(LIMIT, || {
        for mode in support::MODES {
            let started = Gate::new();
            let gate = started.clone();
            let deaf = move |_: &mut StreamRequest| -> HandlerResult {
                let _ = gate.pass("deaf"); // says it began; nobody releases it
                thread::sleep(DEAF);
                Ok(())
            };
            let control = started.control();
            // BackgroundServer::stop.
            let server = TcpServer::builder("127.0.0.1:0").dispatch(mode.dispatch()).bind(deaf.clone()).unwrap();
            let addr = server.local_addr();
            let background = server.serve_in_background().unwrap().stop_timeout(Duration::from_millis(200));
            let _client = connect(addr);
            control.expect_arrival("the deaf handler");
            let start = std::time::Instant::now();
            let stopped = background.stop();
            let took = start.elapsed();
            assert!(took < BOUND, "{mode}: stop took {took:?}");
            let error = stopped.expect_err("requests were left running");
            assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{mode}: {error}");

            // shutdown, with a shutdown deadline.
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .shutdown_deadline(Duration::from_millis(200))
                    .bind(deaf)
                    .unwrap(),
            );
            let _serve = support::serve::spawn_serve(&server, "stall-deaf");
            let _client = connect(server.local_addr());
            control.expect_arrival("the deaf handler");
            let start = std::time::Instant::now();
            server.shutdown();
            let took = start.elapsed();
            assert!(took < BOUND, "{mode}: shutdown took {took:?}");
        }
    });
}

/// A burst of connections waits in the listen backlog while the server cannot accept
/// (its accept paused: Linux grows a threaded process's descriptor table at 256, 512,
/// 1024, ... descriptors inside `accept`, for an RCU grace period): with the old backlog
/// of 128, a flood of 10,000 connects had 6-7 take 1 s each (a SYN sent again), one at
/// each power of two. Here nobody accepts at all, and 600 connects still get in at once.
/// (Linux: macOS and the BSDs clamp a backlog to `kern.ipc.somaxconn`, 128 by default,
/// and Windows to 200.)
#[cfg(target_os = "linux")]
#[test]
fn a_burst_of_connections_waits_in_the_backlog() {
    bounded(LIMIT, || {
        let server = TcpServer::bind("127.0.0.1:0", |_: &mut StreamRequest| -> HandlerResult { Ok(()) }).unwrap();
        let addr = server.local_addr();
        let mut clients = Vec::new();
        for n in 0..600 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(client) => clients.push(client),
                Err(e) => panic!("connect {n} with nobody accepting: {e} (the backlog is too small)"),
            }
        }
        assert_eq!(clients.len(), 600);
        drop(server);
    });
}

/// A large reply to a client that reads it slowly holds no worker: sent with
/// `send_from`, it waits in the poller while the client's window is full, and a pool of
/// one answers another client meanwhile (a file sent with a plain write held its worker
/// for the whole file). The slow client gets every byte, then its next answer.
#[test]
fn a_slow_reader_of_a_large_reply_holds_no_worker() {
    const BIG: usize = 16 << 20;
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .bind(|req: &mut StreamRequest| -> HandlerResult {
                    let mut line = String::new();
                    if req.reader().read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == "big\n" {
                        writeln!(req.writer(), "{BIG}")?;
                        req.send_from(std::io::Read::take(std::io::repeat(b'x'), BIG as u64));
                    } else {
                        write!(req.writer(), "{}", line.to_uppercase())?;
                    }
                    req.park();
                    Ok(())
                })
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-slowread");
        let addr = server.local_addr();
        let mut slow = BufReader::new(connect(addr));
        slow.get_mut().write_all(b"big\n").unwrap();
        assert_eq!(read_reply(&mut slow), format!("{BIG}\n"));
        // The slow client reads nothing more for now: its window fills.
        let mut other = BufReader::new(connect(addr));
        for n in 0..3 {
            assert_eq!(ask(&mut other, &format!("hi {n}\n")), format!("HI {n}\n"), "beside a slow reader");
        }
        let mut body = vec![0u8; BIG];
        std::io::Read::read_exact(&mut slow, &mut body).unwrap();
        assert!(body.iter().all(|&b| b == b'x'));
        assert_eq!(ask(&mut slow, "after\n"), "AFTER\n");
        stop(&server, serve);
    });
}

/// A connection that yields its turn (more than 16 pipelined messages, or more than
/// 1 MiB of a body) comes back in every mode: with a thread per request the one loop
/// waits in the poller, and is woken to run it (it was left in the queue for good).
#[test]
fn a_connection_that_yields_its_turn_comes_back_in_every_mode() {
    const BODY: usize = 3 << 20;
    bounded(LIMIT, || {
        for mode in support::MODES {
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .bind(|req: &mut StreamRequest| -> HandlerResult {
                        let mut line = String::new();
                        if req.reader().read_line(&mut line)? == 0 {
                            return Ok(());
                        }
                        if line == "body\n" {
                            req.send_from(std::io::Read::take(std::io::repeat(b'y'), BODY as u64));
                        } else {
                            write!(req.writer(), "{}", line.to_uppercase())?;
                        }
                        req.park();
                        Ok(())
                    })
                    .unwrap(),
            );
            let serve = serve_started(&server, "stall-yield");
            let mut client = BufReader::new(connect(server.local_addr()));
            let pipelined: String = (0..40).map(|n| format!("p{n}\n")).collect();
            client.get_mut().write_all(pipelined.as_bytes()).unwrap();
            for n in 0..40 {
                assert_eq!(read_reply(&mut client), format!("P{n}\n"), "{mode}: pipelined message {n}");
            }
            client.get_mut().write_all(b"body\n").unwrap();
            let mut body = vec![0u8; BODY];
            std::io::Read::read_exact(&mut client, &mut body).unwrap_or_else(|e| panic!("{mode}: the body: {e}"));
            assert!(body.iter().all(|&b| b == b'y'));
            assert_eq!(ask(&mut client, "after\n"), "AFTER\n", "{mode}");
            stop(&server, serve);
        }
    });
}

/// With a thread per request at its `max_threads` and refusing when full, a parked
/// connection's next message waits for a free thread and runs when one ends (it waited
/// for ever: the loop that could run it was asleep in the poller).
#[test]
fn queued_work_runs_when_a_thread_frees_under_max_threads_and_refuse_when_full() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Threading::new().max_threads(1))
                .refuse_when_full(|_, _| Ok(()))
                .bind(gated_lines(&gate))
                .unwrap(),
        );
        let control = gate.control();
        let serve = serve_started(&server, "stall-refuse");
        let addr = server.local_addr();
        let handle = server.handle();
        // One after the other: the one thread is free again once a client parks.
        let mut x = BufReader::new(connect(addr));
        assert_eq!(ask(&mut x, "x\n"), "1: X\n");
        wait_until(TIMEOUT, "x to park", || handle.stats().parked == 1);
        let mut y = BufReader::new(connect(addr));
        assert_eq!(ask(&mut y, "y\n"), "1: Y\n");
        wait_until(TIMEOUT, "both to park", || handle.stats().parked == 2);
        x.get_mut().write_all(b"slow\n").unwrap();
        control.expect_arrival("x's exchange, holding the one thread");
        y.get_mut().write_all(b"again\n").unwrap();
        control.assert_no_arrival("y waits for the thread");
        control.release(1);
        assert_eq!(read_reply(&mut x), "2: SLOW\n");
        assert_eq!(read_reply(&mut y), "2: AGAIN\n", "y's message runs once x's exchange ends");
        stop(&server, serve);
    });
}

/// A frame function that panics closes that connection (reported), and the server
/// goes on serving the others (the panic went through the worker and shut the server
/// down).
#[test]
fn a_panicking_frame_function_closes_only_its_connection() {
    support::quiet_panics_containing("frame function on purpose");
    bounded(LIMIT, || {
        let (errors, record) = reported_errors();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(2))
                .frame(Frame::with(1024, |bytes| {
                    assert!(!bytes.starts_with(b"boom"), "frame function on purpose");
                    Ok(bytes.iter().position(|&b| b == b'\n').map(|at| at + 1))
                }))
                .handle_error(record)
                .bind(upper_lines)
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-framepanic");
        let addr = server.local_addr();
        let mut bomb = BufReader::new(connect(addr));
        bomb.get_mut().write_all(b"boom\n").unwrap();
        let mut rest = String::new();
        bomb.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = bomb.read_line(&mut rest);
        assert_eq!(rest, "", "closed unanswered");
        for n in 0..4 {
            let mut other = BufReader::new(connect(addr));
            assert_eq!(ask(&mut other, &format!("ok {n}\n")), format!("OK {n}\n"));
        }
        let reported = errors.lock().unwrap().join("; ");
        assert!(reported.contains("the frame function panicked"), "{reported}");
        stop(&server, serve);
    });
}

/// The frame function is asked only once bytes have come: one that reads the first byte
/// without looking at the length (a length byte, then that many bytes) serves every
/// message of a keep-alive client, each sent after the server parked the connection.
#[test]
fn a_frame_function_is_never_asked_about_no_bytes() {
    bounded(LIMIT, || {
        let (errors, record) = reported_errors();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(2))
                .frame(Frame::with(256, |bytes| {
                    let whole = 1 + usize::from(bytes[0]);
                    Ok((bytes.len() >= whole).then_some(whole))
                }))
                .handle_error(record)
                .bind(|req: &mut StreamRequest| {
                    let message = req.reader().fill_buf()?.to_vec();
                    req.reader().consume(message.len());
                    req.writer().write_all(&message[1..].to_ascii_uppercase())?;
                    req.park();
                    Ok(())
                })
                .unwrap(),
        );
        let serve = serve_started(&server, "stall-framefirstbyte");
        let mut client = connect(server.local_addr());
        for word in ["one", "three", "five"] {
            client.write_all(&[word.len() as u8]).unwrap();
            // The rest after a moment: the server has parked the connection with one
            // byte of the message, and is woken for the rest.
            thread::sleep(Duration::from_millis(20));
            client.write_all(word.as_bytes()).unwrap();
            let mut reply = vec![0; word.len()];
            client.read_exact(&mut reply).unwrap();
            assert_eq!(reply, word.to_ascii_uppercase().as_bytes());
        }
        assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock().unwrap());
        stop(&server, serve);
    });
}

/// A connection whose exchange runs while the server stops ends after it: the message
/// its client sent meanwhile is not served (the stop does not wait for more turns),
/// and with `rbufsize(0)` a parked connection still gets its next message.
#[test]
fn an_exchange_at_a_stop_is_the_last_and_a_zero_rbufsize_still_parks() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(2))
                .rbufsize(0)
                .shutdown_deadline(TIMEOUT)
                .bind(gated_lines(&gate))
                .unwrap(),
        );
        let control = gate.control();
        let serve = serve_started(&server, "stall-last");
        let mut client = BufReader::new(connect(server.local_addr()));
        assert_eq!(ask(&mut client, "a\n"), "1: A\n");
        assert_eq!(ask(&mut client, "b\n"), "2: B\n", "rbufsize(0): the next message after a park");
        client.get_mut().write_all(b"slow\n").unwrap();
        control.expect_arrival("the exchange the stop finds running");
        let stopper = support::serve::spawn_shutdown(&server.handle());
        thread::sleep(NEGATIVE_WAIT); // the stop has begun: it waits for this exchange
        client.get_mut().write_all(b"next\n").unwrap();
        thread::sleep(NEGATIVE_WAIT);
        control.release(1);
        assert_eq!(read_reply(&mut client), "3: SLOW\n");
        let mut rest = String::new();
        let _ = client.read_line(&mut rest);
        assert_eq!(rest, "", "the connection ends after the exchange the stop found");
        stopper.join().unwrap();
        let _ = support::join_within(serve, TIMEOUT);
    });
}
