use std::collections::HashMap;
use std::fmt;
use std::io;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use super::Job;

/// Runs each request on a new thread, as Python's `ThreadingMixIn` does.
///
/// Finished threads are joined ("reaped") as new requests arrive, so the list of
/// handles never grows past the number of live threads plus the few that just ended.
///
/// | option | default | meaning |
/// |---|---|---|
/// | [`max_threads`](Threading::max_threads) | none | at most this many exchanges at once (connections [parked](crate::StreamRequest::park) between messages hold no thread and do not count); at the limit the server stops accepting until one ends |
/// | [`block_on_close`](Threading::block_on_close) | `true` | `serve_forever` waits for running requests and closing joins their threads |
/// | [`daemon_threads`](Threading::daemon_threads) | `false` | `true` implies not blocking on close |
/// | [`thread_name`](Threading::thread_name) | `socketserver-request` | threads are named `NAME-ID` |
/// | [`stack_size`](Threading::stack_size) | std's default | stack size of each thread |
/// | [`keep_alive`](Threading::keep_alive) | [`DEFAULT_KEEP_ALIVE`] (5 s) | how long a thread that finished its request waits to take the next one |
///
/// Every running request has a thread of its own, as in Python. A thread whose request
/// ended waits up to `keep_alive` for the next request before it exits, so a burst of
/// short connections does not pay for a thread spawn each; an idle thread wakes once,
/// when its keep-alive ends, and is gone.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::{dispatch::Threading, TcpServer};
///
/// let server = TcpServer::builder("127.0.0.1:0")
///     .dispatch(Threading::new().max_threads(256).thread_name("echo"))
///     .bind(|req| { req.writer().write_all(b"ok")?; Ok(()) })?;
/// # drop(server);
/// # Ok::<(), socketserver::Error>(())
/// ```
pub struct Threading {
    max_threads: Option<usize>,
    block_on_close: bool,
    daemon_threads: bool,
    name: String,
    stack_size: Option<usize>,
    keep_alive: Duration,
    live: Mutex<LiveThreads>,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
    /// Where threads whose request ended wait for the next one. A zero-capacity channel:
    /// a send succeeds only if a thread is waiting at that moment.
    idle_rx: Receiver<Job>,
}

/// How long a request thread waits for the next request by default.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Threads that will be joined (still running, or ended but not yet reaped), and the
/// way to hand a job to an idle one; `None` once closed, which releases idle threads.
struct LiveThreads {
    next_id: u64,
    handles: HashMap<u64, JoinHandle<()>>,
    idle_tx: Option<Sender<Job>>,
}

impl Default for Threading {
    fn default() -> Self {
        Threading::new()
    }
}

impl fmt::Debug for Threading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Threading")
            .field("max_threads", &self.max_threads)
            .field("block_on_close", &self.block_on_close)
            .field("daemon_threads", &self.daemon_threads)
            .field("thread_name", &self.name)
            .field("stack_size", &self.stack_size)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl Threading {
    /// A thread per request, no limit, joined on close.
    pub fn new() -> Threading {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let (idle_tx, idle_rx) = crossbeam_channel::bounded(0);
        Threading {
            max_threads: None,
            block_on_close: true,
            daemon_threads: false,
            name: "socketserver-request".to_string(),
            stack_size: None,
            keep_alive: DEFAULT_KEEP_ALIVE,
            live: Mutex::new(LiveThreads { next_id: 0, handles: HashMap::new(), idle_tx: Some(idle_tx) }),
            done_tx,
            done_rx,
            idle_rx,
        }
    }

    /// How long a thread whose request ended waits for the next request before it
    /// exits. Default [`DEFAULT_KEEP_ALIVE`] (5 s); `Duration::ZERO` gives every request
    /// a new thread, as Python does.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Threading {
        self.keep_alive = keep_alive;
        self
    }

    /// Runs at most `n` requests at once. At the limit the server stops accepting until
    /// one ends; connections wait in the kernel backlog and none is dropped. A connection
    /// [parked](crate::StreamRequest::park) between two messages has no thread and does
    /// not count; its next message waits for a free thread as a new connection does.
    /// (`Builder::max_connections` bounds connections, parked ones included.)
    ///
    /// # Panics
    /// Panics if `n` is zero.
    pub fn max_threads(mut self, n: usize) -> Threading {
        assert!(n > 0, "max_threads must be at least 1");
        self.max_threads = Some(n);
        self
    }

    /// Whether `serve_forever` waits for running requests before returning and closing
    /// the server joins their threads (Python's `block_on_close`, default `true`).
    pub fn block_on_close(mut self, block: bool) -> Threading {
        self.block_on_close = block;
        self
    }

    /// Python's `daemon_threads`: `true` means request threads are neither waited for
    /// nor joined. Rust has no daemon threads (every thread ends with the process), so
    /// this is `block_on_close(false)` under Python's name.
    pub fn daemon_threads(mut self, daemon: bool) -> Threading {
        self.daemon_threads = daemon;
        self
    }

    /// The name prefix of request threads; each is named `NAME-ID`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Threading {
        self.name = name.into();
        self
    }

    /// The stack size of request threads, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Threading {
        self.stack_size = Some(bytes);
        self
    }

    /// The limit set by `max_threads`, if any.
    pub(crate) fn thread_limit(&self) -> Option<usize> {
        self.max_threads
    }

    pub(crate) fn joins_threads(&self) -> bool {
        self.block_on_close && !self.daemon_threads
    }

    /// Joins the threads that said they are done. They have returned from their job,
    /// so each join waits at most for a thread's exit.
    fn reap(&self, live: &mut LiveThreads) {
        for id in self.done_rx.try_iter() {
            if let Some(handle) = live.handles.remove(&id) {
                let _ = handle.join();
            }
        }
    }
}

impl Threading {
    /// Runs `job` on a thread kept alive from an earlier request, or on a new one.
    pub(crate) fn execute(&self, job: Job) -> io::Result<()> {
        let mut live = self.live.lock();
        self.reap(&mut live);
        let job = match &live.idle_tx {
            Some(idle) if !self.keep_alive.is_zero() => match idle.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
            },
            _ => job,
        };
        let id = live.next_id;
        live.next_id += 1;
        let mut builder = thread::Builder::new().name(format!("{}-{id}", self.name));
        if let Some(size) = self.stack_size {
            builder = builder.stack_size(size);
        }
        let (idle, keep_alive) = (self.idle_rx.clone(), self.keep_alive);
        let serve = move || {
            let mut job = job;
            loop {
                job.run();
                if keep_alive.is_zero() {
                    break;
                }
                match idle.recv_timeout(keep_alive) {
                    Ok(next) => job = next,
                    Err(_) => break, // kept alive long enough, or the server closed
                }
            }
        };
        if self.joins_threads() {
            let done = self.done_tx.clone();
            let handle = builder.spawn(move || {
                serve();
                let _ = done.send(id);
            })?;
            live.handles.insert(id, handle);
        } else {
            builder.spawn(serve)?;
        }
        Ok(())
    }

    /// Releases the idle threads and joins every thread that will be joined.
    pub(crate) fn close(&self) {
        let handles: Vec<_> = {
            let mut live = self.live.lock();
            live.idle_tx = None; // idle threads stop waiting and exit
            self.done_rx.try_iter().for_each(drop);
            live.handles.drain().map(|(_, h)| h).collect()
        };
        for handle in handles {
            let _ = handle.join();
        }
    }
}
