use std::fmt;
use std::thread;

use super::{default_workers, Threading};

/// Runs requests on a fixed set of worker threads, each of which receives requests
/// itself.
///
/// Every worker runs the serve loop: the free workers take turns to wait in the
/// server's poller, and the one that receives a connection (or a datagram, or a parked
/// connection's next message) runs it itself, while another free worker waits in the
/// poller meanwhile. There is no queue of new connections and no handoff of one between
/// threads, which is what makes this mode as fast as a hand-written pool. At most
/// `workers` requests run at once; with every worker busy nobody accepts, so further
/// connections wait in the kernel backlog, not in memory. A worker busy with one
/// exchange holds only that one: the connections [parked](crate::StreamRequest::park)
/// between messages are served by whichever worker is free.
/// With [`refuse_when_full`](crate::Builder::refuse_when_full) the pool keeps one serve
/// loop more, which refuses them instead.
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
/// use socketserver::{dispatch::Pool, TcpServer};
///
/// let server = TcpServer::builder("127.0.0.1:0")
///     .dispatch(Pool::new(8).thread_name("kv-worker"))
///     .bind(|req| { req.writer().write_all(b"ok")?; Ok(()) })?;
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

    /// A builder for worker `n`'s thread: its name and stack size.
    pub(crate) fn worker(&self, n: usize) -> thread::Builder {
        let builder = thread::Builder::new().name(format!("{}-{n}", self.name));
        match self.stack_size {
            Some(size) => builder.stack_size(size),
            None => builder,
        }
    }

    /// Where requests that arrive from outside the workers run: the engine runs a
    /// request a worker received on that worker itself, so only requests from
    /// `handle_request` or `process_request` come here, each on a thread of its own.
    pub(crate) fn outside(&self) -> &Threading {
        &self.outside
    }
}

/// Threads that run `handle_request`'s requests are `NAME-h-N`, apart from the workers.
fn outside_name(name: &str) -> String {
    format!("{name}-h")
}
