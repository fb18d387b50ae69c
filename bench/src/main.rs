//! The socketserver benchmark: the crate's `echo` example in each mode, side by side with a
//! hand-written `std::net` echo (`std_echo`, the floor) and Python's `socketserver`
//! (`bench/python_echo.py`), all driven by one Rust load generator: a blocking thread per
//! connection for the scenarios with few connections, an event-driven client (a few
//! threads, `polling`) for `tcp-c1000`.
//!
//! ```text
//! cargo run --release -p bench -- [--quick] [--runs N] [--scenario NAME...] [--out DIR]
//!                                 [--workers N] [--warmup SECS] [--window SECS] [--list]
//!                                 [--client threads|events] [--client-threads N] [--only TEXT...]
//! ```
//!
//! Prints Markdown tables and writes them to `bench/results/latest.md` with a chart,
//! `bench/results/latest.svg`. See `bench/README.md`.

mod load;
mod report;
mod server;
mod sys;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use load::{Client, LoadConfig, Measurement, Workload};
use report::{ratio, thousands, us};
use server::{Impl, Programs, Proto, ServerProcess, Spec, Target, TempDir};

const USAGE: &str = "usage: cargo run --release -p bench -- [--quick] [--runs N] [--scenario NAME...] [--out DIR]
                                     [--workers N] [--warmup SECS] [--window SECS] [--pin] [--list]
                                     [--client threads|events] [--client-threads N] [--only TEXT...]
  --quick          0.3 s warmup + 1 s window, one run (default: 1 s + 5 s, 3 runs)
  --runs N         runs per server and scenario; the tables show the median and the spread
  --scenario NAME  only these scenarios (repeat it, or give several names; see --list)
  --out DIR        where latest.md and latest.svg go (default: bench/results)
  --workers N      pool size for ours and std (default: ours uses its default, std the same
                   number: CPUs, at least 2)
  --warmup/--window SECS  override the durations
  --pin            server process on the upper half of the CPUs, load generator on the lower
                   half (default: the scheduler places both; on the 2-core VM this was
                   developed on, pinning made runs noisier, not steadier)
  --client threads|events
                   how the load generator drives the connections, for every scenario it fits
                   (default: per scenario, see --list): `threads` is a blocking thread per
                   connection (tcp-c1, tcp-c16, tcp-c128, tcp-64k-c16, connect-c16, udp-c16,
                   unix-c16); `events` is a few threads driving persistent TCP connections by
                   readiness, one request in flight each (tcp-c1000: a thread per client
                   connection starves a thread-per-connection server by itself there)
  --client-threads N  threads of the event-driven client (default: CPUs, at most 4)
  --only TEXT...   only the servers whose \"server mode\" (as in the tables: \"ours pool\",
                   \"tokio\", \"std pool\") contains one of these texts: a focused comparison
                   with more runs in the same time";

struct Options {
    quick: bool,
    runs: usize,
    scenarios: Vec<String>,
    out: PathBuf,
    workers: Option<usize>,
    warmup: Duration,
    window: Duration,
    pin: bool,
    /// `--client`: overrides each scenario's own choice where it fits.
    client: Option<Client>,
    client_threads: usize,
    /// `--only`: the servers to measure, by a part of "server mode"; empty means all.
    only: Vec<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1).peekable();
    let (mut quick, mut runs, mut scenarios, mut out, mut workers) = (false, None, Vec::new(), None, None);
    let (mut warmup, mut window, mut pin) = (None, None, false);
    let (mut client, mut client_threads) = (None, None);
    let mut only = Vec::new();
    let secs = |text: String| -> Result<Duration, String> {
        text.parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0 && *s < 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("bad duration {text:?}: expected seconds, like 0.5"))
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => quick = true,
            "--pin" => pin = true,
            "--no-pin" => pin = false,
            "--runs" => {
                let text = value("--runs")?;
                runs = Some(
                    text.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=20).contains(n))
                        .ok_or(format!("bad --runs {text:?}"))?,
                );
            }
            "--workers" => {
                let text = value("--workers")?;
                workers = Some(text.parse::<usize>().ok().filter(|n| *n > 0).ok_or(format!("bad --workers {text:?}"))?);
            }
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--client" => {
                client = Some(match value("--client")?.as_str() {
                    "threads" => Client::Threads,
                    "events" => Client::Events,
                    other => return Err(format!("bad --client {other:?}: expected threads or events")),
                });
            }
            "--client-threads" => {
                let text = value("--client-threads")?;
                client_threads = Some(
                    text.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or(format!("bad --client-threads {text:?}"))?,
                );
            }
            "--warmup" => warmup = Some(secs(value("--warmup")?)?),
            "--window" => window = Some(secs(value("--window")?)?.max(Duration::from_millis(100))),
            "--scenario" => {
                let first = value("--scenario")?;
                scenarios.extend(first.split(',').map(str::to_string));
                while let Some(next) = args.next_if(|a| !a.starts_with("--")) {
                    scenarios.extend(next.split(',').map(str::to_string));
                }
            }
            "--only" => {
                only.push(value("--only")?);
                while let Some(next) = args.next_if(|a| !a.starts_with("--")) {
                    only.push(next);
                }
            }
            "--list" => {
                for s in scenarios_all(None) {
                    let client = match s.kind {
                        Kind::Load { client, .. } => format!("[client: {}] ", client.name()),
                        _ => String::new(),
                    };
                    println!("{:<13} {client}{}", s.name, s.about);
                }
                std::process::exit(0);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let known: Vec<&str> = scenarios_all(None).iter().map(|s| s.name).collect();
    for name in &scenarios {
        if !known.contains(&name.as_str()) {
            return Err(format!("unknown scenario {name:?}; known: {}", known.join(", ")));
        }
    }
    Ok(Options {
        quick,
        runs: runs.unwrap_or(if quick { 1 } else { 3 }),
        scenarios,
        out: out.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results")),
        workers,
        warmup: warmup.unwrap_or(Duration::from_millis(if quick { 300 } else { 1000 })),
        window: window.unwrap_or(Duration::from_millis(if quick { 1000 } else { 5000 })),
        pin,
        client,
        client_threads: client_threads.unwrap_or_else(|| default_workers().min(4)),
        only,
    })
}

