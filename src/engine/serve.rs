//! The serve loop: receive a request, admit it, again, until shutdown.
//!
//! One loop for every transport, mode and platform. It takes what the non-blocking
//! socket has and, when it has nothing, waits for readiness with no timeout (unless
//! `handle_request`'s timeout, a `service_actions` interval or a parked connection's
//! idle deadline asks for one); `shutdown` fires the server's waker. A pool runs one
//! copy per worker, and the thread that called `serve_forever` supervises them. The
//! copies take turns to wait in the server's one poller and share what it reports
//! ([`super::hub`]).

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::hub::{Leadership, Ready, Turn};
use super::park::Parked;
use super::run::Work;
use super::Engine;
use crate::config::PlainHook;
use crate::dispatch::Pool;
use crate::error::{Error, Result};
use crate::handle::{Control, CurrentServer, ServeCall, Slot};
use crate::net::{Endpoint, Incoming, Readiness};
use crate::report::{log_or_stderr, LOG_TARGET};
use crate::sys::{self, AcceptError};

/// The first wait when accepting fails for lack of descriptors or memory; it doubles
/// with each failure in a row, up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How many times in a row the poller may call the socket readable when it has nothing
/// before the loop backs off: a connection another process took first (`SO_REUSEPORT`,
/// an inherited socket) is seen now and then, a socket broken in a way the platform
/// cannot name for ever.
const EMPTY_WAKES_BEFORE_BACK_OFF: u32 = 16;

/// Shuts the server down if the thread unwinds through it: a copy of the serve loop or
/// the supervisor that panics must not leave the other copies serving.
struct StopOnUnwind<'a>(&'a Control);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let _current = CurrentServer::enter(self.0);
            self.0.shutdown();
        }
    }
}

/// What the loop that leads keeps between two leads, whichever loop it is: the poller's
/// view of the server socket, and the state of the back-offs.
struct Lead<'a> {
    readiness: Readiness<'a>,
    /// Accepting failed for lack of resources this many times in a row: the last delay.
    backoff: Option<Duration>,
    /// The poller said readable, and the socket then had nothing.
    readable: bool,
    empty_wakes: u32,
    empty_backoff: Option<Duration>,
    reported: Vec<crate::net::Reported>,
}

/// Gives up the lead when dropped (on every path out of a lead, a panic included), with
/// the connections the poller reported; if the server stopped serving meanwhile, serves
/// those whose next message has arrived, on this thread, and ends the others.
struct Leading<'a> {
    engine: &'a Engine,
    ready: Vec<Ready>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        for late in self.engine.home.state().unlead(ready) {
            self.engine.end_late(late);
        }
    }
}

/// Ends a wait for room begun by [`Control::wait_for_room`] when dropped.
struct RoomWait<'a>(Option<&'a Control>);

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        if let Some(control) = self.0 {
            control.stop_waiting_for_capacity();
        }
    }
}

/// How a lead ended.
// Returned once per accept and never stored: boxing the connection would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Led<'a> {
    /// A connection or datagram was received, to admit into this place once the lead
    /// is given up.
    Received(Incoming, Option<Slot<'a>>),
    /// Nothing received: the loop waited, backed off, or was woken.
    Waited,
    /// The server socket was shut down by a shutdown in progress: the serve call ends.
    Stopped,
}

impl Engine {
    /// A whole serve call: `serve_forever` (`once == false`) or `handle_request`.
    /// Returns whether a request was processed.
    pub(crate) fn serve(self: &Arc<Self>, once: bool) -> Result<bool> {
        match self.begin(!once)? {
            Some(call) => self.serve_call(call, once),
            None => Ok(false),
        }
    }

