//! Limits against hostile or slow clients: bounded line reads, request deadlines, a cap
//! on concurrent connections (waiting in the backlog, unaccepted, or refusing; with one
//! or several threads accepting), slowloris, and the counters that show it.

mod support;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::dispatch::{Pool, Threading};
use socketserver::{BackgroundServer, StreamRequest, TcpServer};
use support::{
    bounded, bounded_alone, connect, descriptors_opened_by, join_within, read_text, stop_background, wait_until, Gate,
    Reported, Reports, LIMIT, TIMEOUT,
};

/// The kinds of the handler errors reported (`Other` for anything but a handler error).
fn error_kinds(reports: &Reports) -> Vec<io::ErrorKind> {
    let kind = |reported: Reported| match reported {
        Reported::Handler(_, kind, _) => kind,
        _ => io::ErrorKind::Other,
    };
    reports.take_reported().into_iter().map(kind).collect()
}

fn read_reply(stream: &mut TcpStream) -> String {
    read_text(stream)
}

/// Echoes lines of at most 16 bytes; an over-long line gets "too long" and the request ends.
fn bounded_echo(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        match req.reader().read_line_bounded(&mut line, 16) {
            Ok(0) => return Ok(()),
            Ok(_) => req.writer().write_all(&line)?,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                writeln!(req.writer(), "too long: {e}")?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn read_line_bounded_stops_an_over_long_line_without_reading_the_flood() {
    bounded(LIMIT, || {
        let reports = Reports::default();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .handle_error(reports.hook())
            .bind_handler(bounded_echo)
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();

        // Lines within the bound are echoed, the last one without its newline too.
        let mut client = connect(addr);
        client.write_all(b"short\n15 bytes + nl..\nlast").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_reply(&mut client), "short\n15 bytes + nl..\nlast");

        // A line with no newline at all: the server answers after reading at most its
        // buffer, while the client is still sending. The client sends 64 MiB, far more
        // than socket buffers hold, so it finishes only if the server stopped reading and
        // closed.
        let mut flood = connect(addr);
        let mut reader = flood.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0usize;
            while sent < 64 << 20 {
                match flood.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => return sent, // reset or broken pipe: the server closed
                }
            }
            sent
        });
        let mut reply = String::new();
        let _ = reader.read_to_string(&mut reply); // may end in a reset after the reply
        assert!(reply.starts_with("too long: line longer than 16 bytes"), "reply: {reply:?}");
        let sent = join_within(sender, TIMEOUT);
        assert!(sent < 64 << 20, "the server read the whole 64 MiB flood ({sent} bytes sent)");
        stop_background(background);
        assert_eq!(error_kinds(&reports), [io::ErrorKind::InvalidData], "one InvalidData error reported");
    });
}

/// Reads lines; each must arrive within `per_line` of the previous reply.
fn deadline_echo(per_line: Duration) -> impl Fn(&mut StreamRequest) -> io::Result<()> + Send + Sync + 'static {
    move |req: &mut StreamRequest| {
        let mut line = Vec::new();
        loop {
            req.set_deadline(Some(Instant::now() + per_line));
            line.clear();
            if req.reader().read_line_bounded(&mut line, 1024)? == 0 {
                return Ok(());
            }
            req.writer().write_all(&line)?;
        }
    }
}