// ---------------------------------------------------------------------------------------
// Scenarios

enum Kind {
    /// `client`: the load generator this scenario uses unless `--client` says otherwise.
    Load {
        proto: Proto,
        workload: Workload,
        conns: usize,
        client: Client,
        specs: Vec<Spec>,
    },
    RssIdle,
    Shutdown,
}

struct Scenario {
    name: &'static str,
    about: &'static str,
    kind: Kind,
}

fn scenarios_all(workers: Option<usize>) -> Vec<Scenario> {
    let std_workers = Some(workers.unwrap_or_else(default_workers));
    let ours = |mode| Spec::new(Impl::Ours, mode).workers(if mode == "pool" { workers } else { None });
    let std = |mode| Spec::new(Impl::Std, mode).workers(if mode == "pool" { std_workers } else { None });
    let std_seq = || Spec::new(Impl::Std, "pool").workers(Some(1));
    let py = |mode| Spec::new(Impl::Python, mode);
    let stream = || vec![ours("threading"), ours("pool"), std("thread"), std("pool"), py("threading")];
    // A blocking thread per client connection where connections are few: at 16 it measured
    // higher and steadier than the event-driven client, at 128 mixed (higher for the
    // servers that serve all 128, lower for a pool that serves 2), see bench/README.md.
    let load = |proto, workload, conns, specs| Kind::Load { proto, workload, conns, client: Client::Threads, specs };
    let load_events =
        |proto, workload, conns, specs| Kind::Load { proto, workload, conns, client: Client::Events, specs };
    vec![
        Scenario {
            name: "tcp-c1",
            about: "64-byte echo, 1 persistent TCP connection",
            kind: load(
                Proto::Tcp,
                Workload::Persistent { msg: 64 },
                1,
                vec![
                    ours("sequential"),
                    ours("threading"),
                    ours("pool"),
                    std_seq(),
                    std("thread"),
                    std("pool"),
                    py("sequential"),
                    py("threading"),
                ],
            ),
        },
        Scenario {
            name: "tcp-c16",
            about: "64-byte echo, 16 persistent TCP connections",
            // tokio too: the parking pool is held to it at 16 connections as at 1,000.
            kind: load(Proto::Tcp, Workload::Persistent { msg: 64 }, 16, {
                let mut specs = stream();
                specs.push(Spec::new(Impl::Tokio, "mt"));
                specs
            }),
        },
        Scenario {
            name: "ops-c16",
            about: "64-byte echo, 16 persistent TCP connections, the parking pool: as it is, with a connection_state hook that counts every state, and without timings (the cost of each, as ratios to the first row)",
            kind: load(
                Proto::Tcp,
                Workload::Persistent { msg: 64 },
                16,
                vec![
                    ours("pool"),
                    ours("pool").with_args(&["--count-states"]),
                    ours("pool").with_args(&["--no-timings"]),
                ],
            ),
        },
        Scenario {
            name: "tcp-c128",
            about: "64-byte echo, 128 persistent TCP connections",
            kind: load(Proto::Tcp, Workload::Persistent { msg: 64 }, 128, stream()),
        },
        Scenario {
            name: "tcp-c1000",
            about: "64-byte echo, 1,000 persistent TCP connections (ours: sequential and pool park connections between messages)",
            kind: load_events(
                Proto::Tcp,
                Workload::Persistent { msg: 64 },
                1000,
                vec![
                    ours("sequential"),
                    ours("threading"),
                    ours("threading").park(),
                    ours("pool"),
                    std("thread"),
                    std("pool"),
                    Spec::new(Impl::Tokio, "mt"),
                ],
            ),
        },
        Scenario {
            name: "tcp-64k-c16",
            about: "64 KiB echo, 16 persistent TCP connections",
            kind: load(Proto::Tcp, Workload::Persistent { msg: 64 * 1024 }, 16, stream()),
        },
        Scenario {
            name: "connect-c16",
            about: "connect, 64-byte echo, close; 16 clients",
            kind: load(Proto::Tcp, Workload::ConnectPerRequest { msg: 64 }, 16, stream()),
        },
        Scenario {
            name: "udp-c16",
            about: "64-byte datagrams, 16 client sockets, one in flight each",
            kind: load(
                Proto::Udp,
                Workload::Datagram { msg: 64 },
                16,
                vec![
                    ours("sequential"),
                    ours("pool"),
                    ours("threading"),
                    std_seq(),
                    std("pool"),
                    std("thread"),
                    py("sequential"),
                    py("threading"),
                ],
            ),
        },
        Scenario {
            name: "unix-c16",
            about: "64-byte echo, 16 persistent Unix stream connections",
            kind: load(Proto::Unix, Workload::Persistent { msg: 64 }, 16, stream()),
        },
        Scenario {
            name: "rss-idle",
            about: "server RSS with 1,000 and 10,000 idle TCP connections (ours: threading, and a pool of 4 parking them)",
            kind: Kind::RssIdle,
        },
        Scenario {
            name: "shutdown",
            about: "SIGTERM to process exit, idle and with 16 busy connections",
            kind: Kind::Shutdown,
        },
    ]
}

