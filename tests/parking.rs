//! Parking: a handler ends an exchange with `StreamRequest::park`, the connection waits
//! in the server's poller with no thread, and comes back for its next exchange. Over
//! real sockets, in every mode, over TCP and Unix streams.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
#[cfg(target_os = "linux")]
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socketserver::dispatch::Pool;
use socketserver::testing::TestStream;
use socketserver::{HandlerResult, RequestHandler, StreamRequest, TcpServer};
use support::serve::{echo_line, serve_started, stop};
use support::{bounded, connect, wait_until, Gate, Mode, LIMIT, MODES, NEGATIVE_WAIT, TIMEOUT};

/// A line protocol that answers each line with `n: LINE` (n counting this connection's
/// lines, kept in the request's state) and parks between lines; counts its phases.
#[derive(Default)]
struct Lines {
    setups: AtomicUsize,
    handles: AtomicUsize,
    finishes: AtomicUsize,
}

#[derive(Default)]
struct Seen(u64);

impl RequestHandler<StreamRequest> for Lines {
    fn setup(&self, _: &mut StreamRequest) -> HandlerResult {
        self.setups.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> HandlerResult {
        self.handles.fetch_add(1, Ordering::SeqCst);
        let mut line = String::new();
        if req.reader().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let seen = req.state::<Seen>();
        seen.0 += 1;
        let n = seen.0;
        write!(req.writer(), "{n}: {}", line.to_uppercase())?;
        req.park();
        Ok(())
    }

    fn finish(&self, _: &mut StreamRequest) -> HandlerResult {
        self.finishes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn lines_server(mode: Mode) -> (Arc<Lines>, Arc<socketserver::Server<socketserver::transport::Tcp>>) {
    let handler = Arc::new(Lines::default());
    let shared = handler.clone();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(mode.dispatch())
        .bind(move |req: &mut StreamRequest| -> HandlerResult {
            // The handler's phases, through the closure: setup and finish are counted
            // by hand below, so that the closure form is what is tested.
            shared.handle(req)
        })
        .unwrap();
    (handler, Arc::new(server))
}

/// A handler that answers each line in upper case and parks; `before` sees the request
/// and the line first (to pause on it, hold it at a gate, or reach the socket itself).
fn upper_lines(
    before: impl Fn(&mut StreamRequest, &str) -> std::io::Result<()> + Send + Sync + 'static,
) -> impl Fn(&mut StreamRequest) -> HandlerResult + Send + Sync + 'static {
    move |req: &mut StreamRequest| {
        let mut line = String::new();
        if req.reader().read_line(&mut line)? == 0 {
            return Ok(());
        }
        before(req, &line)?;
        req.writer().write_all(line.to_uppercase().as_bytes())?;
        req.park();
        Ok(())
    }
}

fn ask<S: Read + Write>(reader: &mut BufReader<S>, line: &str) -> String {
    reader.get_mut().write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    reply
}

/// More clients than a pool has workers hold their connections open and take turns;
/// every one is answered, in every mode, and each connection's state is its own.
#[test]
fn parked_connections_are_served_in_turn_in_every_mode() {
    bounded(LIMIT, || {
        for mode in MODES {
            let (_, server) = lines_server(mode);
            let serve = serve_started(&server, "park-turns");
            let addr = server.local_addr();
            let mut clients: Vec<_> = (0..12).map(|_| BufReader::new(connect(addr))).collect();
            for round in 1..=3 {
                for (n, client) in clients.iter_mut().enumerate() {
                    let reply = ask(client, &format!("c{n} r{round}\n"));
                    assert_eq!(reply, format!("{round}: C{n} R{round}\n"), "{mode:?}");
                }
            }
            let handle = server.handle();
            // The last reply is written before its connection parks.
            wait_until(TIMEOUT, "every idle client to be parked", || {
                let stats = handle.stats();
                (stats.parked, stats.active) == (12, 0)
            });
            drop(clients);
            wait_until(TIMEOUT, "the parked connections to end", || handle.stats().parked == 0);
            stop(&server, serve);
        }
    });
}

/// setup runs once per connection, handle once per message, finish once at the end,
/// when the client closes while parked (without a handle call for the end of stream).
#[test]
fn setup_and_finish_run_once_per_connection() {
    bounded(LIMIT, || {
        for mode in MODES {
            let handler = Arc::new(Lines::default());
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0").dispatch(mode.dispatch()).bind_handler(handler.clone()).unwrap(),
            );
            let serve = serve_started(&server, "park-phases");
            let mut client = BufReader::new(connect(server.local_addr()));
            for n in 1..=4 {
                assert_eq!(ask(&mut client, "x\n"), format!("{n}: X\n"), "{mode:?}");
            }
            client.get_ref().shutdown(Shutdown::Write).unwrap();
            let mut rest = String::new();
            client.read_to_string(&mut rest).unwrap();
            assert_eq!(rest, "", "{mode:?}: the server closes after the client's end of stream");
            wait_until(TIMEOUT, "finish", || handler.finishes.load(Ordering::SeqCst) == 1);
            assert_eq!(handler.setups.load(Ordering::SeqCst), 1, "{mode:?}: setups");
            assert_eq!(handler.handles.load(Ordering::SeqCst), 4, "{mode:?}: one handle per message");
            thread::sleep(NEGATIVE_WAIT);
            assert_eq!(handler.finishes.load(Ordering::SeqCst), 1, "{mode:?}: finish runs once");
            assert_eq!(server.handle().stats().errors, 0, "{mode:?}");
            stop(&server, serve);
        }
    });
}

/// Messages sent together (pipelined) are read into the reader's buffer at once; a
/// parked request keeps them, and each is answered, in order, without waiting for more.
#[test]
fn pipelined_messages_in_the_buffer_are_not_lost() {
    bounded(LIMIT, || {
        for mode in MODES {
            let (_, server) = lines_server(mode);
            let serve = serve_started(&server, "park-pipe");
            let mut client = connect(server.local_addr());
            client.write_all(b"a\nb\nc\n").unwrap();
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut replies = Vec::new();
            for _ in 0..3 {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                replies.push(line);
            }
            assert_eq!(replies, ["1: A\n", "2: B\n", "3: C\n"], "{mode:?}");
            stop(&server, serve);
        }
    });
}

/// A burst far larger than one read of the server's (thousands of lines sent at once)
/// is answered whole, framed and not, and the connection then parks and serves its
/// next message: the server never parks a connection with bytes left in its socket
/// unseen (an edge-triggered poller reports only what arrives: bytes left behind by a
/// read that filled its buffer would wait for the next arrival).
#[test]
fn a_burst_larger_than_a_read_is_answered_whole_before_the_connection_parks() {
    const LINES: usize = 3000;
    bounded(LIMIT, || {
        for framed in [false, true] {
            for mode in MODES {
                let handler = Arc::new(Lines::default());
                let mut builder = TcpServer::builder("127.0.0.1:0").dispatch(mode.dispatch());
                if framed {
                    builder = builder.frame(socketserver::Frame::lines(64));
                }
                let server = Arc::new(builder.bind_handler(handler.clone()).unwrap());
                let serve = serve_started(&server, "park-burst");
                let client = connect(server.local_addr());
                let mut reader = BufReader::new(client.try_clone().unwrap());
                for round in 0..2 {
                    let burst: String = (0..LINES).map(|n| format!("r{round} line {n}\n")).collect();
                    let mut writer = client.try_clone().unwrap();
                    let sender = thread::spawn(move || writer.write_all(burst.as_bytes()));
                    for n in 0..LINES {
                        let mut reply = String::new();
                        reader.read_line(&mut reply).unwrap_or_else(|e| {
                            panic!("{mode:?}, framed {framed}: reply {n} of round {round} did not come: {e}")
                        });
                        let seen = round * LINES + n + 1;
                        assert_eq!(reply, format!("{seen}: R{round} LINE {n}\n"), "{mode:?}, framed {framed}");
                    }
                    sender.join().unwrap().unwrap();
                }
                let handle = server.handle();
                wait_until(TIMEOUT, "the connection to park", || handle.stats().parked == 1);
                assert_eq!(ask(&mut reader, "last\n"), format!("{}: LAST\n", 2 * LINES + 1), "{mode:?}");
                assert_eq!(handler.setups.load(Ordering::SeqCst), 1, "{mode:?}, framed {framed}: one connection");
                stop(&server, serve);
            }
        }
    });
}

/// A client's next message that arrives while its previous exchange still runs (the
/// poller reports it to another loop meanwhile) is answered once the connection parks,
/// framed and not: the report is not lost because the connection was busy.
#[test]
fn a_message_that_arrives_during_the_exchange_before_it_is_answered() {
    bounded(LIMIT, || {
        for framed in [false, true] {
            for mode in MODES {
                let handler = upper_lines(|_, line| {
                    if line == "slow\n" {
                        thread::sleep(Duration::from_millis(200));
                    }
                    Ok(())
                });
                let mut builder = TcpServer::builder("127.0.0.1:0").dispatch(mode.dispatch());
                if framed {
                    builder = builder.frame(socketserver::Frame::lines(64));
                }
                let server = Arc::new(builder.bind(handler).unwrap());
                let serve = serve_started(&server, "park-busy");
                let client = connect(server.local_addr());
                let mut reader = BufReader::new(client.try_clone().unwrap());
                // Parked once, so that the next exchanges come through the poller.
                assert_eq!(ask(&mut reader, "hello\n"), "HELLO\n");
                let mut writer = client.try_clone().unwrap();
                writer.write_all(b"slow\n").unwrap();
                // Sent while `slow` is being handled, after its bytes were read.
                thread::sleep(Duration::from_millis(50));
                writer.write_all(b"next\n").unwrap();
                for expected in ["SLOW\n", "NEXT\n"] {
                    let mut reply = String::new();
                    reader.read_line(&mut reply).unwrap_or_else(|e| panic!("{mode:?}, framed {framed}: {e}"));
                    assert_eq!(reply, expected, "{mode:?}, framed {framed}");
                }
                stop(&server, serve);
            }
        }
    });
}

/// A pool of two serving upper-case lines, and one client whose connection has parked;
/// three rounds of `round`, each followed by a wait for the connection to park again
/// with no exchange running: no worker is left in a read.
fn rounds_leave_no_worker_waiting(
    tag: &'static str,
    round: impl Fn(&mut BufReader<std::net::TcpStream>, usize) + Send + 'static,
) {
    bounded(LIMIT, move || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0").dispatch(Pool::new(2)).bind(upper_lines(|_, _| Ok(()))).unwrap(),
        );
        let serve = serve_started(&server, tag);
        let handle = server.handle();
        let mut client = BufReader::new(connect(server.local_addr()));
        assert_eq!(ask(&mut client, "first\n"), "FIRST\n");
        wait_until(TIMEOUT, "the connection to park", || handle.stats().parked == 1);
        for n in 0..3 {
            round(&mut client, n);
            wait_until(TIMEOUT, "the connection to park, with no exchange running", || {
                let stats = handle.stats();
                (stats.parked, stats.active) == (1, 0)
            });
        }
        stop(&server, serve);
    });
}

