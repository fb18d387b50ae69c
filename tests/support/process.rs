//! Child processes: the examples (built once per test binary), clients run to their
//! end, this test binary run again as a child, and long-running servers read line by
//! line. Every child is killed and reaped when its guard drops, and killed when the
//! [`bounded`](super::bounded) test that started it runs out of time.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{current_session, join_within, waiting_for, TIMEOUT};

/// How long building an example may take on a busy machine.
const BUILD_LIMIT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------------------
// Every child, by the test that started it
// ---------------------------------------------------------------------------------------

/// Live children and the bounded test session that started each (0: none).
fn registry() -> &'static Mutex<Vec<(u32, u64)>> {
    static CHILDREN: OnceLock<Mutex<Vec<(u32, u64)>>> = OnceLock::new();
    CHILDREN.get_or_init(Mutex::default)
}

/// Kills the children the session started and has not reaped; how many.
pub(crate) fn kill_children_of_session(session: u64) -> usize {
    let pids: Vec<u32> = {
        let children = registry().lock().unwrap_or_else(PoisonError::into_inner);
        children.iter().filter(|(_, s)| *s == session).map(|(pid, _)| *pid).collect()
    };
    for pid in &pids {
        // Not reaped yet (the guard would have unregistered it), so the pid is still its.
        #[cfg(unix)]
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        #[cfg(windows)]
        let _ = Command::new("taskkill")
            .args(["/F", "/PID", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    pids.len()
}

/// A child process, killed and reaped when dropped.
pub struct Guarded {
    child: Child,
}

impl Guarded {
    /// Spawns `command`; a program that cannot be run fails the test.
    pub fn spawn(command: &mut Command) -> Guarded {
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        registry().lock().unwrap_or_else(PoisonError::into_inner).push((child.id(), current_session().unwrap_or(0)));
        Guarded { child }
    }

    /// As [`Guarded::spawn`], saying what to do (`hint`) if the program cannot be run.
    pub fn spawn_or_hint(command: &mut Command, hint: &str) -> Guarded {
        match command.spawn() {
            Ok(child) => {
                let session = current_session().unwrap_or(0);
                registry().lock().unwrap_or_else(PoisonError::into_inner).push((child.id(), session));
                Guarded { child }
            }
            Err(e) => panic!("cannot run {command:?}: {e}; {hint}"),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to end, failing the test after `limit`.
    pub fn wait_exit(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let _wait = waiting_for(format!("{what} to exit"));
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "{what} still running after {limit:?}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal (`TERM`, `INT`, `USR1`) with the system's `kill`.
    #[cfg(unix)]
    pub fn signal(&self, name: &str) {
        signal(self.id(), name);
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let pid = self.child.id();
        registry().lock().unwrap_or_else(PoisonError::into_inner).retain(|(p, _)| *p != pid);
    }
}

/// Sends signal `name` to process (or thread) `pid` with the system's `kill`.
#[cfg(unix)]
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

// ---------------------------------------------------------------------------------------
// Running to the end
// ---------------------------------------------------------------------------------------

/// What a process that ran to its end printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end within `limit`, feeding it `stdin`, and returns what it
/// printed. A process still running at the limit is killed and fails the test.
pub fn run_to_exit(command: &mut Command, stdin: &[u8], limit: Duration) -> Finished {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Guarded::spawn(command);
    let mut input = child.child().stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A process that stops reading its input must not block the test: write on a thread.
    thread::spawn(move || input.write_all(&stdin));
    let stdout = read_pipe(child.child().stdout.take().unwrap());
    let stderr = read_pipe(child.child().stderr.take().unwrap());
    let status = child.wait_exit(limit, &format!("{command:?}"));
    Finished { status, stdout: join_within(stdout, TIMEOUT), stderr: join_within(stderr, TIMEOUT) }
}

/// Reads a pipe to its end on a thread, as text.
pub fn read_pipe(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// This test binary, to run the single test `test` again as a child (which tells it is
/// the child by an environment variable the caller sets).
pub fn rerun_this_test(test: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command.args(["--exact", test, "--nocapture", "--test-threads=1", "--include-ignored"]);
    command
}

// ---------------------------------------------------------------------------------------
// Servers read line by line
// ---------------------------------------------------------------------------------------

/// A running process whose stdout is read line by line (so it never blocks on a full
/// pipe) and whose stderr is collected. Killed and reaped when dropped.
pub struct Spawned {
    child: Guarded,
    name: String,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Spawned {
    /// Starts `command` with no input.
    pub fn start(mut command: Command) -> Spawned {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Spawned::start_piped(command)
    }

    /// Starts `command` with the stdio it was given; stdout and stderr must be piped.
    pub fn start_piped(mut command: Command) -> Spawned {
        let name = format!("{command:?}");
        let mut child = Guarded::spawn(&mut command);
        let stdout = BufReader::new(child.child().stdout.take().expect("a piped stdout"));
        let stderr = Some(read_pipe(child.child().stderr.take().expect("a piped stderr")));
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut stdout = stdout;
            loop {
                let mut line = String::new();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if send.send(line).is_err() {
                            // Nobody reads any more: keep draining.
                            let _ = io::copy(&mut stdout, &mut io::sink());
                            break;
                        }
                    }
                }
            }
        });
        Spawned { child, name, lines, stderr }
    }

    /// The next line the process printed, with its newline (the last line of the output
    /// may lack one). Fails if none comes within [`TIMEOUT`] or the output ends.
    pub fn raw_line(&mut self) -> String {
        let _wait = waiting_for(format!("a line from {}", self.name));
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{} printed no line within {TIMEOUT:?}", self.name),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait_exit(TIMEOUT, &self.name);
                let stderr = self.stderr_text();
                panic!("{} ended its output ({status}); stderr: {stderr}", self.name)
            }
        }
    }

    /// The next line the process printed, without its newline.
    pub fn line(&mut self) -> String {
        self.raw_line().trim_end_matches('\n').to_string()
    }

    /// Skips printed lines until one equals `want`.
    pub fn wait_for_line(&mut self, want: &str) {
        while self.line() != want {}
    }

    /// The next line, which must be a whole `listening on URL` line: the URL.
    pub fn listening(&mut self) -> String {
        let line = self.raw_line();
        assert!(line.ends_with('\n'), "the line {line:?} of {} is not a whole line", self.name);
        let url = line.trim_end().strip_prefix("listening on ");
        url.unwrap_or_else(|| panic!("{} printed {line:?}, not `listening on URL`", self.name)).to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`) with the system's `kill`.
    #[cfg(unix)]
    pub fn signal(&self, name: &str) {
        self.child.signal(name);
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.exited()
    }

    /// Waits for the process to end, failing the test after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        self.child.wait_exit(limit, &self.name)
    }

    /// Waits for the process to end with status 0, failing with its stderr otherwise.
    pub fn assert_clean_exit(&mut self, limit: Duration) {
        let status = self.wait_exit(limit);
        if status.code() != Some(0) {
            let stderr = self.stderr_text();
            panic!("{} ended with {status}, not status 0; stderr: {stderr}", self.name);
        }
    }

    /// Everything the process wrote to stderr; call it once the process has ended.
    pub fn stderr_text(&mut self) -> String {
        self.stderr.take().map(|h| join_within(h, TIMEOUT)).unwrap_or_default()
    }

    /// The process's standard input, if it was piped (see [`Spawned::start_piped`]).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.child().stdin.take()
    }

    /// The process's name in messages: its command line.
    pub fn name(&self) -> &str {
        &self.name
    }
}

// ---------------------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------------------

/// Builds the example `name` with this test binary's profile, target directory and
/// features, once per test binary, and returns its executable. Call it before the
/// [`bounded`](super::bounded) test body: a build may take long on a busy machine (it
/// has a deadline of its own).
///
/// The cargo variables set for this test binary are not passed on: build scripts (such
/// as ring's, under the TLS example) rerun when they change, which would rebuild those
/// crates here and again at the next outer `cargo test`.
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(binary) = built.get(name) {
        return binary.clone();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/TEST-HASH
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary lives in <profile>/deps");
    let profile = match profile_dir.file_name().and_then(|dir| dir.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(dir) => dir.to_string(),
        None => panic!("cannot tell the profile from {}", exe.display()),
    };
    // CARGO_TARGET_TMPDIR is <target>/tmp, whatever CARGO_TARGET_DIR or config said.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "--example", name, "--message-format", "json", "--profile", &profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_by_cargo = ["CARGO_PKG_", "CARGO_MANIFEST_"].iter().any(|prefix| key.starts_with(prefix))
            || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key);
        if set_by_cargo {
            cargo.env_remove(&*key);
        }
    }
    // The same features as the tests, so the library is not built a second time.
    for (on, feature) in
        [(cfg!(feature = "threadpool"), "threadpool"), (cfg!(feature = "proxy-protocol"), "proxy-protocol")]
    {
        if on {
            cargo.args(["--features", feature]);
        }
    }
    let output = run_to_exit(&mut cargo, b"", BUILD_LIMIT);
    assert!(output.status.success(), "cargo build --example {name} failed ({}):\n{}", output.status, output.stderr);
    let binary = output
        .stdout
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#) && line.contains(r#""kind":["example"]"#))
        .filter(|line| line.contains(&format!(r#""name":"{name}""#)))
        .find_map(json_executable)
        .unwrap_or_else(|| profile_dir.join("examples").join(name));
    assert!(binary.is_file(), "the {name} example is not at {}", binary.display());
    built.insert(name.to_string(), binary.clone());
    binary
}

/// The `"executable"` path of one line of cargo's JSON messages.
fn json_executable(line: &str) -> Option<PathBuf> {
    let start = line.find(r#""executable":""#)? + r#""executable":""#.len();
    let mut path = String::new();
    let mut chars = line[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(PathBuf::from(path)),
            '\\' => path.push(chars.next()?),
            c => path.push(c),
        }
    }
}
