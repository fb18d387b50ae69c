use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::{default_workers, Dispatch, Job};

/// Runs requests on a fixed set of worker threads.
///
/// At most `workers` requests run at once; with every worker busy the server stops
/// accepting, so further connections wait in the kernel backlog, not in a queue in
/// memory. A request that panics does not cost a worker. Closing the server joins every
/// worker. Workers start with the first request.
///
/// Built on a bounded `crossbeam-channel` rather than the `threadpool` crate, whose
/// queue is unbounded and which does not join its threads on drop; see
/// `ThreadPoolDispatch` (feature `threadpool`) to serve through a pool you already own.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::{dispatch::Pool, StreamRequest, TcpServer};
///
/// let server = TcpServer::builder("127.0.0.1:0")
///     .dispatch(Pool::new(8).thread_name("kv-worker"))
///     .bind(|req: &mut StreamRequest| req.writer().write_all(b"ok"))?;
/// # drop(server);
/// # Ok::<(), socketserver::Error>(())
/// ```
pub struct Pool {
    workers: usize,
    name: String,
    stack_size: Option<usize>,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    sender: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers)
            .field("thread_name", &self.name)
            .field("stack_size", &self.stack_size)
            .finish()
    }
}

impl Default for Pool {
    /// A pool with one worker per available CPU, at least 2.
    fn default() -> Self {
        Pool::new(default_workers())
    }
}

impl Pool {
    /// A pool of `workers` threads.
    ///
    /// # Panics
    /// Panics if `workers` is zero.
    pub fn new(workers: usize) -> Pool {
        assert!(workers > 0, "a pool needs at least one worker");
        Pool {
            workers,
            name: "socketserver-worker".to_string(),
            stack_size: None,
            state: Mutex::new(PoolState::default()),
        }
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The name prefix of worker threads; each is named `NAME-N`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Pool {
        self.name = name.into();
        self
    }

    /// The stack size of worker threads, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Pool {
        self.stack_size = Some(bytes);
        self
    }

    fn start(&self, state: &mut PoolState) -> io::Result<Sender<Job>> {
        // The serve loop never lets more than `workers` jobs be queued or running, so
        // this bound is never the one that blocks; it only keeps the pool honest if used
        // elsewhere.
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(self.workers);
        for n in 0..self.workers {
            let mut builder = thread::Builder::new().name(format!("{}-{n}", self.name));
            if let Some(size) = self.stack_size {
                builder = builder.stack_size(size);
            }
            let receiver: Receiver<Job> = receiver.clone();
            match builder.spawn(move || work(receiver)) {
                Ok(handle) => state.threads.push(handle),
                // Serve with the workers we have; with none, report the error.
                Err(e) if state.threads.is_empty() => return Err(e),
                Err(e) => {
                    log::warn!("pool started {n} of {} workers: {e}", self.workers);
                    break;
                }
            }
        }
        state.sender = Some(sender.clone());
        Ok(sender)
    }
}

fn work(jobs: Receiver<Job>) {
    for job in jobs {
        // Jobs built by the server catch their own panics; this keeps the worker alive
        // for jobs of custom code too.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| job.run()));
    }
}

impl Dispatch for Pool {
    fn execute(&self, job: Job) -> io::Result<()> {
        let sender = {
            let mut state = self.state.lock();
            match &state.sender {
                Some(sender) => sender.clone(),
                None => self.start(&mut state)?,
            }
        };
        sender.send(job).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the worker pool is closed"))
    }

    fn max_concurrent(&self) -> Option<usize> {
        Some(self.workers)
    }

    fn close(&self) {
        let threads = {
            let mut state = self.state.lock();
            state.sender = None; // disconnects the channel: idle workers return
            std::mem::take(&mut state.threads)
        };
        for thread in threads {
            let _ = thread.join();
        }
    }
}