/// A report of bytes that the exchange itself then read (the rest of a line that came
/// while the handler was reading it) leaves the connection parked, not waiting in a
/// read on a worker for a message that has not been sent.
#[test]
fn bytes_reported_during_an_exchange_that_read_them_leave_no_worker_waiting() {
    rounds_leave_no_worker_waiting("park-stale", |client, round| {
        // The line's start wakes the connection; its end arrives while the handler
        // reads it, and the other worker, waiting in the poller, is told of it.
        client.get_mut().write_all(b"x").unwrap();
        thread::sleep(Duration::from_millis(100));
        client.get_mut().write_all(b"y\n").unwrap();
        let mut reply = String::new();
        client.read_line(&mut reply).unwrap();
        assert_eq!(reply, "XY\n", "round {round}");
    });
}

/// The same at the end of a connection's turn: 14 pipelined lines and the start of a
/// 15th, whose end comes while it is handled, so that the report comes as the turn is
/// spent. The connection parks; no worker is left in a read.
#[test]
fn a_report_at_the_end_of_a_turn_leaves_no_worker_waiting() {
    rounds_leave_no_worker_waiting("park-turn-end", |client, round| {
        let mut burst: String = (0..14).map(|n| format!("l{n}\n")).collect();
        burst.push('x');
        client.get_mut().write_all(burst.as_bytes()).unwrap();
        thread::sleep(Duration::from_millis(100));
        client.get_mut().write_all(b"y\n").unwrap();
        for n in 0..15 {
            let mut reply = String::new();
            client.read_line(&mut reply).unwrap_or_else(|e| panic!("round {round}, reply {n}: {e}"));
        }
    });
}

