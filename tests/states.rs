//! `Builder::connection_state` over real sockets: the sequence of states a connection
//! goes through (one that parks twice, one denied, one refused, one that leaves while
//! parked), their numbers and addresses, and a hook that panics.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketserver::dispatch::{Pool, Threading};
use socketserver::transport::Tcp;
use socketserver::{Address, BackgroundServer, ConnState, ConnectionId, StreamRequest, TcpServer};

/// Every wait in these tests gives up after this: a failure, never a hang.
const PATIENCE: Duration = Duration::from_secs(5);

type Log = Arc<Mutex<Vec<(ConnectionId, String, ConnState)>>>;

/// A line echo that parks between lines, on a pool of 2, reporting each state to the log
/// and to `events`.
fn echo(log: &Log, events: mpsc::Sender<ConnState>) -> (SocketAddr, BackgroundServer<Tcp>) {
    let record = log.clone();
    let events = Mutex::new(events);
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(Pool::new(2))
        .connection_state(move |id, client: &Address, state| {
            record.lock().unwrap().push((id, client.to_string(), state));
            let _ = events.lock().unwrap().send(state);
        })
        .bind(|req: &mut StreamRequest| {
            let mut line = String::new();
            if req.reader().read_line(&mut line)? > 0 {
                req.writer().write_all(line.as_bytes())?;
                req.park();
            }
            Ok(())
        })
        .unwrap();
    let addr = server.local_addr();
    (addr, server.serve_in_background().unwrap())
}

/// Waits for the next state reported.
fn next(events: &mpsc::Receiver<ConnState>) -> ConnState {
    events.recv_timeout(PATIENCE).expect("a state within the patience")
}

fn states(log: &Log) -> Vec<ConnState> {
    log.lock().unwrap().iter().map(|(_, _, state)| state).copied().collect()
}

#[test]
fn a_connection_that_parks_twice_goes_new_active_parked_active_parked_active_closed() {
    use ConnState::*;
    let log = Log::default();
    let (sender, events) = mpsc::channel();
    let (addr, server) = echo(&log, sender);
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    for (n, line) in ["one\n", "two\n", "three\n"].into_iter().enumerate() {
        (&client).write_all(line.as_bytes()).unwrap();
        let mut echo = String::new();
        reader.read_line(&mut echo).unwrap();
        assert_eq!(echo, line);
        // The next line goes only once the connection is parked: then it must come back
        // through the poller, and the sequence is exact.
        let expected: &[ConnState] = if n == 0 { &[New, Active, Parked] } else { &[Active, Parked] };
        for want in expected {
            assert_eq!(next(&events), *want, "after line {n}: {:?}", states(&log));
        }
    }
    drop(reader);
    drop(client);
    assert_eq!(next(&events), Closed, "the client left while parked: {:?}", states(&log));
    server.stop().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter().map(|(_, _, s)| *s).collect::<Vec<_>>(),
        [New, Active, Parked, Active, Parked, Active, Parked, Closed]
    );
    let (id, client, _) = &log[0];
    assert_eq!(id.get(), 1, "the first connection is number 1");
    assert!(log.iter().all(|(other, address, _)| other == id && address == client), "one connection: {log:?}");
}

#[test]
fn connections_are_numbered_in_order_and_each_ends_once() {
    let log = Log::default();
    let (sender, _events) = mpsc::channel();
    let (addr, server) = echo(&log, sender);
    for _ in 0..5 {
        let client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        (&client).write_all(b"hi\n").unwrap();
        let mut echo = String::new();
        BufReader::new(&client).read_line(&mut echo).unwrap();
    }
    server.stop().unwrap(); // ends the parked ones
    let log = log.lock().unwrap();
    for n in 1..=5u64 {
        let mine: Vec<ConnState> = log.iter().filter(|(id, _, _)| id.get() == n).map(|(_, _, s)| *s).collect();
        assert_eq!(mine.first(), Some(&ConnState::New), "connection {n}: {mine:?}");
        assert_eq!(mine.iter().filter(|s| s.is_last()).count(), 1, "one last state, connection {n}: {mine:?}");
        assert_eq!(mine.last(), Some(&ConnState::Closed), "connection {n}: {mine:?}");
    }
}

