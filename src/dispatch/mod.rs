//! Dispatch modes: where each request runs (Python's mix-ins).
//!
//! - [`Sequential`]: inline, in the serve loop, one at a time (Python's plain `TCPServer`).
//! - [`Threading`]: a thread per request (`ThreadingMixIn`).
//! - [`Pool`]: a fixed set of worker threads, each receiving and running requests (no
//!   Python equivalent).
//! - An [`Executor`] of your own: anything that can run a job.
//!
//! [`Builder::dispatch`](crate::Builder::dispatch) takes any of them as a [`Dispatch`],
//! the one type the server keeps. The serve loop, not the mode, enforces the mode's
//! limit ([`Executor::max_concurrent`] for your own): when that many requests are
//! running it stops accepting until one ends, so excess connections wait in the
//! kernel's backlog instead of in an unbounded queue in memory.
//!
//! `Dispatch` is a public type over a private choice of strategy, the way
//! crossbeam-channel's one `Sender` hides its flavors: how the built-in modes drive the
//! serve loop (a sequential server runs the request on the loop's thread; a pool runs
//! one serve loop per worker) is the crate's own business and can change without a
//! breaking change. The [`Executor`] trait is what a mode of your own needs and all it
//! is asked for: run a job, say how many may run at once, close. One serve loop passes
//! each request to [`Executor::execute`].

use std::fmt;
use std::io;

mod pool;
mod sequential;
#[cfg(feature = "threadpool")]
mod thread_pool;
mod threading;

pub use pool::Pool;
pub use sequential::Sequential;
#[cfg(feature = "threadpool")]
pub use thread_pool::ThreadPoolDispatch;
pub use threading::{Threading, DEFAULT_KEEP_ALIVE};