/// A client that sends its last message and ends its stream at once (both reach the
/// server while its loop is busy, so the poller reports them together) gets its answer
/// and its end at once, not at the idle timeout: the end of stream that came with the
/// message is seen, where a poller that reports only what arrives after a read would
/// never report it again. The same for a reset.
#[test]
fn a_last_message_and_the_end_of_stream_sent_together_end_the_connection_at_once() {
    bounded(LIMIT, || {
        for framed in [false, true] {
            for (mode, loops) in [(Mode::Sequential, 1), (Mode::Pool, support::modes::POOL_WORKERS)] {
                let gate = Gate::new();
                let held = gate.clone();
                // `hold` keeps the loop that runs it busy until the test releases it.
                let handler = upper_lines(move |_, line| match line {
                    "hold\n" => held.pass("hold"),
                    _ => Ok(()),
                });
                let mut builder = TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .idle_timeout(Some(Duration::from_secs(30)));
                if framed {
                    builder = builder.frame(socketserver::Frame::lines(64));
                }
                let server = Arc::new(builder.bind(handler).unwrap());
                let control = gate.control();
                let serve = serve_started(&server, "park-fin");
                let addr = server.local_addr();
                let mut last = BufReader::new(connect(addr));
                assert_eq!(ask(&mut last, "first\n"), "FIRST\n", "{mode:?}");
                wait_until(TIMEOUT, "the first connection to park", || server.handle().stats().parked == 1);
                // Every loop busy, so that the next message and the end of the stream
                // both arrive before any loop waits in the poller again.
                let holders: Vec<_> = (0..loops)
                    .map(|n| {
                        let mut holder = connect(addr);
                        holder.write_all(b"hold\n").unwrap();
                        control.expect_arrival(&format!("holder {n}"));
                        holder
                    })
                    .collect();
                last.get_mut().write_all(b"bye\n").unwrap();
                last.get_ref().shutdown(Shutdown::Write).unwrap();
                thread::sleep(NEGATIVE_WAIT);
                control.release(loops);
                let mut rest = String::new();
                last.read_to_string(&mut rest)
                    .unwrap_or_else(|e| panic!("{mode:?}, framed {framed}: the server did not end the stream: {e}"));
                assert_eq!(rest, "BYE\n", "{mode:?}, framed {framed}");
                // The same with a reset for an end: its connection ends at once too.
                let handle = server.handle();
                wait_until(TIMEOUT, "the holders to park", || {
                    (handle.stats().parked, handle.stats().active) == (loops, 0)
                });
                let mut reset = BufReader::new(connect(addr));
                assert_eq!(ask(&mut reset, "first\n"), "FIRST\n", "{mode:?}");
                wait_until(TIMEOUT, "the connection to park", || handle.stats().parked == loops + 1);
                let holders: Vec<_> = holders
                    .into_iter()
                    .enumerate()
                    .map(|(n, mut holder)| {
                        holder.write_all(b"hold\n").unwrap();
                        control.expect_arrival(&format!("holder {n} again"));
                        holder
                    })
                    .collect();
                reset.get_mut().write_all(b"bye\n").unwrap();
                socket2::SockRef::from(reset.get_ref()).set_linger(Some(Duration::ZERO)).unwrap();
                drop(reset);
                thread::sleep(NEGATIVE_WAIT);
                control.release(loops);
                wait_until(TIMEOUT, "the reset connection to end", || {
                    let stats = handle.stats();
                    (stats.parked, stats.active) == (loops, 0)
                });
                drop(holders);
                stop(&server, serve);
            }
        }
    });
}

/// A connection parked longer than the idle timeout is closed (its client reads end of
/// stream) and gets its finish; the place it held is free again.
#[test]
fn an_idle_parked_connection_is_closed_after_the_idle_timeout() {
    bounded(LIMIT, || {
        for mode in MODES {
            let handler = Arc::new(Lines::default());
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .idle_timeout(Some(Duration::from_millis(200)))
                    .bind_handler(handler.clone())
                    .unwrap(),
            );
            let serve = serve_started(&server, "park-idle");
            let mut client = BufReader::new(connect(server.local_addr()));
            assert_eq!(ask(&mut client, "hi\n"), "1: HI\n");
            client.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut rest = Vec::new();
            let read = client.read_to_end(&mut rest);
            assert!(read.is_ok() && rest.is_empty(), "{mode:?}: the server closes an idle connection: {read:?}");
            wait_until(TIMEOUT, "finish", || handler.finishes.load(Ordering::SeqCst) == 1);
            let handle = server.handle();
            wait_until(TIMEOUT, "the place to be free", || handle.stats().active == 0);
            assert_eq!(handle.stats().parked, 0, "{mode:?}");
            stop(&server, serve);
        }
    });
}

/// Without an idle timeout a parked connection waits as long as it likes.
#[test]
fn without_an_idle_timeout_a_parked_connection_stays() {
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .idle_timeout(None)
                .bind_handler(Arc::new(Lines::default()))
                .unwrap(),
        );
        let serve = serve_started(&server, "park-stay");
        let mut client = BufReader::new(connect(server.local_addr()));
        assert_eq!(ask(&mut client, "a\n"), "1: A\n");
        thread::sleep(NEGATIVE_WAIT);
        assert_eq!(ask(&mut client, "b\n"), "2: B\n");
        let handle = server.handle();
        wait_until(TIMEOUT, "parked again", || handle.stats().parked == 1);
        stop(&server, serve);
    });
}