#[test]
fn a_deadline_cuts_a_client_that_trickles_bytes_and_spares_the_others() {
    bounded(LIMIT, || {
        let reports = Reports::default();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            // A per-read timeout alone never fires here: the client sends a byte every 50 ms.
            .read_timeout(Duration::from_secs(5))
            .handle_error(reports.hook())
            .bind_handler(deadline_echo(Duration::from_millis(500)))
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();

        let trickler = connect(addr);
        let mut reader = trickler.try_clone().unwrap();
        let started = Instant::now();
        let drip = thread::spawn(move || {
            let mut trickler = trickler;
            for _ in 0..200 {
                if trickler.write_all(b"x").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        // Meanwhile, ordinary clients are served.
        for n in 0..3 {
            let mut client = connect(addr);
            client.write_all(format!("line {n}\n").as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_reply(&mut client), format!("line {n}\n"));
        }
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest); // end-of-file (or a reset) once the deadline cut it
        let cut_after = started.elapsed();
        assert!(rest.is_empty(), "the trickling client got {rest:?}");
        assert!(
            cut_after < Duration::from_secs(8),
            "the trickling client was cut only after {cut_after:?} (200 bytes)"
        );
        join_within(drip, TIMEOUT);
        stop_background(background);
        assert_eq!(error_kinds(&reports), [io::ErrorKind::TimedOut], "the deadline is reported as TimedOut");
    });
}

#[test]
fn slowloris_clients_are_cut_while_ordinary_clients_are_served() {
    bounded(LIMIT, || {
        const SLOW: usize = 200;
        let reports = Reports::default();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .backlog(512)
            .read_timeout(Duration::from_millis(500)) // the silent ones
            .handle_error(reports.hook())
            .bind_handler(deadline_echo(Duration::from_secs(1))) // the trickling ones
            .unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let background = server.serve_in_background().unwrap();

        // Half send nothing, half send a byte every 200 ms and never a newline.
        let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| connect(addr)).collect();
        let stop_dripping = Arc::new(AtomicUsize::new(0));
        let drippers: Vec<TcpStream> = slow.iter().skip(SLOW / 2).map(|s| s.try_clone().unwrap()).collect();
        let flag = stop_dripping.clone();
        let drip = thread::spawn(move || {
            while flag.load(Ordering::SeqCst) == 0 {
                for stream in &drippers {
                    let _ = (&*stream).write(b"x");
                }
                thread::sleep(Duration::from_millis(200));
            }
        });

        // Ordinary clients are served while the slow ones hold their threads.
        for n in 0..10 {
            let mut client = connect(addr);
            client.write_all(format!("ordinary {n}\n").as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_reply(&mut client), format!("ordinary {n}\n"));
        }

        // Every slow client is cut: it reads end-of-file (or a reset), never a reply.
        for (n, stream) in slow.iter_mut().enumerate() {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            assert!(rest.is_empty(), "slow client {n} got {rest:?}");
        }
        stop_dripping.store(1, Ordering::SeqCst);
        join_within(drip, TIMEOUT);
        wait_until(TIMEOUT, "every slow request to end", || handle.stats().active == 0);
        stop_background(background);
        let errors = error_kinds(&reports);
        assert_eq!(errors.len(), SLOW, "one timeout per slow client: {errors:?}");
        assert!(
            errors.iter().all(|kind| matches!(kind, io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)),
            "{errors:?}"
        );
    });
}

/// A threading server with at most `max` requests at once, whose handler passes the
/// gate and replies "done"; with `refuse`, it refuses the others with "busy".
fn serve_gated(
    max: usize,
    refuse: bool,
    gate: &Arc<Gate>,
) -> (SocketAddr, BackgroundServer<socketserver::transport::Tcp>) {
    let mut builder = TcpServer::builder("127.0.0.1:0").dispatch(Threading::new()).max_connections(max);
    if refuse {
        builder = builder.refuse_when_full(|connection, _client| (&*connection).write_all(b"busy\n"));
    }
    let server = builder.bind(gate.replying(b"done")).unwrap();
    let addr = server.local_addr();
    (addr, server.serve_in_background().unwrap())
}

/// Was: a serve loop that accepted a connection before waiting for a free slot (holding
/// it in memory) passed this test, which only saw that no third handler started. The
/// third connection must stay in the kernel's backlog: the server holds no descriptor
/// for it (on Linux, counted in /proc; nothing else in this binary runs meanwhile).
#[test]
fn max_connections_makes_further_clients_wait_in_the_backlog() {
    bounded_alone(LIMIT, || {
        let gate = Gate::new();
        let (addr, background) = serve_gated(2, false, &gate);
        let control = gate.control();
        let mut clients: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
        control.expect_arrival("the first request");
        control.expect_arrival("the second request");
        let (third, opened) = descriptors_opened_by(|| {
            let third = connect(addr); // the kernel completes its handshake into the backlog
            control.assert_no_arrival("a third request past the limit");
            third
        });
        clients.push(third);
        if let Some(opened) = opened {
            assert_eq!(
                opened, 1,
                "the server accepted the third connection while full (a descriptor more than the client's own): \
                 it must wait in the backlog, unaccepted"
            );
        }
        let stats = background.handle().stats();
        assert_eq!((stats.active, stats.received), (2, 2), "{stats:?}");
        control.release(1);
        control.expect_arrival("the waiting client, once a slot frees");
        control.release(2);
        for client in &mut clients {
            assert_eq!(read_reply(client), "done");
        }
        let stats = background.handle().stats();
        stop_background(background);
        assert_eq!((stats.received, stats.refused), (3, 0));
    });
}

#[test]
fn refuse_when_full_answers_busy_and_closes_without_a_reset() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let (addr, background) = serve_gated(1, true, &gate);
        let control = gate.control();
        let mut first = connect(addr);
        control.expect_arrival("the first request");
        for n in 0..5 {
            let mut refused = connect(addr);
            // The request is already sent when the server refuses: the unread bytes must
            // not turn the close into a reset that destroys the "busy" reply.
            refused.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            assert_eq!(read_reply(&mut refused), "busy\n", "refused client {n}");
        }
        control.assert_no_arrival("a refused client reached the handler");
        control.release(1);
        assert_eq!(read_reply(&mut first), "done");
        let handle = background.handle();
        wait_until(TIMEOUT, "the first request to end", || handle.stats().active == 0);
        // With the slot free again, a client is served normally.
        let mut later = connect(addr);
        control.expect_arrival("a client once the slot is free");
        control.release(1);
        assert_eq!(read_reply(&mut later), "done");
        let stats = handle.stats();
        stop_background(background);
        assert_eq!((stats.received, stats.refused, stats.errors), (7, 5, 0), "{stats:?}");
    });
}

