//! Scripted servers: a server that plays a script of expectations and actions against
//! the client under test, records every byte it received, and fails the test with the
//! difference when the client deviates.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::dispatch::{Sequential, Threading};
use crate::frame::Frame;
use crate::net::Watch;

use super::loops::{Enlisted, Loops};
use crate::request::{DatagramRequest, StreamRequest};
use crate::server::{BackgroundServer, TcpServer, UdpServer};
use crate::transport::{Tcp, Udp};

/// How long an expectation waits for the client's bytes unless the script says
/// otherwise ([`Script::expect_within`]).
pub const DEFAULT_EXPECT_WITHIN: Duration = Duration::from_secs(5);

/// The longest line [`Script::expect_line`] reads past the expected text before it
/// calls the line wrong (a client that never sends the newline is not read for ever).
const LINE_SLACK: usize = 1024;

/// What one connection (TCP) or the whole server (UDP) of a [`ScriptedServer`] does, step
/// by step: expect the client's bytes, reply, wait, close, reset, stop answering.
///
/// The steps run in order. An expectation waits for the client's bytes up to
/// [`DEFAULT_EXPECT_WITHIN`] (or [`Script::expect_within`]); bytes that differ, a client
/// that closes in the middle of an expected message or says nothing in time are failures,
/// which [`ScriptedServer::verify`] reports with the step and the first differing byte.
/// Steps the client never reached (it closed between two steps, or the server stopped
/// first) are failures too, unless the script [allows them](Script::allow_unused). After the last step of a TCP script the server
/// waits for the client to close; bytes it sends then are a failure.
///
/// # Examples
///
/// A client that must greet, then gets an answer and a reset:
///
/// ```
/// use std::io::{BufRead, BufReader, Read, Write};
/// use std::net::TcpStream;
/// use socketserver::testing::{Script, ScriptedServer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let script = Script::new().expect_line("HELLO").reply("WELCOME\n").expect_line("QUIT").reset();
/// let server = ScriptedServer::tcp([script])?;
///
/// let mut client = TcpStream::connect(server.addr())?;
/// client.write_all(b"HELLO\r\n")?;
/// let mut line = String::new();
/// BufReader::new(&client).read_line(&mut line)?;
/// assert_eq!(line, "WELCOME\n");
/// client.write_all(b"QUIT\n")?;
/// // The server resets the connection once it has read QUIT: the script is then over.
/// let _reset = client.read_to_end(&mut Vec::new());
///
/// let transcript = server.verify()?; // Err: what differed, step by step
/// assert_eq!(transcript.conversations[0].received(), b"HELLO\r\nQUIT\n");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Script {
    steps: Vec<Step>,
    allow_unused: bool,
    within: Duration,
}

#[derive(Clone)]
enum Step {
    Expect(Vec<u8>),
    ExpectLine(String),
    ExpectFrame(Frame, Vec<u8>),
    Reply(Vec<u8>),
    Wait(Duration),
    Close,
    Reset,
    StopAnswering,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Expect(bytes) => write!(f, "expect {}", shown(bytes)),
            Step::ExpectLine(line) => write!(f, "expect the line {}", shown(line.as_bytes())),
            Step::ExpectFrame(_, payload) => write!(f, "expect a frame of {}", shown(payload)),
            Step::Reply(bytes) => write!(f, "reply {}", shown(bytes)),
            Step::Wait(time) => write!(f, "wait {time:?}"),
            Step::Close => f.write_str("close"),
            Step::Reset => f.write_str("reset"),
            Step::StopAnswering => f.write_str("stop answering"),
        }
    }
}

impl Default for Script {
    fn default() -> Script {
        Script::new()
    }
}

impl Script {
    /// An empty script: a TCP connection that expects nothing and waits for the client
    /// to close.
    pub fn new() -> Script {
        Script { steps: Vec::new(), allow_unused: false, within: DEFAULT_EXPECT_WITHIN }
    }

    /// Expects exactly these bytes next (for UDP: a datagram of exactly these bytes).
    pub fn expect(mut self, bytes: impl AsRef<[u8]>) -> Script {
        self.steps.push(Step::Expect(bytes.as_ref().to_vec()));
        self
    }

    /// Expects the line `line` next: its text, then `\n` or `\r\n` (for UDP: a datagram
    /// of the text, with or without a line end).
    pub fn expect_line(mut self, line: &str) -> Script {
        self.steps.push(Step::ExpectLine(line.to_string()));
        self
    }

