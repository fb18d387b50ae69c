use std::io;

use super::{Dispatch, Flavor, Job, Kind};

/// Runs each request inline in the serve loop, one at a time, as Python's plain
/// `TCPServer` and `UDPServer` do.
///
/// While a request runs, no other is accepted; new connections wait in the backlog.
/// Good for UDP servers with short handlers, for teaching, and for tests that want a
/// strict order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl Dispatch for Sequential {
    fn execute(&self, job: Job) -> io::Result<()> {
        job.run();
        Ok(())
    }

    fn max_concurrent(&self) -> Option<usize> {
        Some(1)
    }

    fn flavor(&self) -> Flavor<'_> {
        Flavor(Kind::Sequential)
    }
}