    /// A serve call that [`Engine::begin`] has started: the receive loop, run once for
    /// `handle_request`, and as the dispatch mode says for `serve_forever` (a pool runs
    /// one copy per worker). Dropping `call` at the end releases the socket, then ends
    /// the call.
    pub(crate) fn serve_call(self: &Arc<Self>, mut call: ServeCall, once: bool) -> Result<bool> {
        // Taken from the call, so that it can be let go of before the call ends.
        let Some(socket) = call.take_endpoint() else { return Err(Error::Closed) };
        let endpoint = &socket;
        let readiness = self.home.readiness(endpoint)?;
        let lead = Mutex::new(Lead {
            readiness,
            backoff: None,
            readable: false,
            empty_wakes: 0,
            empty_backoff: None,
            reported: Vec::new(),
        });
        // Registered before the first look at the stop flag: a shutdown from then on
        // either is seen at the top of a loop or makes the next wait return at once.
        let home = self.home.clone();
        let _waker = self.control.register_waker(self.home.waker(move || home.state().wake_followers()));
        self.home.state().lot().open();
        if once {
            let result = self.receive_loop(endpoint, &lead, true, None, self.inline);
            if let Err(Error::Accept(_)) = &result {
                // The socket is broken: bind anew on the next call, as serve_forever does.
                self.control.release_broken();
            }
            return result;
        }
        let service = self.config.hooks.service_actions.as_ref();
        // service_actions runs on the thread that called serve_forever: in the loop
        // when that thread runs it, or in `supervise` while other threads do.
        let caller = thread::current().id();
        let outcome: Mutex<Result<bool>> = Mutex::new(Ok(false));
        let serve_loop = |inline: bool| {
            let _stop = StopOnUnwind(&self.control);
            let service = service.filter(|_| thread::current().id() == caller);
            // The loop on the calling thread wakes for service_actions; copies on other
            // threads never do.
            let result = self.receive_loop(endpoint, &lead, false, service, inline);
            let mut outcome = outcome.lock();
            match result {
                Ok(processed) => {
                    if let Ok(any) = &mut *outcome {
                        *any |= processed;
                    }
                }
                Err(e) => {
                    if outcome.is_ok() {
                        *outcome = Err(e);
                    }
                    drop(outcome);
                    // A broken socket ends every copy, not only this one. Marked as the
                    // server's own thread so `shutdown` does not wait for this serve.
                    let _current = CurrentServer::enter(&self.control);
                    self.control.shutdown();
                }
            }
        };
        match self.dispatch.as_pool() {
            // Each worker runs what it receives, on its own thread: no handoff between
            // threads for a new connection.
            Some(pool) => self.run_workers(pool, &|| serve_loop(true), service),
            None => serve_loop(self.inline),
        }
        // Let go of the socket before waiting for the requests: one that a shutdown let go
        // of closes now, so new connections are refused (or, with SO_REUSEPORT, go to the
        // other processes) while running requests finish.
        drop(lead);
        drop(socket);
        // serve_forever waits for what it started, unless the mode says not to.
        if self.waits_for_requests() {
            self.control.await_requests(self.control.deadline());
        }
        outcome.into_inner()
    }

    /// Runs `serve_loop` on the pool's workers (and one loop more when the server
    /// refuses when full) and supervises them from this thread until they all return
    /// (they return on shutdown). If no thread can be started, serves on this thread
    /// instead, without supervising; if some cannot, serves with the others.
    fn run_workers(
        self: &Arc<Self>,
        pool: &Pool,
        serve_loop: &(dyn Fn() + Sync),
        service: Option<&(Duration, PlainHook)>,
    ) {
        thread::scope(|scope| {
            let mut started = 0;
            for n in 0..self.loops {
                match pool.worker(n).spawn_scoped(scope, serve_loop) {
                    Ok(_) => started += 1,
                    Err(e) => {
                        log::warn!("pool started {started} of {} workers: {e}", self.loops);
                        break;
                    }
                }
            }
            if started == 0 {
                // Not one thread could be created: serve on this one rather than not at all.
                serve_loop();
            } else {
                self.supervise(service);
            }
        });
    }

    /// While other threads run the serve loop: calls service_actions at its interval
    /// until shutdown, then enforces the shutdown deadline.
    fn supervise(self: &Arc<Self>, service: Option<&(Duration, PlainHook)>) {
        let _current = CurrentServer::enter(&self.control);
        let _stop = StopOnUnwind(&self.control);
        let mut next = service.map(|(interval, _)| Instant::now() + *interval);
        while !self.control.wait_for_stop(next) {
            if let Some((interval, hook)) = service {
                hook();
                next = Some(Instant::now() + *interval);
            }
        }
        // Parked connections are idle: they close now, whatever the workers are doing.
        self.end_parked();
        // The workers run the requests themselves and cannot return before they end, so
        // the deadline is enforced from here, also when the shutdown came from inside
        // (a handler, a hook, a broken socket), where nobody else waits for it.
        let deadline = self.control.deadline();
        if deadline.is_some() {
            self.control.await_requests(deadline);
        }
    }