/// shutdown closes parked connections at once (they are idle) and lets a busy one
/// finish its exchange; every connection gets its finish, and serve_forever returns.
#[test]
fn shutdown_closes_parked_connections_and_drains_busy_ones() {
    bounded(LIMIT, || {
        for mode in MODES {
            if mode == Mode::Sequential {
                continue; // one exchange at a time: nothing is busy while the loop stops
            }
            let gate = Gate::new();
            let finishes = Arc::new(AtomicUsize::new(0));
            let (passing, counted) = (gate.clone(), finishes.clone());
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .bind_handler(GatedLines { gate: passing, finishes: counted })
                    .unwrap(),
            );
            let control = gate.control();
            let serve = serve_started(&server, "park-stop");
            let addr = server.local_addr();
            // Two parked clients, after an exchange each.
            let mut parked: Vec<_> = (0..2).map(|_| BufReader::new(connect(addr))).collect();
            for client in &mut parked {
                client.get_mut().write_all(b"quick\n").unwrap();
                assert_eq!(control.expect_arrival("a quick exchange"), "quick");
                control.release(1);
                let mut reply = String::new();
                client.read_line(&mut reply).unwrap();
                assert_eq!(reply, "QUICK\n");
            }
            // One busy client, held in the gate.
            let mut busy = BufReader::new(connect(addr));
            busy.get_mut().write_all(b"slow\n").unwrap();
            assert_eq!(control.expect_arrival("the busy exchange"), "slow");
            let handle = server.handle();
            wait_until(TIMEOUT, "two parked", || handle.stats().parked == 2);

            let stopping = thread::spawn(move || handle.shutdown());
            for client in &mut parked {
                client.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut rest = Vec::new();
                let read = client.read_to_end(&mut rest);
                assert!(read.is_ok() && rest.is_empty(), "{mode:?}: a parked client is closed at once: {read:?}");
            }
            assert!(!stopping.is_finished(), "{mode:?}: shutdown waits for the busy exchange");
            control.release(1);
            let mut reply = String::new();
            let read = busy.read_line(&mut reply);
            assert!(read.is_ok(), "{mode:?}: {read:?}");
            assert_eq!(reply, "SLOW\n", "{mode:?}: the busy exchange completes");
            stopping.join().unwrap();
            let result = support::join_within(serve, TIMEOUT);
            assert!(result.is_ok(), "{mode:?}: {result:?}");
            assert_eq!(finishes.load(Ordering::SeqCst), 3, "{mode:?}: every connection's finish ran");
        }
    });
}

/// Answers each line in upper case after the gate lets it through, then parks.
struct GatedLines {
    gate: Arc<Gate>,
    finishes: Arc<AtomicUsize>,
}

impl RequestHandler<StreamRequest> for GatedLines {
    fn handle(&self, req: &mut StreamRequest) -> HandlerResult {
        let mut line = String::new();
        if req.reader().read_line(&mut line)? == 0 {
            return Ok(());
        }
        self.gate.pass(line.trim())?;
        req.writer().write_all(line.to_uppercase().as_bytes())?;
        req.park();
        Ok(())
    }

    fn finish(&self, _: &mut StreamRequest) -> HandlerResult {
        self.finishes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// `max_connections` counts parked connections: at the limit a new client waits in the
/// backlog, and is served when a parked one leaves.
#[test]
fn max_connections_counts_parked_connections() {
    bounded(LIMIT, || {
        for mode in MODES {
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0")
                    .dispatch(mode.dispatch())
                    .max_connections(2)
                    .bind_handler(Arc::new(Lines::default()))
                    .unwrap(),
            );
            let serve = serve_started(&server, "park-max");
            let addr = server.local_addr();
            let mut first = BufReader::new(connect(addr));
            let mut second = BufReader::new(connect(addr));
            assert_eq!(ask(&mut first, "a\n"), "1: A\n");
            assert_eq!(ask(&mut second, "b\n"), "1: B\n");
            let mut third = BufReader::new(connect(addr));
            third.get_mut().write_all(b"c\n").unwrap();
            third.get_ref().set_read_timeout(Some(NEGATIVE_WAIT)).unwrap();
            let mut reply = String::new();
            let early = third.read_line(&mut reply);
            assert!(early.is_err(), "{mode:?}: a third client is not served at the limit: {early:?} {reply:?}");
            // The parked ones are still served at the limit.
            assert_eq!(ask(&mut first, "a\n"), "2: A\n", "{mode:?}");
            drop(second);
            third.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut reply = String::new();
            third.read_line(&mut reply).unwrap();
            assert_eq!(reply, "1: C\n", "{mode:?}: served once a place is free");
            stop(&server, serve);
        }
    });
}

/// A client that parks, then sends half a message and stops, holds a pool's only
/// worker no longer than the read timeout (here the idle timeout, with no read timeout
/// set): the next client is served after it.
#[test]
fn a_half_sent_message_holds_a_worker_no_longer_than_the_timeout() {
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .idle_timeout(Some(Duration::from_millis(300)))
                .handle_error(|_, _| {})
                .bind_handler(Arc::new(Lines::default()))
                .unwrap(),
        );
        let serve = serve_started(&server, "park-half");
        let addr = server.local_addr();
        let mut slow = BufReader::new(connect(addr));
        assert_eq!(ask(&mut slow, "a\n"), "1: A\n");
        let handle = server.handle();
        wait_until(TIMEOUT, "slow to park", || handle.stats().parked == 1);
        slow.get_mut().write_all(b"half a li").unwrap();
        // Back from the poller, the worker reads the rest of slow's line.
        wait_until(TIMEOUT, "the half message's exchange", || {
            let stats = handle.stats();
            (stats.parked, stats.active) == (0, 1)
        });
        let mut other = BufReader::new(connect(addr));
        other.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(ask(&mut other, "b\n"), "1: B\n", "the next client is served after the timeout");
        assert!(server.handle().stats().errors >= 1, "the timed-out read is reported");
        stop(&server, serve);
    });
}

