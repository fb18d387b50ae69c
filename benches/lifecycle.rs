//! Lifecycle benchmark: how fast `shutdown()` takes effect on an idle server, and what an
//! idle server costs, for every transport and mode, side by side with Python's
//! `socketserver` (run with `python3` when present).
//!
//! ```text
//! cargo bench --bench lifecycle
//! ```
//!
//! Prints a Markdown table. Figures are medians and maxima over 20 tries; the machine is
//! shared, so expect some spread, but a polling design shows up as tens of wakeups per
//! second and a latency of hundreds of milliseconds.

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

const TRIES: usize = 20;
const IDLE: Duration = Duration::from_secs(2);

fn stream_handler(_: &mut StreamRequest) -> io::Result<()> {
    Ok(())
}

fn datagram_handler(_: &mut DatagramRequest) -> io::Result<()> {
    Ok(())
}

type MakeDispatch = fn() -> Box<dyn Dispatch>;

fn modes() -> Vec<(&'static str, MakeDispatch)> {
    vec![
        ("sequential", || Box::new(Sequential)),
        ("threading", || Box::new(Threading::new())),
        ("pool", || Box::new(Pool::default())),
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
    max_ms: f64,
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

fn measure<T: Transport>(name: String, mut bind: impl FnMut() -> Server<T>) -> Row {
    let mut samples = Vec::with_capacity(TRIES);
    for _ in 0..TRIES {
        let (server, thread) = start(bind(), "bench-serve");
        thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        server.shutdown(); // returns once serve_forever has returned
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        thread.join().unwrap();
    }
    samples.sort_by(f64::total_cmp);
    let (server, thread) = start(bind(), "bench-idle");
    let tid = tid_named("bench-idle");
    thread::sleep(Duration::from_millis(100));
    let (ticks0, switches0) = task_stats(&tid);
    thread::sleep(IDLE);
    let (ticks1, switches1) = task_stats(&tid);
    server.shutdown();
    thread.join().unwrap();
    let ticks_per_s = 100.0; // USER_HZ on Linux
    Row {
        name,
        p50_ms: samples[TRIES / 2],
        max_ms: samples[TRIES - 1],
        wakeups_per_s: (switches1 - switches0) as f64 / IDLE.as_secs_f64(),
        cpu_ms_per_s: (ticks1 - ticks0) as f64 * 1000.0 / ticks_per_s / IDLE.as_secs_f64(),
    }
}

fn bind_with<T: Transport>(
    builder: impl Fn() -> Builder<T>,
    handler: fn(&mut T::Request) -> io::Result<()>,
) -> Server<T>
where
    fn(&mut T::Request) -> io::Result<()>: socketserver::RequestHandler<T::Request>,
{
    builder().bind(handler).expect("bind")
}

fn main() {
    let dir = std::env::temp_dir();
    let mut rows = Vec::new();
    for (mode, dispatch) in modes() {
        rows.push(measure(format!("tcp {mode}"), || {
            bind_with(|| TcpServer::builder("127.0.0.1:0").dispatch(dispatch()), stream_handler)
        }));
        rows.push(measure(format!("udp {mode}"), || {
            bind_with(|| UdpServer::builder("127.0.0.1:0").dispatch(dispatch()), datagram_handler)
        }));
        let path = dir.join(format!("ss-bench-{}-{mode}.sock", std::process::id()));
        rows.push(measure(format!("unix stream {mode}"), || {
            bind_with(|| UnixStreamServer::builder(&path).dispatch(dispatch()), stream_handler)
        }));
        let path = dir.join(format!("ss-bench-{}-{mode}.dgram", std::process::id()));
        rows.push(measure(format!("unix datagram {mode}"), || {
            bind_with(|| UnixDatagramServer::builder(&path).dispatch(dispatch()), datagram_handler)
        }));
    }

    let python = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_lifecycle.py"))
        .arg(TRIES.to_string())
        .arg(IDLE.as_secs_f64().to_string())
        .output();
    let python: Option<(f64, f64, f64, f64, String)> = match python {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            Some(parse_python(&text))
        }
        Ok(out) => {
            eprintln!("NOTE: python3 failed, no Python column: {}", String::from_utf8_lossy(&out.stderr));
            None
        }
        Err(e) => {
            eprintln!("NOTE: python3 not found ({e}); no Python column");
            None
        }
    };

    println!("| server | shutdown p50 ms | shutdown max ms | idle wakeups/s | idle CPU ms/s |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| ours: {} | {:.3} | {:.3} | {:.1} | {:.1} |",
            r.name, r.p50_ms, r.max_ms, r.wakeups_per_s, r.cpu_ms_per_s
        );
    }
    if let Some((p50, max, wakeups, cpu, version)) = &python {
        println!(
            "| Python {version}: TCPServer / ThreadingTCPServer | {p50:.3} | {max:.3} | {wakeups:.1} | {cpu:.1} |"
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
}

/// Pulls the figures out of the Python script's one-line JSON, without a JSON crate.
fn parse_python(text: &str) -> (f64, f64, f64, f64, String) {
    let list = text.split("\"shutdown_ms\": [").nth(1).unwrap().split(']').next().unwrap();
    let mut samples: Vec<f64> = list.split(',').map(|s| s.trim().parse().unwrap()).collect();
    samples.sort_by(f64::total_cmp);
    let number = |key: &str| -> f64 {
        let rest = text.split(&format!("\"{key}\": ")).nth(1).unwrap();
        rest.split([',', '}']).next().unwrap().trim().parse().unwrap()
    };
    let version = text.split("\"version\": \"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let n = samples.len();
    (samples[n / 2], samples[n - 1], number("wakeups_per_s"), number("cpu_ms_per_s"), version)
}