    /// Expects one message framed by `frame` (a line, a length prefix...) whose payload
    /// is `payload`, read by the same rules as [`Frame::read_message`].
    pub fn expect_frame(mut self, frame: &Frame, payload: impl AsRef<[u8]>) -> Script {
        self.steps.push(Step::ExpectFrame(frame.clone(), payload.as_ref().to_vec()));
        self
    }

    /// Sends these bytes (for UDP: a datagram to the client whose datagram was expected
    /// last).
    pub fn reply(mut self, bytes: impl AsRef<[u8]>) -> Script {
        self.steps.push(Step::Reply(bytes.as_ref().to_vec()));
        self
    }

    /// Waits this long before the next step (a slow server). The server's stop ends the
    /// wait.
    pub fn wait(mut self, time: Duration) -> Script {
        self.steps.push(Step::Wait(time));
        self
    }

    /// Closes the connection: the client reads the end of the stream (TCP only). Steps
    /// after it are never reached.
    pub fn close(mut self) -> Script {
        self.steps.push(Step::Close);
        self
    }

    /// Resets the connection (`SO_LINGER` 0, then close): the client's next read or
    /// write fails with `ConnectionReset` (TCP only).
    pub fn reset(mut self) -> Script {
        self.steps.push(Step::Reset);
        self
    }

    /// Stops answering and reading, the connection left open until the server stops: a
    /// client that waits for an answer must time out. For UDP, every later datagram is
    /// received and recorded, and none answered.
    pub fn stop_answering(mut self) -> Script {
        self.steps.push(Step::StopAnswering);
        self
    }

    /// Steps the client never reached are not failures (a script that covers more than
    /// one run of the client needs).
    pub fn allow_unused(mut self) -> Script {
        self.allow_unused = true;
        self
    }

    /// How long each expectation waits for the client's bytes (default
    /// [`DEFAULT_EXPECT_WITHIN`]).
    pub fn expect_within(mut self, time: Duration) -> Script {
        self.within = time;
        self
    }
}

/// What a [`ScriptedServer`] received and sent, in order, with the time of each since
/// the server started.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// TCP: one per connection, in the order they were accepted. UDP: one per client
    /// address, in the order of their first datagram.
    pub conversations: Vec<Conversation>,
}

/// One client's side of a [`Transcript`].
#[derive(Clone, Debug)]
pub struct Conversation {
    /// The client's address.
    pub client: SocketAddr,
    /// What the server received and sent, in order.
    pub events: Vec<Recorded>,
}

impl Conversation {
    /// Every byte the server received from this client, in order (for UDP, the
    /// datagrams one after the other).
    pub fn received(&self) -> Vec<u8> {
        self.events.iter().filter(|e| e.from_client).flat_map(|e| e.bytes.iter().copied()).collect()
    }

    /// Every byte the server sent to this client, in order.
    pub fn sent(&self) -> Vec<u8> {
        self.events.iter().filter(|e| !e.from_client).flat_map(|e| e.bytes.iter().copied()).collect()
    }

    /// What the client sent, piece by piece as the server received it: for UDP, one
    /// entry per datagram (for TCP, per expectation met, which is less telling).
    pub fn datagrams(&self) -> Vec<&[u8]> {
        self.events.iter().filter(|e| e.from_client).map(|e| e.bytes.as_slice()).collect()
    }
}

/// Bytes a [`ScriptedServer`] received (`from_client`) or sent, and when.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Since the server started.
    pub at: Duration,
    /// `true`: the client sent them; `false`: the server did.
    pub from_client: bool,
    /// The bytes: what one step read or wrote (TCP), or one datagram (UDP).
    pub bytes: Vec<u8>,
}