    /// Serves until shutdown (or, with `once`, one request or the `handle_request`
    /// timeout): runs the work the poller found, or leads (waits in the poller and
    /// accepts), or waits for either. `inline`: run each request on this thread.
    /// Returns whether a request was processed.
    fn receive_loop(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        lead: &Mutex<Lead<'_>>,
        once: bool,
        service: Option<&(Duration, PlainHook)>,
        inline: bool,
    ) -> Result<bool> {
        let _current = CurrentServer::enter(&self.control);
        let socket = match &**endpoint {
            Endpoint::Datagram(socket) => Some(socket.clone()),
            _ => None,
        };
        let mut buffer = match &**endpoint {
            // One byte more than the limit: a datagram that fills it was longer, which the
            // request then reports (`DatagramRequest::truncated`) instead of hiding.
            Endpoint::Datagram(_) => vec![0; self.config.max_packet_size.saturating_add(1)],
            _ => Vec::new(),
        };
        // When the loop must act without a request: the handle_request timeout, or the
        // next service_actions call.
        let mut timer = match service {
            Some((interval, _)) => Some(Instant::now() + *interval),
            None if once => self.config.timeout.map(|t| Instant::now() + t),
            None => None,
        };
        let hub = self.home.state();
        let mut processed = false;
        let result = loop {
            if self.control.is_stopping() {
                break Ok(processed);
            }
            if timer.is_some_and(|due| due <= Instant::now()) {
                match service {
                    Some((interval, hook)) => {
                        hook();
                        // Counted from the hook's end, and then on to `receive`: a hook
                        // slower than its interval must not starve the requests.
                        timer = Some(Instant::now() + *interval);
                    }
                    None => {
                        if let Some(hook) = &self.config.hooks.handle_timeout {
                            hook();
                        }
                        break Ok(processed);
                    }
                }
            }
            let limit = self.exchange_limit(inline);
            let may_run = || self.control.unpark_within(limit);
            let served = match hub.turn(&may_run, timer, &|| self.control.is_stopping()) {
                Turn::Woken => false,
                Turn::Run(ready) => {
                    self.run_ready(ready, inline);
                    true
                }
                Turn::Lead(leadership) => {
                    let led = self.lead(endpoint, &mut lead.lock(), &mut buffer, timer, inline, leadership);
                    match led {
                        Ok(Led::Received(incoming, slot)) => {
                            // The lead is given up: another free loop waits in the poller
                            // while this one serves.
                            self.admit(incoming, socket.as_ref(), slot, inline, true);
                            true
                        }
                        Ok(Led::Waited) => false,
                        Ok(Led::Stopped) => break Ok(processed),
                        Err(e) => break Err(e),
                    }
                }
            };
            if served {
                processed = true;
                if once {
                    break Ok(processed);
                }
            }
        };
        // A loop that stops passes the wake on: the shutdown notified the poller once,
        // and another loop may have been about to wait in it, or for the lead, when this
        // one took that notification.
        if self.control.is_stopping() {
            self.home.wake();
            hub.wake_followers();
        }
        // A loop that stops closes the parked connections: they are idle, and the
        // shutdown waits for every connection. (`handle_request` leaves them for the next
        // call.)
        if self.control.is_stopping() || (result.is_err() && !once) {
            self.end_parked();
        }
        result
    }