/// A client that resets its connection while parked ends it quietly: finish runs, no
/// error is reported, and its place is free.
#[test]
fn a_client_that_resets_while_parked_gets_its_finish_and_no_error() {
    bounded(LIMIT, || {
        for mode in MODES {
            let handler = Arc::new(Lines::default());
            let server = Arc::new(
                TcpServer::builder("127.0.0.1:0").dispatch(mode.dispatch()).bind_handler(handler.clone()).unwrap(),
            );
            let serve = serve_started(&server, "park-reset");
            let mut client = BufReader::new(connect(server.local_addr()));
            assert_eq!(ask(&mut client, "a\n"), "1: A\n");
            let handle = server.handle();
            wait_until(TIMEOUT, "parked", || handle.stats().parked == 1);
            socket2::SockRef::from(client.get_ref()).set_linger(Some(Duration::ZERO)).unwrap();
            drop(client); // a reset, not an end of stream
            wait_until(TIMEOUT, "finish", || handler.finishes.load(Ordering::SeqCst) == 1);
            wait_until(TIMEOUT, "the place to be free", || handle.stats().active == 0);
            let stats = handle.stats();
            assert_eq!((stats.parked, stats.errors), (0, 0), "{mode:?}: {stats:?}");
            stop(&server, serve);
        }
    });
}

/// Over Unix stream sockets too, in every mode.
#[cfg(unix)]
#[test]
fn unix_stream_connections_park() {
    use std::os::unix::net::UnixStream;
    bounded(LIMIT, || {
        for mode in MODES {
            let path = support::temp_socket_path("park");
            let server = Arc::new(
                socketserver::UnixStreamServer::builder(&path)
                    .dispatch(mode.dispatch())
                    .bind_handler(Arc::new(Lines::default()))
                    .unwrap(),
            );
            let serve = serve_started(&server, "park-unix");
            let mut clients: Vec<_> = (0..6).map(|_| BufReader::new(UnixStream::connect(&path).unwrap())).collect();
            for round in 1..=2 {
                for client in &mut clients {
                    client.get_mut().write_all(b"u\n").unwrap();
                    let mut reply = String::new();
                    client.read_line(&mut reply).unwrap();
                    assert_eq!(reply, format!("{round}: U\n"), "{mode:?}");
                }
            }
            let handle = server.handle();
            wait_until(TIMEOUT, "six parked", || handle.stats().parked == 6);
            stop(&server, serve);
        }
    });
}

/// The client side of the two tests below. The client's connection has parked three
/// times (from the third park on, an edge-triggered poller leaves its socket watched
/// without a system call); while the one loop is held by `hold`'s message, `special`
/// sends "b\n" in a way that makes the server's read of it return short with bytes still
/// queued, then "c\n" follows. "C" must come at once, not at the idle timeout's look.
fn message_after_a_short_read<S: Read + Write>(
    client: &mut BufReader<S>,
    parked: impl Fn() -> usize,
    gate: &support::Control,
    hold: impl FnOnce() -> Box<dyn Write>,
    special: impl FnOnce(&S),
) {
    for line in ["a1\n", "a2\n", "a3\n"] {
        assert_eq!(ask(client, line), line.to_uppercase());
    }
    wait_until(TIMEOUT, "parked", || parked() == 1);
    let mut holder = hold();
    holder.write_all(b"hold\n").unwrap();
    gate.expect_arrival("holder");
    special(client.get_ref());
    client.get_mut().write_all(b"c\n").unwrap();
    thread::sleep(NEGATIVE_WAIT);
    gate.release(1);
    let mut reply = String::new();
    client.read_line(&mut reply).unwrap();
    assert_eq!(reply, "B\n");
    let started = std::time::Instant::now();
    reply.clear();
    client.read_line(&mut reply).unwrap();
    assert_eq!(reply, "C\n");
    assert!(started.elapsed() < SHORT_READ_IDLE / 2, "C answered only after {:?}: at the idle look", started.elapsed());
}

/// The idle timeout of the short-read tests: the look that would find the stranded
/// message at last.
const SHORT_READ_IDLE: Duration = Duration::from_secs(4);

/// TCP urgent data: the server's read stops at its mark, short, with the bytes after it
/// queued (the poller's event says `EPOLLPRI`, and the connection's next park arms it:
/// `net::Reported::urgent`). It failed with the end watch watching the end of stream
/// alone, and again with that flag ignored.
#[test]
fn a_message_after_urgent_data_is_answered_at_once() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let held = gate.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .idle_timeout(Some(SHORT_READ_IDLE))
                .bind(upper_lines(move |_, line| if line == "hold\n" { held.pass("hold") } else { Ok(()) }))
                .unwrap(),
        );
        let serve = serve_started(&server, "oob");
        let addr = server.local_addr();
        let mut client = BufReader::new(connect(addr));
        client.get_ref().set_read_timeout(Some(SHORT_READ_IDLE * 3)).unwrap();
        let handle = server.handle();
        message_after_a_short_read(
            &mut client,
            || handle.stats().parked,
            &gate.control(),
            || Box::new(connect(addr)),
            |client| {
                socket2::SockRef::from(client).send_out_of_band(b"b\n!").unwrap();
            },
        );
        stop(&server, serve);
    });
}

/// A Unix stream: the server's read stops after a message that carries a descriptor
/// (`SCM_RIGHTS`), short, with the bytes after it queued; Unix streams are armed at each
/// park. It failed with Unix streams edge-triggered like TCP.
#[cfg(unix)]
#[test]
fn a_message_after_one_that_carries_a_descriptor_is_answered_at_once() {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    bounded(LIMIT, || {
        let gate = Gate::new();
        let held = gate.clone();
        let path = support::temp_socket_path("scm");
        let server = Arc::new(
            socketserver::UnixStreamServer::builder(&path)
                .dispatch(Pool::new(1))
                .idle_timeout(Some(SHORT_READ_IDLE))
                .bind(upper_lines(move |_, line| if line == "hold\n" { held.pass("hold") } else { Ok(()) }))
                .unwrap(),
        );
        let serve = serve_started(&server, "scm");
        let mut client = BufReader::new(UnixStream::connect(&path).unwrap());
        client.get_ref().set_read_timeout(Some(SHORT_READ_IDLE * 3)).unwrap();
        let handle = server.handle();
        message_after_a_short_read(
            &mut client,
            || handle.stats().parked,
            &gate.control(),
            || Box::new(UnixStream::connect(&path).unwrap()),
            |client| {
                let passed = std::fs::File::open("/dev/null").unwrap();
                let fds = [passed.as_fd()];
                let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut cmsg = SendAncillaryBuffer::new(&mut space);
                assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
                let sent = sendmsg(client, &[std::io::IoSlice::new(b"b\n")], &mut cmsg, SendFlags::empty()).unwrap();
                assert_eq!(sent, 2);
            },
        );
        stop(&server, serve);
    });
}

