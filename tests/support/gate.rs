//! Holding requests in flight: a handler passes a [`Gate`] (saying it arrived, then
//! waiting to be released), the test drives it through a [`Control`]. Threads are
//! ordered by these channels, never by sleeps.

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use socketserver::{HandlerResult, StreamRequest};

use super::{waiting_for, NEGATIVE_WAIT, TIMEOUT};

/// The handlers' side: each request that passes says it arrived (with an id), then waits
/// for a release token, at most [`TIMEOUT`]; how many pass at once is tracked.
pub struct Gate {
    arrived: mpsc::Sender<String>,
    release: Mutex<mpsc::Receiver<()>>,
    running: AtomicUsize,
    high_water: AtomicUsize,
    passed: AtomicUsize,
    control: Mutex<Option<(mpsc::Receiver<String>, mpsc::Sender<()>)>>,
}

/// The test's side of a [`Gate`]. Take it with [`Gate::control`] *after* building the
/// server, so that on a failure it is dropped first: handlers still waiting for a
/// release then return at once (with an error) instead of at their timeout.
pub struct Control {
    arrived: mpsc::Receiver<String>,
    release: mpsc::Sender<()>,
    gate: Arc<Gate>,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        let (arrived_tx, arrived) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        Arc::new(Gate {
            arrived: arrived_tx,
            release: Mutex::new(release_rx),
            running: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
            passed: AtomicUsize::new(0),
            control: Mutex::new(Some((arrived, release))),
        })
    }

    /// The test's side; there is one per gate.
    pub fn control(self: &Arc<Self>) -> Control {
        let (arrived, release) = self.control.lock().unwrap().take().expect("one control per gate");
        Control { arrived, release, gate: self.clone() }
    }

    /// Says `id` arrived and blocks until the test releases one request. An error if the
    /// test is gone or never releases it.
    pub fn pass(&self, id: impl Into<String>) -> io::Result<()> {
        let id = id.into();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.high_water.fetch_max(now, Ordering::SeqCst);
        let _ = self.arrived.send(id.clone());
        let released = self.release.lock().unwrap().recv_timeout(TIMEOUT);
        self.running.fetch_sub(1, Ordering::SeqCst);
        released.map_err(|e| io::Error::new(io::ErrorKind::TimedOut, format!("request {id:?} never released: {e}")))?;
        self.passed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// A stream handler that passes the gate (id "") and then writes `reply`.
    pub fn replying(self: &Arc<Self>, reply: &'static [u8]) -> impl Fn(&mut StreamRequest) -> HandlerResult + use<> {
        let gate = self.clone();
        move |req: &mut StreamRequest| {
            gate.pass("")?;
            req.writer().write_all(reply)?;
            Ok(())
        }
    }

    /// A stream handler that reads an id line (`a\n`), passes the gate with that id and
    /// writes `done a\n`.
    pub fn by_id(self: &Arc<Self>) -> impl Fn(&mut StreamRequest) -> HandlerResult + use<> {
        let gate = self.clone();
        move |req: &mut StreamRequest| {
            let id = read_id(req)?;
            gate.pass(id.clone())?;
            req.writer().write_all(format!("done {id}\n").as_bytes())?;
            Ok(())
        }
    }
}

/// Reads one line and trims it: the id a client of [`Gate::by_id`] sends.
pub fn read_id(req: &mut StreamRequest) -> io::Result<String> {
    let mut line = String::new();
    req.reader().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

impl Control {
    /// Waits for the next request to arrive at the gate; its id.
    pub fn expect_arrival(&self, what: &str) -> String {
        let _wait = waiting_for(format!("{what} to reach the gate"));
        self.arrived.recv_timeout(TIMEOUT).unwrap_or_else(|e| panic!("waiting for {what} to start: {e}"))
    }

    /// Fails if a request arrives within [`NEGATIVE_WAIT`].
    pub fn assert_no_arrival(&self, what: &str) {
        if let Ok(id) = self.arrived.recv_timeout(NEGATIVE_WAIT) {
            panic!("{what}: request {id:?} started, but it should still be waiting");
        }
    }

    /// Releases `n` requests (now, or when they arrive).
    pub fn release(&self, n: usize) {
        for _ in 0..n {
            self.release.send(()).expect("the gate is gone");
        }
    }

    /// The most requests that were at the gate at once.
    pub fn high_water(&self) -> usize {
        self.gate.high_water.load(Ordering::SeqCst)
    }

    /// How many requests were released through the gate.
    pub fn passed(&self) -> usize {
        self.gate.passed.load(Ordering::SeqCst)
    }
}
