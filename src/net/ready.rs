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
//!
//! A poller also holds the connections parked on its loop ([`Registration`]): the loop
//! waits for the server socket and for them at once, and what else a [`Station`] keeps
//! for its loop (the parked requests themselves) is the engine's.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use polling::{Event, Events, Poller};
use socket2::SockRef;

use super::{Connection, Endpoint};

/// The key of the server socket in a poller; a registered connection's is its key + 1.
const SOCKET: usize = 0;

/// A poller and what its serve loop keeps beside it (`P`), lent to one loop at a time.
pub(crate) struct Station<P> {
    poller: Arc<Poller>,
    state: P,
}

impl<P> fmt::Debug for Station<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Station")
    }
}

impl<P> Station<P> {
    /// What the loop keeps beside its poller.
    pub(crate) fn state(&self) -> &P {
        &self.state
    }

    /// Makes the loop's wait (running now or next) return, from any thread.
    pub(crate) fn wake(&self) {
        // Fails only if the poller's own wake-up descriptor is broken; the loop then
        // finds the change at its next request.
        let _ = self.poller.notify();
    }

    /// Puts `connection` in this poller under `key`, watched for nothing until
    /// [`Registration::arm`]. `None` for an in-memory connection, which has no socket.
    pub(crate) fn register(&self, key: usize, connection: &Arc<Connection>) -> io::Result<Option<Registration>> {
        let Some(socket) = connection.sock() else { return Ok(None) };
        add(&self.poller, &socket, key + 1)?;
        Ok(Some(Registration { poller: self.poller.clone(), key, connection: connection.clone() }))
    }
}

/// A connection in a loop's poller, removed from it when dropped. It holds the
/// connection, so the socket is still open when the poller forgets it.
pub(crate) struct Registration {
    poller: Arc<Poller>,
    key: usize,
    connection: Arc<Connection>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration").field("key", &self.key).finish()
    }
}

impl Registration {
    /// The key the loop's wait reports it under.
    pub(crate) fn key(&self) -> usize {
        self.key
    }

    /// Asks the poller for one readiness event: the next bytes, the end of the stream,
    /// or an error. Oneshot: armed again for each wait.
    pub(crate) fn arm(&self) -> io::Result<()> {
        let socket = self.connection.sock().expect("a registered connection has a socket");
        self.poller.modify(&*socket, Event::readable(self.key + 1))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(socket) = self.connection.sock() {
            let _ = self.poller.delete(&*socket);
        }
    }
}

/// The server's pollers, one per serve loop it runs at once.
pub(crate) struct Pollers<P> {
    idle: Mutex<Vec<Arc<Station<P>>>>,
    /// Every station made, lent or idle.
    all: Mutex<Vec<Arc<Station<P>>>>,
}

impl<P> fmt::Debug for Pollers<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pollers").field("made", &self.all.lock().len()).finish()
    }
}

impl<P: Default> Pollers<P> {
    /// `n` pollers, made now.
    pub(crate) fn new(n: usize) -> io::Result<Pollers<P>> {
        let stations: Vec<_> = (0..n).map(|_| Station::new()).collect::<io::Result<_>>()?;
        Ok(Pollers { idle: Mutex::new(stations.clone()), all: Mutex::new(stations) })
    }

    /// A poller with `endpoint`'s socket in it, for one serve loop: an idle one, or a new
    /// one if every one is lent (a pool that had to serve on fewer threads, say).
    pub(crate) fn readiness<'a>(&'a self, endpoint: &'a Endpoint) -> io::Result<Readiness<'a, P>> {
        let socket = endpoint
            .sock()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "an in-memory socket cannot serve"))?;
        let idle = self.idle.lock().pop();
        let station = match idle {
            Some(station) => station,
            None => {
                let station = Station::new()?;
                self.all.lock().push(station.clone());
                station
            }
        };
        if let Err(e) = add(&station.poller, &socket, SOCKET) {
            self.idle.lock().push(station);
            return Err(e);
        }
        Ok(Readiness { pollers: self, station, events: Events::new(), socket })
    }
}

impl<P> Pollers<P> {
    /// Every station, lent or idle.
    pub(crate) fn all(&self) -> Vec<Arc<Station<P>>> {
        self.all.lock().clone()
    }
}

impl<P: Default> Station<P> {
    fn new() -> io::Result<Arc<Station<P>>> {
        Ok(Arc::new(Station { poller: Arc::new(Poller::new()?), state: P::default() }))
    }
}

/// A serve loop's view of its poller: the server socket and the connections parked on
/// the loop.
pub(crate) struct Readiness<'a, P> {
    pollers: &'a Pollers<P>,
    station: Arc<Station<P>>,
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
        // As `Station::wake`.
        let _ = self.0.notify();
    }
}

impl<P> Readiness<'_, P> {
    pub(crate) fn waker(&self) -> Waker {
        Waker(self.station.poller.clone())
    }

    /// The loop's station, which parked connections return to.
    pub(crate) fn station(&self) -> &Arc<Station<P>> {
        &self.station
    }

    /// The socket waited for.
    pub(crate) fn socket(&self) -> &SockRef<'_> {
        &self.socket
    }

    /// Waits until the server socket is readable (when `listen`; a loop at its
    /// connection limit waits for its parked connections alone), a registered connection
    /// is, the waker fires, or `deadline` passes. Returns whether the socket was reported
    /// readable, and puts the keys of the connections reported in `connections`.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
        listen: bool,
        connections: &mut Vec<usize>,
    ) -> io::Result<bool> {
        let interest = if listen { Event::readable(SOCKET) } else { Event::none(SOCKET) };
        self.station.poller.modify(&*self.socket, interest)?;
        self.events.clear();
        match deadline {
            Some(deadline) => self.station.poller.wait_deadline(&mut self.events, deadline)?,
            None => self.station.poller.wait(&mut self.events, None)?,
        };
        let mut socket = false;
        for event in self.events.iter() {
            match event.key {
                SOCKET => socket = true,
                key => connections.push(key - 1),
            }
        }
        Ok(socket)
    }
}

impl<P> Drop for Readiness<'_, P> {
    fn drop(&mut self) {
        let _ = self.station.poller.delete(&*self.socket);
        self.pollers.idle.lock().push(self.station.clone());
    }
}

/// Puts `socket` in `poller` under `key`, watched for nothing until a wait or `arm`
/// asks for readiness.
///
/// `Poller::add` is unsafe because the poller must forget a socket before the socket is
/// closed. This is the crate's second `unsafe` call (the first takes systemd's sockets).
#[allow(unsafe_code)]
fn add(poller: &Poller, socket: &SockRef<'_>, key: usize) -> io::Result<()> {
    // SAFETY: two kinds of socket are added. The server socket is borrowed from the
    // endpoint for the lifetime of the `Readiness` that holds this poller, and
    // `Readiness::drop` deletes it before that borrow ends. A connection is added only
    // by `Station::register`, whose `Registration` owns an `Arc` of the connection and
    // deletes the socket in its `drop`, before that `Arc` (and so the socket) can go.
    // A `Waker` may outlive both, but it only notifies the poller.
    unsafe { poller.add(&**socket, Event::none(key)) }
}
