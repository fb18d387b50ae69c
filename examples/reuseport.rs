//! Several processes serving one TCP port with `SO_REUSEPORT`: scaling past one process
//! without a load balancer of our own.
//!
//! ```text
//! cargo run --release --example reuseport -- [--processes N] [--addr ADDR] [--mode threading|pool]
//! ```
//!
//! The first process (the supervisor) binds `ADDR` with [`reuse_port`], so with port 0 it
//! learns the real port, then starts `N - 1` copies of itself with `--worker --addr
//! IP:PORT`, which bind the same port the same way. Once every worker has printed its own
//! `listening on` line, the supervisor prints `listening on tcp://IP:PORT (N processes)`.
//! Every process speaks the same line protocol: on connect it writes `pid PID\n`, then
//! echoes each line until the client's end-of-file. Try `echo hi | nc -N 127.0.0.1 9000`
//! a few times and watch the pid change.
//!
//! Unix only: Windows has no `SO_REUSEPORT`, and there the bind fails with a clear
//! `Unsupported` error.
//!
//! # Why `SO_REUSEPORT`
//!
//! Each process has a listening socket, and so an accept queue, of its own. For each new
//! connection the kernel picks one socket of the group by a hash of the connection's
//! 4-tuple (addresses and ports), so processes never contend for one queue: no accept
//! lock (Apache's accept mutex, nginx's `accept_mutex`) and no thundering herd of
//! processes woken for one connection, as when they all share one inherited socket. No
//! balancer process sits in the data path and no descriptor is passed around; the
//! processes need not even be related.
//!
//! Caveats:
//!
//! - Connections waiting in the accept queue of a process that exits or closes its socket
//!   are reset; the kernel does not hand them to the other sockets (unless, from Linux
//!   5.14, `net.ipv4.tcp_migrate_req = 1`). Queued connections of a worker stopped alone
//!   are lost; a graceful stop of the whole group resets only what raced the shutdown.
//! - The hash spreads connections, not load: a busy process gets as many new ones as an
//!   idle one, and long-lived connections stay where they landed.
//! - Only sockets of the same effective user may join a group (so another user cannot
//!   hijack the port): a process running as someone else gets "address in use". Every
//!   socket, the first included, must set the option before `bind`.
//! - Linux 3.9 or later, for the spreading of TCP connections.
//!
//! # Lifetime
//!
//! Workers must not outlive the supervisor. Each worker's stdin is a pipe whose only
//! writing end the supervisor holds, and a worker shuts down gracefully when its stdin
//! reaches end-of-file. However the supervisor ends, even by `SIGKILL`, which no handler
//! sees, the kernel closes that end and the workers stop: no `PR_SET_PDEATHSIG`, which
//! needs `unsafe` and follows the parent thread rather than the process.
//!
//! On SIGINT or SIGTERM the supervisor stops accepting at once, gives its running clients
//! up to 2 s, then closes the workers' stdin and waits for them (each also gives its
//! clients 2 s). Workers handle the two signals the same way, so Ctrl-C in a terminal
//! or `systemctl stop` (which signal every process of the group) stop all processes at
//! once, while a signal to the supervisor alone reaches the workers once its own clients
//! are done. It exits 0 when every process stopped cleanly. A worker that dies is not
//! restarted: leave that to a service manager, or run the processes as separate units
//! (they need no supervisor to share the port).
//!
//! [`reuse_port`]: socketserver::Builder::reuse_port

use std::error::Error;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{self, Child, ChildStdin, ChildStdout, Command, ExitCode, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::dispatch::{Dispatch, Pool};
use socketserver::{StreamRequest, TcpServer};

/// How long running clients may stay after a shutdown.
const GRACE: Duration = Duration::from_secs(2);
/// How long a worker may take to exit once its stdin is closed: its grace, the 1 s the
/// server gives handlers after closing their connections, and some slack.
const WORKER_EXIT: Duration = Duration::from_secs(5);
const MAX_LINE: usize = 64 * 1024;
const USAGE: &str = "usage: reuseport [--processes N] [--addr ADDR] [--mode threading|pool]
  defaults: --processes 2 --addr 127.0.0.1:9000 --mode threading (127.0.0.1:0 picks a free port)
  (--worker: serve as one of the supervisor's workers, until stdin ends)";

#[derive(Clone, Copy)]
enum Mode {
    Threading,
    Pool,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Threading => "threading",
            Mode::Pool => "pool",
        }
    }

    fn dispatch(self) -> Dispatch {
        match self {
            Mode::Threading => Dispatch::threading(),
            Mode::Pool => Dispatch::from(Pool::default()),
        }
    }
}

struct Args {
    processes: usize,
    addr: SocketAddr,
    mode: Mode,
    worker: bool,
}

/// Parses the command line; the error is the one line to print.
fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args { processes: 2, addr: ([127, 0, 0, 1], 9000).into(), mode: Mode::Threading, worker: false };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--processes" => {
                let text = value()?;
                let n = text.parse().ok().filter(|&n| n > 0);
                args.processes = n.ok_or(format!("bad --processes {text:?}: expected a whole number of at least 1"))?;
            }
            "--addr" => {
                let text = value()?;
                args.addr =
                    text.parse().map_err(|_| format!("bad --addr {text:?}: expected IP:PORT, like 127.0.0.1:9000"))?;
            }
            "--mode" => {
                args.mode = match value()?.as_str() {
                    "threading" => Mode::Threading,
                    "pool" => Mode::Pool,
                    other => return Err(format!("unknown --mode {other:?}: expected threading or pool")),
                }
            }
            "--worker" => args.worker = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Says which process serves, then echoes each line until the client's end-of-file.
