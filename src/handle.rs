//! The server's control block: its lifecycle, the requests running, its counters, and
//! the [`ServerHandle`] that handlers and other threads hold.
//!
//! It knows nothing of the handler or the dispatch mode, so that a request (which holds
//! a `ServerHandle`) can exist without a server, and the lifecycle can be tested alone.
//!
//! The lifecycle: a server is `Idle` until a serve call ([`Control::begin`]) makes it
//! `Serving`; the call's [`ServeCall`] guard makes it `Idle` again when the call ends.
//! [`Control::shutdown`] during a serve call fires the wakers of its serve loops and
//! waits for that call (not a later one) to end; before the first call it is
//! remembered, so that a serve thread spawned a moment ago returns at once; between two
//! calls it does nothing. [`Control::close`] makes it `Closed` for good.
//!
//! A shutdown also lets go of the socket the server bound itself, so that it closes
//! (and new connections are refused) once the serve loops have returned; the next serve
//! call binds the address anew. A socket the user passed in is kept, and serves again.

use std::cell::Cell;
use std::fmt;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::net::{Address, Bound, Connection, Endpoint, OwnedPath, Waker};
use crate::report::{log_or_stderr, LOG_TARGET};

/// After the shutdown deadline the server closes the connections still open; handlers
/// then see end-of-file or errors. This is how long it waits for them after that.
pub(crate) const FORCED_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A cloneable handle to a server, for other threads and for handlers: read its address,
/// ask it to shut down, read its counters.
#[derive(Clone)]
pub struct ServerHandle {
    control: Arc<Control>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle").field("local_addr", &self.control.local).finish_non_exhaustive()
    }
}

impl ServerHandle {
    pub(crate) fn new(control: Arc<Control>) -> ServerHandle {
        ServerHandle { control }
    }

    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops the server: see [`Server::shutdown`](crate::Server::shutdown).
    pub fn shutdown(&self) {
        self.control.shutdown();
    }

    /// The address the server is bound to (Python's `server_address`).
    #[doc(alias = "server_address")]
    pub fn local_addr(&self) -> &Address {
        &self.control.local
    }

    /// As `shutdown`, giving running requests at most `limit` (see
    /// [`Control::shutdown_within`]). Whether the serve call has ended: `false` when it
    /// still runs [`FORCED_CLOSE_GRACE`] after the stop gave up on requests that ignore
    /// their closed connections, which holds it when they run on its own threads
    /// (sequential, pool).
    #[cfg(feature = "signals")]
    pub(crate) fn shutdown_within(&self, limit: Duration) -> bool {
        match self.control.shutdown_within(Some(limit), true) {
            Some(generation) => self.control.serve_call_ends_within(generation, FORCED_CLOSE_GRACE),
            None => true,
        }
    }

    /// How long a shutdown with at most `limit` lets running requests take: the sooner
    /// of `limit` and the server's own shutdown deadline.
    #[cfg(feature = "signals")]
    pub(crate) fn deadline_within(&self, limit: Duration) -> Duration {
        self.control.policy.shutdown_deadline.map_or(limit, |own| own.min(limit))
    }

    /// Whether `serve_forever` or `handle_request` is running.
    pub fn is_serving(&self) -> bool {
        self.control.life.lock().phase == Phase::Serving
    }

    /// The server's counters: requests running, received, finished, errors, refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use socketserver::TcpServer;
    ///
    /// let server = TcpServer::bind("127.0.0.1:0", |req| { req.writer().write_all(b"hi")?; Ok(()) })?;
    /// let (addr, handle) = (server.local_addr(), server.handle());
    /// let background = server.serve_in_background()?;
    /// std::net::TcpStream::connect(addr)?.read_to_end(&mut Vec::new())?;
    /// background.stop()?;
    /// let stats = handle.stats();
    /// assert_eq!((stats.received, stats.finished, stats.errors, stats.active), (1, 1, 0, 0));
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.control.stats()
    }
}

/// A server's counters, read with [`ServerHandle::stats`], for logs and health checks.
///
/// Counted since the server was built, across serve calls. Each counter is read on its
/// own, so under load the numbers are close to, but not exactly, one instant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Requests running now: datagrams and connections being served, parked
    /// connections not included.
    pub active: usize,
    /// Connections [parked](crate::StreamRequest::park) now, waiting in the poller for
    /// their client's next bytes with no thread. They count against `max_connections`.
    pub parked: usize,
    /// Connections accepted and datagrams received.
    pub received: u64,
    /// Requests that ended: ran (with or without an error), or could not be
    /// dispatched.
    pub finished: u64,
    /// Errors and caught panics reported to `handle_error`.
    pub errors: u64,
    /// Connections refused because the server was full
    /// ([`Builder::refuse_when_full`](crate::Builder::refuse_when_full)).
    pub refused: u64,
    /// Requests that `verify_request` turned down, and connections refused unread for
    /// coming from a peer that is not a trusted proxy (`Builder::trusted_proxies`,
    /// feature `proxy-protocol`).
    pub denied: u64,
    /// Connections from a trusted proxy closed because their PROXY protocol header was
    /// malformed, cut short or late (each also reported to `handle_error`). Always 0
    /// without the `proxy-protocol` feature.
    pub bad_proxy_headers: u64,
}

