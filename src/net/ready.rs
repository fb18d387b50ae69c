//! Waiting for sockets: the one wake-up mechanism on every platform.
//!
//! A server has one [`Station`]: a `polling::Poller` (epoll, kqueue or IOCP) made when
//! the server is built, so that serving never needs a new descriptor (a server started
//! in a process out of descriptors still serves, and backs off until some are free).
//! A serve call puts its server socket in it ([`Station::readiness`]); a connection
//! that parks between two exchanges is put in it too ([`Station::register`]). Sockets are
//! watched in oneshot mode (one event, then nothing until armed again, so an event goes
//! to one thread), except parked TCP connections where the platform can report the end
//! of a stream apart from the bytes (`crate::sys::EndWatch`, Linux): those stay watched
//! edge-triggered, each arrival of bytes is one event, and a
//! connection that parks again with its socket drained needs no system call
//! ([`Registration::watches`]).
//!
//! `polling` lets one thread wait on a poller at a time (a second wait returns at once),
//! so the engine lets one serve loop at a time hold the [`Readiness`] and wait, while
//! the other free loops wait for the work it finds (`crate::engine`'s hub). An idle
//! server sleeps in the kernel with no timeout, so it makes no wakeups; a [`Waker`]
//! (shutdown, a freed place) makes the wait return from any thread.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use polling::{AsSource, Event, Events, PollMode, Poller};
use socket2::SockRef;

use super::{Connection, Endpoint};
use crate::sys::{self, EndWatch};

/// The key of the server socket in a poller; a registered connection's is its key + 1.
const SOCKET: usize = 0;
/// The key of the [`EndWatch`] in the station's poller (`polling` keeps `usize::MAX`).
const ENDS: usize = usize::MAX - 1;

/// A poller and what its serve loop keeps beside it (`P`), lent to one loop at a time.
pub(crate) struct Station<P> {
    poller: Arc<Poller>,
    /// Where parked TCP connections' ends are reported, if the platform has one: then
    /// parked TCP connections are watched edge-triggered.
    ends: Option<Arc<EndWatch>>,
    /// Whether a loop is in (or entering) its wait, where an arm can be missed by a
    /// wait that begins as it is made (`sys::ARM_MAY_MISS_A_STARTING_WAIT`, Windows).
    /// A lock, not an atomic flag: an arm that finds it unset was queued before the
    /// next wait sets it, and so before that wait begins and starts what is queued.
    waiting: Mutex<bool>,
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
    /// [`Station::arm`]. `None` for an in-memory connection, which has no socket.
    ///
    /// Edge-triggered (see the module's doc) only a TCP connection, and only with an end
    /// watch. A Unix stream is armed oneshot at each park: its `recv` returns short with
    /// bytes still queued after a message that carries descriptors (`SCM_RIGHTS`), out-of-
    /// band data or credentials, so a short read does not prove it drained, and the bytes
    /// after would wait, unreported, for the idle timeout's look.
    pub(crate) fn register(&self, key: usize, connection: &Arc<Connection>) -> io::Result<Option<Registration>> {
        let Some(socket) = connection.sock() else { return Ok(None) };
        let ends = self.ends.clone().filter(|_| matches!(**connection, Connection::Tcp(_)));
        let mode = if ends.is_some() { PollMode::Edge } else { PollMode::Oneshot };
        add(&self.poller, &*socket, key + 1, mode)?;
        Ok(Some(Registration {
            poller: self.poller.clone(),
            key,
            connection: connection.clone(),
            watching: None,
            ends,
            end_watched: false,
        }))
    }