/// `handle_request` serves one exchange, of a new or a parked connection: a sequential
/// server driven by hand serves two clients turn by turn.
#[test]
fn handle_request_serves_parked_connections_one_exchange_at_a_time() {
    bounded(LIMIT, || {
        let server = Arc::new(TcpServer::bind_handler("127.0.0.1:0", Arc::new(Lines::default())).unwrap());
        let addr = server.local_addr();
        let (a, b) = (connect(addr), connect(addr));
        let serving = server.clone();
        let driver = thread::spawn(move || (0..6).map(|_| serving.handle_request().unwrap()).collect::<Vec<_>>());
        let (mut a, mut b) = (BufReader::new(a), BufReader::new(b));
        for round in 1..=3 {
            assert_eq!(ask(&mut a, "a\n"), format!("{round}: A\n"));
            assert_eq!(ask(&mut b, "b\n"), format!("{round}: B\n"));
        }
        let served = support::join_within(driver, TIMEOUT);
        assert_eq!(served, [true; 6]);
        // handle_request returned after the last exchange parked, inline.
        assert_eq!(server.handle().stats().parked, 2);
    });
}

/// In memory, a parking handler is called again while the input lasts, and finish
/// runs once at its end.
#[test]
fn a_test_stream_runs_a_parking_handler_once_per_message() {
    let handler = Lines::default();
    let outcome = TestStream::new("a\nb\nc\n").run(&handler);
    assert_eq!(String::from_utf8(outcome.output).unwrap(), "1: A\n2: B\n3: C\n");
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(handler.handles.load(Ordering::SeqCst), 3);
    assert_eq!(handler.finishes.load(Ordering::SeqCst), 1);
}

/// With `client_speaks_first`, a new connection waits parked for its first bytes: a
/// silent client holds no worker of a pool of one, and one that leaves without a word
/// runs none of the handler's methods.
#[test]
fn a_silent_new_client_holds_no_worker_when_the_client_speaks_first() {
    bounded(LIMIT, || {
        let handler = Arc::new(Lines::default());
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .client_speaks_first(true)
                .bind_handler(handler.clone())
                .unwrap(),
        );
        let serve = serve_started(&server, "park-first");
        let addr = server.local_addr();
        let silent = connect(addr);
        let handle = server.handle();
        wait_until(TIMEOUT, "the silent client to park", || handle.stats().parked == 1);
        let mut talker = BufReader::new(connect(addr));
        assert_eq!(ask(&mut talker, "hi\n"), "1: HI\n", "served past the silent client");
        drop(silent);
        drop(talker);
        wait_until(TIMEOUT, "both to end", || handle.stats().active + handle.stats().parked == 0);
        assert_eq!(handler.setups.load(Ordering::SeqCst), 1, "setup ran for the talker alone");
        assert_eq!(handler.finishes.load(Ordering::SeqCst), 1, "finish ran for the talker alone");
        stop(&server, serve);
    });
}

/// A client that, with `client_speaks_first`, sends one byte and stops holds a pool's
/// only worker no longer than the idle timeout (was: its first exchange read with no
/// timeout at all, found in review).
#[test]
fn one_byte_then_silence_holds_no_worker_when_the_client_speaks_first() {
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .client_speaks_first(true)
                .idle_timeout(Some(Duration::from_millis(300)))
                .handle_error(|_, _| {})
                .bind_handler(Arc::new(Lines::default()))
                .unwrap(),
        );
        let serve = serve_started(&server, "park-byte");
        let addr = server.local_addr();
        let mut slow = connect(addr);
        slow.write_all(b"x").unwrap();
        let handle = server.handle();
        wait_until(TIMEOUT, "the one byte's exchange", || handle.stats().active == 1);
        let mut other = BufReader::new(connect(addr));
        assert_eq!(ask(&mut other, "b\n"), "1: B\n", "served once the silent one times out");
        stop(&server, serve);
    });
}

/// A deadline a handler set for one message does not fail the next message of the
/// connection, which arrives after it (was: the parked connection was closed, found in
/// review).
#[test]
fn a_deadline_set_for_one_message_is_cleared_when_the_connection_parks() {
    bounded(LIMIT, || {
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .bind(|req| {
                    req.set_deadline(Some(std::time::Instant::now() + Duration::from_millis(100)));
                    let mut line = String::new();
                    if req.reader().read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    write!(req.writer(), "{}", line.to_uppercase())?;
                    req.park();
                    Ok(())
                })
                .unwrap(),
        );
        let serve = serve_started(&server, "park-dl");
        let mut client = BufReader::new(connect(server.local_addr()));
        assert_eq!(ask(&mut client, "a\n"), "A\n");
        thread::sleep(NEGATIVE_WAIT); // past the first message's deadline
        assert_eq!(ask(&mut client, "b\n"), "B\n");
        stop(&server, serve);
    });
}