fn default_workers() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

// ---------------------------------------------------------------------------------------
// Building and finding the programs

/// The target directory the runner itself was built into, if its path says so.
fn own_target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?;
    let name = profile_dir.file_name()?.to_str()?;
    (name == "release" || name == "debug").then(|| profile_dir.parent().map(Path::to_path_buf)).flatten()
}

/// `cargo build --release` of one target, returning the executable cargo reports.
fn cargo_build(root: &Path, package: &str, kind: &str, name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .args(["-p", package, &format!("--{kind}"), name])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--message-format=json-render-diagnostics");
    if let Some(dir) = own_target_dir() {
        command.arg("--target-dir").arg(dir);
    }
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {cargo:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo build of {package} {kind} {name} failed"));
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let target = &message["target"];
        let is_kind = target["kind"].as_array().is_some_and(|k| k.iter().any(|v| v == kind));
        if message["reason"] == "compiler-artifact" && target["name"] == name && is_kind {
            if let Some(path) = message["executable"].as_str() {
                return Ok(PathBuf::from(path));
            }
        }
    }
    Err(format!("cargo did not report an executable for {package} {kind} {name}"))
}

/// `git describe --always --dirty` of the repository, if git is there.
fn git_commit(root: &Path) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["describe", "--always", "--dirty"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}

/// The Python interpreter: `$BENCH_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// The interpreter's version, if it runs and has `socketserver`.
fn python_version() -> Option<String> {
    let output = Command::new(python())
        .args(["-c", "import socketserver, sys; print(sys.version.split()[0])"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

// ---------------------------------------------------------------------------------------
// Load scenarios

struct Row {
    spec: Spec,
    label: String,
    runs: Vec<Measurement>,
    failures: Vec<String>,
    server_log: Option<(usize, String)>,
}

struct Summary {
    req_per_s: f64,
    spread_pct: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    cpu: Option<f64>,
    errors: u64,
    lost: u64,
    starved: usize,
    timed_out: usize,
    unopened: usize,
    hung: usize,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

/// The median of the ratios of `a`'s and `b`'s runs of the same round (run n of every
/// server is measured before run n + 1 of any): drift of the machine over the whole
/// measurement moves it less than the ratio of the two medians, which can pair a fast
/// stretch of one server with a slow one of the other. `None` with fewer than two runs,
/// or when a run failed (the rounds no longer pair up).
fn paired(a: &Row, b: &Row) -> Option<f64> {
    if a.runs.len() < 2 || a.runs.len() != b.runs.len() || !a.failures.is_empty() || !b.failures.is_empty() {
        return None;
    }
    median(a.runs.iter().zip(&b.runs).map(|(x, y)| x.req_per_s / y.req_per_s).collect())
}

/// A ratio of medians, and the paired ratio after it in parentheses when there is one.
fn ratios(of_medians: Option<f64>, paired: Option<f64>) -> String {
    match paired {
        Some(p) if of_medians.is_some() => format!("{} ({})", ratio(of_medians), ratio(Some(p))),
        _ => ratio(of_medians),
    }
}

impl Row {
    fn summary(&self) -> Option<Summary> {
        if self.runs.is_empty() {
            return None;
        }
        let rates: Vec<f64> = self.runs.iter().map(|m| m.req_per_s).collect();
        let req_per_s = median(rates.clone())?;
        let (lo, hi) = rates.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let per = |f: &dyn Fn(&Measurement) -> Option<f64>| median(self.runs.iter().filter_map(f).collect());
        Some(Summary {
            req_per_s,
            spread_pct: if req_per_s > 0.0 { (hi - lo) / req_per_s * 100.0 } else { 0.0 },
            p50: per(&|m| m.hist.quantile_us(0.5)),
            p99: per(&|m| m.hist.quantile_us(0.99)),
            p999: per(&|m| m.hist.quantile_us(0.999)),
            cpu: per(&|m| m.cpu_us_per_req),
            errors: self.runs.iter().map(|m| m.errors).sum(),
            lost: self.runs.iter().map(|m| m.lost).sum(),
            starved: self.runs.iter().map(|m| m.starved).max().unwrap_or(0),
            timed_out: self.runs.iter().map(|m| m.timed_out).max().unwrap_or(0),
            unopened: self.runs.iter().map(|m| m.unopened).max().unwrap_or(0),
            hung: self.runs.iter().map(|m| m.hung).max().unwrap_or(0),
        })
    }
}

/// The std row of the same shape as an ours row: threading ↔ thread per connection (or
/// datagram), pool ↔ pool, sequential ↔ std's pool of 1 (a single thread serving inline).
fn std_counterpart<'a>(rows: &'a [Row], ours: &Spec) -> Option<&'a Row> {
    let std = |pred: &dyn Fn(&Spec) -> bool| rows.iter().find(|r| r.spec.imp == Impl::Std && pred(&r.spec));
    match ours.mode {
        "threading" => std(&|s| s.mode == "thread"),
        "pool" => std(&|s| s.mode == "pool" && s.workers != Some(1)),
        "sequential" => std(&|s| s.mode == "pool" && s.workers == Some(1)).or_else(|| std(&|s| s.mode == "thread")),
        _ => None,
    }
}

/// Python in the same mode if it runs in it (sequential), else Python threading.
fn python_counterpart<'a>(rows: &'a [Row], ours: &Spec) -> Option<&'a Row> {
    let python = |mode: &str| rows.iter().find(|r| r.spec.imp == Impl::Python && r.spec.mode == mode);
    python(ours.mode).or_else(|| python("threading"))
}