    /// Asks the poller for the readiness of a connection registered under `key`: its
    /// next bytes, the end of the stream, or an error (or, `writable`, room to send).
    /// The poller looks at the socket as it arms it, so what is there already is
    /// reported too (on Windows, as the next wait begins). Oneshot, one event per arm; `edge` (the connection's
    /// [`Registration::edge_triggered`]), an event for each arrival from now on. The
    /// caller holds the connection, so the socket is open while it is armed, even if the
    /// request has moved on meanwhile.
    pub(crate) fn arm(&self, connection: &Connection, key: usize, writable: bool, edge: bool) -> io::Result<()> {
        let socket = connection.sock().expect("a registered connection has a socket");
        let event = if writable { Event::writable(key + 1) } else { Event::readable(key + 1) };
        let mode = if edge { PollMode::Edge } else { PollMode::Oneshot };
        self.poller.modify_with_mode(&*socket, event, mode)?;
        if sys::ARM_MAY_MISS_A_STARTING_WAIT && *self.waiting.lock() {
            // The wait may have begun without this arm: it ends, and the next starts it.
            self.wake();
        }
        Ok(())
    }
}

impl<P> Drop for Station<P> {
    fn drop(&mut self) {
        if let Some(ends) = &self.ends {
            let _ = self.poller.delete(ends.fd());
        }
    }
}

/// A connection in a loop's poller, removed from it when dropped. It holds the
/// connection, so the socket is still open when the poller forgets it.
pub(crate) struct Registration {
    poller: Arc<Poller>,
    key: usize,
    connection: Arc<Connection>,
    /// What the poller watches the socket for, edge-triggered: `Some(true)` room to send,
    /// `Some(false)` bytes; `None` nothing yet (or oneshot, where every park arms).
    watching: Option<bool>,
    /// The station's end watch, if it has one (edge-triggered parking).
    ends: Option<Arc<EndWatch>>,
    /// The socket is in the end watch.
    end_watched: bool,
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

    /// Whether the socket stays in the poller edge-triggered ([`Station::register`]):
    /// then [`Station::arm`] is called under the lot's lock (`crate::engine`'s
    /// `Lot::park` says why).
    pub(crate) fn edge_triggered(&self) -> bool {
        self.ends.is_some()
    }

    /// Whether the poller already watches the socket for what a park now waits for
    /// (`writable`: room to send; else bytes), so that the park needs no
    /// [`Station::arm`], and notes that it does from now on.
    ///
    /// Only edge-triggered, and only if `drained`: the last read took all the socket had
    /// (a read that returned less than it asked for, or found nothing), or, for room,
    /// the last send found the buffer full. An edge-triggered poller reports what
    /// *arrives*: after a read that drained the socket, every byte that arrives is
    /// reported, while the connection runs (the lot notes it, and the park arms the
    /// socket after all) or once it has parked (the event takes it out). Bytes left
    /// unread by a read that filled its buffer would wait for the next arrival, so
    /// without `drained`, or watched for the other direction, the park arms the socket
    /// again, and arming looks at what is there already. (A handler that reads the
    /// socket past the reader only takes bytes: it cannot leave any unreported. Except
    /// urgent data read out of band, `MSG_OOB`: see [`Reported::urgent`].)
    ///
    /// A short read cannot say whether the client's end of stream came with its last
    /// bytes, reported in the same event: the first park without arming puts the socket
    /// in the [`EndWatch`] too, which reports the end apart (at once, if it came
    /// already). If that fails, the park arms. Nor can it say whether it stopped at urgent
    /// data's mark with bytes still queued: the event says that ([`Reported::urgent`]),
    /// and the lot makes that park arm.
    pub(crate) fn watches(&mut self, writable: bool, drained: bool) -> bool {
        let Some(ends) = &self.ends else { return false };
        let same = self.watching == Some(writable);
        self.watching = Some(writable);
        if !(same && drained) {
            return false;
        }
        if !self.end_watched {
            let socket = self.connection.sock().expect("a registered connection has a socket");
            if ends.add(&socket, self.key).is_err() {
                return false;
            }
            self.end_watched = true;
        }
        true
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(socket) = self.connection.sock() {
            let _ = self.poller.delete(&*socket);
            if let (Some(ends), true) = (&self.ends, self.end_watched) {
                ends.delete(&socket);
            }
        }
    }
}