/// One request, ready to run: call [`Job::run`] on any thread.
///
/// A job never panics: the server catches a handler's panic inside the job and reports
/// it through `handle_error`, so a worker thread that runs jobs never unwinds. Dropping a
/// job without running it closes its connection.
pub struct Job(Box<dyn FnOnce() + Send + 'static>);

impl Job {
    /// Wraps a closure. The server builds jobs; this is public for tests of custom modes.
    pub fn new(f: impl FnOnce() + Send + 'static) -> Job {
        Job(Box::new(f))
    }

    /// Runs the job on this thread: a new request's `setup` and first exchange, a parked
    /// connection's next exchange, or a connection's end (`finish`, then close). It
    /// returns when the exchange is over: the connection has ended, or it has
    /// [parked](crate::StreamRequest::park) again and waits in the server's poller with
    /// no thread.
    pub fn run(self) {
        (self.0)()
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}

/// Where a server's requests run: the one type [`Builder::dispatch`](crate::Builder::dispatch)
/// keeps, over a private choice of strategy.
///
/// Build it from a mode: [`Sequential`], [`Threading`], [`Pool`] or an [`Executor`] of
/// your own all convert into it, so `.dispatch(Pool::new(4))` needs no conversion;
/// the constructors below say the same in one word. A `Dispatch` chosen at run time is
/// a plain value:
///
/// ```
/// use socketserver::dispatch::{Dispatch, Pool, Threading};
///
/// let mode = "pool";
/// let dispatch: Dispatch = match mode {
///     "threading" => Threading::new().max_threads(64).into(),
///     "pool" => Pool::new(4).into(),
///     _ => Dispatch::sequential(),
/// };
/// assert_eq!(dispatch.max_concurrent(), Some(4));
/// ```
pub struct Dispatch(Flavor);

/// The built-in modes, which the engine drives each in its own way, and everything else.
enum Flavor {
    /// The serve loop runs each request itself, with no job to box.
    Sequential,
    /// One serve loop passes each request to a thread of its own; `serve_forever` may
    /// not wait for them.
    Threading(Threading),
    /// One serve loop per worker, each running what it received.
    Pool(Pool),
    /// A mode of the user's: one serve loop passes each request to `execute`.
    Custom(Box<dyn Executor>),
}

impl Dispatch {
    /// Each request inline in the serve loop, one at a time: [`Sequential`], the default.
    pub fn sequential() -> Dispatch {
        Dispatch(Flavor::Sequential)
    }

    /// A thread per request with [`Threading`]'s defaults (no limit; configure a
    /// [`Threading`] and convert it for more).
    pub fn threading() -> Dispatch {
        Dispatch(Flavor::Threading(Threading::new()))
    }

    /// A [`Pool`] of `workers` threads.
    ///
    /// # Panics
    /// Panics if `workers` is zero.
    pub fn pool(workers: usize) -> Dispatch {
        Dispatch(Flavor::Pool(Pool::new(workers)))
    }

    /// A mode of your own (what `.into()` on an [`Executor`] gives too).
    pub fn custom(executor: impl Executor) -> Dispatch {
        Dispatch(Flavor::Custom(Box::new(executor)))
    }

    /// The most requests this mode runs at once; `None` means no limit. The serve loop
    /// stops accepting while that many are running.
    pub fn max_concurrent(&self) -> Option<usize> {
        match &self.0 {
            Flavor::Sequential => Some(1),
            Flavor::Threading(threading) => threading.thread_limit(),
            Flavor::Pool(pool) => Some(pool.workers()),
            Flavor::Custom(executor) => executor.max_concurrent(),
        }
    }

    /// Runs `job` on this thread (sequential) or where the mode runs requests. A pool
    /// runs here only what did not arrive through its workers (`handle_request`,
    /// `process_request`), on threads of its own.
    pub(crate) fn execute(&self, job: Job) -> io::Result<()> {
        match &self.0 {
            Flavor::Sequential => {
                job.run();
                Ok(())
            }
            Flavor::Threading(threading) => threading.execute(job),
            Flavor::Pool(pool) => pool.outside().execute(job),
            Flavor::Custom(executor) => executor.execute(job),
        }
    }

    /// Joins the threads the mode started, once its requests have ended.
    pub(crate) fn close(&self) {
        match &self.0 {
            Flavor::Sequential => {}
            Flavor::Threading(threading) => threading.close(),
            Flavor::Pool(pool) => pool.outside().close(),
            Flavor::Custom(executor) => executor.close(),
        }
    }

    /// Whether a serve call waits for the requests it started before it returns.
    pub(crate) fn waits_for_requests(&self) -> bool {
        match &self.0 {
            Flavor::Threading(threading) => threading.joins_threads(),
            _ => true,
        }
    }

    /// Whether the serve loop runs each request itself.
    pub(crate) fn is_sequential(&self) -> bool {
        matches!(self.0, Flavor::Sequential)
    }

    /// The pool, if requests run on one serve loop per worker.
    pub(crate) fn as_pool(&self) -> Option<&Pool> {
        match &self.0 {
            Flavor::Pool(pool) => Some(pool),
            _ => None,
        }
    }
}

impl Default for Dispatch {
    /// [`Dispatch::sequential`], as Python's plain servers.
    fn default() -> Self {
        Dispatch::sequential()
    }
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Flavor::Sequential => f.write_str("Sequential"),
            Flavor::Threading(threading) => threading.fmt(f),
            Flavor::Pool(pool) => pool.fmt(f),
            Flavor::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl From<Sequential> for Dispatch {
    fn from(_: Sequential) -> Dispatch {
        Dispatch::sequential()
    }
}

impl From<Threading> for Dispatch {
    fn from(threading: Threading) -> Dispatch {
        Dispatch(Flavor::Threading(threading))
    }
}

impl From<Pool> for Dispatch {
    fn from(pool: Pool) -> Dispatch {
        Dispatch(Flavor::Pool(pool))
    }
}

impl<E: Executor> From<E> for Dispatch {
    fn from(executor: E) -> Dispatch {
        Dispatch::custom(executor)
    }
}

/// A dispatch mode of your own: runs the jobs the serve loop gives it.
///
/// # Examples
///
/// A mode that runs every request on a new, unnamed thread, and counts them:
///
/// ```
/// use std::io::{self, Read, Write};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use socketserver::dispatch::{Executor, Job};
/// use socketserver::TcpServer;
///
/// #[derive(Default)]
/// struct Spawn {
///     started: AtomicUsize,
/// }
///
/// impl Executor for Spawn {
///     fn execute(&self, job: Job) -> io::Result<()> {
///         self.started.fetch_add(1, Ordering::Relaxed);
///         std::thread::Builder::new().spawn(move || job.run()).map(drop)
///     }
/// }
///
/// let server = TcpServer::builder("127.0.0.1:0")
///     .dispatch(Spawn::default())
///     .bind(|req| { req.writer().write_all(b"hi")?; Ok(()) })?;
/// let addr = server.local_addr();
/// let background = server.serve_in_background()?;
/// let mut reply = String::new();
/// std::net::TcpStream::connect(addr)?.read_to_string(&mut reply)?;
/// assert_eq!(reply, "hi");
/// background.stop()?;
/// # Ok::<(), socketserver::Error>(())
/// ```
pub trait Executor: Send + Sync + 'static {
    /// Runs `job`, inline or elsewhere. On error the job is dropped, which closes its
    /// connection; the server reports the error through `handle_error`.
    fn execute(&self, job: Job) -> io::Result<()>;

    /// The most requests this mode runs at once. The serve loop stops accepting while
    /// that many are running. `None` (the default) means no limit.
    fn max_concurrent(&self) -> Option<usize> {
        None
    }

    /// Called when the server closes, once running requests have ended: join the
    /// threads this mode started. Not called if requests are still running after the
    /// shutdown deadline (their threads are then left to end on their own).
    fn close(&self) {}
}

impl<E: Executor + ?Sized> Executor for Box<E> {
    fn execute(&self, job: Job) -> io::Result<()> {
        (**self).execute(job)
    }
    fn max_concurrent(&self) -> Option<usize> {
        (**self).max_concurrent()
    }
    fn close(&self) {
        (**self).close()
    }
}

/// The default number of pool workers: the available CPUs, at least 2.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}