/// What [`ServerHandle::stats`] reads besides the running requests; relaxed atomics, a
/// few per request.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests turned away before they were counted as running: denied by
    /// `verify_request` or refused when full. (Running and finished requests are counted
    /// in [`Requests`], under the lock the serve loop takes anyway.)
    pub(crate) untracked: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) denied: AtomicU64,
    /// Connections parked now, in the poller or queued for a free loop (each is also a
    /// running request in [`Requests`]): changed only through [`Control::parked`] and
    /// [`Control::unparked`].
    pub(crate) parked: AtomicUsize,
    pub(crate) bad_proxy_headers: AtomicU64,
    /// Stream connections numbered so far (`ConnectionId`s given out).
    pub(crate) connections: AtomicU64,
    /// Stream connections that ended (closed, refused or denied).
    pub(crate) connections_ended: AtomicU64,
    /// Bytes read from and written to clients through requests' readers and writers
    /// (and datagrams received and replies sent).
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Requests handed to the dispatch mode that have not started yet.
    pub(crate) waiting: AtomicUsize,
    /// From a request being ready (accepted, received, or its parked connection
    /// readable) to its exchange starting.
    pub(crate) queue_wait: Durations,
    /// How long exchanges (`setup`/`handle` and the reply) took.
    pub(crate) exchanges: Durations,
}

/// The upper bounds of the buckets of [`Durations`], in microseconds: from 100 µs to
/// 10 s, about ×2.5 apart, as Prometheus's default buckets are.
pub(crate) const BUCKETS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// A histogram of durations, recorded without a lock: a count per bucket (the last for
/// longer than every bound) and the sum. Recording is three relaxed atomic adds.
#[derive(Debug, Default)]
pub(crate) struct Durations {
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Durations {
    pub(crate) fn record(&self, took: Duration) {
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let at = BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(took.as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// The count in each bucket (not cumulative) and the sum.
    pub(crate) fn read(&self) -> ([u64; BUCKETS_MICROS.len() + 1], Duration) {
        let counts = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        (counts, Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)))
    }
}

/// How shutdown treats running requests, fixed when the server is built.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Policy {
    /// How long running requests may take after a shutdown before their connections are
    /// closed under them; `None`: no limit.
    pub(crate) shutdown_deadline: Option<Duration>,
    /// Whether a serve call waits for the requests it started (false for `Threading`
    /// without `block_on_close`).
    pub(crate) waits_for_requests: bool,
    /// Whether the server bound its socket itself, and can bind it again: a shutdown then
    /// closes it. A socket the user passed in is kept open across serve calls.
    pub(crate) reopenable: bool,
    /// Requests the dispatch mode runs at once at most, if it has a limit.
    pub(crate) workers: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Serving,
    Closed,
}

/// The lifecycle state, behind [`Control::life`].
#[derive(Debug)]
struct Life {
    phase: Phase,
    /// Bumped each time a serve call ends, so `shutdown` waits for *its* serve only.
    generation: u64,
    /// A serve call has run to its end at least once.
    served: bool,
    /// `shutdown` arrived before the first serve call; that call returns at once.
    stop_pending: bool,
    /// When the running serve must close the connections still open.
    deadline: Option<Instant>,
    /// `None` once the server is closed (and for a control block with no socket).
    endpoint: Option<Arc<Endpoint>>,
    /// The socket was let go of at a shutdown and must be bound again before serving.
    released: bool,
    owned_path: Option<OwnedPath>,
}

/// Requests accepted and not yet finished, and the connections among them, so the
/// shutdown deadline can close them.
#[derive(Debug, Default)]
struct Requests {
    running: usize,
    /// Places taken by serve loops about to accept, under a connection limit: with
    /// several threads accepting at once, checking the count before a blocking accept
    /// and counting the request after it would let them all past the limit.
    reserved: usize,
    /// Requests counted as running so far, and those that have ended (for `stats`).
    started: u64,
    finished: u64,
    connections: Vec<Option<Arc<Connection>>>,
    free_slots: Vec<usize>,
    /// Requests a stop's wait gave up on (still running past the grace), so that the
    /// other waits of the same stop (the background thread's, the serve loop's, the
    /// close's) neither wait for them nor report them again. At most `running`.
    left_behind: usize,
}

/// The control block a server, its handles and its requests share.
pub(crate) struct Control {
    local: Address,
    policy: Policy,
    stopping: AtomicBool,
    life: Mutex<Life>,
    life_changed: Condvar,
    requests: Mutex<Requests>,
    requests_changed: Condvar,
    /// The wakers of the serve loops running now, each under the id it was given.
    wakers: Mutex<(u64, Vec<(u64, Waker)>)>,
    /// Serve loops waiting in their poller for a place under the limit
    /// ([`Control::try_reserve`]): a request that ends fires the wakers while any does.
    capacity_waiters: AtomicUsize,
    /// Threads waiting on `requests_changed` for a place ([`Control::wait_for_capacity`]).
    /// A request that parks changes no count under `requests`, only `counters.parked`,
    /// so it takes that lock to wake them only while there are any: parking is the
    /// hot path of a parking pool (once per message), and the lock is shared by every
    /// worker. Each side writes its own count before it reads the other's (`SeqCst`
    /// both), so one of them always sees the other: a waiter sees the park, or the
    /// park sees the waiter.
    capacity_sleepers: AtomicUsize,
    pub(crate) counters: Counters,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control").field("local", &self.local).field("life", &*self.life.lock()).finish_non_exhaustive()
    }
}

