//! The benchmark itself; it reads each thread's CPU time and wakeups from `/proc`.

use std::io;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};
use socketserver::transport::Transport;
use socketserver::{
    Builder, DatagramRequest, Server, StreamRequest, TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer,
};

/// Shutdowns measured per row, unless `LIFECYCLE_TRIES` says otherwise.
const DEFAULT_TRIES: usize = 20;
const IDLE: Duration = Duration::from_secs(2);

fn stream_handler(_: &mut StreamRequest) -> io::Result<()> {
    Ok(())
}

fn datagram_handler(_: &mut DatagramRequest) -> io::Result<()> {
    Ok(())
}

type MakeDispatch = fn() -> Dispatch;

fn modes() -> Vec<(&'static str, MakeDispatch)> {
    vec![
        ("sequential", || Dispatch::from(Sequential)),
        ("threading", || Dispatch::from(Threading::new())),
        ("pool", || Dispatch::from(Pool::default())),
    ]
}

/// (utime + stime in clock ticks, context switches) of one thread of this process.
fn task_stats(tid: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let switches = status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    (ticks, switches)
}

/// Returns once the thread `tid` is asleep (state `S`: the serve loop waiting in its
/// poller), so that a shutdown is measured from a server at rest; at most one second.
/// Checked every millisecond rather than sleeping a fixed 20 ms per try, which made the
/// gate's 1,200 shutdowns take 24 s of sleep.
fn wait_until_asleep(tid: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('S')) {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// The thread id of the thread named `name`.
fn tid_named(name: &str) -> String {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        if std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim_end() == name {
            return path.file_name().unwrap().to_string_lossy().into_owned();
        }
    }
    panic!("no thread named {name}");
}

struct Row {
    name: String,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Shutdowns measured: fewer than asked when the gate stopped the row early.
    tries: usize,
    wakeups_per_s: f64,
    cpu_ms_per_s: f64,
}

fn start<T: Transport>(server: Server<T>, name: &str) -> (Arc<Server<T>>, thread::JoinHandle<()>) {
    let server = Arc::new(server);
    let serving = server.clone();
    let thread = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || serving.serve_forever().expect("serve_forever"))
        .unwrap();
    while !server.handle().is_serving() {
        thread::yield_now();
    }
    (server, thread)
}