impl<P: Default> Station<P> {
    /// A station with a new poller, and `P`'s default beside it.
    pub(crate) fn new() -> io::Result<Arc<Station<P>>> {
        let poller = Arc::new(Poller::new()?);
        // Without an end watch (none on this platform, or it could not be made or
        // watched), parked connections are armed at each park.
        let ends = EndWatch::new().ok().filter(|ends| {
            add(&poller, &ends.fd(), ENDS, PollMode::Level)
                .and_then(|()| poller.modify_with_mode(ends.fd(), Event::readable(ENDS), PollMode::Level))
                .is_ok()
        });
        Ok(Arc::new(Station { poller, ends: ends.map(Arc::new), waiting: Mutex::new(false), state: P::default() }))
    }
}

impl<P> Station<P> {
    /// Puts `endpoint`'s socket in the poller, for one serve call: the [`Readiness`]
    /// that the serve call's loops take turns to wait on.
    pub(crate) fn readiness<'a>(&'a self, endpoint: &'a Endpoint) -> io::Result<Readiness<'a>> {
        let socket = endpoint
            .sock()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "an in-memory socket cannot serve"))?;
        add(&self.poller, &*socket, SOCKET, PollMode::Oneshot)?;
        Ok(Readiness {
            poller: &self.poller,
            ends: self.ends.as_deref(),
            waiting: &self.waiting,
            events: Events::new(),
            socket,
            // `add` registers it with no interest.
            armed: Some(false),
        })
    }

    /// A waker that makes the poller's wait (running now or next) return, then calls
    /// `also` (which wakes the loops that wait for work rather than in the poller).
    pub(crate) fn waker(&self, also: impl Fn() + Send + Sync + 'static) -> Waker {
        Waker { poller: self.poller.clone(), also: Arc::new(also) }
    }
}

/// The server socket of one serve call in the station's poller, and the buffer its
/// events arrive in: held by one serve loop at a time, the one that waits.
pub(crate) struct Readiness<'a> {
    poller: &'a Poller,
    ends: Option<&'a EndWatch>,
    /// The station's [`Station::waiting`].
    waiting: &'a Mutex<bool>,
    events: Events,
    socket: SockRef<'a>,
    /// The interest the server socket is armed with (readable or none) that no event has
    /// used up yet: oneshot, it stays armed until reported, so a wait with the same
    /// interest arms nothing (one system call less per wait). `None`: unknown.
    armed: Option<bool>,
}

/// A registered connection that a wait reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reported {
    /// Its key ([`Station::register`]).
    pub(crate) key: usize,
    /// TCP urgent data (`MSG_OOB`) waits to be read, or did when the wait returned. A
    /// read stops short at its mark with the bytes after it still queued, so a short
    /// read does not prove the socket drained: the connection's next park arms it again
    /// ([`Registration::watches`]). Edge-triggered, the bytes after the mark would
    /// otherwise wait, unreported, for the next arrival or the idle timeout's look. It
    /// costs a connection that receives urgent data an arm or two and a spurious wake per
    /// urgent byte (Linux reports `EPOLLPRI` until a read passes the mark).
    ///
    /// The limit: a handler that reads the urgent byte itself, out of band (through
    /// `StreamRequest::connection`), clears `EPOLLPRI` while the mark still stops the
    /// next read short, and the message after the mark then waits for the idle
    /// timeout's look (for ever without an idle timeout). Only `TCP_INQ` would tell it
    /// from the read itself (`bench/results/engine-19.md`, seventh pass).
    pub(crate) urgent: bool,
}

impl Reported {
    /// A connection reported for its bytes or its end, with no urgent data.
    pub(crate) fn plain(key: usize) -> Reported {
        Reported { key, urgent: false }
    }
}

/// Wakes whoever waits for the server, from any thread; a wake before the wait makes
/// the next wait return at once.
#[derive(Clone)]
pub(crate) struct Waker {
    poller: Arc<Poller>,
    also: Arc<dyn Fn() + Send + Sync>,
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waker")
    }
}