/// The ways a client deviated from a [`ScriptedServer`]'s scripts, one message per
/// line: which connection and step, what was expected, what came.
#[derive(Clone, Debug)]
pub struct ScriptError {
    /// One message per failure.
    pub failures: Vec<String>,
    /// What the server recorded up to the stop.
    pub transcript: Transcript,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the client did not follow the script ({} failure(s)):", self.failures.len())?;
        for failure in &self.failures {
            write!(f, "\n  - {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {}

/// A server on `127.0.0.1:0` that plays [`Script`]s against the client under test,
/// records what it received ([`Transcript`]), and reports how the client deviated.
///
/// [`verify`](ScriptedServer::verify) stops it and returns the transcript, or the
/// failures. Dropped without `verify`, it stops and panics with the failures, if there
/// are any (unless the thread is panicking already). Starting and stopping take well
/// under a millisecond: it is a server of this crate, stopped at once, its waits woken
/// by the stop rather than polled.
///
/// A TCP server plays its scripts one per connection, in the order the connections are
/// accepted (each on a thread of its own); a connection beyond them is closed and is a
/// failure. A UDP server plays one script over every datagram it receives.
pub struct ScriptedServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<Running>,
}

enum Running {
    Tcp(BackgroundServer<Tcp>),
    Udp(BackgroundServer<Udp>),
}

impl fmt::Debug for ScriptedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

struct Shared {
    start: Instant,
    /// TCP: the scripts of the connections to come.
    scripts: Mutex<VecDeque<Script>>,
    /// How many scripts the server was given (for the message about one too many).
    script_count: usize,
    state: Mutex<State>,
    /// Signalled when the server stops: ends waits and silences.
    stopped: Condvar,
    /// The open connections' readers, woken when the server stops (see [`Gate`]).
    readers: Arc<Loops>,
}

#[derive(Default)]
struct State {
    stopping: bool,
    failures: Vec<String>,
    conversations: Vec<Conversation>,
    /// UDP: the one script, where it is, and whether it has gone silent.
    udp: Option<UdpPlay>,
}

struct UdpPlay {
    script: Script,
    next: usize,
    silent: bool,
}

impl Shared {
    fn new(scripts: VecDeque<Script>, udp: Option<Script>) -> Arc<Shared> {
        let script_count = scripts.len();
        let udp = udp.map(|script| UdpPlay { script, next: 0, silent: false });
        Arc::new(Shared {
            start: Instant::now(),
            scripts: Mutex::new(scripts),
            script_count,
            state: Mutex::new(State { udp, ..State::default() }),
            stopped: Condvar::new(),
            readers: Arc::default(),
        })
    }

    fn fail(&self, message: String) {
        self.state.lock().failures.push(message);
    }

    fn stopping(&self) -> bool {
        self.state.lock().stopping
    }

    /// Waits `time`, or until the server stops (`false`).
    fn wait(&self, time: Duration) -> bool {
        let until = Instant::now() + time;
        let mut state = self.state.lock();
        while !state.stopping {
            if self.stopped.wait_until(&mut state, until).timed_out() {
                return !state.stopping;
            }
        }
        false
    }

    /// Records bytes in conversation `index`.
    fn record(&self, index: usize, from_client: bool, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let at = self.start.elapsed();
        self.state.lock().conversations[index].events.push(Recorded { at, from_client, bytes: bytes.to_vec() });
    }
}

impl ScriptedServer {
    /// A TCP server on `127.0.0.1:0` that plays `scripts`, one per connection in the
    /// order they are accepted.
    ///
    /// # Errors
    ///
    /// The server could not bind or start (out of descriptors, say).
    pub fn tcp(scripts: impl IntoIterator<Item = Script>) -> io::Result<ScriptedServer> {
        let shared = Shared::new(scripts.into_iter().collect(), None);
        let play = shared.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            // A reset connection must not say FIN first (the default closes the write
            // side, which would): the script's own close has already done so.
            .shutdown_request(|_| Ok(()))
            .bind(move |req: &mut StreamRequest| {
                play_tcp(&play, req);
                Ok(())
            })
            .map_err(io::Error::from)?;
        let addr = server.local_addr();
        let server = server.serve_in_background().map_err(io::Error::from)?;
        Ok(ScriptedServer { addr, shared, server: Some(Running::Tcp(server)) })
    }

    /// A UDP server on `127.0.0.1:0` that plays `script` over the datagrams it receives:
    /// each expectation is one datagram, each reply a datagram to the client whose
    /// datagram was expected last.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a script with a step UDP has no meaning for (`close`,
    /// `reset`); the errors of binding.
    pub fn udp(script: Script) -> io::Result<ScriptedServer> {
        if let Some(step) = script.steps.iter().find(|s| matches!(s, Step::Close | Step::Reset)) {
            let message = format!("a UDP script cannot {step:?}: a datagram socket has no connection");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let shared = Shared::new(VecDeque::new(), Some(script));
        let play = shared.clone();
        let server = UdpServer::builder("127.0.0.1:0")
            .dispatch(Sequential)
            .bind(move |req: &mut DatagramRequest| {
                play_udp(&play, req);
                Ok(())
            })
            .map_err(io::Error::from)?;
        let addr = server.local_addr();
        let server = server.serve_in_background().map_err(io::Error::from)?;
        Ok(ScriptedServer { addr, shared, server: Some(Running::Udp(server)) })
    }

    /// The address to point the client at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the server has recorded so far (it goes on serving).
    pub fn transcript(&self) -> Transcript {
        Transcript { conversations: self.shared.state.lock().conversations.clone() }
    }

    /// Stops the server, then returns what it recorded, or every way the client
    /// deviated from the scripts: bytes that differ (with the first differing byte),
    /// an early close, silence past an expectation's time, a connection or datagram
    /// beyond the script, steps never reached (unless allowed).
    ///
    /// # Errors
    ///
    /// [`ScriptError`], whose `Display` lists the failures.
    pub fn verify(mut self) -> Result<Transcript, ScriptError> {
        self.stop();
        let (failures, transcript) = self.outcome();
        if failures.is_empty() {
            Ok(transcript)
        } else {
            Err(ScriptError { failures, transcript })
        }
    }

    /// Once stopped: the failures, those found at the end included, and the transcript.
    fn outcome(&self) -> (Vec<String>, Transcript) {
        let mut state = self.shared.state.lock();
        let mut failures = std::mem::take(&mut state.failures);
        let transcript = Transcript { conversations: std::mem::take(&mut state.conversations) };
        let untouched = self.shared.scripts.lock().drain(..).filter(|s| !s.allow_unused && !s.steps.is_empty()).count();
        if untouched > 0 {
            failures.push(format!(
                "{untouched} of the {} connection script(s) were never used: the client connected {} time(s)",
                self.shared.script_count,
                transcript.conversations.len()
            ));
        }
        if let Some(play) = &state.udp {
            if !play.script.allow_unused && play.next < play.script.steps.len() && !play.silent {
                failures.push(unused(None, &play.script, play.next));
            }
        }
        (failures, transcript)
    }

    /// Ends every wait and silence, then stops the server: connections still open are
    /// closed at once.
    fn stop(&mut self) {
        {
            let mut state = self.shared.state.lock();
            state.stopping = true;
            self.shared.stopped.notify_all();
        }
        self.shared.readers.wake_all();
        let stopped = match self.server.take() {
            Some(Running::Tcp(server)) => server.stop_timeout(Duration::ZERO).stop(),
            Some(Running::Udp(server)) => server.stop_timeout(Duration::ZERO).stop(),
            None => return,
        };
        if let Err(e) = stopped {
            self.shared.fail(format!("the scripted server did not stop cleanly: {e}"));
        }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if self.server.is_none() {
            return; // verified
        }
        self.stop();
        let (failures, transcript) = self.outcome();
        if !failures.is_empty() && !std::thread::panicking() {
            let error = ScriptError { failures, transcript };
            panic!("ScriptedServer dropped without verify(), and {error}");
        }
    }
}

/// Plays the next script on one connection.
fn play_tcp(shared: &Shared, req: &mut StreamRequest) {
    let client = req.client_addr().as_inet().expect("a TCP server's client has an IP address");
    let index = {
        let mut state = shared.state.lock();
        state.conversations.push(Conversation { client, events: Vec::new() });
        state.conversations.len() - 1
    };
    let n = index + 1;
    let Some(script) = shared.scripts.lock().pop_front() else {
        shared.fail(format!(
            "connection {n} (from {client}): not in the script, which has {} connection(s); closed",
            shared.script_count
        ));
        return;
    };
    let mut reader = match Gate::new(shared, req, script.within) {
        Ok(gate) => io::BufReader::new(gate),
        Err(e) => return shared.fail(format!("connection {n}: could not watch the connection: {e}")),
    };
    for (at, step) in script.steps.iter().enumerate() {
        reader.get_mut().begin();
        let here = || format!("connection {n}, step {} ({step:?})", at + 1);
        let result = match step {
            Step::Expect(expected) => expect_bytes(shared, index, &mut reader, expected),
            Step::ExpectLine(line) => expect_line(shared, index, &mut reader, line),
            Step::ExpectFrame(frame, payload) => expect_frame(shared, index, &mut reader, frame, payload),
            Step::Reply(bytes) => {
                let sent = req.writer().write_all(bytes).and_then(|()| req.writer().flush());
                shared.record(index, false, bytes);
                sent.map_err(|e| format!("could not send: {e}"))
            }
            Step::Wait(time) => match shared.wait(*time) {
                true => Ok(()),
                false => Err(String::new()),
            },
            Step::Close => {
                let _ = req.writer().flush();
                let _ = req.connection().shutdown(Shutdown::Both);
                return unreached(shared, n, &script, at + 1);
            }
            Step::Reset => {
                if let Some(stream) = req.connection().as_tcp() {
                    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                }
                return unreached(shared, n, &script, at + 1);
            }
            Step::StopAnswering => {
                let mut state = shared.state.lock();
                while !state.stopping {
                    shared.stopped.wait(&mut state);
                }
                return;
            }
        };
        if let Err(message) = result {
            // An empty message: the stop ended the step, or the client closed before
            // it began, between two steps; the steps left are reported as never reached
            // (unless the script allows that).
            if message.is_empty() || shared.stopping() {
                if !script.allow_unused {
                    shared.fail(unused(Some(n), &script, at));
                }
            } else {
                shared.fail(format!("{}: {message}", here()));
            }
            return;
        }
    }
    // The script is over: the client may close; what it sends now is a deviation.
    reader.get_mut().begin();
    let mut extra = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => extra.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        if extra.len() > LINE_SLACK {
            break;
        }
    }
    if !extra.is_empty() {
        shared.record(index, true, &extra);
        if !shared.stopping() {
            shared.fail(format!("connection {n}: after the script's last step, the client sent {}", shown(&extra)));
        }
    }
}

/// What a connection's script reads through: the client's socket, waited on in a poller
/// of its own before each read, so that a read ends when the expectation's time passes
/// or the server stops, on every platform. (The server's forced close would end a
/// blocked read on Linux, but not on every platform: Wine's Windows does not wake a
/// `recv` for a `shutdown` from another thread.) The socket stays blocking, so the
/// replies written through the request's writer are whole; a read after a readiness
/// event does not block.
struct Gate<'a> {
    shared: &'a Shared,
    watch: Watch<TcpStream>,
    within: Duration,
    /// When the step under way gives up waiting for the client (see [`Gate::begin`]).
    deadline: Instant,
    /// Its registration in `shared.readers`, for as long as it reads.
    _enlisted: Enlisted,
}

impl<'a> Gate<'a> {
    fn new(shared: &'a Shared, req: &StreamRequest, within: Duration) -> io::Result<Gate<'a>> {
        let stream = req.connection().as_tcp().ok_or_else(|| io::Error::other("not a TCP connection"))?.try_clone()?;
        let mut watch = Watch::new()?;
        watch.insert(stream)?;
        let (_, enlisted) = shared.readers.enlist(watch.waker());
        Ok(Gate { shared, watch, within, deadline: Instant::now() + within, _enlisted: enlisted })
    }
}

impl Gate<'_> {
    /// Starts a step: its reads, together, wait at most the expectation's time (a client
    /// that sends a byte now and then cannot keep one expectation open for ever).
    fn begin(&mut self) {
        self.deadline = Instant::now() + self.within;
    }
}

impl Read for Gate<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.deadline;
        self.watch.arm(0, true, false)?;
        let mut ready = Vec::new();
        loop {
            if self.shared.stopping() {
                // What the client sent before the stop is still read (and recorded):
                // a client that writes, then verifies, has its last bytes counted.
                self.watch.wait(Some(Instant::now()), &mut ready)?;
                if ready.contains(&0) {
                    break;
                }
                return Err(io::Error::other("the scripted server stopped"));
            }
            self.watch.wait(Some(deadline), &mut ready)?;
            if ready.contains(&0) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        self.watch.get(0).read(buf)
    }
}