#[test]
fn a_pool_with_max_connections_below_its_size_refuses_the_rest() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Pool::new(3))
            .max_connections(1)
            .refuse_when_full(|connection, _| (&*connection).write_all(b"busy\n"))
            .bind(gate.replying(b"done"))
            .unwrap();
        let control = gate.control();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut first = connect(addr);
        control.expect_arrival("the first request");
        assert_eq!(read_reply(&mut connect(addr)), "busy\n");
        control.release(1);
        assert_eq!(read_reply(&mut first), "done");
        stop_background(background);
    });
}

/// Was: every pool worker passed the capacity check before any counted its request, so
/// max_connections(1) on a pool of 4 ran four at once.
#[test]
fn max_connections_holds_with_several_pool_workers_accepting() {
    bounded(LIMIT, || {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (now, most) = (running.clone(), peak.clone());
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Pool::new(4))
            .max_connections(1)
            .bind_handler(move |req: &mut StreamRequest| {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                // Long enough for the other workers to take a request too, if they could.
                thread::sleep(Duration::from_millis(100));
                now.fetch_sub(1, Ordering::SeqCst);
                req.writer().write_all(b"x")
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let clients: Vec<_> =
            (0..4).map(|_| thread::spawn(move || connect(addr).read_to_end(&mut Vec::new()).unwrap())).collect();
        for client in clients {
            assert_eq!(join_within(client, TIMEOUT), 1, "each client gets its reply");
        }
        stop_background(background);
        assert_eq!(peak.load(Ordering::SeqCst), 1, "more than max_connections ran at once");
    });
}

#[test]
fn stats_count_received_finished_errors_and_denied() {
    bounded(LIMIT, || {
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .verify_request(|client| client.as_inet().is_some_and(|a| a.port() % 2 == 0))
            .handle_error(|_, _| {})
            .bind_handler(|req: &mut StreamRequest| {
                let mut line = String::new();
                req.reader().read_line(&mut line)?;
                match line.trim() {
                    "fail" => Err(io::Error::other("asked to fail")),
                    _ => req.writer().write_all(b"ok"),
                }
            })
            .unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let background = server.serve_in_background().unwrap();
        let (mut served, mut denied, mut failed) = (0u64, 0u64, 0u64);
        for message in ["hello\n", "fail\n", "hello\n", "fail\n", "hello\n", "hello\n"] {
            let mut client = connect(addr);
            let even = client.local_addr().unwrap().port() % 2 == 0;
            client.write_all(message.as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            let _ = client.read_to_end(&mut reply);
            if even {
                served += 1;
                if message == "fail\n" {
                    failed += 1;
                } else {
                    assert_eq!(reply, b"ok");
                }
            } else {
                denied += 1;
                assert!(reply.is_empty(), "a denied client got {reply:?}");
            }
        }
        wait_until(TIMEOUT, "requests to finish", || handle.stats().finished == served);
        let stats = handle.stats();
        stop_background(background);
        assert_eq!(stats.received, 6);
        assert_eq!(stats.denied, denied);
        assert_eq!(stats.finished, served);
        assert_eq!(stats.active, 0);
        assert_eq!(stats.errors, failed, "{stats:?}");
    });
}

/// Garbage (invalid UTF-8, NUL bytes, no newline) into a handler reading text lines: a
/// clear error for that client, and the next client is served.
#[test]
fn garbage_bytes_to_a_line_reader_are_a_clear_error_and_the_next_client_is_served() {
    bounded(LIMIT, || {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = errors.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .handle_error(move |error, _| record.lock().unwrap().push(error.to_string()))
            .bind_handler(|req: &mut StreamRequest| {
                let mut line = String::new();
                req.reader().read_line(&mut line)?; // fails on invalid UTF-8
                req.writer().write_all(line.to_uppercase().as_bytes())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut garbage = connect(addr);
        garbage.write_all(&[0xff, 0xfe, 0x00, b'a', 0xc3, 0x28, b'\n']).unwrap();
        garbage.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_reply(&mut garbage), "", "garbage got a reply");
        let mut next = connect(addr);
        next.write_all(b"hello\n").unwrap();
        next.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_reply(&mut next), "HELLO\n");
        stop_background(background);
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("handler failed in handle") && errors[0].contains("UTF-8"), "{errors:?}");
    });
}

/// `internet_facing()` puts 30 s read and write timeouts on every connection (so a
/// silent client, or one that stops reading, is closed instead of holding its thread
/// forever), and a setter called after it changes its value. (Its connection limit, 512,
/// is `max_connections`, shown above with smaller numbers.)
#[test]
fn internet_facing_sets_timeouts_that_later_setters_override() {
    bounded(LIMIT, || {
        let timeouts = |builder: socketserver::Builder<socketserver::transport::Tcp>| {
            let server = builder
                .bind(|req| {
                    let socketserver::Connection::Tcp(stream) = req.connection() else { unreachable!("TCP") };
                    let (read, write) = (stream.read_timeout()?, stream.write_timeout()?);
                    write!(req.writer(), "{read:?} {write:?}")?;
                    Ok(())
                })
                .unwrap();
            let addr = server.local_addr();
            let background = server.serve_in_background().unwrap();
            let reply = read_reply(&mut connect(addr));
            stop_background(background);
            reply
        };
        assert_eq!(timeouts(TcpServer::builder("127.0.0.1:0")), "None None", "Python's defaults stay the default");
        assert_eq!(timeouts(TcpServer::builder("127.0.0.1:0").internet_facing()), "Some(30s) Some(30s)");
        let tuned = TcpServer::builder("127.0.0.1:0").internet_facing().read_timeout(Duration::from_secs(7));
        assert_eq!(timeouts(tuned), "Some(7s) Some(30s)");
    });
}

/// Was: with every worker of a pool busy nobody accepted, so `refuse_when_full` did
/// nothing and a third client waited in the backlog until it timed out. A pool that
/// refuses keeps one serve loop more than its workers, which refuses while they run.
#[test]
fn a_pool_refuses_when_every_worker_is_busy() {
    bounded(LIMIT, || {
        let gate = Gate::new();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Pool::new(2))
            .max_connections(2)
            .refuse_when_full(|mut connection, _| connection.write_all(b"busy\n"))
            .bind(gate.replying(b"done"))
            .unwrap();
        let control = gate.control();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut served: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
        control.expect_arrival("the first request");
        control.expect_arrival("the second request");
        for n in 0..3 {
            assert_eq!(read_reply(&mut connect(addr)), "busy\n", "client {n} beyond the two workers");
        }
        control.assert_no_arrival("a refused client reached the handler");
        control.release(2);
        for client in &mut served {
            assert_eq!(read_reply(client), "done");
        }
        let handle = background.handle();
        wait_until(TIMEOUT, "the requests to end", || handle.stats().active == 0);
        // Free again: the next client is served, by a worker or by the spare loop.
        let mut later = connect(addr);
        control.expect_arrival("a client once the workers are free");
        control.release(1);
        assert_eq!(read_reply(&mut later), "done");
        let stats = handle.stats();
        stop_background(background);
        assert_eq!((stats.received, stats.refused), (6, 3), "{stats:?}");
        assert!(control.high_water() <= 2, "at most two requests at once: {}", control.high_water());
    });
}

/// A sequential server has no thread to refuse on while its one request runs: `bind`
/// says so and what to use, and `Pool::new(1)`, one request at a time, refuses.
/// (Was: the bind succeeded and the hook never ran.)
#[test]
fn a_sequential_server_that_would_refuse_fails_to_bind_and_pool_of_one_refuses() {
    bounded(LIMIT, || {
        let refusing = |builder: socketserver::Builder<socketserver::transport::Tcp>| {
            builder.refuse_when_full(|mut connection, _| connection.write_all(b"busy\n"))
        };
        let error = refusing(TcpServer::builder("127.0.0.1:0")).bind(|_req| Ok(())).map(drop).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        let message = error.to_string();
        assert!(message.contains("sequential") && message.contains("Pool::new(1)"), "{message}");

        let gate = Gate::new();
        let server =
            refusing(TcpServer::builder("127.0.0.1:0").dispatch(Pool::new(1))).bind(gate.replying(b"done")).unwrap();
        let control = gate.control();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut first = connect(addr);
        control.expect_arrival("the first request");
        assert_eq!(read_reply(&mut connect(addr)), "busy\n");
        control.release(1);
        assert_eq!(read_reply(&mut first), "done");
        stop_background(background);
    });
}