/// A mode that cannot run a parked connection's next exchange (its second job fails)
/// still ends the connection properly: `finish` runs (was: skipped, and its place in
/// the poller's lot leaked; found in review).
#[test]
fn a_resumed_exchange_the_mode_cannot_run_still_gets_its_finish() {
    use socketserver::dispatch::{Executor, Job};
    struct FailsSecond(AtomicUsize);
    impl Executor for FailsSecond {
        fn execute(&self, job: Job) -> std::io::Result<()> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 1 {
                return Err(std::io::Error::other("no thread for this one"));
            }
            thread::spawn(move || job.run());
            Ok(())
        }
    }
    bounded(LIMIT, || {
        let handler = Arc::new(Lines::default());
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(FailsSecond(AtomicUsize::new(0)))
                .handle_error(|_, _| {})
                .bind_handler(handler.clone())
                .unwrap(),
        );
        let serve = serve_started(&server, "park-fail");
        let mut client = BufReader::new(connect(server.local_addr()));
        assert_eq!(ask(&mut client, "a\n"), "1: A\n");
        let handle = server.handle();
        // Parked first: a message that arrives before it parks is taken in the same turn.
        wait_until(TIMEOUT, "the connection to park", || handle.stats().parked == 1);
        client.get_mut().write_all(b"b\n").unwrap(); // its job fails
        wait_until(TIMEOUT, "finish", || handler.finishes.load(Ordering::SeqCst) == 1);
        assert_eq!(handler.setups.load(Ordering::SeqCst), 1);
        wait_until(TIMEOUT, "the place to be free", || handle.stats().active + handle.stats().parked == 0);
        stop(&server, serve);
    });
}