// The initializer is `const` already; clippy says otherwise on the Windows target CI
// checks, whose std keeps thread-locals in the OS's slots.
thread_local! {
    /// The server whose serve loop, handler or hook this thread is running, so that
    /// `shutdown` and `close` called from inside know not to wait for themselves.
    #[cfg_attr(windows, allow(clippy::missing_const_for_thread_local))]
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as running code of a server until dropped.
pub(crate) struct CurrentServer(usize);

impl CurrentServer {
    pub(crate) fn enter(control: &Control) -> CurrentServer {
        CurrentServer(CURRENT.with(|c| c.replace(control.id())))
    }

    pub(crate) fn is(control: &Control) -> bool {
        CURRENT.with(|c| c.get() == control.id())
    }
}

impl Drop for CurrentServer {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// A running serve call. Dropping it ends the call (also when a hook panicked through
/// the loop): the server is idle again and a `shutdown` waiting for it returns.
pub(crate) struct ServeCall {
    control: Arc<Control>,
    endpoint: Option<Arc<Endpoint>>,
}

impl ServeCall {
    /// The socket this call serves; `None` only for a control block with no socket.
    #[cfg(test)]
    pub(crate) fn endpoint(&self) -> Option<&Arc<Endpoint>> {
        self.endpoint.as_ref()
    }

    /// Takes the call's hold on the socket, so that the caller can let it go as soon as
    /// the serve loops return (a socket let go of at a shutdown then closes, before the
    /// call waits for running requests).
    pub(crate) fn take_endpoint(&mut self) -> Option<Arc<Endpoint>> {
        self.endpoint.take()
    }
}

/// A serve loop's waker, registered with the control block until dropped.
pub(crate) struct WakerGuard<'a> {
    control: &'a Control,
    id: u64,
}

impl Drop for WakerGuard<'_> {
    fn drop(&mut self) {
        self.control.wakers.lock().1.retain(|(id, _)| *id != self.id);
    }
}

impl Drop for ServeCall {
    fn drop(&mut self) {
        // The socket is released first: a `shutdown` that returns when the call ends
        // may start the next serve call, which must be able to bind the address.
        drop(self.endpoint.take());
        let mut life = self.control.life.lock();
        if life.phase != Phase::Closed {
            life.phase = Phase::Idle;
        }
        life.generation += 1;
        life.served = true;
        life.stop_pending = false;
        life.deadline = None;
        drop(life);
        self.control.life_changed.notify_all();
    }
}

/// One running request. Dropping it (after the request, or with a job that never ran)
/// removes the request from the count and wakes whoever waits on it.
pub(crate) struct Ticket {
    control: Arc<Control>,
    slot: Option<usize>,
}

impl Ticket {
    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.control
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut requests = self.control.requests.lock();
        requests.finished += 1;
        requests.running -= 1;
        requests.left_behind = requests.left_behind.min(requests.running);
        if let Some(slot) = self.slot {
            requests.connections[slot] = None;
            requests.free_slots.push(slot);
        }
        drop(requests);
        self.control.requests_changed.notify_all();
        self.control.capacity_freed();
    }
}

/// A place among the running requests, reserved before accepting; given back when
/// dropped unless a request took it over ([`Control::track`]).
pub(crate) struct Slot<'a>(&'a Control);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut requests = self.0.requests.lock();
        requests.reserved -= 1;
        drop(requests);
        self.0.requests_changed.notify_all();
        self.0.capacity_freed();
    }
}

/// Why [`Control::wait_for_capacity`] returned.
pub(crate) enum Capacity<'a> {
    /// A request may be accepted: into this reserved place, when the server has a
    /// limit it waits at.
    Free(Option<Slot<'a>>),
    /// The server is shutting down.
    Stopping,
    /// The timer passed while every slot was busy.
    Timer,
}

impl Control {
    /// The control block of a server bound to `bound`, whose address is `local`.
    pub(crate) fn new(local: Address, bound: Bound, policy: Policy) -> Control {
        Control::with_endpoint(local, Some(Arc::new(bound.endpoint)), bound.owned_path, policy)
    }

    /// A control block with no socket: what an in-memory request's `server()` handle
    /// points to. It never serves; `shutdown` is remembered as before a first serve.
    pub(crate) fn detached(local: Address) -> Control {
        let policy = Policy { shutdown_deadline: None, waits_for_requests: true, reopenable: false, workers: None };
        Control::with_endpoint(local, None, None, policy)
    }

    fn with_endpoint(
        local: Address,
        endpoint: Option<Arc<Endpoint>>,
        owned_path: Option<OwnedPath>,
        policy: Policy,
    ) -> Control {
        let life = Life {
            phase: Phase::Idle,
            generation: 0,
            served: false,
            stop_pending: false,
            deadline: None,
            endpoint,
            released: false,
            owned_path,
        };
        Control {
            local,
            policy,
            stopping: AtomicBool::new(false),
            life: Mutex::new(life),
            life_changed: Condvar::new(),
            requests: Mutex::new(Requests::default()),
            requests_changed: Condvar::new(),
            wakers: Mutex::new((0, Vec::new())),
            capacity_waiters: AtomicUsize::new(0),
            capacity_sleepers: AtomicUsize::new(0),
            counters: Counters::default(),
        }
    }

    fn id(&self) -> usize {
        self as *const Control as usize
    }

    pub(crate) fn local(&self) -> &Address {
        &self.local
    }

    /// Whether a shutdown of the running serve call was asked for.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether `shutdown` has been asked for and not yet consumed by a serve call.
    pub(crate) fn stop_pending(&self) -> bool {
        self.life.lock().stop_pending
    }

    /// The server socket, unless the server is closed.
    pub(crate) fn endpoint(&self) -> Option<Arc<Endpoint>> {
        self.life.lock().endpoint.clone()
    }