fn pid_then_echo(request: &mut StreamRequest) -> io::Result<()> {
    let (reader, writer) = request.reader_and_writer();
    // One write, so the greeting leaves in one segment.
    writer.write_all(format!("pid {}\n", process::id()).as_bytes())?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_line_bounded(&mut line, MAX_LINE)? == 0 {
            return Ok(());
        }
        writer.write_all(&line)?;
    }
}

/// Binds `addr` as one member of the port's `SO_REUSEPORT` group.
fn bind(addr: SocketAddr, mode: Mode) -> Result<TcpServer, socketserver::Error> {
    TcpServer::builder(addr)
        .reuse_port(true)
        .dispatch(mode.dispatch())
        .shutdown_deadline(GRACE)
        .handle_error(|error, client| match client {
            Some(client) => eprintln!("reuseport[{}]: {client}: {error}", process::id()),
            None => eprintln!("reuseport[{}]: {error}", process::id()),
        })
        .bind_handler(pid_then_echo)
}

/// Prints one line on stdout, flushed at once: a supervisor or test waits for it.
fn announce(line: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// A worker: serves until its stdin ends (the supervisor is gone or asks it to stop) or
/// a signal comes.
fn work(args: &Args) -> Result<(), Box<dyn Error>> {
    let server = bind(args.addr, args.mode)?;
    let _signals = server.handle().shutdown_on_signals()?;
    let handle = server.handle();
    // Not joined: after a signal it may still block on stdin, and exiting ends it.
    thread::Builder::new().name("stdin-eof".into()).spawn(move || {
        // Whatever arrives is ignored; an error counts as end-of-file.
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        handle.shutdown();
    })?;
    announce(&format!("listening on tcp://{} (worker {})", server.local_addr(), process::id()))?;
    server.serve_forever()?;
    server.close();
    Ok(())
}

/// A worker process, as the supervisor holds it.
struct Worker {
    child: Child,
    /// Closing it is the worker's signal to stop.
    stdin: Option<ChildStdin>,
    /// Kept open so that a worker writing to stdout never meets a closed pipe.
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts a copy of this program as a worker on `addr`, and waits until it listens.
    fn start(addr: SocketAddr, mode: Mode) -> Result<Worker, Box<dyn Error>> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--worker", "--addr", &addr.to_string(), "--mode", mode.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut worker = Worker { child, stdin, stdout };
        let mut line = String::new();
        let read = worker.stdout.read_line(&mut line);
        if read.is_ok() && line.starts_with("listening on ") {
            return Ok(worker);
        }
        // It said why on stderr, which it shares with us.
        let pid = worker.child.id();
        let _ = stop_workers(vec![worker]);
        Err(format!("worker {pid} did not start").into())
    }
}

/// Closes every worker's stdin, then waits for each, killing any still running after
/// `WORKER_EXIT`. The error names the workers that did not exit cleanly.
fn stop_workers(mut workers: Vec<Worker>) -> Result<(), String> {
    // All at once, so the workers' grace periods run side by side.
    for worker in &mut workers {
        drop(worker.stdin.take());
    }
    let deadline = Instant::now() + WORKER_EXIT;
    let mut failures = Vec::new();
    for mut worker in workers {
        let pid = worker.child.id();
        match wait_until(&mut worker.child, deadline) {
            Ok(Some(status)) if status.success() => {}
            Ok(Some(status)) => failures.push(format!("worker {pid} ended with {status}")),
            Ok(None) => {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                failures.push(format!("worker {pid} still ran {WORKER_EXIT:?} after its stdin closed; killed"));
            }
            Err(error) => failures.push(format!("worker {pid}: {error}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The child's status once it exits, or `None` if it still runs at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The supervisor: binds, starts the workers, serves until a signal, stops the workers.
fn supervise(args: &Args) -> Result<(), Box<dyn Error>> {
    let server = bind(args.addr, args.mode)?;
    let addr = server.local_addr();
    // Before the workers start, so that a signal from now on ends in a clean stop.
    let _signals = server.handle().shutdown_on_signals()?;
    let mut workers = Vec::new();
    for _ in 1..args.processes {
        match Worker::start(addr, args.mode) {
            Ok(worker) => workers.push(worker),
            Err(error) => {
                let _ = stop_workers(workers);
                return Err(error);
            }
        }
    }
    announce(&format!("listening on tcp://{addr} ({} processes)", args.processes))?;
    let served = server.serve_forever();
    server.close();
    let stopped = stop_workers(workers);
    served?;
    Ok(stopped?)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("reuseport: {message}");
            return ExitCode::from(2);
        }
    };
    let result = if args.worker { work(&args) } else { supervise(&args) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reuseport[{}]: {error}", process::id());
            ExitCode::FAILURE
        }
    }
}