/// The `p`-th percentile of sorted `samples`, by nearest rank: with 20 samples the 99th
/// is the largest, with 100 the second largest.
fn percentile(samples: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// A server left serving, idle, so that its wakeups and CPU time can be read: every row's
/// is measured in one window at the end (`measure_idle`), not one window per row.
struct Idle {
    tid: String,
    stop: Box<dyn FnOnce()>,
}

/// Measures `tries` shutdowns of servers from `bind`, then starts one more to be measured
/// idle. With a gate, a row stops early once its 99th percentile is sure to be over the
/// bound (more samples over it than the percentile forgives), so a slow shutdown fails
/// the gate quickly.
fn measure<T: Transport>(
    name: String,
    tries: usize,
    gate: Option<f64>,
    mut bind: impl FnMut() -> Server<T>,
) -> (Row, Idle) {
    let forgiven = tries - ((0.99 * tries as f64).ceil() as usize).clamp(1, tries);
    let mut samples = Vec::with_capacity(tries);
    for _ in 0..tries {
        let (server, thread) = start(bind(), "bench-serve");
        wait_until_asleep(&tid_named("bench-serve"));
        let started = Instant::now();
        server.shutdown(); // returns once serve_forever has returned
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        thread.join().unwrap();
        if gate.is_some_and(|bound| samples.iter().filter(|&&ms| ms > bound).count() > forgiven) {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    // Thread names are at most 15 bytes on Linux: "bench-idle-" and the row's number.
    let thread_name = format!("bench-idle-{}", IDLE_ROWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let (server, thread) = start(bind(), &thread_name);
    let idle = Idle {
        tid: tid_named(&thread_name),
        stop: Box::new(move || {
            server.shutdown();
            thread.join().unwrap();
        }),
    };
    let row = Row {
        name,
        p50_ms: percentile(&samples, 50.0),
        p99_ms: percentile(&samples, 99.0),
        max_ms: samples[samples.len() - 1],
        tries: samples.len(),
        wakeups_per_s: 0.0,
        cpu_ms_per_s: 0.0,
    };
    (row, idle)
}

static IDLE_ROWS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Reads the wakeups and CPU time of every idle server over one `IDLE` window (they are
/// idle together: a server that made wakeups would show in its own thread's figures
/// only), then stops them.
fn measure_idle(rows: &mut [Row], idle: Vec<Idle>) {
    thread::sleep(Duration::from_millis(100));
    let before: Vec<(u64, u64)> = idle.iter().map(|i| task_stats(&i.tid)).collect();
    thread::sleep(IDLE);
    let ticks_per_s = 100.0; // USER_HZ on Linux
    for ((row, i), (ticks0, switches0)) in rows.iter_mut().zip(idle).zip(before) {
        let (ticks1, switches1) = task_stats(&i.tid);
        row.wakeups_per_s = (switches1 - switches0) as f64 / IDLE.as_secs_f64();
        row.cpu_ms_per_s = (ticks1 - ticks0) as f64 * 1000.0 / ticks_per_s / IDLE.as_secs_f64();
        (i.stop)();
    }
}

fn bind_with<T: Transport>(
    builder: impl Fn() -> Builder<T>,
    handler: fn(&mut T::Request) -> io::Result<()>,
) -> Server<T>
where
    fn(&mut T::Request) -> io::Result<()>: socketserver::RequestHandler<T::Request>,
{
    builder().bind_handler(handler).expect("bind")
}

/// The value of the environment variable `name` parsed as a `T`, or `None` if it is not
/// set; a value that does not parse ends the run with status 2.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(number) => Some(number),
        Err(_) => {
            eprintln!("{name}={value:?} is not a number");
            std::process::exit(2);
        }
    }
}

pub(crate) fn main() {
    let gate: Option<f64> = env_number("LIFECYCLE_GATE_P99_MS");
    let tries = env_number::<usize>("LIFECYCLE_TRIES").unwrap_or(DEFAULT_TRIES).max(1);
    let with_python = std::env::var("LIFECYCLE_PYTHON").map_or(true, |v| v != "0");
    let dir = std::env::temp_dir();
    let mut rows = Vec::new();
    let mut idle = Vec::new();
    let mut push = |(row, server)| {
        rows.push(row);
        idle.push(server);
    };
    for (mode, dispatch) in modes() {
        push(measure(format!("tcp {mode}"), tries, gate, || {
            bind_with(|| TcpServer::builder("127.0.0.1:0").dispatch(dispatch()), stream_handler)
        }));
        push(measure(format!("udp {mode}"), tries, gate, || {
            bind_with(|| UdpServer::builder("127.0.0.1:0").dispatch(dispatch()), datagram_handler)
        }));
        let path = dir.join(format!("ss-bench-{}-{mode}.sock", std::process::id()));
        push(measure(format!("unix stream {mode}"), tries, gate, || {
            bind_with(|| UnixStreamServer::builder(&path).dispatch(dispatch()), stream_handler)
        }));
        let path = dir.join(format!("ss-bench-{}-{mode}.dgram", std::process::id()));
        push(measure(format!("unix datagram {mode}"), tries, gate, || {
            bind_with(|| UnixDatagramServer::builder(&path).dispatch(dispatch()), datagram_handler)
        }));
    }

    measure_idle(&mut rows, idle);

    let python = if with_python { python_row(tries) } else { None };
    let scripted = scripted_rows(tries.max(100));

    println!("| server | shutdown p50 ms | shutdown p99 ms | shutdown max ms | idle wakeups/s | idle CPU ms/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| ours: {} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} |",
            r.name, r.p50_ms, r.p99_ms, r.max_ms, r.wakeups_per_s, r.cpu_ms_per_s
        );
    }
    if let Some((p50, p99, max, wakeups, cpu, version)) = &python {
        println!(
            "| Python {version}: TCPServer / ThreadingTCPServer | {p50:.3} | {p99:.3} | {max:.3} | {wakeups:.1} | {cpu:.1} |"
        );
        let ours = rows.iter().find(|r| r.name == "tcp threading").unwrap();
        println!();
        println!(
            "Ratios, tcp threading: shutdown p50 ours/Python = {:.4}, max ours/Python = {:.4}; idle wakeups/s {:.1} vs {:.1}.",
            ours.p50_ms / p50,
            ours.max_ms / max,
            ours.wakeups_per_s,
            wakeups
        );
    }

    println!();
    println!("| testing::ScriptedServer, FaultProxy | start p50 ms | start max ms | verify (stop) p50 ms | verify (stop) max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, start, stop) in &scripted {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            percentile(start, 50.0),
            percentile(start, 100.0),
            percentile(stop, 50.0),
            percentile(stop, 100.0)
        );
    }

    if let Some(bound) = gate {
        let over: Vec<&Row> = rows.iter().filter(|r| r.p99_ms > bound).collect();
        println!();
        if over.is_empty() {
            println!("lifecycle gate: ok, shutdown p99 of every row within {bound} ms ({tries} tries per row)");
        } else {
            for r in &over {
                eprintln!(
                    "lifecycle gate: FAILED: ours: {}: shutdown p99 {:.3} ms > {bound} ms (p50 {:.3} ms, max {:.3} ms, \
                     {} shutdowns)",
                    r.name, r.p99_ms, r.p50_ms, r.max_ms, r.tries
                );
            }
            eprintln!("lifecycle gate: {} of {} rows over the bound (up to {tries} tries per row; a row stops once it is sure to be over)", over.len(), rows.len());
            std::process::exit(1);
        }
    }
}

/// Python's figures from `benches/python_lifecycle.py`, or `None` (with a note on stderr)
/// when `python3` is missing or fails: the Python column is optional.
fn python_row(tries: usize) -> Option<(f64, f64, f64, f64, f64, String)> {
    let python = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_lifecycle.py"))
        .arg(tries.to_string())
        .arg(IDLE.as_secs_f64().to_string())
        .output();
    match python {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let parsed = parse_python(&text);
            if parsed.is_none() {
                eprintln!("NOTE: python3 printed what this bench cannot read, no Python column: {text}");
            }
            parsed
        }
        Ok(out) => {
            eprintln!("NOTE: python3 failed, no Python column: {}", String::from_utf8_lossy(&out.stderr));
            None
        }
        Err(e) => {
            eprintln!("NOTE: python3 not found ({e}); no Python column");
            None
        }
    }
}