impl Waker {
    /// Wakes the loop waiting in the poller and the others (a shutdown).
    pub(crate) fn wake(&self) {
        self.wake_poller();
        (self.also)();
    }

    /// Wakes only the loop waiting in the poller (a place under a limit was freed:
    /// that loop accepts, or runs what waits for room).
    pub(crate) fn wake_poller(&self) {
        // Fails only if the poller's own wake-up descriptor is broken; the loop then
        // finds the change at its next request.
        let _ = self.poller.notify();
    }
}

impl Readiness<'_> {
    /// The socket waited for.
    pub(crate) fn socket(&self) -> &SockRef<'_> {
        &self.socket
    }

    /// Whether the server socket is armed for reading and has not been reported since:
    /// then it has nothing to accept (or receive), or the next wait reports it at once.
    pub(crate) fn listening(&self) -> bool {
        self.armed == Some(true)
    }

    /// Waits until the server socket is readable (when `listen`; a loop at its
    /// connection limit, or backing off, waits for its parked connections alone), a
    /// registered connection is, the waker fires, or `deadline` passes. Returns whether
    /// the socket was reported readable, and puts the connections reported in
    /// `connections`.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
        listen: bool,
        connections: &mut Vec<Reported>,
    ) -> io::Result<bool> {
        if self.armed != Some(listen) {
            self.armed = None;
            let interest = if listen { Event::readable(SOCKET) } else { Event::none(SOCKET) };
            self.poller.modify(&*self.socket, interest)?;
            self.armed = Some(listen);
        }
        self.events.clear();
        if sys::ARM_MAY_MISS_A_STARTING_WAIT {
            *self.waiting.lock() = true;
        }
        let waited = match deadline {
            Some(deadline) => self.poller.wait_deadline(&mut self.events, deadline),
            None => self.poller.wait(&mut self.events, None),
        };
        if sys::ARM_MAY_MISS_A_STARTING_WAIT {
            *self.waiting.lock() = false;
        }
        waited?;
        let mut socket = false;
        for event in self.events.iter() {
            match event.key {
                SOCKET => {
                    socket = true;
                    self.armed = None;
                }
                // Connections whose end came: reported as readable (the read finds it).
                ENDS => {
                    if let Some(ends) = self.ends {
                        ends.drain(|key| connections.push(Reported::plain(key)));
                    }
                }
                // Urgent data waits: the poller says so with its bytes (`EPOLLPRI`).
                key => connections.push(Reported { key: key - 1, urgent: event.is_priority() }),
            }
        }
        Ok(socket)
    }
}

impl Drop for Readiness<'_> {
    fn drop(&mut self) {
        let _ = self.poller.delete(&*self.socket);
    }
}

/// Waits until `socket` has room to send, or `deadline` passes (`Ok(false)`): for a send
/// on a non-blocking socket that found its buffer full. A poller of its own, made for
/// this rare wait and dropped after it, so that the serve loop's poller and its one
/// waiter are left alone.
pub(crate) fn wait_writable(socket: &SockRef<'_>, deadline: Instant) -> io::Result<bool> {
    wait_once(socket, Event::writable(0), deadline)
}

/// Waits until `socket` has something to read (bytes, the end of the stream, or an
/// error), or `deadline` passes (`Ok(false)`): for the first bytes of a connection that
/// a stop caught before its first message. A poller of its own, made for this rare wait
/// and dropped after it, as [`wait_writable`].
pub(crate) fn wait_readable(socket: &SockRef<'_>, deadline: Instant) -> io::Result<bool> {
    wait_once(socket, Event::readable(0), deadline)
}

