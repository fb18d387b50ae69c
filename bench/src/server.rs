//! The servers under test, each a child process that is killed when its guard drops.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::sys;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Impl {
    /// The crate's `echo` example.
    Ours,
    /// `std_echo`, the hand-written `std::net` floor.
    Std,
    /// `python3 bench/python_echo.py`.
    Python,
    /// `tokio_echo`, the async reference for many connections.
    Tokio,
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Std => "std",
            Impl::Python => "Python",
            Impl::Tokio => "tokio",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    Tcp,
    Udp,
    Unix,
}

impl Proto {
    fn arg(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Unix => "unix",
        }
    }
}

/// One server configuration: an implementation in one of its modes.
#[derive(Clone, Debug)]
pub struct Spec {
    pub imp: Impl,
    /// The mode as the server's own `--mode` spells it (`sequential`, `threading`, `pool`
    /// for ours; `thread`, `pool` for std; `threading`, `sequential` for Python).
    pub mode: &'static str,
    /// `--workers` to pass, if any.
    pub workers: Option<usize>,
    /// Ours: `--park`, connections parked between messages in threading mode too.
    pub park: bool,
    /// More arguments for the server (`--count-states`, `--no-timings`: the cost of the
    /// state hook and of the timings, `ops-c16`).
    pub extra: &'static [&'static str],
}

impl Spec {
    pub fn new(imp: Impl, mode: &'static str) -> Spec {
        Spec { imp, mode, workers: None, park: false, extra: &[] }
    }

    /// With more arguments for the server.
    pub fn with_args(mut self, extra: &'static [&'static str]) -> Spec {
        self.extra = extra;
        self
    }

    /// Ours, parking in threading mode too.
    pub fn park(mut self) -> Spec {
        self.park = true;
        self
    }

    pub fn workers(mut self, n: Option<usize>) -> Spec {
        self.workers = n;
        self
    }

    /// A few letters for the chart: `threading`, `pool`, `pool of 1`, ...
    pub fn short_mode(&self) -> String {
        match self.workers {
            Some(1) => "pool of 1".to_string(),
            _ => self.mode.to_string(),
        }
    }

    /// The mode as shown in tables (`pool (2)`, `thread-per-datagram`, ...).
    pub fn mode_label(&self, proto: Proto) -> String {
        let base = match (self.imp, self.mode, proto) {
            (Impl::Std, "thread", Proto::Udp) => "thread-per-datagram",
            (Impl::Std, "thread", _) => "thread-per-connection",
            (Impl::Tokio, _, _) => "multi-threaded runtime",
            (_, mode, _) => mode,
        };
        let label = match self.workers {
            Some(1) if self.imp == Impl::Std => "pool of 1 (sequential floor)".to_string(),
            Some(n) => format!("{base} ({n})"),
            None if self.mode == "pool" => format!("{base} (default)"),
            None if self.park => format!("{base}, parking"),
            None => base.to_string(),
        };
        match self.extra {
            [] => label,
            extra => format!("{label} {}", extra.join(" ")),
        }
    }
}

/// Paths of everything that is run.
#[derive(Clone, Debug)]
pub struct Programs {
    pub echo: PathBuf,
    pub std_echo: PathBuf,
    pub tokio_echo: PathBuf,
    /// `python3`, if it runs and has `socketserver`.
    pub python: Option<String>,
    pub script: PathBuf,
}

/// Where clients connect.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
}

/// A running server. Dropping it kills the process (SIGKILL), reaps it and removes its
/// socket file and log.
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub target: Target,
    log: PathBuf,
    unix_path: Option<PathBuf>,
    exited: bool,
}

impl ServerProcess {
    /// Starts `spec` for `proto` on 127.0.0.1:0 (or a Unix path in `tmp`) and waits for its
    /// `listening on` line.
    pub fn start(programs: &Programs, spec: &Spec, proto: Proto, tmp: &Path, tag: &str) -> Result<Self, String> {
        let unix_path = (proto == Proto::Unix).then(|| tmp.join(format!("{tag}.sock")));
        if let Some(path) = &unix_path {
            let _ = std::fs::remove_file(path);
        }
        let addr = unix_path.as_ref().map_or("127.0.0.1:0".to_string(), |p| p.display().to_string());
        let mut command = match spec.imp {
            Impl::Ours => Command::new(&programs.echo),
            Impl::Std => Command::new(&programs.std_echo),
            Impl::Tokio => Command::new(&programs.tokio_echo),
            Impl::Python => {
                let python = programs.python.as_ref().ok_or("python3 is not available")?;
                let mut command = Command::new(python);
                command.arg(&programs.script);
                command
            }
        };
        command.args(["--proto", proto.arg(), "--mode", spec.mode, "--addr", &addr]);
        if let Some(n) = spec.workers {
            command.args(["--workers", &n.to_string()]);
        }
        if spec.park {
            command.arg("--park");
        }
        command.args(spec.extra);
        let log = tmp.join(format!("{tag}.log"));
        let log_file = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file);
        // The child inherits the spawning thread's CPU binding.
        let mut child = sys::pinned(sys::server_cpus(), || command.spawn())
            .map_err(|e| format!("starting {:?}: {e}", command.get_program()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the first line, then drains stdout until the process ends.
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let mut server =
            ServerProcess { child, pid, target: Target::Tcp(([0, 0, 0, 0], 0).into()), log, unix_path, exited: false };
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => return Err(format!("{} exited without a `listening on` line{}", tag, server.log_tail())),
            Err(_) => return Err(format!("{tag} printed no `listening on` line in 20 s{}", server.log_tail())),
        };
        let url = line.strip_prefix("listening on ").ok_or_else(|| format!("{tag}: unexpected first line {line:?}"))?;
        let parse = |s: &str| s.parse::<SocketAddr>().map_err(|e| format!("{tag}: bad address in {line:?}: {e}"));
        server.target = match (proto, url.split_once("://")) {
            (Proto::Tcp, Some(("tcp", a))) => Target::Tcp(parse(a)?),
            (Proto::Udp, Some(("udp", a))) => Target::Udp(parse(a)?),
            (Proto::Unix, Some(("unix", p))) => Target::Unix(PathBuf::from(p)),
            _ => return Err(format!("{tag}: unexpected `listening on` line {line:?}")),
        };
        Ok(server)
    }

    pub fn cpu_ticks(&self) -> Option<u64> {
        sys::cpu_ticks(self.pid)
    }

    pub fn rss_kb(&self) -> Option<u64> {
        sys::rss_kb(self.pid)
    }

    pub fn alive(&mut self) -> bool {
        !self.exited && matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and returns how long the process took to exit, or `None` if it was
    /// still running after `limit` (then it is killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let pid = Pid::from_raw(self.pid as i32)?;
        let start = Instant::now();
        kill_process(pid, Signal::TERM).ok()?;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.exited = true;
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            thread::sleep(Duration::from_micros(50));
        }
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
        }
    }

    /// Lines the server wrote to stderr, and the first of them.
    pub fn log_summary(&self) -> (usize, Option<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        (text.lines().count(), text.lines().next().map(str::to_string))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if text.trim().is_empty() {
            String::new()
        } else {
            format!("; its stderr:\n{}", text.trim_end())
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A private temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> std::io::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("socketserver-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