/// Pulls the figures out of the Python script's one-line JSON, without a JSON crate.
fn parse_python(text: &str) -> Option<(f64, f64, f64, f64, f64, String)> {
    let list = text.split("\"shutdown_ms\": [").nth(1)?.split(']').next()?;
    let mut samples: Vec<f64> = list.split(',').map(|s| s.trim().parse().ok()).collect::<Option<_>>()?;
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let number = |key: &str| -> Option<f64> {
        let rest = text.split(&format!("\"{key}\": ")).nth(1)?;
        rest.split([',', '}']).next()?.trim().parse().ok()
    };
    let version = text.split("\"version\": \"").nth(1)?.split('"').next()?.to_string();
    let n = samples.len();
    Some((
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples[n - 1],
        number("wakeups_per_s")?,
        number("cpu_ms_per_s")?,
        version,
    ))
}

/// How long a scripted server of `testing` takes to start (bind, serve in the
/// background) and to verify (stop, and collect what it recorded), `tries` times, for TCP
/// and UDP, then the same for a fault proxy (start, stop): the figures behind
/// "thousands can run in a suite".
fn scripted_rows(tries: usize) -> Vec<(&'static str, Vec<f64>, Vec<f64>)> {
    use socketserver::testing::{FaultProxy, Script, ScriptedServer};
    let script = || Script::new().expect(b"ping").reply(b"pong").allow_unused();
    let verify = |server: ScriptedServer| server.verify().map(drop).map_err(|e| e.to_string());
    // The fault proxy stands in front of an address nobody needs to answer at; its
    // "verify" column is its stop.
    let stop = |proxy: FaultProxy| proxy.stop().map_err(|e| e.to_string());
    vec![
        ("tcp, one script", timed(tries, || ScriptedServer::tcp([script()]), verify)),
        ("udp, one script", timed(tries, || ScriptedServer::udp(script()), verify)),
        ("tcp fault proxy", timed(tries, || FaultProxy::tcp("127.0.0.1:9"), stop)),
        ("udp fault proxy", timed(tries, || FaultProxy::udp("127.0.0.1:9"), stop)),
    ]
    .into_iter()
    .map(|(name, (start, stop))| (name, start, stop))
    .collect()
}

/// `tries` times: how long `start` takes, and `stop` of what it started, in ms, sorted.
fn timed<T>(
    tries: usize,
    start: impl Fn() -> std::io::Result<T>,
    stop: impl Fn(T) -> Result<(), String>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut started, mut stopped) = (Vec::new(), Vec::new());
    for _ in 0..tries {
        let began = Instant::now();
        let running = start().expect("it starts");
        started.push(began.elapsed().as_secs_f64() * 1e3);
        let began = Instant::now();
        stop(running).expect("it stops cleanly");
        stopped.push(began.elapsed().as_secs_f64() * 1e3);
    }
    started.sort_by(f64::total_cmp);
    stopped.sort_by(f64::total_cmp);
    (started, stopped)
}