/// A parked connection whose client's next line arrived while every worker was busy is
/// answered at a stop, not closed unread: the request arrived, so it is served. (Linux,
/// where a stopping server refuses new connections at once: that is how the test sees
/// the stop under way.)
#[cfg(target_os = "linux")]
#[test]
fn a_request_that_arrived_while_parked_is_answered_at_a_stop() {
    bounded(LIMIT, || {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Mutex::new(held);
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Pool::new(1))
            .bind(move |req: &mut StreamRequest| {
                let mut line = String::new();
                if req.reader().read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == "hold\n" {
                    let _ = held.lock().unwrap().recv_timeout(TIMEOUT);
                }
                req.writer().write_all(line.as_bytes())?;
                req.park();
                Ok(())
            })
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        let server = server.serve_in_background().unwrap();
        let ask = |client: &TcpStream, line: &str| {
            let mut client = client;
            client.write_all(line.as_bytes()).unwrap();
        };
        let answer = |client: &TcpStream| {
            let mut line = String::new();
            BufReader::new(client).read_line(&mut line).map(|_| line)
        };
        let (a, b) = (connect(addr), connect(addr));
        ask(&a, "first\n");
        assert_eq!(answer(&a).unwrap(), "first\n");
        wait_until(TIMEOUT, "a parked", || handle.stats().parked == 1);
        // The one worker is held by b; a's next line arrives while it is parked.
        ask(&b, "hold\n");
        wait_until(TIMEOUT, "the worker held", || handle.stats().active == 1);
        ask(&a, "second\n");
        thread::sleep(Duration::from_millis(50)); // the line reaches a's socket
        let stopper = thread::spawn(move || server.stop());
        // The stop is under way once the socket refuses new connections (Linux shuts a
        // stopping server's listener down for reading at once).
        wait_until(TIMEOUT, "the stop under way", || {
            let probe = TcpStream::connect(addr).and_then(|probe| {
                probe.set_read_timeout(Some(Duration::from_millis(200)))?;
                (&probe).read(&mut [0; 1])
            });
            !matches!(probe, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        release.send(()).unwrap();
        assert_eq!(answer(&b).unwrap(), "hold\n");
        assert_eq!(answer(&a).unwrap(), "second\n", "the line that arrived is answered");
        stopper.join().unwrap().unwrap();
    });
}

/// A client that connects just before a stop and sends its first message at once, but
/// loses the race with the stop (its connection parked, waiting for that message, when
/// the stop closed the parked ones), is answered: a new connection is given
/// `NEW_CONNECTION_GRACE` (1 s) after its accept for its first message, as Go's
/// `Shutdown` spares new connections for their first seconds. (The restart test lost a
/// request to this race now and then.) The message comes in two pieces, the second
/// after the first is read. A keep-alive client whose next message had arrived before the
/// stop is answered first, also by a sequential server, whatever the new client does. If
/// the machine is so slow that the message ends more than a second after the connect, a
/// close is what the design promises, and the test accepts it. Linux, as the test above,
/// to see the stop under way.
#[cfg(target_os = "linux")]
#[test]
fn a_new_connection_whose_first_message_comes_just_after_a_stop_is_answered() {
    bounded(LIMIT, || {
        let modes: [(&str, socketserver::dispatch::Dispatch); 2] =
            [("pool", Pool::new(1).into()), ("sequential", socketserver::dispatch::Sequential.into())];
        for (mode, dispatch) in modes {
            let server = TcpServer::builder("127.0.0.1:0")
                .dispatch(dispatch)
                .frame(socketserver::Frame::lines(64))
                .bind(|req: &mut StreamRequest| {
                    let mut line = String::new();
                    req.reader().read_line(&mut line)?;
                    req.writer().write_all(line.as_bytes())?;
                    req.park();
                    Ok(())
                })
                .unwrap();
            let (addr, handle) = (server.local_addr(), server.handle());
            let server = server.serve_in_background().unwrap().stop_timeout(Duration::from_secs(30));
            let answer = |client: &TcpStream| {
                client.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut line = String::new();
                let _ = BufReader::new(client).read_line(&mut line);
                line
            };
            // A keep-alive client, parked after one answer, then its next line.
            let kept = connect(addr);
            (&kept).write_all(b"one\n").unwrap();
            assert_eq!(answer(&kept), "one\n", "{mode}");
            wait_until(TIMEOUT, "the keep-alive client parked", || handle.stats().parked == 1);
            let fresh = connect(addr);
            let connected = std::time::Instant::now();
            wait_until(TIMEOUT, "the new connection parked", || handle.stats().parked == 2);
            (&kept).write_all(b"two\n").unwrap();
            thread::sleep(Duration::from_millis(20)); // the line reaches the socket
            let stopper = thread::spawn(move || server.stop());
            wait_until(TIMEOUT, "the stop under way", || {
                let probe = TcpStream::connect(addr).and_then(|probe| {
                    probe.set_read_timeout(Some(Duration::from_millis(100)))?;
                    (&probe).read(&mut [0; 1])
                });
                !matches!(probe, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
            });
            assert_eq!(answer(&kept), "two\n", "{mode}: the message that had arrived is answered first");
            (&fresh).write_all(b"la").unwrap();
            thread::sleep(Duration::from_millis(20));
            (&fresh).write_all(b"te\n").unwrap();
            let sent_after = connected.elapsed();
            let got = answer(&fresh);
            if sent_after < Duration::from_millis(900) {
                assert_eq!(got, "late\n", "{mode}: sent {sent_after:?} after the connect: answered, not closed unread");
            }
            stopper.join().unwrap().unwrap();
        }
    });
}

/// A new client that connects just before a stop and says nothing holds the stop no
/// longer than the grace of new connections (1 s), not its idle timeout (60 s) nor the
/// stop's own 30 s: it is closed unread, and the stop ends.
#[test]
fn a_silent_new_connection_holds_a_stop_no_longer_than_the_grace() {
    bounded(LIMIT, || {
        for frame in [true, false] {
            let mut builder = TcpServer::builder("127.0.0.1:0").dispatch(Pool::new(1)).client_speaks_first(true);
            if frame {
                builder = builder.frame(socketserver::Frame::lines(64));
            }
            let server = builder.bind(echo_line).unwrap();
            let (addr, handle) = (server.local_addr(), server.handle());
            let server = server.serve_in_background().unwrap().stop_timeout(Duration::from_secs(30));
            let silent = connect(addr);
            wait_until(TIMEOUT, "the new connection parked", || handle.stats().parked == 1);
            let began = std::time::Instant::now();
            server.stop().unwrap();
            let took = began.elapsed();
            assert!(took < Duration::from_secs(5), "frame {frame}: the stop took {took:?}, not bounded by the grace");
            silent.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut rest = Vec::new();
            let _ = (&silent).read_to_end(&mut rest);
            assert!(rest.is_empty(), "frame {frame}: closed unread: {rest:?}");
        }
    });
}

/// The documented limit of urgent data (`StreamRequest::connection`): a handler that
/// reads the urgent byte itself, out of band, hides it from the poller, and the message
/// after the mark is served by the idle timeout's look: late, but served, not lost.
#[test]
fn a_message_after_urgent_data_the_handler_read_out_of_band_is_served_by_the_idle_look() {
    const IDLE: Duration = Duration::from_secs(1);
    bounded(LIMIT, || {
        let gate = Gate::new();
        let held = gate.clone();
        let server = Arc::new(
            TcpServer::builder("127.0.0.1:0")
                .dispatch(Pool::new(1))
                .idle_timeout(Some(IDLE))
                .bind(upper_lines(move |req, line| {
                    if line == "slow\n" {
                        held.pass("slow")?;
                        let tcp = req.connection().as_tcp().expect("a TCP connection");
                        let mut byte = [std::mem::MaybeUninit::uninit(); 1];
                        assert_eq!(socket2::SockRef::from(tcp).recv_out_of_band(&mut byte)?, 1);
                    }
                    Ok(())
                }))
                .unwrap(),
        );
        let serve = serve_started(&server, "oob-handler");
        let mut client = BufReader::new(connect(server.local_addr()));
        let handle = server.handle();
        for line in ["a1\n", "a2\n", "a3\n"] {
            assert_eq!(ask(&mut client, line), line.to_uppercase());
        }
        wait_until(TIMEOUT, "parked", || handle.stats().parked == 1);
        let control = gate.control();
        client.get_mut().write_all(b"slow\n").unwrap();
        control.expect_arrival("slow");
        socket2::SockRef::from(client.get_ref()).send_out_of_band(b"b\n!").unwrap();
        client.get_mut().write_all(b"c\n").unwrap();
        thread::sleep(NEGATIVE_WAIT);
        control.release(1);
        for want in ["SLOW\n", "B\n", "C\n"] {
            let mut reply = String::new();
            client.read_line(&mut reply).unwrap();
            assert_eq!(reply, want);
        }
        stop(&server, serve);
    });
}

/// Requests that arrive in the instant of a stop are answered, never reset. A connection
/// the poller had just reported when the stop closed the parked connections was closed
/// unread: a restart's old process reset three requests at once in a CI run
/// (`tests/restart.rs`). The server's socket is the test's (`from_listener`), as in a
/// restart, so that the stop leaves the backlog alone; clients connect for each request.
#[test]
fn requests_arriving_at_a_stop_are_answered_not_reset() {
    use socketserver::Frame;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;
    bounded(Duration::from_secs(120), || {
        let resets = Arc::new(AtomicUsize::new(0));
        for round in 0..12 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = Arc::new(
                TcpServer::from_listener(listener.try_clone().unwrap())
                    .dispatch(Pool::new(2))
                    .frame(Frame::lines(100))
                    .shutdown_deadline(TIMEOUT)
                    .handle_error(|_, _| {})
                    .bind(|req: &mut StreamRequest| -> HandlerResult {
                        let mut line = String::new();
                        req.reader().read_line(&mut line)?;
                        write!(req.writer(), "{line}")?;
                        req.park();
                        Ok(())
                    })
                    .unwrap(),
            );
            let serve = serve_started(&server, "park-stop-arrivals");
            let stopped = Arc::new(AtomicBool::new(false));
            let clients: Vec<_> = (0..6)
                .map(|client| {
                    let (stopped, resets) = (stopped.clone(), resets.clone());
                    thread::spawn(move || {
                        let began = Instant::now();
                        // Until a moment after the stop: requests before, during and after it.
                        while !stopped.load(Ordering::SeqCst) && began.elapsed() < TIMEOUT {
                            let stream = connect(addr);
                            // One not served (in the backlog after the stop) times out.
                            stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                            let mut reply = String::new();
                            let asked = (&stream).write_all(format!("{round} {client}\n").as_bytes());
                            let read = asked.and_then(|()| BufReader::new(&stream).read_line(&mut reply));
                            if let Err(e) = read {
                                if e.kind() == std::io::ErrorKind::ConnectionReset {
                                    resets.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(30));
            server.shutdown();
            stopped.store(true, Ordering::SeqCst);
            for client in clients {
                client.join().unwrap();
            }
            assert!(support::join_within(serve, TIMEOUT).is_ok());
        }
        assert_eq!(resets.load(Ordering::SeqCst), 0, "requests reset at a stop");
    });
}
