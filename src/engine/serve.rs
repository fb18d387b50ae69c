//! The serve loop: receive a request, admit it, again, until shutdown.
//!
//! One loop for every transport, mode and platform. It takes what the non-blocking
//! socket has and, when it has nothing, waits for readiness with no timeout (unless
//! `handle_request`'s timeout or a `service_actions` interval asks for one); `shutdown`
//! fires the loop's waker ([`crate::net::Readiness`]). A pool runs one copy per worker
//! on the shared socket, and the thread that called `serve_forever` supervises them.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::park::{Home, Lot, Parked};
use super::run::Work;
use super::Engine;
use crate::config::PlainHook;
use crate::dispatch::Kind;
use crate::error::{Error, Result};
use crate::handle::{Control, CurrentServer, ServeCall};
use crate::net::{Endpoint, Readiness};
use crate::report::{log_or_stderr, LOG_TARGET};
use crate::sys::{self, AcceptError};

/// The first wait when accepting fails for lack of descriptors or memory; it doubles
/// with each failure in a row, up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How many times in a row the poller may call the socket readable when it has nothing
/// before the loop backs off: pool workers that lose the race for a connection see it
/// now and then, a socket broken in a way the platform cannot name sees it for ever.
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
        if once {
            let result = self.receive_loop(endpoint, true, None, self.inline);
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
            let result = self.receive_loop(endpoint, false, service, inline);
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
        match Kind::of(&*self.dispatch) {
            // Each worker runs what it receives, on its own thread: the kernel hands a
            // connection straight to an idle worker, with no handoff between threads.
            Kind::Pool(pool) => pool.run_workers(self.loops, &|| serve_loop(true), &|| self.supervise(service)),
            _ => serve_loop(self.inline),
        }
        // Let go of the socket before waiting for the requests: one that a shutdown let go
        // of closes now, so new connections are refused (or, with SO_REUSEPORT, go to the
        // other processes) while running requests finish.
        drop(socket);
        // serve_forever waits for what it started, unless the mode says not to.
        if self.waits_for_requests() {
            self.control.await_requests(self.control.deadline());
        }
        outcome.into_inner()
    }

    /// While other threads run the serve loop: calls service_actions at its interval
    /// until shutdown, then enforces the shutdown deadline.
    fn supervise(&self, service: Option<&(Duration, PlainHook)>) {
        let _current = CurrentServer::enter(&self.control);
        let _stop = StopOnUnwind(&self.control);
        let mut next = service.map(|(interval, _)| Instant::now() + *interval);
        while !self.control.wait_for_stop(next) {
            if let Some((interval, hook)) = service {
                hook();
                next = Some(Instant::now() + *interval);
            }
        }
        // Parked connections are idle: they close now, also on a worker that is busy
        // with another exchange and would close its own only after it.
        for home in self.pollers.all() {
            self.end_parked(&home, home.state().close());
        }
        // The workers run the requests themselves and cannot return before they end, so
        // the deadline is enforced from here, also when the shutdown came from inside
        // (a handler, a hook, a broken socket), where nobody else waits for it.
        let deadline = self.control.deadline();
        if deadline.is_some() {
            self.control.await_requests(deadline);
        }
    }

    /// Receives and admits requests until shutdown (or, with `once`, one request or
    /// the `handle_request` timeout). `inline`: run each request on this thread.
    /// Returns whether a request was processed.
    fn receive_loop(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        once: bool,
        service: Option<&(Duration, PlainHook)>,
        inline: bool,
    ) -> Result<bool> {
        let _current = CurrentServer::enter(&self.control);
        let mut buffer = match &**endpoint {
            // One byte more than the limit: a datagram that fills it was longer, which the
            // request then reports (`DatagramRequest::truncated`) instead of hiding.
            Endpoint::Datagram(_) => vec![0; self.config.max_packet_size.saturating_add(1)],
            _ => Vec::new(),
        };
        // When the loop must act without a request: the handle_request timeout, or the
        // next service_actions call.
        let timer = match service {
            Some((interval, _)) => Some(Instant::now() + *interval),
            None if once => self.config.timeout.map(|t| Instant::now() + t),
            None => None,
        };
        // Registered before the first look at the stop flag: a shutdown from then on
        // either is seen at the top of the loop or makes the next wait return at once.
        let mut ready = self.pollers.readiness(endpoint)?;
        let _waker = self.control.register_waker(ready.waker());
        let home = ready.station().clone();
        home.state().open();
        let result = self.receive_on(endpoint, &mut ready, &mut buffer, timer, once, service, inline);
        // A loop that stops closes the connections parked on it: they are idle, and the
        // shutdown waits for every connection. (`handle_request` leaves them for the next
        // call.)
        if self.control.is_stopping() || (result.is_err() && !once) {
            self.end_parked(&home, home.state().close());
        }
        result
    }

    /// The loop of [`Engine::receive_loop`], on its poller.
    #[allow(clippy::too_many_arguments)]
    fn receive_on(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        ready: &mut Readiness<'_, Lot>,
        buffer: &mut [u8],
        mut timer: Option<Instant>,
        once: bool,
        service: Option<&(Duration, PlainHook)>,
        inline: bool,
    ) -> Result<bool> {
        let home = ready.station().clone();
        let socket = match &**endpoint {
            Endpoint::Datagram(socket) => Some(socket.clone()),
            _ => None,
        };
        let mut backoff: Option<Duration> = None;
        // The poller said readable, and the socket then had nothing: a pool worker that
        // lost the race for a connection, or a socket that will never have anything.
        let mut readable = false;
        let mut empty_wakes = 0u32;
        let mut empty_backoff: Option<Duration> = None;
        let mut processed = false;
        let mut reported = Vec::new();
        loop {
            if self.control.is_stopping() {
                break;
            }
            let now = Instant::now();
            if timer.is_some_and(|due| due <= now) {
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
                        break;
                    }
                }
            }
            let Some(slot) = self.control.try_reserve(self.waits_at_limit(inline)) else {
                // At the limit: wait for the parked connections alone, until a request
                // ends (which fires the waker), a shutdown, or the timer.
                let waited = self.wait(ready, timer, false, &mut reported, inline);
                self.control.stop_waiting_for_capacity();
                if waited?.1 {
                    processed = true;
                    if once {
                        break;
                    }
                }
                continue;
            };
            match endpoint.receive(buffer) {
                Ok(incoming) => {
                    (empty_wakes, empty_backoff) = (0, None);
                    if backoff.take().is_some() {
                        log::info!(target: LOG_TARGET, "accepting again");
                    }
                    self.admit(incoming, socket.as_ref(), slot, inline, Some(&home));
                    processed = true;
                    if once {
                        break;
                    }
                }
                // Nothing there: sleep until there is, a shutdown, or the timer. Under load
                // this is never reached, and a burst of datagrams is drained without it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if readable {
                        if sys::is_shut_down_for_reading(ready.socket()) {
                            // A shutdown lets go of the socket the server bound, shutting
                            // it down for reading (Linux): then this is the stop, not a
                            // break, whether or not the loop has seen the stop flag yet.
                            // Looked at after the socket, so that a shutdown in between
                            // is seen.
                            let ours = self.control.endpoint().is_some_and(|e| Arc::ptr_eq(&e, endpoint));
                            if self.control.is_stopping() || !ours || self.control.stop_pending() {
                                break;
                            }
                            let broken =
                                io::Error::new(io::ErrorKind::NotConnected, "the socket was shut down for reading");
                            return Err(Error::Accept(broken));
                        }
                        empty_wakes += 1;
                        if empty_wakes >= EMPTY_WAKES_BEFORE_BACK_OFF {
                            // Readable for ever and never anything to take: do not spin.
                            let delay = empty_backoff.map_or(BACKOFF_START, |d| (d * 2).min(BACKOFF_MAX));
                            empty_backoff = Some(delay);
                            self.control.back_off(delay);
                        }
                    }
                    drop(slot);
                    let resumed;
                    (readable, resumed) = self.wait(ready, timer, true, &mut reported, inline)?;
                    if resumed {
                        processed = true;
                        if once {
                            break;
                        }
                    }
                    continue;
                }
                Err(_) if self.control.is_stopping() => break,
                Err(e) => match sys::classify_accept_error(&e) {
                    AcceptError::Retry => {}
                    AcceptError::Exhausted => {
                        let delay = backoff.map_or(BACKOFF_START, |d| (d * 2).min(BACKOFF_MAX));
                        if backoff.is_none() {
                            log_or_stderr(
                                log::Level::Warn,
                                &format!("accept failed: {e}; backing off until resources free up"),
                            );
                        }
                        backoff = Some(delay);
                        self.control.back_off(delay);
                    }
                    AcceptError::Fatal => return Err(Error::Accept(e)),
                    AcceptError::Other => self.report(&Error::Accept(e), None),
                },
            }
        }
        Ok(processed)
    }

    /// Waits in the loop's poller (for the server socket too, with `listen`), then runs
    /// the parked connections it reported and ends those idle too long. Returns whether
    /// the server socket was reported, and whether a parked connection was resumed.
    fn wait(
        self: &Arc<Self>,
        ready: &mut Readiness<'_, Lot>,
        timer: Option<Instant>,
        listen: bool,
        reported: &mut Vec<usize>,
        inline: bool,
    ) -> Result<(bool, bool)> {
        let home = ready.station().clone();
        let lot = home.state();
        let deadline = match (timer, lot.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        reported.clear();
        let readable = ready.wait(deadline, listen, reported).map_err(Error::Io)?;
        let mut resumed = false;
        for key in reported.drain(..) {
            if let Some(parked) = lot.take(key) {
                self.control.counters.parked.fetch_sub(1, Ordering::Relaxed);
                self.resume(&home, parked, false, inline);
                resumed = true;
            }
        }
        if deadline.is_some() {
            let expired = lot.expired(Instant::now());
            if !expired.is_empty() {
                log::debug!(target: LOG_TARGET, "closing {} connection(s) idle too long", expired.len());
                for parked in expired {
                    self.control.counters.parked.fetch_sub(1, Ordering::Relaxed);
                    self.resume(&home, parked, true, inline);
                }
            }
        }
        Ok((readable, resumed))
    }

    /// Runs a parked connection's next exchange (or, with `end`, its end) as the mode
    /// runs a new connection.
    fn resume(self: &Arc<Self>, home: &Arc<Home>, parked: Parked, end: bool, inline: bool) {
        let work = Work::Resume { request: parked.request, home: home.clone(), end };
        self.dispatch_work(parked.ticket, work, inline);
    }

    /// Ends connections taken out of a lot that closed, on this thread.
    pub(super) fn end_parked(&self, home: &Arc<Home>, parked: Vec<Parked>) {
        for parked in parked {
            self.control.counters.parked.fetch_sub(1, Ordering::Relaxed);
            let work = Work::Resume { request: parked.request, home: home.clone(), end: true };
            self.run(parked.ticket, work);
        }
    }
}