/// One wait for `socket`'s `interest` in a poller made for it and dropped after it:
/// whether the socket was reported before `deadline`.
fn wait_once(socket: &SockRef<'_>, interest: Event, deadline: Instant) -> io::Result<bool> {
    let poller = Poller::new()?;
    add(&poller, &**socket, 0, PollMode::Oneshot)?;
    let waited = poller.modify(&**socket, interest).and_then(|()| {
        let mut events = Events::new();
        poller.wait_deadline(&mut events, deadline).map(|_| events.iter().next().is_some())
    });
    let _ = poller.delete(&**socket);
    waited
}

/// Waits for several sockets at once, each until its own deadline: calls `readable(i)`
/// as soon as socket `i` has something to read (bytes, the end of the stream, or an
/// error), and returns the indexes of those whose deadline passed first. One poller of
/// its own for the whole wait, so that a stop that gives many new connections a moment
/// for their first bytes needs one descriptor and one thread for all of them, and
/// serves each as soon as it is ready.
pub(crate) fn wait_each_readable(
    sockets: &[SockRef<'_>],
    deadlines: &[Instant],
    mut readable: impl FnMut(usize),
) -> io::Result<Vec<usize>> {
    let poller = Poller::new()?;
    let mut pending = vec![false; sockets.len()];
    let mut added = 0;
    let result = (|| {
        for (i, socket) in sockets.iter().enumerate() {
            add(&poller, &**socket, i, PollMode::Oneshot)?;
            added += 1;
            poller.modify(&**socket, Event::readable(i))?;
            pending[i] = true;
        }
        let mut events = Events::new();
        let mut late = Vec::new();
        loop {
            let now = Instant::now();
            for (i, waiting) in pending.iter_mut().enumerate() {
                if *waiting && deadlines[i] <= now {
                    *waiting = false;
                    late.push(i);
                }
            }
            let Some(next) = (0..sockets.len()).filter(|&i| pending[i]).map(|i| deadlines[i]).min() else {
                return Ok(late);
            };
            events.clear();
            poller.wait_deadline(&mut events, next)?;
            for event in events.iter() {
                if pending.get(event.key).copied().unwrap_or(false) {
                    pending[event.key] = false;
                    readable(event.key);
                }
            }
        }
    })();
    for socket in &sockets[..added] {
        let _ = poller.delete(&**socket);
    }
    result
}

/// A poller of its own over the sockets it owns, for a loop that serves a few sockets
/// on one thread (the fault proxy of `testing`): the same mechanism as the serve loops',
/// without their sharing. Owning its sockets, it deletes each from the poller before the
/// socket can close, which is what makes adding one safe.
pub(crate) struct Watch<S: AsSource> {
    poller: Arc<Poller>,
    sockets: Vec<Option<S>>,
    events: Events,
}

impl<S: AsSource> fmt::Debug for Watch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").field("sockets", &self.sockets.iter().flatten().count()).finish()
    }
}

impl<S: AsSource> Watch<S> {
    pub(crate) fn new() -> io::Result<Watch<S>> {
        Ok(Watch { poller: Arc::new(Poller::new()?), sockets: Vec::new(), events: Events::new() })
    }

    /// What makes [`Watch::wait`] return from another thread (a loop of its own: no
    /// other loops to wake beside it).
    pub(crate) fn waker(&self) -> Waker {
        Waker { poller: self.poller.clone(), also: Arc::new(|| {}) }
    }

    /// Takes `socket` in, watched for nothing until [`Watch::arm`]; returns its key.
    pub(crate) fn insert(&mut self, socket: S) -> io::Result<usize> {
        let key = self.sockets.len();
        add(&self.poller, &*SockRef::from(&socket), key, PollMode::Oneshot)?;
        self.sockets.push(Some(socket));
        Ok(key)
    }

    /// The socket under `key`.
    pub(crate) fn get(&self, key: usize) -> &S {
        self.sockets[key].as_ref().expect("a socket of this watch")
    }

    /// The socket under `key`, if it was not removed.
    pub(crate) fn try_get(&self, key: usize) -> Option<&S> {
        self.sockets.get(key)?.as_ref()
    }

