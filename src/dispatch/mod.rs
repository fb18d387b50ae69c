//! Dispatch modes: where each request runs (Python's mix-ins).
//!
//! - [`Sequential`]: inline, in the serve loop, one at a time (Python's plain `TCPServer`).
//! - [`Threading`]: a thread per request (`ThreadingMixIn`).
//! - [`Pool`]: a fixed set of worker threads, each receiving and running requests (no
//!   Python equivalent).
//!
//! All three implement the public [`Dispatch`] trait, and so can a mode of your own. The
//! serve loop, not the mode, enforces [`Dispatch::max_concurrent`]: when that many
//! requests are running it stops accepting until one ends, so excess connections wait
//! in the kernel's backlog instead of in an unbounded queue in memory.
//!
//! The trait is what a mode of your own needs: run a job, say how many may run at once,
//! close. How the built-in modes drive the serve loop (a sequential server runs the
//! request on the loop's thread; a pool runs one serve loop per worker) is the crate's
//! own business, so that it can change without a breaking change: a mode written
//! against this trait is served by one serve loop that passes each request to
//! [`Dispatch::execute`].

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

/// Decides where requests run. Implemented by [`Sequential`], [`Threading`] and [`Pool`].
///
/// # Examples
///
/// A mode that runs every request on a new, unnamed thread, and counts them:
///
/// ```
/// use std::io::{self, Read, Write};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use socketserver::dispatch::{Dispatch, Job};
/// use socketserver::TcpServer;
///
/// #[derive(Default)]
/// struct Spawn {
///     started: AtomicUsize,
/// }
///
/// impl Dispatch for Spawn {
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
pub trait Dispatch: Send + Sync + 'static {
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

    /// Which built-in mode this is, for the engine alone: the return type cannot be
    /// named outside the crate, so a mode of your own keeps the default.
    #[doc(hidden)]
    fn flavor(&self) -> Flavor<'_> {
        Flavor(Kind::Custom)
    }
}

mod flavor {
    /// Which built-in mode a [`Dispatch`](super::Dispatch) is. Public only in name: it
    /// lives in a private module, so no code outside the crate can name, build or look
    /// into it (the way crossbeam-channel hides its flavors behind one `Sender`).
    #[derive(Clone, Copy)]
    pub struct Flavor<'a>(pub(crate) super::Kind<'a>);

    impl std::fmt::Debug for Flavor<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Flavor")
        }
    }
}

use flavor::Flavor;

/// The built-in modes the engine drives in its own way, and everything else.
#[derive(Clone, Copy)]
pub(crate) enum Kind<'a> {
    /// Any mode that only runs jobs ([`Threading`] among them): one serve loop passes
    /// each request to `execute`.
    Custom,
    /// The serve loop runs each request itself, with no job to box.
    Sequential,
    /// As `Custom`, but `serve_forever` may not wait for the requests.
    Threading(&'a Threading),
    /// One serve loop per worker, each running what it received.
    Pool(&'a Pool),
}

impl Kind<'_> {
    pub(crate) fn of(dispatch: &dyn Dispatch) -> Kind<'_> {
        dispatch.flavor().0
    }

    /// Whether a serve call waits for the requests it started before it returns.
    pub(crate) fn waits_for_requests(self) -> bool {
        match self {
            Kind::Threading(threading) => threading.joins_threads(),
            _ => true,
        }
    }
}

impl<D: Dispatch + ?Sized> Dispatch for Box<D> {
    fn execute(&self, job: Job) -> io::Result<()> {
        (**self).execute(job)
    }
    fn max_concurrent(&self) -> Option<usize> {
        (**self).max_concurrent()
    }
    fn close(&self) {
        (**self).close()
    }
    fn flavor(&self) -> Flavor<'_> {
        (**self).flavor()
    }
}

/// The default number of pool workers: the available CPUs, at least 2.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}