/// The steps after a close or a reset are never reached.
fn unreached(shared: &Shared, n: usize, script: &Script, next: usize) {
    if next < script.steps.len() && !script.allow_unused {
        shared.fail(unused(Some(n), script, next));
    }
}

fn unused(connection: Option<usize>, script: &Script, from: usize) -> String {
    let steps: Vec<String> = script.steps[from..].iter().map(|s| format!("{s:?}")).collect();
    let whose = connection.map_or(String::from("the script"), |n| format!("connection {n}"));
    format!(
        "{whose}: step(s) {}..{} never reached: {} (Script::allow_unused() allows that)",
        from + 1,
        script.steps.len(),
        steps.join(", ")
    )
}

/// Why a read for an expectation ended without the bytes.
fn read_failure(e: &io::Error, got: &[u8], expected: usize) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!(
                "nothing more within the expectation's time; received {} of {expected} byte(s): {}",
                got.len(),
                shown(got)
            )
        }
        io::ErrorKind::UnexpectedEof => {
            format!("the client closed the connection after {} of {expected} byte(s): {}", got.len(), shown(got))
        }
        _ => format!("reading failed after {} of {expected} byte(s) ({e}): {}", got.len(), shown(got)),
    }
}

fn expect_bytes(shared: &Shared, index: usize, reader: &mut impl BufRead, expected: &[u8]) -> Result<(), String> {
    let mut got = Vec::with_capacity(expected.len());
    let mut buf = [0; 4096];
    while got.len() < expected.len() {
        let want = (expected.len() - got.len()).min(buf.len());
        match reader.read(&mut buf[..want]) {
            // Closed before the step's first byte: the client left between steps, and
            // this step and the ones after it were never reached.
            Ok(0) if got.is_empty() => return Err(String::new()),
            Ok(0) => {
                shared.record(index, true, &got);
                let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                return Err(stop_or(shared, read_failure(&eof, &got, expected.len())));
            }
            Ok(k) => {
                got.extend_from_slice(&buf[..k]);
                // Told as soon as it differs: the client may be waiting for an answer.
                if !expected.starts_with(&got) {
                    shared.record(index, true, &got);
                    return Err(difference(expected, &got));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                shared.record(index, true, &got);
                return Err(stop_or(shared, read_failure(&e, &got, expected.len())));
            }
        }
    }
    shared.record(index, true, &got);
    Ok(())
}

fn expect_line(shared: &Shared, index: usize, reader: &mut impl BufRead, line: &str) -> Result<(), String> {
    let mut got = Vec::new();
    let limit = (line.len() + LINE_SLACK) as u64;
    let read = reader.take(limit).read_until(b'\n', &mut got);
    shared.record(index, true, &got);
    if let Err(e) = read {
        return Err(stop_or(shared, read_failure(&e, &got, line.len() + 1)));
    }
    if got.is_empty() {
        return Err(String::new()); // closed between steps: never reached
    }
    let Some(text) = got.strip_suffix(b"\n") else {
        let why = match got.len() as u64 == limit {
            true => format!("no line end within {limit} bytes: {}", shown(&got)),
            false => format!("the client closed the connection in the middle of a line: {}", shown(&got)),
        };
        return Err(stop_or(shared, why));
    };
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.is_empty() && !line.is_empty() {
        // Not "received \"\"": the client did send something, a line end.
        return Err(format!("expected {}, received an empty line", shown(line.as_bytes())));
    }
    if text != line.as_bytes() {
        return Err(difference(line.as_bytes(), text));
    }
    Ok(())
}

fn expect_frame(
    shared: &Shared,
    index: usize,
    reader: &mut impl BufRead,
    frame: &Frame,
    payload: &[u8],
) -> Result<(), String> {
    match frame.read_message(reader) {
        Ok(Some(message)) => {
            shared.record(index, true, &message);
            let got = frame.payload(&message);
            match got == payload {
                true => Ok(()),
                false => Err(difference(payload, got)),
            }
        }
        // Closed before the message began: the client left between steps.
        Ok(None) => Err(String::new()),
        Err(e) => Err(stop_or(shared, format!("no whole message: {e}"))),
    }
}

/// An empty message (the stop's doing) once the server stops, else `message`.
fn stop_or(shared: &Shared, message: String) -> String {
    if shared.stopping() {
        String::new()
    } else {
        message
    }
}

/// Plays the UDP script's next steps for one datagram.
fn play_udp(shared: &Shared, req: &mut DatagramRequest) {
    let client = req.client_addr().as_inet().expect("a UDP server's client has an IP address");
    let packet = req.packet().to_vec();
    let mut guard = shared.state.lock();
    let state = &mut *guard;
    let index = match state.conversations.iter().position(|c| c.client == client) {
        Some(index) => index,
        None => {
            state.conversations.push(Conversation { client, events: Vec::new() });
            state.conversations.len() - 1
        }
    };
    let at = shared.start.elapsed();
    state.conversations[index].events.push(Recorded { at, from_client: true, bytes: packet.clone() });
    let play = state.udp.as_mut().expect("a UDP server has its script");
    if play.silent {
        return;
    }
    let Some(step) = play.script.steps.get(play.next).cloned() else {
        let message = format!("after the script's last step, a datagram from {client}: {}", shown(&packet));
        state.failures.push(message);
        return;
    };
    play.next += 1;
    let n = play.next;
    let matched = match &step {
        Step::Expect(expected) if packet == *expected => Ok(()),
        Step::Expect(expected) => Err(difference(expected, &packet)),
        Step::ExpectLine(line) => {
            let text = packet.strip_suffix(b"\n").unwrap_or(&packet);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            match text == line.as_bytes() {
                true => Ok(()),
                false => Err(difference(line.as_bytes(), text)),
            }
        }
        Step::ExpectFrame(frame, payload) => match frame.read_message(&packet[..]) {
            Ok(Some(message)) if frame.payload(&message) == &payload[..] => Ok(()),
            Ok(Some(message)) => Err(difference(payload, frame.payload(&message))),
            _ => Err(format!("not one whole message: {}", shown(&packet))),
        },
        other => {
            Err(format!("the next step is {other:?}, not an expectation, and a datagram came: {}", shown(&packet)))
        }
    };
    if let Err(message) = matched {
        state.failures.push(format!("step {n} ({step:?}), datagram from {client}: {message}"));
        // Not answered: the script goes on at its next expectation.
        while play.script.steps.get(play.next).is_some_and(|step| !is_expectation(step)) {
            play.next += 1;
        }
        return;
    }
    // The steps up to the next expectation answer this datagram.
    loop {
        let play = guard.udp.as_mut().expect("a UDP server has its script");
        let Some(step) = play.script.steps.get(play.next).cloned() else { return };
        if is_expectation(&step) {
            return;
        }
        play.next += 1;
        let n = play.next;
        match step {
            Step::Reply(bytes) => {
                let sent = req.socket().send_to(&bytes, req.client_addr());
                let at = shared.start.elapsed();
                guard.conversations[index].events.push(Recorded { at, from_client: false, bytes });
                if let Err(e) = sent {
                    guard.failures.push(format!("step {n} (reply): could not send to {client}: {e}"));
                }
            }
            Step::Wait(time) => {
                let until = Instant::now() + time;
                while !guard.stopping && !shared.stopped.wait_until(&mut guard, until).timed_out() {}
                if guard.stopping {
                    return;
                }
            }
            Step::StopAnswering => {
                play.silent = true;
                return;
            }
            Step::Close | Step::Reset | Step::Expect(_) | Step::ExpectLine(_) | Step::ExpectFrame(..) => {
                unreachable!("refused by ScriptedServer::udp, or an expectation")
            }
        }
    }
}

fn is_expectation(step: &Step) -> bool {
    matches!(step, Step::Expect(_) | Step::ExpectLine(_) | Step::ExpectFrame(..))
}

/// Where `got` first differs from `expected`, for a person.
fn difference(expected: &[u8], got: &[u8]) -> String {
    let at = expected.iter().zip(got).position(|(a, b)| a != b).unwrap_or(expected.len().min(got.len()));
    let detail = match (expected.get(at), got.get(at)) {
        (Some(e), Some(g)) => format!("byte {at} is {} where {} was expected", shown(&[*g]), shown(&[*e])),
        (Some(_), None) => format!("it ends at byte {at}, {} byte(s) short", expected.len() - got.len()),
        (None, Some(_)) => format!("{} byte(s) more than expected from byte {at}", got.len() - expected.len()),
        (None, None) => String::from("no difference"),
    };
    format!("expected {}, received {}: {detail}", shown(expected), shown(got))
}

/// Bytes as a quoted, escaped string, cut at 200 bytes.
fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let cut = &bytes[..bytes.len().min(MAX)];
    let more = match bytes.len() > MAX {
        true => format!("… ({} bytes in all)", bytes.len()),
        false => String::new(),
    };
    format!("\"{}\"{more}", cut.escape_ascii())
}
