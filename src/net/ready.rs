//! Waiting for a server socket: the one wake-up mechanism on every platform.
//!
//! Each serve loop (one per pool worker) has a [`Readiness`]: a `polling::Poller`
//! (epoll, kqueue or IOCP) with the server socket in it. The loop receives without
//! blocking and, when nothing is there, waits until the socket is readable or the
//! server's [`Waker`] fires; a shutdown fires every loop's waker. An idle loop sleeps in
//! the kernel with no timeout, so an idle server makes no wakeups; under load the loop
//! finds work on every try and never waits at all.
//!
//! A poller per loop, not one shared: `polling` lets one thread wait on a poller at a
//! time (a second one returns at once, which would spin), and every worker must wake on
//! shutdown. The socket is watched in oneshot mode, re-armed before each wait.
//!
//! The pollers are made when the server is built ([`Pollers`]) and lent to each serve
//! loop, so that serving never needs a new descriptor: a server started in a process
//! out of descriptors still serves, and backs off until some are free.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use polling::{Event, Events, Poller};
use socket2::SockRef;

use super::Endpoint;

/// The key of the server socket in a poller.
const SOCKET: usize = 0;

/// The server's idle pollers, one per serve loop it runs at once.
#[derive(Debug)]
pub(crate) struct Pollers(Mutex<Vec<Arc<Poller>>>);

impl Pollers {
    /// `n` pollers, made now.
    pub(crate) fn new(n: usize) -> io::Result<Pollers> {
        let pollers = (0..n).map(|_| Poller::new().map(Arc::new)).collect::<io::Result<_>>()?;
        Ok(Pollers(Mutex::new(pollers)))
    }

    /// A poller with `endpoint`'s socket in it, for one serve loop: an idle one, or a new
    /// one if every one is lent (a pool that had to serve on fewer threads, say).
    pub(crate) fn readiness<'a>(&'a self, endpoint: &'a Endpoint) -> io::Result<Readiness<'a>> {
        let socket = endpoint
            .sock()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "an in-memory socket cannot serve"))?;
        let idle = self.0.lock().pop();
        let poller = match idle {
            Some(poller) => poller,
            None => Arc::new(Poller::new()?),
        };
        if let Err(e) = add(&poller, &socket) {
            self.0.lock().push(poller);
            return Err(e);
        }
        Ok(Readiness { pollers: self, poller, events: Events::new(), socket })
    }
}

/// A serve loop's view of its server socket's readiness.
pub(crate) struct Readiness<'a> {
    pollers: &'a Pollers,
    poller: Arc<Poller>,
    events: Events,
    socket: SockRef<'a>,
}

/// Wakes the [`Readiness::wait`] of one serve loop, from any thread; a wake before the
/// wait makes the next wait return at once.
#[derive(Clone)]
pub(crate) struct Waker(Arc<Poller>);

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waker")
    }
}

impl Waker {
    pub(crate) fn wake(&self) {
        // Fails only if the poller's own wake-up descriptor is broken; the loop then
        // finds the stop flag at its next request.
        let _ = self.0.notify();
    }
}

impl Readiness<'_> {
    pub(crate) fn waker(&self) -> Waker {
        Waker(self.poller.clone())
    }

    /// The socket waited for.
    pub(crate) fn socket(&self) -> &SockRef<'_> {
        &self.socket
    }

    /// Waits until the socket is readable, the waker fires, or `deadline` passes.
    /// Returns whether the socket was reported readable.
    pub(crate) fn wait(&mut self, deadline: Option<Instant>) -> io::Result<bool> {
        self.poller.modify(&*self.socket, Event::readable(SOCKET))?;
        self.events.clear();
        match deadline {
            Some(deadline) => self.poller.wait_deadline(&mut self.events, deadline)?,
            None => self.poller.wait(&mut self.events, None)?,
        };
        Ok(self.events.iter().any(|event| event.key == SOCKET))
    }
}

impl Drop for Readiness<'_> {
    fn drop(&mut self) {
        let _ = self.poller.delete(&*self.socket);
        self.pollers.0.lock().push(self.poller.clone());
    }
}

/// Puts `socket` in `poller`, watched for nothing until the first wait arms it.
///
/// `Poller::add` is unsafe because the poller must forget a socket before the socket is
/// closed. This is the crate's second `unsafe` call (the first takes systemd's sockets).
#[allow(unsafe_code)]
fn add(poller: &Poller, socket: &SockRef<'_>) -> io::Result<()> {
    // SAFETY: the socket is borrowed from the endpoint for the lifetime of the
    // `Readiness` that holds this poller, and `Readiness::drop` deletes it from the
    // poller before that borrow ends, so the poller never holds a closed socket. A
    // `Waker` may outlive the `Readiness`, but it only notifies the poller, which by then
    // holds no socket of this one.
    unsafe { poller.add(&**socket, Event::none(SOCKET)) }
}
