use std::fmt;
use std::io;

use super::{Executor, Job};

/// Runs requests on a `threadpool::ThreadPool` you already own (feature `threadpool`).
///
/// The server stops accepting while `max_count()` requests are running, so the pool's
/// unbounded queue never grows; closing the server waits for the pool's jobs with
/// `ThreadPool::join`. Prefer [`Pool`](super::Pool) unless you share the pool with
/// other work.
pub struct ThreadPoolDispatch {
    pool: threadpool::ThreadPool,
}

impl ThreadPoolDispatch {
    /// Serves through `pool`.
    pub fn new(pool: threadpool::ThreadPool) -> Self {
        ThreadPoolDispatch { pool }
    }
}

impl fmt::Debug for ThreadPoolDispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolDispatch").field("max_count", &self.pool.max_count()).finish()
    }
}

impl Executor for ThreadPoolDispatch {
    fn execute(&self, job: Job) -> io::Result<()> {
        self.pool.execute(move || job.run());
        Ok(())
    }

    fn max_concurrent(&self) -> Option<usize> {
        Some(self.pool.max_count())
    }

    fn close(&self) {
        self.pool.join();
    }
}
