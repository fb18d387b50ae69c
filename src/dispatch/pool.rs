use std::cell::Cell;
use std::fmt;
use std::io;
use std::thread;

use super::{default_workers, Dispatch, Job, Threading};

thread_local! {
    /// The pool whose serve loop this thread runs, if any.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

/// Runs requests on a fixed set of worker threads, each of which receives requests
/// itself.
///
/// Every worker runs the serve loop: it waits in `accept` (or `recvfrom`) on the shared
/// socket and runs the request it got, then waits again. The kernel hands each
/// connection or datagram straight to an idle worker, so there is no queue and no
/// handoff between threads, which is what a hand-written pool does and what makes this
/// mode as fast as one. At most `workers` requests run at once; with every worker busy
/// nobody accepts, so further connections wait in the kernel backlog, not in memory.
/// A request that panics does not cost a worker. If some workers cannot be started
/// (thread limits), the pool serves with those that did, and if none did, on the thread
/// that called `serve_forever`; either way a warning is logged.
///
/// Workers start when `serve_forever` starts and are joined before it returns. A request
/// that comes from outside the workers, through
/// [`handle_request`](crate::Server::handle_request), runs on a thread of its own (at
/// most `workers` at once, reused as [`Threading`] does) and `handle_request` returns at
/// once.
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
    /// Runs requests that arrive from outside the workers (`handle_request`).
    outside: Threading,
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
        let name = "socketserver-worker".to_string();
        let outside = Threading::new().max_threads(workers).thread_name(outside_name(&name));
        Pool { workers, name, stack_size: None, outside }
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The name prefix of worker threads; each is named `NAME-N`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Pool {
        self.name = name.into();
        self.outside = self.outside.thread_name(outside_name(&self.name));
        self
    }

    /// The stack size of worker threads, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Pool {
        self.stack_size = Some(bytes);
        self.outside = self.outside.stack_size(bytes);
        self
    }

    fn id(&self) -> usize {
        self as *const Pool as usize
    }
}

/// Threads that run `handle_request`'s requests are `NAME-h-N`, apart from the workers.
fn outside_name(name: &str) -> String {
    format!("{name}-h")
}

impl Dispatch for Pool {
    /// Runs the request on the worker that received it, or for `handle_request` on a
    /// thread of its own.
    fn execute(&self, job: Job) -> io::Result<()> {
        if WORKER_OF.with(Cell::get) == self.id() {
            job.run();
            Ok(())
        } else {
            self.outside.execute(job)
        }
    }

    fn max_concurrent(&self) -> Option<usize> {
        Some(self.workers)
    }

    fn run_serve_loop(&self, serve_loop: &(dyn Fn() + Sync), supervise: &dyn Fn()) {
        let id = self.id();
        let work = move || {
            WORKER_OF.with(|w| w.set(id));
            serve_loop();
        };
        thread::scope(|scope| {
            let mut started = 0;
            for n in 0..self.workers {
                let mut builder = thread::Builder::new().name(format!("{}-{n}", self.name));
                if let Some(size) = self.stack_size {
                    builder = builder.stack_size(size);
                }
                match builder.spawn_scoped(scope, work) {
                    Ok(_) => started += 1,
                    Err(e) => {
                        log::warn!("pool started {started} of {} workers: {e}", self.workers);
                        break;
                    }
                }
            }
            if started == 0 {
                // Not one thread could be created: serve on this one rather than not at all.
                struct Restore;
                impl Drop for Restore {
                    fn drop(&mut self) {
                        WORKER_OF.with(|w| w.set(0)); // also if the loop unwinds
                    }
                }
                let _restore = Restore;
                work();
            } else {
                supervise();
            }
        });
    }

    fn close(&self) {
        self.outside.close();
    }
}