    /// When the running serve call must close the connections still open.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.life.lock().deadline
    }

    /// Starts a serve call (`forever`: `serve_forever`, else `handle_request`). `Ok(None)`
    /// means a shutdown came first and the call returns at once. If a shutdown let go of
    /// the socket, `rebind` binds the address again first (under the lock, so no
    /// shutdown slips between); if it fails, the next call tries again.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::AlreadyServing`], or what `rebind` returned.
    pub(crate) fn begin(
        self: &Arc<Self>,
        forever: bool,
        rebind: impl FnOnce() -> Result<Bound>,
    ) -> Result<Option<ServeCall>> {
        let mut life = self.life.lock();
        match life.phase {
            Phase::Closed => return Err(Error::Closed),
            Phase::Serving => return Err(Error::AlreadyServing),
            Phase::Idle => {}
        }
        if forever && life.stop_pending {
            life.stop_pending = false;
            life.served = true;
            return Ok(None);
        }
        if life.released {
            let bound = rebind()?;
            // The bind replaced the old socket file, so only the new record counts.
            life.owned_path = bound.owned_path;
            life.endpoint = Some(Arc::new(bound.endpoint));
            life.released = false;
        }
        self.stopping.store(false, Ordering::SeqCst);
        life.phase = Phase::Serving;
        Ok(Some(ServeCall { control: self.clone(), endpoint: life.endpoint.clone() }))
    }

    /// Stops serving: see [`Server::shutdown`](crate::Server::shutdown).
    pub(crate) fn shutdown(&self) {
        self.shutdown_within(None, true);
    }

    /// As `shutdown`, with running requests given at most `limit` (when it is sooner
    /// than the policy's deadline) before their connections are closed; without `wait`,
    /// only asks and returns at once. When it gave up on requests that outlived their
    /// closed connections, it returns without waiting for the serve call to end, and
    /// gives that call's number (for [`Control::serve_call_ends_within`]).
    pub(crate) fn shutdown_within(&self, limit: Option<Duration>, wait: bool) -> Option<u64> {
        let (generation, deadline) = {
            let mut life = self.life.lock();
            match life.phase {
                Phase::Closed => return None,
                // Between two serve calls there is nothing to stop; remembering it would
                // make the next serve_forever return at once (Python's pitfall).
                Phase::Idle if life.served => return None,
                // Before the first serve call (a serve thread just spawned): remember it,
                // and refuse connections from now on.
                Phase::Idle => {
                    life.stop_pending = true;
                    self.release(&mut life);
                    return None;
                }
                Phase::Serving => {
                    let limit = limit.map(|d| Instant::now() + d);
                    if self.stopping.load(Ordering::SeqCst) && limit.is_some() {
                        // A second, shorter stop (a background server's bound) tightens it.
                        life.deadline = life.deadline.min(limit).or(limit);
                    }
                    if !self.stopping.swap(true, Ordering::SeqCst) {
                        let policy = self.policy.shutdown_deadline.map(|d| Instant::now() + d);
                        life.deadline = match (policy, limit) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        self.release(&mut life);
                        // Wake the loops waiting for their socket, a loop waiting for a
                        // free slot or backing off, and a pool's supervisor.
                        for (_, waker) in &self.wakers.lock().1 {
                            waker.wake();
                        }
                        let _requests = self.requests.lock();
                        self.requests_changed.notify_all();
                        self.life_changed.notify_all();
                    }
                    (life.generation, life.deadline)
                }
            }
        };
        if !wait || CurrentServer::is(self) {
            return None; // called from a handler or hook: waiting here would wait for itself
        }
        if deadline.is_some() && self.policy.waits_for_requests {
            // The serve loop may be running the request itself (sequential mode), so
            // the deadline is enforced from here too. Requests that outlive their closed
            // connections (a handler that ignores its socket) are reported and not waited
            // for: the serve call may end later, on its own.
            if !self.await_requests(deadline) {
                return Some(generation);
            }
        }
        let mut life = self.life.lock();
        while life.phase == Phase::Serving && life.generation == generation {
            self.life_changed.wait(&mut life);
        }
        None
    }

    /// Waits at most `limit` for serve call `generation` (from
    /// [`Control::shutdown_within`]) to end. Whether it has.
    #[cfg(feature = "signals")]
    pub(crate) fn serve_call_ends_within(&self, generation: u64, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut life = self.life.lock();
        let running = |life: &Life| life.phase == Phase::Serving && life.generation == generation;
        while running(&life) && !self.life_changed.wait_until(&mut life, until).timed_out() {}
        !running(&life)
    }

    /// Lets go of a socket the server bound itself, so that it closes once no serve loop
    /// holds it, and the next serve call binds anew. A user's socket is kept.
    fn release(&self, life: &mut Life) {
        if !self.policy.reopenable {
            return;
        }
        if let Some(endpoint) = life.endpoint.take() {
            endpoint.refuse_new_connections();
            life.released = true;
        }
    }

    /// Lets go of the socket outside a shutdown, because it broke (see `release`).
    pub(crate) fn release_broken(&self) {
        self.release(&mut self.life.lock());
    }

    /// Registers a serve loop's waker, which every shutdown of the running serve call
    /// fires, until the guard is dropped. Register before checking `is_stopping`: a
    /// shutdown between the two then finds the waker, and a wake before the wait makes
    /// the wait return at once.
    pub(crate) fn register_waker(&self, waker: Waker) -> WakerGuard<'_> {
        let mut wakers = self.wakers.lock();
        wakers.0 += 1;
        let id = wakers.0;
        wakers.1.push((id, waker));
        WakerGuard { control: self, id }
    }

    /// Whether the server is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.life.lock().phase == Phase::Closed
    }

    /// Shuts down and marks the server closed, once no serve call runs. Returns the
    /// socket file to remove, or `None` if the server was closed already.
    pub(crate) fn close(&self) -> Option<Option<OwnedPath>> {
        loop {
            self.shutdown();
            let mut life = self.life.lock();
            match life.phase {
                Phase::Closed => return None,
                // The shutdown gave up on requests that outlived their closed connections
                // (reported): the serve call ends when they do. Wait for that, asleep.
                Phase::Serving if self.is_stopping() => {
                    let generation = life.generation;
                    while life.phase == Phase::Serving && life.generation == generation {
                        self.life_changed.wait(&mut life);
                    }
                    continue;
                }
                // A serve call started on another thread since `shutdown` returned.
                Phase::Serving => continue,
                Phase::Idle => {}
            }
            life.phase = Phase::Closed;
            life.endpoint = None;
            return Some(life.owned_path.take());
        }
    }

    /// Waits for shutdown or `until`; returns whether the server is stopping.
    pub(crate) fn wait_for_stop(&self, until: Option<Instant>) -> bool {
        // Waits on `life_changed`, which shutdown signals, not on `requests_changed`,
        // which every finished request signals.
        let mut life = self.life.lock();
        while !self.is_stopping() {
            match until {
                Some(until) => {
                    if self.life_changed.wait_until(&mut life, until).timed_out() {
                        return self.is_stopping();
                    }
                }
                None => self.life_changed.wait(&mut life),
            }
        }
        true
    }

    /// Waits until no request runs. With a deadline, closes the connections still open
    /// when it passes and waits [`FORCED_CLOSE_GRACE`] more. Returns whether all ended.
    pub(crate) fn await_requests(&self, deadline: Option<Instant>) -> bool {
        let mut requests = self.requests.lock();
        // Requests already left behind are not waited for (nor reported) again: a close
        // after a stop that gave up on a handler (the server dropped at the end of `main`
        // after a signal) returns.
        let waited_for = |requests: &Requests| requests.running > requests.left_behind;
        let Some(deadline) = deadline else {
            while waited_for(&requests) {
                self.requests_changed.wait(&mut requests);
            }
            return requests.running == 0;
        };
        while waited_for(&requests) && !self.requests_changed.wait_until(&mut requests, deadline).timed_out() {}
        if !waited_for(&requests) {
            return requests.running == 0;
        }
        let open = requests.connections.iter().flatten().count();
        log::warn!(
            target: LOG_TARGET,
            "shutdown deadline passed with {} request(s) running; closing {open} connection(s)",
            requests.running
        );
        for connection in requests.connections.iter().flatten() {
            let _ = connection.shutdown(Shutdown::Both);
        }
        let grace = deadline + FORCED_CLOSE_GRACE;
        while waited_for(&requests) && !self.requests_changed.wait_until(&mut requests, grace).timed_out() {}
        if waited_for(&requests) {
            requests.left_behind = requests.running;
            let message = format!(
                "{} request(s) still running {FORCED_CLOSE_GRACE:?} after their connections were closed (a handler that \
                 ignores its connection): left running, not waited for",
                requests.running
            );
            log_or_stderr(log::Level::Error, &message);
        }
        requests.running == 0
    }

    /// Whether a place is taken under the limits: `connections` counts every request
    /// running (parked connections included) and the places reserved; `exchanges` the
    /// requests running that are not parked, and the places reserved.
    fn full(&self, requests: &Requests, connections: Option<usize>, exchanges: Option<usize>) -> bool {
        let taken = requests.running + requests.reserved;
        let parked = self.counters.parked.load(Ordering::SeqCst);
        connections.is_some_and(|max| taken >= max) || exchanges.is_some_and(|max| taken.saturating_sub(parked) >= max)
    }

    /// Takes a parked connection out to run (counts it as no longer parked, as
    /// [`Control::unparked`]) if one more exchange may start under `limit`; it already
    /// holds its place among the connections. Looked at and counted under the lock that
    /// [`Control::wait_for_capacity`] reserves under, so that nothing else (a
    /// `process_request` beside a sequential loop) starts between the look and the count.
    pub(crate) fn unpark_within(&self, limit: Option<usize>) -> bool {
        let requests = limit.map(|_| self.requests.lock());
        if requests.as_ref().is_some_and(|requests| self.full(requests, None, limit)) {
            return false;
        }
        self.unparked();
        true
    }

    /// Begins a wait in the poller for room for one more exchange under `limit`:
    /// `false` when there is room already (no wait begun). Otherwise the caller waits,
    /// and calls [`Control::stop_waiting_for_capacity`] after: until then, a request
    /// that ends (or parks) wakes the poller. Registered and checked under one lock, so
    /// that a request ending in between cannot be missed.
    pub(crate) fn wait_for_room(&self, limit: Option<usize>) -> bool {
        if limit.is_none() {
            return false;
        }
        let requests = self.requests.lock();
        // Counted before the look (see `capacity_sleepers`): a park that the look misses
        // sees the count, and wakes the poller.
        self.capacity_waiters.fetch_add(1, Ordering::SeqCst);
        if !self.full(&requests, None, limit) {
            self.capacity_waiters.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Waits for a free place under the limits, if there are any, until shutdown or
    /// `timer` (the handle_request timeout, or the next service_actions call).
    pub(crate) fn wait_for_capacity(
        &self,
        connections: Option<usize>,
        exchanges: Option<usize>,
        timer: Option<Instant>,
    ) -> Capacity<'_> {
        let mut slot = None;
        if connections.is_some() || exchanges.is_some() {
            let mut requests = self.requests.lock();
            // Counted before the look, for the parks that do not take the lock.
            self.capacity_sleepers.fetch_add(1, Ordering::SeqCst);
            let mut timed_out = false;
            while self.full(&requests, connections, exchanges) && !self.is_stopping() {
                match timer {
                    None => self.requests_changed.wait(&mut requests),
                    Some(timer) => {
                        if self.requests_changed.wait_until(&mut requests, timer).timed_out() {
                            timed_out = true;
                            break;
                        }
                    }
                }
            }
            self.capacity_sleepers.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                return Capacity::Timer;
            }
            if !self.is_stopping() {
                requests.reserved += 1;
                slot = Some(Slot(self));
            }
        }
        if self.is_stopping() {
            Capacity::Stopping
        } else {
            Capacity::Free(slot)
        }
    }

    /// Reserves a place under the limits without waiting, as
    /// [`Control::wait_for_capacity`] does when there is one. When there is none, the
    /// caller waits in the poller (for the parked connections, which a condition
    /// variable would leave unserved) and must call
    /// [`Control::stop_waiting_for_capacity`] after: until then, a request that ends
    /// wakes the serve loops.
    pub(crate) fn try_reserve(&self, connections: Option<usize>, exchanges: Option<usize>) -> Option<Option<Slot<'_>>> {
        if connections.is_none() && exchanges.is_none() {
            return Some(None);
        }
        let mut requests = self.requests.lock();
        // Counted before the look: a request ending takes the lock, and a park sees the
        // count (see `capacity_sleepers`), so neither can miss this wait.
        self.capacity_waiters.fetch_add(1, Ordering::SeqCst);
        if self.full(&requests, connections, exchanges) {
            return None;
        }
        self.capacity_waiters.fetch_sub(1, Ordering::SeqCst);
        requests.reserved += 1;
        Some(Some(Slot(self)))
    }

    /// A running request parks: it holds no thread until [`Control::unparked`], so
    /// its exchange's place under the mode's limit is free, and a loop or a
    /// `process_request` waiting for one may go on.
    pub(crate) fn parked(&self) {
        self.counters.parked.fetch_add(1, Ordering::SeqCst);
        if self.capacity_sleepers.load(Ordering::SeqCst) > 0 {
            // A waiter between its look and its wait holds the lock: once it is taken
            // here, the waiter waits, and the notification reaches it.
            drop(self.requests.lock());
            self.requests_changed.notify_all();
        }
        self.capacity_freed();
    }

    /// A parked request runs again, or ends.
    pub(crate) fn unparked(&self) {
        self.counters.parked.fetch_sub(1, Ordering::SeqCst);
    }

    /// Ends a wait that [`Control::try_reserve`] began by finding no place.
    pub(crate) fn stop_waiting_for_capacity(&self) {
        self.capacity_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// A place was given back: wake the serve loops waiting for one in their pollers.
    fn capacity_freed(&self) {
        if self.capacity_waiters.load(Ordering::SeqCst) > 0 {
            for (_, waker) in &self.wakers.lock().1 {
                waker.wake_poller();
            }
        }
    }

    /// Counts a request as running, in the place `slot` reserved for it if any. Without
    /// a slot, returns `None` when `refuse_at` requests already run (the server refuses
    /// beyond its limit instead of waiting).
    #[cfg(test)]
    pub(crate) fn track(
        self: &Arc<Self>,
        connection: Option<Arc<Connection>>,
        slot: Option<Slot<'_>>,
        refuse_at: Option<usize>,
    ) -> Option<Ticket> {
        self.track_within(connection, slot, refuse_at, None)
    }

    /// [`Control::track`], also returning `None` without a slot when
    /// `refuse_at_exchanges` requests run, parked connections not counted.
    pub(crate) fn track_within(
        self: &Arc<Self>,
        connection: Option<Arc<Connection>>,
        slot: Option<Slot<'_>>,
        refuse_at: Option<usize>,
        refuse_at_exchanges: Option<usize>,
    ) -> Option<Ticket> {
        let mut requests = self.requests.lock();
        if slot.is_none() && self.full(&requests, refuse_at, refuse_at_exchanges) {
            return None;
        }
        if let Some(slot) = slot {
            // The place passes to the request: the ticket gives it back.
            std::mem::forget(slot);
            requests.reserved -= 1;
        }
        requests.running += 1;
        requests.started += 1;
        let slot = connection.map(|connection| match requests.free_slots.pop() {
            Some(slot) => {
                requests.connections[slot] = Some(connection);
                slot
            }
            None => {
                requests.connections.push(Some(connection));
                requests.connections.len() - 1
            }
        });
        Some(Ticket { control: self.clone(), slot })
    }

    /// Requests the dispatch mode runs at once at most, if it has a limit.
    pub(crate) fn workers(&self) -> Option<usize> {
        self.policy.workers
    }

    pub(crate) fn stats(&self) -> Stats {
        let counters = &self.counters;
        let (active, started, finished) = {
            let requests = self.requests.lock();
            (requests.running, requests.started, requests.finished)
        };
        let parked = counters.parked.load(Ordering::Relaxed);
        Stats {
            active: active.saturating_sub(parked),
            parked,
            received: started + counters.untracked.load(Ordering::Relaxed),
            finished,
            errors: counters.errors.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
            denied: counters.denied.load(Ordering::Relaxed),
            bad_proxy_headers: counters.bad_proxy_headers.load(Ordering::Relaxed),
        }
    }
}