fn measure_row(
    programs: &Programs,
    tmp: &Path,
    name: &str,
    proto: Proto,
    row: &mut Row,
    config: &LoadConfig,
    run: (usize, usize),
) {
    let (run, runs) = run;
    let tag = format!("{name}-{}-{}-{run}", row.spec.imp.name(), row.spec.mode);
    let mut server = match ServerProcess::start(programs, &row.spec, proto, tmp, &tag) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("  {} {}: could not start: {e}", row.spec.imp.name(), row.label);
            row.failures.push(e);
            return;
        }
    };
    // Let the process settle (Python imports, thread start) before the clients come.
    thread::sleep(Duration::from_millis(50));
    let measurement = load::run(&mut server, config);
    eprintln!(
        "  [{name} {}/{}] {:<6} {:<32} {:>9} req/s  p50 {:>6} µs  p99 {:>7} µs  CPU {:>6} µs/req  errors {}  starved {}{}",
        run + 1,
        runs,
        row.spec.imp.name(),
        row.label,
        thousands(measurement.req_per_s),
        us(measurement.hist.quantile_us(0.5)),
        us(measurement.hist.quantile_us(0.99)),
        us(measurement.cpu_us_per_req),
        measurement.errors,
        measurement.starved,
        measurement.first_error.as_ref().map_or(String::new(), |e| format!("  (first error: {e})")),
    );
    server.kill();
    if measurement.log_lines > 0 {
        let first = measurement.first_log_line.clone().unwrap_or_default();
        row.server_log.get_or_insert((0, first)).0 += measurement.log_lines;
    }
    row.runs.push(measurement);
}

struct LoadResult {
    name: &'static str,
    about: &'static str,
    /// The load generator that drove it, as the table says.
    client: String,
    rows: Vec<Row>,
}

fn run_load(
    programs: &Programs,
    tmp: &Path,
    scenario: &Scenario,
    options: &Options,
    notes: &mut Vec<String>,
) -> Option<LoadResult> {
    let Kind::Load { proto, workload, conns, client, specs } = &scenario.kind else { return None };
    let client = match options.client {
        Some(wanted) if wanted.fits(*workload, *proto == Proto::Tcp) => wanted,
        Some(wanted) => {
            if wanted != *client {
                notes.push(format!(
                    "{}: `--client {}` drives persistent TCP connections only; a {} client drove this one",
                    scenario.name,
                    wanted.name(),
                    client.name()
                ));
            }
            *client
        }
        None => *client,
    };
    let config = LoadConfig {
        conns: *conns,
        workload: *workload,
        client,
        client_threads: options.client_threads,
        warmup: options.warmup,
        window: options.window,
    };
    let mut rows: Vec<Row> = specs
        .iter()
        .filter(|s| s.imp != Impl::Python || programs.python.is_some())
        .filter(|s| {
            let name = format!("{} {}", s.imp.name(), s.mode_label(*proto));
            options.only.is_empty() || options.only.iter().any(|o| name.contains(o.as_str()))
        })
        .map(|s| Row {
            spec: s.clone(),
            label: s.mode_label(*proto),
            runs: Vec::new(),
            failures: Vec::new(),
            server_log: None,
        })
        .collect();
    let client = client.describe(*conns, options.client_threads);
    eprintln!("\n== {}: {}\n   client: {client}", scenario.name, scenario.about);
    for run in 0..options.runs {
        // Interleaved: run 1 of every server, then run 2, ..., so drift hits all alike;
        // every other round in the reverse order, so that no server always runs first
        // (right after the previous scenario) or right after the same neighbour.
        let count = rows.len();
        for i in 0..count {
            let row = &mut rows[if run % 2 == 0 { i } else { count - 1 - i }];
            measure_row(programs, tmp, scenario.name, *proto, row, &config, (run, options.runs));
            // Let TIME_WAIT sockets and exiting threads go before the next server.
            thread::sleep(Duration::from_millis(100));
        }
    }
    for row in &rows {
        if let Some((lines, first)) = &row.server_log {
            notes.push(format!(
                "{}: {} {} wrote {lines} line(s) to stderr before the end of a window, the first: `{}`",
                scenario.name,
                row.spec.imp.name(),
                row.label,
                first.trim()
            ));
        }
    }
    Some(LoadResult { name: scenario.name, about: scenario.about, client, rows })
}

