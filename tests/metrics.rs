//! `ServerHandle::metrics` over real sockets: bytes, connections open and parked, busy
//! workers against their limit, queue wait growing while the pool is saturated and not
//! after, and the Prometheus text.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socketserver::dispatch::Pool;
use socketserver::transport::Tcp;
use socketserver::{BackgroundServer, Histogram, ServerHandle, StreamRequest, TcpServer};

/// Every wait in these tests gives up after this: a failure, never a hang.
const PATIENCE: Duration = Duration::from_secs(5);

fn line_client(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let reader = BufReader::new(client.try_clone().unwrap());
    (client, reader)
}

fn ask(client: &mut (TcpStream, BufReader<TcpStream>), line: &str) -> String {
    client.0.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    client.1.read_line(&mut answer).unwrap();
    answer
}

/// Samples over `bound`, from a histogram's cumulative buckets.
fn over(h: &Histogram, bound: Duration) -> u64 {
    let within = h.buckets.iter().find(|(b, _)| *b == bound).expect("a bucket bound").1;
    h.count - within
}

/// Waits until `done` holds for the server's metrics.
fn wait_for(handle: &ServerHandle, what: &str, done: impl Fn(&socketserver::Metrics) -> bool) {
    let began = Instant::now();
    while !done(&handle.metrics()) {
        assert!(began.elapsed() < PATIENCE, "{what}: {:?}", handle.metrics());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A line echo on a pool of one worker, parking between lines; a line "hold" waits for
/// the test's go, a line "slow" takes 60 ms.
fn pool_of_one(go: mpsc::Receiver<()>) -> (SocketAddr, ServerHandle, BackgroundServer<Tcp>) {
    let go = Mutex::new(go);
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(Pool::new(1))
        .bind(move |req: &mut StreamRequest| {
            let mut line = String::new();
            if req.reader().read_line(&mut line)? == 0 {
                return Ok(());
            }
            match line.trim_end() {
                "hold" => drop(go.lock().unwrap().recv_timeout(PATIENCE)),
                "slow" => std::thread::sleep(Duration::from_millis(60)),
                _ => {}
            }
            req.writer().write_all(line.as_bytes())?;
            req.park();
            Ok(())
        })
        .unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    (addr, handle, server.serve_in_background().unwrap())
}

#[test]
fn bytes_connections_and_busy_workers_are_counted() {
    let (go, hold) = mpsc::channel();
    let (addr, handle, server) = pool_of_one(hold);
    let before = handle.metrics();
    assert_eq!((before.busy, before.busy_limit, before.connections_open), (0, Some(1), 0));

    let mut a = line_client(addr);
    let mut b = line_client(addr);
    assert_eq!(ask(&mut a, "hello\n"), "hello\n");
    assert_eq!(ask(&mut b, "hi\n"), "hi\n");
    wait_for(&handle, "two connections parked", |m| m.stats.parked == 2);
    let m = handle.metrics();
    assert_eq!((m.connections_open, m.connections_accepted, m.busy), (2, 2, 0), "{m:?}");
    assert_eq!((m.bytes_in, m.bytes_out), (9, 9), "hello\\n and hi\\n, each way: {m:?}");

    // One exchange held in the worker: the pool is at its limit.
    a.0.write_all(b"hold\n").unwrap();
    wait_for(&handle, "the worker busy", |m| m.busy == 1);
    assert_eq!(handle.metrics().busy_limit, Some(1));
    go.send(()).unwrap();
    let mut line = String::new();
    a.1.read_line(&mut line).unwrap();

    drop((a, b));
    wait_for(&handle, "both closed", |m| m.connections_open == 0);
    server.stop().unwrap();
    let m = handle.metrics();
    assert_eq!(m.exchange_duration.count, 3, "three exchanges: {m:?}");
    assert_eq!(m.waiting, 0);
}

#[test]
fn queue_wait_grows_while_the_pool_is_saturated_and_not_after() {
    let (go, hold) = mpsc::channel();
    let (addr, handle, server) = pool_of_one(hold);
    let mut clients: Vec<_> = (0..4).map(|_| line_client(addr)).collect();
    for client in &mut clients {
        assert_eq!(ask(client, "hi\n"), "hi\n");
    }
    wait_for(&handle, "four parked", |m| m.stats.parked == 4);
    let start = handle.metrics().queue_wait;

    // Saturated: the one worker is held while three parked connections send a slow line
    // each; released, it finds them ready together and serves them in turn, so the last
    // waits for the two before it (60 ms each).
    clients[0].0.write_all(b"hold\n").unwrap();
    wait_for(&handle, "the worker held", |m| m.busy == 1);
    for client in &mut clients[1..] {
        client.0.write_all(b"slow\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(50)); // the three lines arrive meanwhile
    go.send(()).unwrap();
    for client in &mut clients {
        let mut line = String::new();
        client.1.read_line(&mut line).unwrap();
    }
    let saturated = handle.metrics().queue_wait;
    let long = over(&saturated, Duration::from_millis(100)) - over(&start, Duration::from_millis(100));
    eprintln!("saturated: {long} queue waits over 100 ms; p99 {:?}", saturated.quantile(0.99));
    assert!(long >= 1, "the last of three 60 ms exchanges waited over 100 ms: {saturated:?}");

    // Not saturated: one line at a time, the worker free for each.
    for _ in 0..5 {
        for client in &mut clients {
            assert_eq!(ask(client, "hi\n"), "hi\n");
        }
    }
    let after = handle.metrics().queue_wait;
    assert_eq!(after.count - saturated.count, 20, "one wait per exchange that came through the poller");
    let slow = over(&after, Duration::from_millis(50)) - over(&saturated, Duration::from_millis(50));
    assert_eq!(slow, 0, "no wait over 50 ms with the worker free: {after:?}");
    server.stop().unwrap();
}

#[test]
fn the_prometheus_text_has_a_type_for_every_sample_and_cumulative_buckets() {
    let server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
        let mut line = String::new();
        req.reader().read_line(&mut line)?;
        req.writer().write_all(line.as_bytes())?;
        Ok(())
    })
    .unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    let server = server.serve_in_background().unwrap();
    for _ in 0..3 {
        let mut client = line_client(addr);
        assert_eq!(ask(&mut client, "x\n"), "x\n");
    }
    server.stop().unwrap();
    let text = handle.metrics().to_prometheus("my server");
    let mut typed = std::collections::HashMap::new();
    let mut last_bucket: Option<(String, f64)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        assert!(name.starts_with("my_server_"), "the prefix, made a valid name: {line}");
        let base = name.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| base.strip_suffix(suffix).filter(|f| typed.get(*f).is_some_and(|k| k == "histogram")))
            .unwrap_or(base);
        assert!(typed.contains_key(family), "a TYPE line before {line}");
        if base.ends_with("_bucket") {
            if let Some((previous, at_most)) = &last_bucket {
                if previous == family {
                    assert!(value >= *at_most, "buckets are cumulative: {line}");
                }
            }
            last_bucket = Some((family.to_string(), value));
        }
    }
    assert!(text.contains("my_server_requests_finished_total 3\n"), "{text}");
    assert!(text.contains("my_server_exchange_duration_seconds_count 3\n"), "{text}");
    assert!(text.contains("my_server_exchange_duration_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
}