/// The lifecycle, without sockets where it can be: a control block with no endpoint
/// goes through the same states as a server's.
#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;

    use super::*;
    use crate::net::tcp_pair;

    const LIMIT: Duration = Duration::from_secs(10);

    fn control() -> Arc<Control> {
        Arc::new(Control::detached(crate::net::test_client()))
    }

    fn never_rebinds() -> Result<Bound> {
        panic!("nothing was let go of, so nothing is bound again")
    }

    fn serve(control: &Arc<Control>, forever: bool) -> Option<ServeCall> {
        control.begin(forever, never_rebinds).expect("begin")
    }

    /// Runs `shutdown` on a thread; the receiver hears when it returned.
    fn shutdown_on_a_thread(control: &Arc<Control>) -> mpsc::Receiver<()> {
        let (done, returned) = mpsc::channel();
        let control = control.clone();
        thread::spawn(move || {
            control.shutdown();
            let _ = done.send(());
        });
        returned
    }

    /// A parked connection taken out to run holds its exchange's place from the look
    /// on: a reservation that looks next (a `process_request` beside a sequential loop)
    /// finds none, and a loop finds none while a reservation holds it.
    #[test]
    fn a_parked_connection_taken_to_run_holds_its_place_from_the_look() {
        let control = control();
        let one = Some(1);
        let _ticket = control.track(None, None, None).expect("no limit");
        control.parked();
        assert!(control.unpark_within(one), "room: the only request is parked");
        assert_eq!(control.counters.parked.load(Ordering::SeqCst), 0);
        assert!(control.try_reserve(None, one).is_none(), "a reservation beside the exchange taken");
        control.stop_waiting_for_capacity();

        control.parked();
        let slot = control.try_reserve(None, one).expect("room while it is parked");
        assert!(!control.unpark_within(one), "a loop took the place a reservation holds");
        assert_eq!(control.counters.parked.load(Ordering::SeqCst), 1, "left parked when there is no room");
        drop(slot);
        assert!(control.unpark_within(one), "the place given back");
    }

    #[test]
    fn begin_serves_and_the_end_of_the_call_makes_it_idle() {
        let control = control();
        let handle = ServerHandle::new(control.clone());
        assert!(!handle.is_serving());
        let call = serve(&control, true).expect("a serve call");
        assert!(handle.is_serving());
        drop(call);
        assert!(!handle.is_serving());
        assert!(serve(&control, true).is_some(), "a server serves again after a call ends");
    }

    #[test]
    fn a_second_serve_call_is_refused_while_one_runs() {
        let control = control();
        let _call = serve(&control, true).unwrap();
        assert!(matches!(control.begin(true, never_rebinds), Err(Error::AlreadyServing)));
        assert!(matches!(control.begin(false, never_rebinds), Err(Error::AlreadyServing)));
    }

    #[test]
    fn shutdown_before_the_first_serve_makes_it_return_at_once_and_only_it() {
        let control = control();
        control.shutdown(); // returns: nothing serves yet
        assert!(control.stop_pending());
        assert!(serve(&control, true).is_none(), "the first serve_forever returns at once");
        assert!(!control.stop_pending());
        assert!(serve(&control, true).is_some(), "the shutdown was used up by that call");
    }

    #[test]
    fn shutdown_before_the_first_serve_does_not_stop_handle_request() {
        let control = control();
        control.shutdown();
        assert!(serve(&control, false).is_some(), "handle_request is not concerned, as in Python");
    }

    #[test]
    fn shutdown_between_two_serve_calls_is_forgotten() {
        let control = control();
        drop(serve(&control, true).unwrap());
        control.shutdown();
        assert!(!control.stop_pending());
        assert!(serve(&control, true).is_some(), "the next serve_forever is not stopped by an old shutdown");
    }

    #[test]
    fn shutdown_waits_for_the_serve_call_to_end() {
        let control = control();
        let call = serve(&control, true).unwrap();
        let returned = shutdown_on_a_thread(&control);
        control.wait_for_stop(Some(Instant::now() + LIMIT));
        assert!(control.is_stopping(), "shutdown asked the serve loop to stop");
        assert!(
            returned.recv_timeout(Duration::from_millis(50)).is_err(),
            "shutdown returned while the serve call was still running"
        );
        drop(call);
        returned.recv_timeout(LIMIT).expect("shutdown returns once the serve call ends");
        assert!(!ServerHandle::new(control).is_serving());
    }

    #[test]
    fn shutdown_from_inside_the_server_only_asks() {
        let control = control();
        let call = serve(&control, true).unwrap();
        {
            let _inside = CurrentServer::enter(&control); // as a handler or hook runs
            control.shutdown(); // must not wait for the call that runs this very code
            assert!(control.is_stopping());
        }
        assert!(!CurrentServer::is(&control), "leaving restores the thread's mark");
        drop(call);
    }

    #[test]
    fn close_ends_the_lifecycle_for_good() {
        let control = control();
        assert!(matches!(control.close(), Some(None)), "closed now, with no socket file to remove");
        assert!(control.close().is_none(), "a second close does nothing");
        assert!(matches!(control.begin(true, never_rebinds), Err(Error::Closed)));
        control.shutdown(); // does nothing, and does not wait
        assert!(control.endpoint().is_none());
    }

    #[test]
    fn close_waits_for_a_running_serve_call() {
        let control = control();
        let call = serve(&control, true).unwrap();
        let (done, closed) = mpsc::channel();
        let closing = control.clone();
        thread::spawn(move || {
            let _ = done.send(closing.close().is_some());
        });
        control.wait_for_stop(Some(Instant::now() + LIMIT));
        assert!(closed.recv_timeout(Duration::from_millis(50)).is_err(), "close returned during a serve call");
        drop(call);
        assert!(closed.recv_timeout(LIMIT).expect("close returns once the call ends"));
    }

    /// A control block over a real UDP socket on loopback, bound by the server itself
    /// (`reopenable`) or passed in by the user.
    fn over_a_socket(reopenable: bool) -> (Arc<Control>, Address) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = Address::Inet(socket.local_addr().unwrap());
        let endpoint = Endpoint::Datagram(Arc::new(crate::net::DatagramSocket::Udp(socket)));
        let policy = Policy { reopenable, ..Policy::default() };
        (Arc::new(Control::new(local.clone(), Bound { endpoint, owned_path: None }, policy)), local)
    }

    /// Serves, shuts down from another thread, and ends the call.
    fn serve_and_shut_down(control: &Arc<Control>) {
        let call = serve(control, true).unwrap();
        let returned = shutdown_on_a_thread(control);
        control.wait_for_stop(Some(Instant::now() + LIMIT));
        drop(call);
        returned.recv_timeout(LIMIT).unwrap();
    }

    #[test]
    fn serving_again_after_a_shutdown_binds_the_socket_anew() {
        let (control, local) = over_a_socket(true);
        serve_and_shut_down(&control);
        assert!(control.endpoint().is_none(), "the server let go of the socket it bound");
        // The old socket is closed by now, so its port is free for the rebind.
        let rebind = || {
            let endpoint = crate::net::bind_udp(local.as_inet().unwrap(), &crate::net::SocketOptions::default())?;
            Ok(Bound { endpoint, owned_path: None })
        };
        let call = control.begin(true, rebind).unwrap().expect("a serve call");
        assert_eq!(call.endpoint().unwrap().local_address().unwrap().to_string(), local.to_string());
        drop(call);
        assert!(serve(&control, true).is_some(), "a call that ended without a shutdown binds nothing");
    }

    #[test]
    fn a_socket_the_user_passed_in_serves_again_without_a_rebind() {
        let (control, local) = over_a_socket(false);
        serve_and_shut_down(&control);
        let call = serve(&control, true).expect("the same socket serves again");
        assert_eq!(call.endpoint().unwrap().local_address().unwrap().to_string(), local.to_string());
    }

    #[test]
    fn a_failed_rebind_is_tried_again_on_the_next_call() {
        let (control, _) = over_a_socket(true);
        control.shutdown(); // before the first call: remembered, and the socket let go of
        assert!(control.endpoint().is_none());
        assert!(serve(&control, true).is_none());
        let refused = || Err(Error::Bind { addr: "x".into(), source: std::io::ErrorKind::AddrInUse.into() });
        assert!(matches!(control.begin(true, refused), Err(Error::Bind { .. })));
        let mut called = false;
        let again = || {
            called = true;
            Err(Error::Closed)
        };
        let _ = control.begin(true, again);
        assert!(called, "the next call binds again");
    }

    #[test]
    fn shutdown_fires_the_wakers_of_the_running_loops_only() {
        let (control, _) = over_a_socket(false);
        let endpoint = control.endpoint().unwrap();
        let (one, two) = (crate::net::Station::<()>::new().unwrap(), crate::net::Station::<()>::new().unwrap());
        let mut first = one.readiness(&endpoint).unwrap();
        let mut second = two.readiness(&endpoint).unwrap();
        let call = serve(&control, true).unwrap();
        let _first = control.register_waker(one.waker(|| {}));
        drop(control.register_waker(two.waker(|| {}))); // a serve call that has returned
        let _inside = CurrentServer::enter(&control);
        control.shutdown();
        // The registered loop's wait returns at once; the other would wait for ever, so it
        // is given a deadline, which it runs into.
        first.wait(None, true, &mut Vec::new()).unwrap();
        let until = Instant::now() + Duration::from_millis(20);
        second.wait(Some(until), true, &mut Vec::new()).unwrap();
        assert!(Instant::now() >= until, "an unregistered loop is not woken");
        drop(call);
    }

    #[test]
    fn capacity_is_reserved_before_accepting_and_passes_to_the_request() {
        let control = control();
        let Capacity::Free(Some(slot)) = control.wait_for_capacity(Some(1), None, None) else { panic!("a free place") };
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(
            matches!(control.wait_for_capacity(Some(1), None, Some(soon)), Capacity::Timer),
            "the one place is taken"
        );
        let ticket = control.track(None, Some(slot), None).expect("tracked");
        assert_eq!(control.stats().active, 1);
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(
            matches!(control.wait_for_capacity(Some(1), None, Some(soon)), Capacity::Timer),
            "the request holds it"
        );
        drop(ticket);
        assert!(matches!(control.wait_for_capacity(Some(1), None, None), Capacity::Free(Some(_))));
        let stats = control.stats();
        assert_eq!((stats.active, stats.received, stats.finished), (0, 1, 1));
    }

    #[test]
    fn a_server_that_refuses_when_full_does_not_track_past_its_limit() {
        let control = control();
        let first = control.track(None, None, Some(1)).expect("below the limit");
        assert!(control.track(None, None, Some(1)).is_none(), "at the limit");
        drop(first);
        assert!(control.track(None, None, Some(1)).is_some());
    }

    #[test]
    fn shutdown_wakes_a_loop_waiting_for_capacity() {
        let control = control();
        let call = serve(&control, true).unwrap();
        let _held = control.track(None, None, None).unwrap();
        let waiting = control.clone();
        let (done, woke) = mpsc::channel();
        thread::spawn(move || {
            let stopping = matches!(waiting.wait_for_capacity(Some(1), None, None), Capacity::Stopping);
            let _ = done.send(stopping);
        });
        let _inside = CurrentServer::enter(&control);
        control.shutdown();
        assert!(woke.recv_timeout(LIMIT).expect("the waiting loop woke"), "it woke because of the shutdown");
        drop(call);
    }

    #[test]
    fn the_shutdown_deadline_closes_the_connections_still_open() {
        let control = control();
        let (server, client) = tcp_pair();
        let connection = Arc::new(Connection::Tcp(server));
        let ticket = control.track(Some(connection), None, None).unwrap();
        // The request ends when its connection is closed under it, as a handler
        // blocked in a read would; the client sees the end of the stream.
        let ending = thread::spawn(move || {
            client.set_read_timeout(Some(LIMIT)).unwrap();
            let ended = std::io::Read::read(&mut &client, &mut [0; 1]);
            drop(ticket);
            assert_eq!(ended.unwrap(), 0, "the client sees the end of the stream");
        });
        assert!(control.await_requests(Some(Instant::now())), "every request ended within the grace period");
        ending.join().unwrap();
        assert_eq!(control.stats().active, 0);
    }
}