fn load_table(result: &LoadResult, out: &mut String) {
    let _ = writeln!(out, "### `{}`: {}\n", result.name, result.about);
    let _ = writeln!(out, "Load generator: {}.\n", result.client);
    let _ = writeln!(
        out,
        "| server | mode | req/s | spread | p50 µs | p99 µs | p99.9 µs | CPU µs/req | errors | starved | ours/std req/s | ours/std CPU | ours/Python req/s | ours/tokio req/s | ours/tokio p99 |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut row_notes = Vec::new();
    for row in &result.rows {
        let Some(s) = row.summary() else {
            let _ = writeln!(out, "| {} | {} | failed | | | | | | | | | | | | |", row.spec.imp.name(), row.label);
            row_notes.extend(row.failures.iter().map(|f| format!("{} {}: {f}", row.spec.imp.name(), row.label)));
            continue;
        };
        let (mut vs_std, mut cpu_vs_std, mut vs_py, mut vs_tokio, mut p99_vs_tokio) = (None, None, None, None, None);
        let (mut paired_std, mut paired_tokio) = (None, None);
        if row.spec.imp == Impl::Ours {
            let tokio_row = result.rows.iter().find(|r| r.spec.imp == Impl::Tokio);
            if let Some(tokio) = tokio_row.and_then(Row::summary) {
                vs_tokio = Some(s.req_per_s / tokio.req_per_s);
                p99_vs_tokio = s.p99.zip(tokio.p99).map(|(a, b)| a / b);
                paired_tokio = tokio_row.and_then(|t| paired(row, t));
            }
            let std_row = std_counterpart(&result.rows, &row.spec);
            if let Some(std) = std_row.and_then(Row::summary) {
                vs_std = Some(s.req_per_s / std.req_per_s);
                cpu_vs_std = s.cpu.zip(std.cpu).map(|(a, b)| a / b);
                paired_std = std_row.and_then(|r| paired(row, r));
            }
            if let Some(py) = python_counterpart(&result.rows, &row.spec).and_then(Row::summary) {
                vs_py = Some(s.req_per_s / py.req_per_s);
            }
        }
        let errors = if s.lost > 0 { format!("{} ({} lost)", s.errors, s.lost) } else { s.errors.to_string() };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.spec.imp.name(),
            row.label,
            thousands(s.req_per_s),
            if row.runs.len() > 1 { format!("{:.1}%", s.spread_pct) } else { "—".to_string() },
            us(s.p50),
            us(s.p99),
            us(s.p999),
            us(s.cpu),
            errors,
            s.starved,
            ratios(vs_std, paired_std),
            ratio(cpu_vs_std),
            ratio(vs_py),
            ratios(vs_tokio, paired_tokio),
            ratio(p99_vs_tokio),
        );
        if s.timed_out > 0 {
            row_notes.push(format!(
                "{} {}: {} connection(s) given up after no connect or no echo for {} s (counted as starved unless served before)",
                row.spec.imp.name(),
                row.label,
                s.timed_out,
                load::REPLY_TIMEOUT.as_secs()
            ));
        }
        if s.unopened > 0 {
            row_notes.push(format!(
                "{} {}: {} connection(s) not opened by the end of the window: the server answered new connections too slowly for the client's ramp (counted as starved)",
                row.spec.imp.name(),
                row.label,
                s.unopened
            ));
        }
        if s.hung > 0 {
            row_notes.push(format!(
                "{} {}: {} client(s) still blocked 3 s after the window (released by killing the server)",
                row.spec.imp.name(),
                row.label,
                s.hung
            ));
        }
        if let Some(first) = row.runs.iter().find_map(|m| m.first_error.clone()) {
            row_notes.push(format!("{} {}: first error: {first}", row.spec.imp.name(), row.label));
        }
        if !row.failures.is_empty() {
            row_notes.push(format!(
                "{} {}: {} run(s) failed: {}",
                row.spec.imp.name(),
                row.label,
                row.failures.len(),
                row.failures[0]
            ));
        }
    }
    out.push('\n');
    // Variants of one server (ops-c16): each against the first row, in this run.
    if result.rows.len() > 1
        && result.rows.iter().all(|r| r.spec.imp == Impl::Ours && r.spec.mode == result.rows[0].spec.mode)
    {
        if let Some(base) = result.rows[0].summary() {
            for row in &result.rows[1..] {
                if let Some(s) = row.summary() {
                    let cpu = s
                        .cpu
                        .zip(base.cpu)
                        .map(|(a, b)| format!(", CPU per request {:.3}×", a / b))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "- {} against {}: req/s {:.3}×{cpu}",
                        row.label,
                        result.rows[0].label,
                        s.req_per_s / base.req_per_s
                    );
                }
            }
        }
    }
    for note in row_notes {
        let _ = writeln!(out, "- {note}");
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------------------
// RSS with idle connections

struct RssRow {
    label: String,
    base_kb: u64,
    points: Vec<RssPoint>,
    note: Option<String>,
}

struct RssPoint {
    target: usize,
    held: usize,
    rss_kb: u64,
    threads: u64,
    sampled: usize,
    served: usize,
    open_secs: f64,
}

/// One 64-byte echo on `stream`, checked.
fn ping(stream: &mut TcpStream, seed: u8) -> std::io::Result<()> {
    let payload: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(31).wrapping_add(seed)).collect();
    stream.write_all(&payload)?;
    let mut buf = [0u8; 64];
    stream.read_exact(&mut buf)?;
    if buf[..] != payload[..] {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "wrong bytes echoed"));
    }
    Ok(())
}