    /// Gives the socket under `key` up: deleted from the poller first, then dropped.
    /// Its key is not used again.
    pub(crate) fn remove(&mut self, key: usize) {
        if let Some(socket) = self.sockets.get_mut(key).and_then(Option::take) {
            let _ = self.poller.delete(socket.source());
            drop(socket);
        }
    }

    /// Asks for the socket's next readiness, oneshot: readable, writable, both or none.
    pub(crate) fn arm(&self, key: usize, readable: bool, writable: bool) -> io::Result<()> {
        let event = match (readable, writable) {
            (true, true) => Event::all(key),
            (true, false) => Event::readable(key),
            (false, true) => Event::writable(key),
            (false, false) => Event::none(key),
        };
        self.poller.modify(self.get(key).source(), event)
    }

    /// Waits until an armed socket is ready, its [`Waker`] fires or `deadline` passes;
    /// puts the keys of the ready sockets in `ready`.
    pub(crate) fn wait(&mut self, deadline: Option<Instant>, ready: &mut Vec<usize>) -> io::Result<()> {
        self.events.clear();
        match deadline {
            Some(deadline) => self.poller.wait_deadline(&mut self.events, deadline)?,
            None => self.poller.wait(&mut self.events, None)?,
        };
        ready.extend(self.events.iter().map(|event| event.key));
        Ok(())
    }
}

impl<S: AsSource> Drop for Watch<S> {
    fn drop(&mut self) {
        for socket in self.sockets.iter().flatten() {
            let _ = self.poller.delete(socket.source());
        }
    }
}