    /// One lead: receive what the socket has and admit it (after giving up the lead),
    /// or wait in the poller for it and for the parked connections.
    fn lead(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        lead: &mut Lead<'_>,
        buffer: &mut [u8],
        timer: Option<Instant>,
        inline: bool,
        leadership: Leadership,
    ) -> Result<Led<'_>> {
        let Leadership { work_waiting, batch } = leadership;
        let mut leading = Leading { engine: self, ready: batch };
        // Work waits in the queue that this loop may not run yet (a thread per request at
        // its limit): the lead also waits for room, so that the exchange that frees it
        // wakes the poller. Room already: back to the queue.
        let mut room = RoomWait(None);
        if work_waiting {
            if !self.control.wait_for_room(self.exchange_limit(inline)) {
                return Ok(Led::Waited);
            }
            room.0 = Some(&self.control);
        }
        let (connections, exchanges) = self.waits_at_limit(inline);
        let Some(slot) = self.control.try_reserve(connections, exchanges) else {
            // At the limit: wait for the parked connections alone, until a request ends
            // (which fires the waker), a shutdown, or the timer.
            let polled = self.poll(lead, timer, false, &mut leading.ready);
            self.control.stop_waiting_for_capacity();
            polled?;
            return Ok(Led::Waited);
        };
        // While the socket waits armed in the poller and unreported, nothing has come that
        // the next wait would not report: the try is skipped (it would find nothing, a
        // system call per lead).
        let received = match lead.readiness.listening() {
            true => Err(io::ErrorKind::WouldBlock.into()),
            false => endpoint.receive(buffer),
        };
        match received {
            Ok(incoming) => {
                (lead.readable, lead.empty_wakes, lead.empty_backoff) = (false, 0, None);
                if lead.backoff.take().is_some() {
                    log::info!(target: LOG_TARGET, "accepting again");
                }
                Ok(Led::Received(incoming, slot))
            }
            // Nothing there (or the socket armed and unreported, above): sleep until
            // there is, a shutdown, or the timer. A burst of connections or datagrams is
            // taken without it: the wait that reports the socket uses up its arm, and
            // each lead after takes one until none is left.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                drop(slot);
                let mut until = timer;
                let mut listen = true;
                if lead.readable {
                    if sys::is_shut_down_for_reading(lead.readiness.socket()) {
                        // A shutdown lets go of the socket the server bound, shutting it
                        // down for reading (Linux): then this is the stop, not a break,
                        // whether or not the loop has seen the stop flag yet. Looked at
                        // after the socket, so that a shutdown in between is seen.
                        let ours = self.control.endpoint().is_some_and(|e| Arc::ptr_eq(&e, endpoint));
                        if self.control.is_stopping() || !ours || self.control.stop_pending() {
                            return Ok(Led::Stopped);
                        }
                        let broken =
                            io::Error::new(io::ErrorKind::NotConnected, "the socket was shut down for reading");
                        return Err(Error::Accept(broken));
                    }
                    lead.empty_wakes += 1;
                    if lead.empty_wakes >= EMPTY_WAKES_BEFORE_BACK_OFF {
                        // Readable for ever and never anything to take: do not spin.
                        let delay = next_backoff(lead.empty_backoff);
                        lead.empty_backoff = Some(delay);
                        until = earliest(until, Some(Instant::now() + delay));
                        listen = false;
                    }
                }
                let readable = self.poll(lead, until, listen, &mut leading.ready)?;
                lead.readable = listen && readable;
                Ok(Led::Waited)
            }
            Err(_) if self.control.is_stopping() => Ok(Led::Waited),
            Err(e) => match sys::classify_accept_error(&e) {
                AcceptError::Retry => Ok(Led::Waited),
                AcceptError::Exhausted => {
                    let delay = next_backoff(lead.backoff);
                    if lead.backoff.is_none() {
                        log_or_stderr(
                            log::Level::Warn,
                            &format!("accept failed: {e}; backing off until resources free up"),
                        );
                    }
                    lead.backoff = Some(delay);
                    drop(slot);
                    // The back-off waits in the poller, not on the socket: the parked
                    // connections' next bytes and closes are still served meanwhile, and
                    // their closes are what gives descriptors back.
                    self.poll(lead, earliest(timer, Some(Instant::now() + delay)), false, &mut leading.ready)?;
                    Ok(Led::Waited)
                }
                AcceptError::Fatal => Err(Error::Accept(e)),
                AcceptError::Other => {
                    self.report(&Error::Accept(e), None);
                    Ok(Led::Waited)
                }
            },
        }
    }

    /// Waits in the poller as the leader (for the server socket too, with `listen`),
    /// and puts in `ready` the parked connections it reported and those idle too long.
    /// Returns whether the server socket was reported.
    ///
    /// A connection whose idle deadline has passed is ended only if it has nothing to
    /// read: bytes that arrived while every loop was busy are a request, served late
    /// rather than dropped.
    fn poll(&self, lead: &mut Lead<'_>, until: Option<Instant>, listen: bool, ready: &mut Vec<Ready>) -> Result<bool> {
        let lot = self.home.state().lot();
        let deadline = earliest(until, lot.next_deadline());
        lead.reported.clear();
        let readable = lead.readiness.wait(deadline, listen, &mut lead.reported).map_err(Error::Io)?;
        let now = Instant::now();
        lot.take_each(lead.reported.drain(..), |mut parked| {
            parked.ready_at = Some(now);
            ready.push(Ready::Exchange(parked));
        });
        if deadline.is_some() {
            let expired = lot.expired(Instant::now());
            if !expired.is_empty() {
                log::debug!(target: LOG_TARGET, "{} parked connection(s) past their idle timeout", expired.len());
            }
            for parked in expired {
                // (Not one waiting to send: what a slow reader sends is no progress.)
                if !parked.request.sending() && parked.request.connection().has_input() {
                    let mut parked = parked;
                    parked.ready_at = Some(Instant::now());
                    ready.push(Ready::Exchange(parked));
                } else {
                    ready.push(Ready::End(parked));
                }
            }
        }
        Ok(readable)
    }

    /// Runs a connection taken from the ready queue as the mode runs a new connection;
    /// the turn that took it counted it as no longer parked
    /// ([`Control::unpark_within`](crate::handle::Control::unpark_within)).
    fn run_ready(self: &Arc<Self>, ready: Ready, inline: bool) {
        let (parked, end) = match ready {
            Ready::Exchange(parked) => (parked, false),
            Ready::End(parked) => (parked, true),
        };
        let (ticket, request) = self.unparked_request(parked);
        if inline {
            // Straight to its exchange: a `Work` (the size of its largest variant) is
            // neither built nor moved twice for every message.
            self.resume(ticket, request, end);
            return;
        }
        self.dispatch_work(ticket, Work::Resume { request, end }, inline);
    }

    /// A parked connection taken out to run: no longer counted as parked.
    fn unpark(&self, parked: Parked, end: bool) -> (crate::handle::Ticket, Work) {
        self.control.unparked();
        let (ticket, request) = self.unparked_request(parked);
        (ticket, Work::Resume { request, end })
    }

    /// The request of a parked connection already counted as no longer parked.
    fn unparked_request(&self, parked: Parked) -> (crate::handle::Ticket, Box<crate::request::StreamRequest>) {
        let mut request = parked.request;
        if parked.ready_at.is_some() {
            request.ready_at = parked.ready_at;
        }
        (parked.ticket, request)
    }

    /// Ends the parked connections, those in the ready queue included, and makes those
    /// that try to park from now on end instead (until the next serve call opens the lot
    /// again). Idle ones end on this thread. One whose client's next message has arrived
    /// (bytes waiting, or a message buffered) is served first: a request that arrived is
    /// answered, also at a stop (a new connection of a framed server that sent its first
    /// message while the stop came, or a keep-alive client's next request). That exchange
    /// goes to the dispatch mode as any other, counts as running, and the stop's deadline
    /// bounds it; then the connection ends, as it cannot park again.
    ///
    /// A new connection accepted less than
    /// [`NEW_CONNECTION_GRACE`](super::run::NEW_CONNECTION_GRACE) ago whose first message
    /// has not come yet (a client that connects and sends at once, and lost the race with
    /// the stop) is given the rest of that grace for its first bytes, cut short by its
    /// idle deadline and the stop's (`Engine::grace_ends`): all such connections are
    /// waited for together on this thread, in a poller of their own, after the others
    /// are dispatched, and each is served as its bytes come, or ended unread when its
    /// time is up.
    pub(super) fn end_parked(self: &Arc<Self>) {
        let (queued, parked) = self.home.state().close();
        let mut fresh = Vec::new();
        for mut parked in queued.into_iter().chain(parked) {
            let request = &mut parked.request;
            if owed_at_a_stop(request) {
                let (ticket, work) = self.unpark(parked, false);
                self.dispatch_work(ticket, work, false);
                continue;
            }
            if request.sending() {
                self.end(parked);
                continue;
            }
            // A new connection's grace, cut short by its idle deadline too.
            let grace_ends = match self.grace_ends(request) {
                Some(ends) if request.exchanges() == 0 => Some(parked.deadline.map_or(ends, |idle| idle.min(ends))),
                _ => None,
            };
            match grace_ends {
                Some(ends) if ends > Instant::now() => fresh.push((parked, ends)),
                _ => self.end(parked),
            }
        }
        if !fresh.is_empty() {
            self.await_first_bytes(fresh);
        }
    }

    /// Waits for the first bytes of new connections that a stop caught before their
    /// first message, each until its instant: serves each whose bytes come, and ends the
    /// others unread.
    fn await_first_bytes(self: &Arc<Self>, fresh: Vec<(Parked, Instant)>) {
        // The sockets are borrowed from connections held here, apart from the requests,
        // which leave for the dispatch mode as their bytes come.
        let connections: Vec<_> = fresh.iter().map(|(parked, _)| parked.request.connection_arc().clone()).collect();
        let deadlines: Vec<Instant> = fresh.iter().map(|(_, ends)| *ends).collect();
        let mut waiting: Vec<Option<Parked>> = fresh.into_iter().map(|(parked, _)| Some(parked)).collect();
        let sockets: Option<Vec<_>> = connections.iter().map(|connection| connection.sock()).collect();
        let waited = sockets.ok_or(()).and_then(|sockets| {
            crate::net::wait_each_readable(&sockets, &deadlines, |i| {
                if let Some(parked) = waiting[i].take() {
                    let (ticket, work) = self.unpark(parked, false);
                    self.dispatch_work(ticket, work, false);
                }
            })
            .map_err(|e| log::debug!(target: LOG_TARGET, "waiting for new connections' first bytes at a stop: {e}"))
        });
        if waited.is_err() {
            // No poller (out of descriptors) or no socket: what has come is served.
            for slot in &mut waiting {
                if slot.as_mut().is_some_and(|parked| parked.request.connection().has_input()) {
                    let (ticket, work) = self.unpark(slot.take().expect("looked at"), false);
                    self.dispatch_work(ticket, work, false);
                }
            }
        }
        // Silent until their time was up (or not waited for): closed unread.
        for parked in waiting.into_iter().flatten() {
            self.end(parked);
        }
    }

    /// A connection the poller reported that the lot, closed by a stop meanwhile, did
    /// not take back: its request has arrived (the report is why it is here), and is
    /// answered on this thread within the stop's deadline, as the stop answers those it
    /// finds (`end_parked`). It used to be closed unread, and its client saw a reset (a
    /// restart's old process reset the requests that arrived in the instant of its stop).
    fn end_late(&self, late: Ready) {
        let Ready::Exchange(mut parked) = late else { return self.end(late.into_parked()) };
        if !owed_at_a_stop(&mut parked.request) {
            return self.end(parked);
        }
        let (ticket, work) = self.unpark(parked, false);
        self.run(ticket, work);
    }

    /// Ends one parked connection on this thread: `finish`, then close.
    pub(super) fn end(&self, parked: Parked) {
        let (ticket, work) = self.unpark(parked, true);
        self.run(ticket, work);
    }
}

/// Whether a stop still owes a parked connection an exchange, within its deadline: its
/// next message has arrived (bytes buffered or waiting), or a reply the writer held waits
/// to be sent, as a running request's reply would be. A body from `send_from` is cut.
fn owed_at_a_stop(request: &mut crate::request::StreamRequest) -> bool {
    match request.sending() {
        true => request.sending_reply(),
        false => !request.reader_mut().buffer().is_empty() || request.connection().has_input(),
    }
}

/// The next delay of a back-off: [`BACKOFF_START`], doubling up to [`BACKOFF_MAX`].
fn next_backoff(last: Option<Duration>) -> Duration {
    last.map_or(BACKOFF_START, |d| (d * 2).min(BACKOFF_MAX))
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