fn rss_idle(programs: &Programs, tmp: &Path, notes: &mut Vec<String>) -> Vec<RssRow> {
    let nofile = sys::raise_nofile();
    let wanted = [1_000usize, 10_000];
    // The runner holds one descriptor per connection and the server one more (it inherits
    // the same limit); keep some for everything else.
    let possible = usize::try_from(nofile.saturating_sub(200)).unwrap_or(usize::MAX);
    if possible < 10_000 {
        notes.push(format!(
            "rss-idle: 10,000 connections are impossible here: RLIMIT_NOFILE is {nofile} (raise the hard limit, e.g. `ulimit -Hn 20000` as root); measured up to {possible}"
        ));
    }
    // Ours twice: a thread per connection, and a pool of 4 that parks them (no thread each).
    let mut specs = vec![
        Spec::new(Impl::Ours, "threading"),
        Spec::new(Impl::Ours, "pool").workers(Some(4)),
        Spec::new(Impl::Std, "thread"),
        Spec::new(Impl::Tokio, "mt"),
    ];
    if programs.python.is_some() {
        specs.push(Spec::new(Impl::Python, "threading"));
    }
    eprintln!("\n== rss-idle: RSS with idle connections (RLIMIT_NOFILE {nofile})");
    let mut rows = Vec::new();
    for spec in specs {
        let label = format!("{} {}", spec.imp.name(), spec.mode_label(Proto::Tcp));
        let mut server =
            match ServerProcess::start(programs, &spec, Proto::Tcp, tmp, &format!("rss-{}", spec.imp.name())) {
                Ok(server) => server,
                Err(e) => {
                    notes.push(format!("rss-idle: {label} did not start: {e}"));
                    continue;
                }
            };
        let Target::Tcp(addr) = server.target else { continue };
        thread::sleep(Duration::from_millis(300));
        let base_kb = server.rss_kb().unwrap_or(0);
        let mut row = RssRow { label, base_kb, points: Vec::new(), note: None };
        let mut conns: Vec<TcpStream> = Vec::new();
        for &target in &wanted {
            let target = target.min(possible);
            let started = Instant::now();
            while conns.len() < target {
                match open_idle(addr, conns.len()) {
                    Ok(stream) => conns.push(stream),
                    Err(e) => {
                        row.note = Some(format!("stopped at {} connections: {e}", conns.len()));
                        break;
                    }
                }
            }
            let open_secs = started.elapsed().as_secs_f64();
            thread::sleep(Duration::from_millis(500));
            let rss_kb = server.rss_kb().unwrap_or(0);
            let threads = sys::threads(server.pid).unwrap_or(0);
            // Every held connection is still served: one echo on a sample spread over all.
            let sampled = conns.len().min(100);
            let mut served = 0;
            for k in 0..sampled {
                let i = k * conns.len() / sampled;
                if ping(&mut conns[i], k as u8).is_ok() {
                    served += 1;
                }
            }
            eprintln!(
                "  {:<36} {:>6} held  RSS {:>8} kB  threads {:>6}  sample served {served}/{sampled}  ({open_secs:.1} s to open)",
                row.label,
                conns.len(),
                rss_kb,
                threads
            );
            row.points.push(RssPoint { target, held: conns.len(), rss_kb, threads, sampled, served, open_secs });
            if row.note.is_some() || !server.alive() {
                break;
            }
        }
        for stream in &conns {
            let _ = stream.shutdown(Shutdown::Both);
        }
        drop(conns);
        server.kill();
        rows.push(row);
        thread::sleep(Duration::from_millis(300));
    }
    rows
}

fn open_idle(addr: SocketAddr, n: usize) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Served now, not only queued: the echo comes back.
    ping(&mut stream, n as u8)?;
    Ok(stream)
}