/// Puts `socket` in `poller` under `key`, in `mode`, watched for nothing until a wait or
/// `arm` asks for readiness.
///
/// `Poller::add` is unsafe because the poller must forget a socket before the socket is
/// closed. This is the crate's second `unsafe` call (the first takes systemd's sockets).
#[allow(unsafe_code)]
fn add(poller: &Poller, socket: impl polling::AsRawSource, key: usize, mode: PollMode) -> io::Result<()> {
    // SAFETY: four kinds of descriptor are added. The server socket is borrowed from the
    // endpoint for the lifetime of the `Readiness` that `Station::readiness` returns,
    // and `Readiness::drop` deletes it before that borrow ends. A connection is added only
    // by `Station::register`, whose `Registration` owns an `Arc` of the connection and
    // deletes the socket in its `drop`, before that `Arc` (and so the socket) can go.
    // A `Waker` may outlive both, but it only notifies the poller. A datagram socket
    // waiting for room (`wait_writable`), or connections waiting for their first bytes
    // (`wait_readable`, `wait_each_readable`), are borrowed for that call, which deletes
    // them from its own poller before returning, and drops the poller. A socket of a
    // `Watch` is owned by it from the moment it is added, and `Watch::remove` and
    // `Watch::drop` delete it from the poller before dropping it. The end watch (Linux)
    // is added by `Station::new`, and `Station::drop` deletes it from the poller before
    // it can close (registrations keep it alive after that: it is not in the poller).
    unsafe { poller.add_with_mode(socket, Event::none(key), mode) }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::net::tcp_pair;

    /// The server socket stays armed across waits that report nothing for it, and only
    /// a report (a connection to accept) or a wait without it asks for an arm again.
    #[test]
    fn the_server_socket_is_armed_until_it_is_reported() {
        let station = Station::<()>::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = Endpoint::Tcp(listener);
        endpoint.set_nonblocking().unwrap();
        let mut readiness = station.readiness(&endpoint).unwrap();
        let mut reported = Vec::new();
        assert!(!readiness.listening(), "added with no interest");
        let soon = || Some(Instant::now() + Duration::from_millis(20));
        assert!(!readiness.wait(soon(), true, &mut reported).unwrap(), "nothing to accept");
        assert!(readiness.listening(), "armed, and nothing reported: it stays armed");
        assert!(!readiness.wait(soon(), true, &mut reported).unwrap());
        assert!(readiness.listening());
        let _client = std::net::TcpStream::connect(addr).unwrap();
        assert!(readiness.wait(Some(Instant::now() + Duration::from_secs(10)), true, &mut reported).unwrap());
        assert!(!readiness.listening(), "reported: the oneshot arm is used up");
        assert!(readiness.wait(soon(), true, &mut reported).unwrap(), "armed again, the connection still waits");
        assert!(!readiness.wait(soon(), false, &mut reported).unwrap(), "not listening: not reported");
        assert!(!readiness.listening());
    }

    /// Arms made on other threads just as the serve loop begins to wait are reported
    /// (pool workers or request threads park their connections while the loop in the
    /// poller goes back to its wait). Each round, more threads than cores arm one socket
    /// each, every socket with a byte unread, so each arm must end a wait; a thread
    /// descheduled in the middle of its arm as the wait begins is what the test is
    /// after. (On Windows, `polling` missed such an arm now and then, and the wait
    /// blocked without it: `sys::ARM_MAY_MISS_A_STARTING_WAIT`.)
    #[test]
    fn arms_made_as_the_loop_begins_to_wait_are_reported() {
        const ROUNDS: usize = 300;
        const ARMING: usize = 8;
        let station = Station::<()>::new().unwrap();
        let endpoint = Endpoint::Tcp(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        // The round the loop waits in; the arming threads spin on it (yielding), so that
        // no wake-up of theirs comes between the loop's turn and the arms.
        let round = Arc::new(AtomicUsize::new(0));
        let mut kept = Vec::new();
        let arming: Vec<_> = (0..ARMING)
            .map(|key| {
                let (server, mut client) = tcp_pair();
                client.write_all(b"x").unwrap();
                let connection = Arc::new(Connection::Tcp(server));
                kept.push((client, station.register(key, &connection).unwrap().expect("a socket")));
                let (station, round) = (station.clone(), round.clone());
                thread::spawn(move || {
                    let mut armed = 0;
                    while armed < ROUNDS {
                        let now = round.load(Ordering::SeqCst);
                        if now == armed {
                            thread::yield_now();
                            continue;
                        }
                        armed = now;
                        station.arm(&connection, key, false, false).unwrap();
                    }
                })
            })
            .collect();
        let mut readiness = station.readiness(&endpoint).unwrap();
        for n in 1..=ROUNDS {
            round.store(n, Ordering::SeqCst);
            let mut reported = Vec::new();
            // Each socket is reported once per round; a wait may also end with nothing
            // reported (a wake): it waits again.
            while reported.len() < ARMING {
                let deadline = Instant::now() + Duration::from_secs(10);
                readiness.wait(Some(deadline), false, &mut reported).unwrap();
                assert!(Instant::now() < deadline, "round {n}: arms never reported, {reported:?} were");
            }
            let mut keys: Vec<_> = reported.iter().map(|reported| reported.key).collect();
            keys.sort_unstable();
            assert_eq!(keys, (0..ARMING).collect::<Vec<_>>(), "round {n}");
        }
        for thread in arming {
            thread.join().unwrap();
        }
    }

    #[test]
    fn waiting_for_room_ends_when_the_peer_reads_or_at_the_deadline() {
        let (server, mut client) = tcp_pair();
        server.set_nonblocking(true).unwrap();
        // Fill the send buffer (and the peer's receive buffer) until a send would block.
        let chunk = [7u8; 64 * 1024];
        let mut sent = 0;
        loop {
            match (&server).write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the buffer: {e}"),
            }
        }
        let socket = SockRef::from(&server);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(!wait_writable(&socket, soon).unwrap(), "no room: the wait ends at its deadline");
        assert!(Instant::now() >= soon, "and not before it");
        // The peer reads everything: room again, and the wait says so at once.
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0; sent];
            client.read_exact(&mut buf).unwrap();
        });
        assert!(wait_writable(&socket, Instant::now() + Duration::from_secs(10)).unwrap(), "room once the peer reads");
        reader.join().unwrap();
    }
}