#[test]
fn a_denied_connection_goes_new_then_denied_and_never_closed() {
    let log = Log::default();
    let record = log.clone();
    let server = TcpServer::builder("127.0.0.1:0")
        .verify_request(|_| false)
        .connection_state(move |id, client, state| record.lock().unwrap().push((id, client.to_string(), state)))
        .bind(|_: &mut StreamRequest| Ok(()))
        .unwrap();
    let addr = server.local_addr();
    let server = server.serve_in_background().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client, &mut rest); // closed by the server
    server.stop().unwrap();
    assert_eq!(states(&log), [ConnState::New, ConnState::Denied]);
}

#[test]
fn a_refused_connection_goes_new_then_refused() {
    let log = Log::default();
    let record = log.clone();
    let (release, hold) = mpsc::channel::<()>();
    let hold = Mutex::new(hold);
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(Threading::new())
        .max_connections(1)
        .refuse_when_full(|connection, _| {
            let mut c: &socketserver::Connection = connection;
            c.write_all(b"busy\n")
        })
        .connection_state(move |id, client, state| record.lock().unwrap().push((id, client.to_string(), state)))
        .bind(move |req: &mut StreamRequest| {
            let _ = hold.lock().unwrap().recv_timeout(PATIENCE); // holds the one place
            req.writer().write_all(b"done\n")?;
            Ok(())
        })
        .unwrap();
    let addr = server.local_addr();
    let server = server.serve_in_background().unwrap();
    let first = TcpStream::connect(addr).unwrap();
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    // Wait until the first is in its exchange, then a second finds the server full.
    let began = std::time::Instant::now();
    while !states(&log).contains(&ConnState::Active) {
        assert!(began.elapsed() < PATIENCE, "the first connection never became active");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = TcpStream::connect(addr).unwrap();
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut busy = String::new();
    BufReader::new(&second).read_line(&mut busy).unwrap();
    assert_eq!(busy, "busy\n");
    release.send(()).unwrap();
    let mut done = String::new();
    BufReader::new(&first).read_line(&mut done).unwrap();
    server.stop().unwrap();
    let log = log.lock().unwrap();
    let of = |n: u64| log.iter().filter(|(id, _, _)| id.get() == n).map(|(_, _, s)| *s).collect::<Vec<_>>();
    assert_eq!(of(1), [ConnState::New, ConnState::Active, ConnState::Closed]);
    assert_eq!(of(2), [ConnState::New, ConnState::Refused]);
}

#[test]
fn a_hook_that_panics_is_logged_and_the_connection_goes_on() {
    let server = TcpServer::builder("127.0.0.1:0")
        .connection_state(|_, _, state| {
            if state == ConnState::Active {
                panic!("the hook fails on purpose");
            }
        })
        .bind(|req: &mut StreamRequest| {
            req.writer().write_all(b"served\n")?;
            Ok(())
        })
        .unwrap();
    let addr = server.local_addr();
    let server = server.serve_in_background().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut line = String::new();
    BufReader::new(&client).read_line(&mut line).unwrap();
    assert_eq!(line, "served\n");
    assert_eq!(server.handle().stats().errors, 0, "not the handler's error");
    server.stop().unwrap();
}

/// A dispatch mode that runs every other job on a thread and refuses the rest.
struct EveryOther(std::sync::atomic::AtomicUsize);

impl socketserver::dispatch::Executor for EveryOther {
    fn execute(&self, job: socketserver::dispatch::Job) -> std::io::Result<()> {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 1 {
            return Err(std::io::Error::other("refused on purpose"));
        }
        std::thread::spawn(move || job.run());
        Ok(())
    }
}

#[test]
fn a_connection_the_dispatch_mode_cannot_run_is_closed_and_counted() {
    let log = Log::default();
    let record = log.clone();
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(socketserver::dispatch::Dispatch::custom(EveryOther(Default::default())))
        .handle_error(|_, _| {}) // the refused jobs, reported
        .connection_state(move |id, client, state| record.lock().unwrap().push((id, client.to_string(), state)))
        .bind(|req: &mut StreamRequest| {
            req.writer().write_all(b"served\n")?;
            Ok(())
        })
        .unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    let server = server.serve_in_background().unwrap();
    for _ in 0..6 {
        let client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = String::new();
        let _ = BufReader::new(&client).read_line(&mut line); // "served\n", or closed
    }
    server.stop().unwrap();
    let metrics = handle.metrics();
    assert_eq!((metrics.connections_accepted, metrics.connections_open), (6, 0), "{metrics:?}");
    let log = log.lock().unwrap();
    for n in 1..=6u64 {
        let last = log.iter().filter(|(id, _, s)| id.get() == n && s.is_last()).count();
        assert_eq!(last, 1, "connection {n} ends once: {log:?}");
    }
}