fn rss_table(rows: &[RssRow], out: &mut String) {
    let _ = writeln!(out, "### `rss-idle`: server RSS with idle TCP connections\n");
    let _ = writeln!(
        out,
        "Each connection is opened and served one 64-byte echo, then left idle; RSS is read 0.5 s later. kB per connection = (RSS with N − RSS idle) / N. \"served\" is one more echo on a sample of 100 connections spread over all N.\n"
    );
    let _ = writeln!(out, "| server | N | held | RSS idle kB | RSS with N kB | kB per connection | threads | served (sample) | time to open |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        for p in &row.points {
            let per = if p.held > 0 { p.rss_kb.saturating_sub(row.base_kb) as f64 / p.held as f64 } else { 0.0 };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} | {} | {}/{} | {:.1} s |",
                row.label,
                thousands(p.target as f64),
                thousands(p.held as f64),
                thousands(row.base_kb as f64),
                thousands(p.rss_kb as f64),
                per,
                p.threads,
                p.served,
                p.sampled,
                p.open_secs
            );
        }
    }
    out.push('\n');
    for row in rows {
        if let Some(note) = &row.note {
            let _ = writeln!(out, "- {}: {note}", row.label);
        }
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------------------
// Shutdown: SIGTERM to exit

struct ShutdownRow {
    label: String,
    idle_ms: Vec<f64>,
    busy_ms: Vec<f64>,
    timeouts: usize,
    note: Option<String>,
}

/// Starts 16 clients echoing as fast as they can until `stop` or an error.
fn busy_clients(addr: SocketAddr, stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<u64>> {
    (0..16)
        .map(|id| {
            let stop = Arc::clone(stop);
            thread::spawn(move || {
                let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else { return 0 };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && ping(&mut stream, id as u8).is_ok() {
                    n += 1;
                }
                n
            })
        })
        .collect()
}

fn shutdown_scenario(programs: &Programs, tmp: &Path, quick: bool) -> Vec<ShutdownRow> {
    let (idle_tries, busy_tries) = if quick { (3, 2) } else { (5, 3) };
    let mut specs =
        vec![Spec::new(Impl::Ours, "threading"), Spec::new(Impl::Ours, "pool"), Spec::new(Impl::Std, "thread")];
    if programs.python.is_some() {
        specs.push(Spec::new(Impl::Python, "threading"));
    }
    eprintln!("\n== shutdown: SIGTERM to process exit");
    let limit = Duration::from_secs(10);
    let mut rows = Vec::new();
    for spec in specs {
        let label = format!("{} {}", spec.imp.name(), spec.mode_label(Proto::Tcp));
        let mut row = ShutdownRow { label, idle_ms: Vec::new(), busy_ms: Vec::new(), timeouts: 0, note: None };
        for busy in [false, true] {
            for i in 0..if busy { busy_tries } else { idle_tries } {
                let tag = format!("shutdown-{}-{}-{i}", spec.imp.name(), spec.mode);
                let mut server = match ServerProcess::start(programs, &spec, Proto::Tcp, tmp, &tag) {
                    Ok(server) => server,
                    Err(e) => {
                        row.note = Some(format!("did not start: {e}"));
                        continue;
                    }
                };
                let Target::Tcp(addr) = server.target else { continue };
                let stop = Arc::new(AtomicBool::new(false));
                let clients =
                    if busy { sys::pinned(sys::client_cpus(), || busy_clients(addr, &stop)) } else { Vec::new() };
                thread::sleep(Duration::from_millis(if busy { 300 } else { 150 }));
                let took = server.terminate(limit);
                stop.store(true, Ordering::Relaxed);
                server.kill();
                let served: u64 = clients.into_iter().map(|c| c.join().unwrap_or(0)).sum();
                if busy && served == 0 {
                    row.note = Some("the busy clients got no echo before SIGTERM".to_string());
                }
                match took {
                    Some(d) if busy => row.busy_ms.push(d.as_secs_f64() * 1e3),
                    Some(d) => row.idle_ms.push(d.as_secs_f64() * 1e3),
                    None => row.timeouts += 1,
                }
            }
        }
        eprintln!(
            "  {:<36} idle p50 {} ms  busy p50 {} ms  timeouts {}",
            row.label,
            ms(median(row.idle_ms.clone())),
            ms(median(row.busy_ms.clone())),
            row.timeouts
        );
        rows.push(row);
    }
    rows
}

fn ms(value: Option<f64>) -> String {
    match value {
        None => "—".to_string(),
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn shutdown_table(rows: &[ShutdownRow], out: &mut String) {
    let _ = writeln!(out, "### `shutdown`: SIGTERM to process exit (TCP)\n");
    let _ = writeln!(
        out,
        "Idle: no connection. Busy: 16 clients echoing 64 bytes back to back, which never stop by themselves. Ours stops accepting at once and gives running connections up to 2 s (the echo example's grace), so busy ≈ 2 s is by design. std_echo has no handler: SIGTERM's default action ends it at once (the floor of process exit). Python's script calls `shutdown()` from a helper thread: `serve_forever` polls every 0.5 s; daemon request threads are not joined.\n"
    );
    let _ = writeln!(out, "| server | idle p50 ms | idle max ms | busy p50 ms | busy max ms | no exit in 10 s |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.label,
            ms(median(row.idle_ms.clone())),
            ms(max(&row.idle_ms)),
            ms(median(row.busy_ms.clone())),
            ms(max(&row.busy_ms)),
            row.timeouts
        );
    }
    out.push('\n');
    for row in rows {
        if let Some(note) = &row.note {
            let _ = writeln!(out, "- {}: {note}", row.label);
        }
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------------------
// The report

fn summary_table(results: &[LoadResult], out: &mut String) {
    let _ = writeln!(out, "### Ratios at a glance (requests/s, median of runs)\n");
    let _ = writeln!(out, "| scenario | ours mode | ours req/s | ours/std | std shape | ours/Python | Python |");
    let _ = writeln!(out, "|---|---|---:|---:|---|---:|---|");
    for result in results {
        for row in result.rows.iter().filter(|r| r.spec.imp == Impl::Ours) {
            let Some(s) = row.summary() else { continue };
            let std = std_counterpart(&result.rows, &row.spec);
            let py = python_counterpart(&result.rows, &row.spec);
            let ratio_to = |other: Option<&Row>| other.and_then(Row::summary).map(|o| s.req_per_s / o.req_per_s);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                result.name,
                row.label,
                thousands(s.req_per_s),
                ratio(ratio_to(std)),
                std.map_or("—".to_string(), |r| r.label.clone()),
                ratio(ratio_to(py)),
                py.map_or("—".to_string(), |r| r.label.clone()),
            );
        }
    }
    out.push('\n');
}

fn chart(results: &[LoadResult], machine: &str, date: &str, runs: usize) -> String {
    let series = [("ours", "#1f77b4"), ("std (hand-written)", "#8c8c8c"), ("Python socketserver", "#ff7f0e")];
    let groups = results
        .iter()
        .map(|result| {
            let bars = [Impl::Ours, Impl::Std, Impl::Python]
                .iter()
                .enumerate()
                .filter_map(|(series, imp)| {
                    // The best mode that served every connection; if none did, the best.
                    let candidates: Vec<(f64, usize, String, String)> = result
                        .rows
                        .iter()
                        .filter(|r| r.spec.imp == *imp)
                        .filter_map(|r| {
                            r.summary().map(|s| (s.req_per_s, s.starved, r.label.clone(), r.spec.short_mode()))
                        })
                        .collect();
                    let best = |served_all: bool| {
                        candidates
                            .iter()
                            .filter(|c| !served_all || c.1 == 0)
                            .max_by(|a, b| a.0.total_cmp(&b.0))
                            .cloned()
                    };
                    best(true).or_else(|| best(false)).map(|(value, starved, mode, label)| {
                        let note = if starved > 0 { format!("{mode}, {starved} starved") } else { mode };
                        report::Bar { series, value, label, note }
                    })
                })
                .collect();
            (result.name.to_string(), bars)
        })
        .collect::<Vec<_>>();
    let runs = if runs == 1 { "1 run".to_string() } else { format!("median of {runs} runs") };
    report::bar_chart(
        "socketserver echo: requests/s by scenario",
        &format!("best mode of each that served every connection (mode inside the bar); {runs}; {date}; {machine}"),
        &series,
        &groups,
    )
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("bench: {message}");
            return ExitCode::from(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("bench: WARNING: the load generator is a debug build; run with --release for real numbers");
    }
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ has a parent").to_path_buf();
    eprintln!("bench: building the servers (cargo build --release)");
    let built = cargo_build(&root, "socketserver", "example", "echo").and_then(|echo| {
        let std_echo = cargo_build(&root, "bench", "bin", "std_echo")?;
        let tokio_echo = cargo_build(&root, "bench", "bin", "tokio_echo")?;
        Ok((echo, std_echo, tokio_echo))
    });
    let (echo, std_echo, tokio_echo) = match built {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let python_version = python_version();
    let mut notes: Vec<String> = Vec::new();
    if python_version.is_none() {
        let note = format!(
            "NOTE: `{}` (with socketserver) was not found: the Python rows and ratios are missing from this run.",
            python()
        );
        eprintln!("\n!!!!!!!!\n{note}\n!!!!!!!!\n");
        notes.push(note);
    }
    let programs = Programs {
        echo,
        std_echo,
        tokio_echo,
        python: python_version.as_ref().map(|_| python()),
        script: root.join("bench").join("python_echo.py"),
    };
    let tmp = match TempDir::new() {
        Ok(tmp) => tmp,
        Err(e) => {
            eprintln!("bench: temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let nofile = sys::raise_nofile();
    let pinning = if options.pin { sys::Pinning::split() } else { None };
    sys::set_pinning(pinning.clone());

    let selected: Vec<Scenario> = scenarios_all(options.workers)
        .into_iter()
        .filter(|s| options.scenarios.is_empty() || options.scenarios.iter().any(|n| n == s.name))
        .collect();
    let mut loads = Vec::new();
    let mut rss = None;
    let mut shutdown = None;
    for scenario in &selected {
        match scenario.kind {
            Kind::Load { .. } => loads.extend(run_load(&programs, &tmp.0, scenario, &options, &mut notes)),
            Kind::RssIdle => rss = Some(rss_idle(&programs, &tmp.0, &mut notes)),
            Kind::Shutdown => shutdown = Some(shutdown_scenario(&programs, &tmp.0, options.quick)),
        }
    }

    let machine = sys::machine();
    let date = sys::now_utc();
    let mut out = String::new();
    let _ = writeln!(out, "## socketserver benchmark\n");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command =
        format!("cargo run --release -p bench --{}", args.iter().map(|a| format!(" {a}")).collect::<String>());
    let _ = writeln!(out, "- command: `{}`", command.trim_end_matches(" --"));
    let _ = writeln!(out, "- date: {date}; total time {:.0} s", started.elapsed().as_secs_f64());
    if let Some(commit) = git_commit(&root) {
        let _ = writeln!(out, "- ours: the `echo` example at commit {commit}");
    }
    let _ = writeln!(
        out,
        "- machine: {machine}; {}",
        pinning.as_ref().map_or(
            "clients and servers share the CPUs, placed by the scheduler".to_string(),
            |p| format!(
                "server process pinned to CPU {}, load generator to CPU {}",
                sys::cpu_list(&p.server),
                sys::cpu_list(&p.clients)
            )
        )
    );
    let _ = writeln!(
        out,
        "- Python: {}",
        python_version.as_deref().map_or("not found (rows skipped)".to_string(), |v| format!(
            "{v} (`socketserver`, request_queue_size 5 as shipped)"
        ))
    );
    let _ = writeln!(
        out,
        "- warmup {:.1} s, window {:.1} s, {} run(s) per server; figures are medians of the runs; spread = (max − min) / median of req/s; a ratio of req/s is of the medians, and with several runs the paired ratio follows in parentheses: the median of the ratios of the runs measured in the same round (run n of every server before run n + 1 of any, every other round in the reverse order), which the machine's drift moves less",
        options.warmup.as_secs_f64(),
        options.window.as_secs_f64(),
        options.runs
    );
    let _ = writeln!(
        out,
        "- pool workers: ours {}, std {}; RLIMIT_NOFILE {nofile}",
        options.workers.map_or(format!("default ({})", default_workers()), |n| n.to_string()),
        options.workers.unwrap_or_else(default_workers)
    );
    let _ = writeln!(
        out,
        "- latency is per request as the client sees it (write to last byte read); CPU is the server process's utime+stime over the window / requests in the window; starved = connections with no request completed in the window"
    );
    let _ = writeln!(
        out,
        "- load generator: {}; each scenario's table names its own\n",
        match options.client {
            Some(Client::Threads) => "a blocking thread per connection everywhere (`--client threads`)".to_string(),
            Some(Client::Events) => format!(
                "event-driven ({} thread(s), `polling`) wherever connections are persistent TCP (`--client events`), else a thread per connection",
                options.client_threads
            ),
            None => format!(
                "a blocking thread per connection, except tcp-c1000: event-driven, {} client thread(s) (`polling`), one request in flight per connection",
                options.client_threads
            ),
        }
    );
    if !loads.is_empty() {
        summary_table(&loads, &mut out);
    }
    for result in &loads {
        load_table(result, &mut out);
    }
    if let Some(rows) = &rss {
        rss_table(rows, &mut out);
    }
    if let Some(rows) = &shutdown {
        shutdown_table(rows, &mut out);
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "### Notes\n");
        for note in &notes {
            let _ = writeln!(out, "- {note}");
        }
        out.push('\n');
    }

    println!("\n{out}");
    let mut status = ExitCode::SUCCESS;
    if let Err(e) = std::fs::create_dir_all(&options.out) {
        eprintln!("bench: creating {}: {e}", options.out.display());
        return ExitCode::FAILURE;
    }
    let md = options.out.join("latest.md");
    if let Err(e) = std::fs::write(&md, &out) {
        eprintln!("bench: writing {}: {e}", md.display());
        status = ExitCode::FAILURE;
    }
    let mut written = vec![md.display().to_string()];
    if !loads.is_empty() {
        let svg = options.out.join("latest.svg");
        match std::fs::write(&svg, chart(&loads, &machine, &date, options.runs)) {
            Ok(()) => written.push(svg.display().to_string()),
            Err(e) => {
                eprintln!("bench: writing {}: {e}", svg.display());
                status = ExitCode::FAILURE;
            }
        }
    }
    eprintln!("bench: wrote {} in {:.0} s", written.join(" and "), started.elapsed().as_secs_f64());
    status
}
