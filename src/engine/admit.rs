//! Admission: what happens to a connection or a datagram between `accept` and the
//! handler. `verify_request`, the connection limit (a place reserved before accepting,
//! or a refusal when full), then the request runs inline or goes to the dispatch mode.

use std::io::Read;
use std::net::Shutdown;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run::Work;
use super::Engine;
use crate::config::Peer;
use crate::dispatch::Job;
use crate::error::{Error, Phase, Result};
use crate::handle::{Capacity, Slot, Ticket};
use crate::net::{Address, Connection, DatagramSocket, Incoming};
use crate::report::panic_message;
use crate::request::{report_state, ConnState, ConnectionId};

/// How long refusing a connection may block the serve loop on a client that does not read.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

impl Engine {
    /// The limits the serve loop waits at before accepting, if any: on connections
    /// (parked ones included) and on exchanges running at once (parked connections not
    /// included: they hold no thread). A server that refuses when full must keep
    /// accepting in order to refuse, so it waits at none.
    pub(super) fn waits_at_limit(&self, runs_inline: bool) -> (Option<usize>, Option<usize>) {
        if self.config.hooks.refuse_when_full.is_some() {
            return (None, None);
        }
        (self.config.max_connections, self.exchange_limit(runs_inline))
    }

    /// How many exchanges may run at once. A pool's workers run one each, so they bound
    /// the exchanges by themselves, but for the spare loop of a pool that refuses when
    /// full; everywhere else, the mode's own limit: one for a sequential server (also
    /// for a connection `process_request` runs beside its serve loop), `max_threads` for
    /// a thread per request, the pool's size for `handle_request` on a pool.
    pub(super) fn exchange_limit(&self, runs_inline: bool) -> Option<usize> {
        if runs_inline && !self.inline {
            self.refuse_at_exchanges
        } else {
            self.dispatch.max_concurrent()
        }
    }

    /// Verifies and runs one request (on this thread with `inline`, else through the
    /// dispatch mode); `socket` is the server's, for a datagram's reply. Never fails:
    /// problems go to `handle_error`.
    pub(super) fn admit(
        self: &Arc<Self>,
        incoming: Incoming,
        socket: Option<&Arc<DatagramSocket>>,
        slot: Option<Slot<'_>>,
        inline: bool,
        parks: bool,
    ) {
        // A fault layer of `testing` takes the connection first, so that everything the
        // server does with it, from `verify_request` on, goes through its faults.
        let incoming = match (incoming, &self.config.interpose) {
            (Incoming::Stream(connection, client), Some(layer)) => match layer.stream(connection, &client) {
                Some(connection) => Incoming::Stream(connection, client),
                None => {
                    self.control.counters.untracked.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            (incoming, _) => incoming,
        };
        // A stream connection is numbered, and is `New`, from here.
        let id = match &incoming {
            Incoming::Stream(..) => {
                let id = ConnectionId(self.control.counters.connections.fetch_add(1, Ordering::Relaxed) + 1);
                self.state(id, incoming.client(), ConnState::New);
                Some(id)
            }
            Incoming::Datagram(..) => None,
        };
        // Behind a PROXY protocol proxy the address here is the proxy's: the request is
        // verified once its header names the client (in `run`). A peer that is neither a
        // trusted proxy nor allowed as a direct client is closed unread.
        let turned_away = match self.config.peer(incoming.client()) {
            Peer::Proxy => false,
            Peer::Direct => !self.verify(incoming.client(), incoming.connection()),
            Peer::Untrusted => {
                log::debug!("{}: not a trusted proxy; connection closed", incoming.client());
                self.control.counters.denied.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        if turned_away {
            self.control.counters.untracked.fetch_add(1, Ordering::Relaxed);
            if let Some(id) = id {
                self.state(id, incoming.client(), ConnState::Denied);
            }
            return; // dropping `incoming` closes the connection, once
        }
        let (work, connection) = match (incoming, socket) {
            (Incoming::Stream(connection, client), _) => {
                let connection = Arc::new(connection);
                let id = id.expect("numbered above");
                (Work::Stream(connection.clone(), client, parks, id, Instant::now()), Some(connection))
            }
            (Incoming::Datagram(packet, client), Some(socket)) => {
                (Work::Datagram(packet, client, socket.clone(), Instant::now()), None)
            }
            (Incoming::Datagram(..), None) => unreachable!("a datagram from a stream socket"),
        };
        let refusing = self.config.hooks.refuse_when_full.is_some();
        let refuse_at = self.config.max_connections.filter(|_| refusing);
        // A pool's loops run what they accept: one is spare, to refuse on, and must not
        // start a request while every worker runs one.
        let refuse_at_exchanges = self.exchange_limit(inline).filter(|_| refusing);
        let Some(ticket) = self.control.track_within(connection, slot, refuse_at, refuse_at_exchanges) else {
            if let Work::Stream(connection, client, _, id, _) = work {
                self.refuse(&connection, &client);
                self.state(id, &client, ConnState::Refused);
            }
            return;
        };
        self.dispatch_work(ticket, work, inline);
    }

    /// Runs `work` on this thread (`inline`) or as a job of the dispatch mode: a new
    /// connection, a datagram, or a parked connection's next exchange alike.
    pub(super) fn dispatch_work(self: &Arc<Self>, ticket: Ticket, work: Work, inline: bool) {
        if inline {
            self.run(ticket, work);
            return;
        }
        let client = work.client().clone();
        // Counted as waiting until it starts (or is dropped unrun).
        self.control.counters.waiting.fetch_add(1, Ordering::Relaxed);
        let mut pending = Pending { engine: self.clone(), parts: Some((ticket, work)) };
        let job = Job::new(move || {
            if let Some((ticket, work)) = pending.parts.take() {
                pending.engine.control.counters.waiting.fetch_sub(1, Ordering::Relaxed);
                pending.engine.run(ticket, work);
            }
        });
        if let Err(e) = self.dispatch.execute(job) {
            self.report(&Error::Dispatch(e), Some(&client));
        }
    }
}

/// A job's work until it runs. Dropped unrun (the mode could not run it), a parked
/// connection's next exchange still ends properly: `finish`, and its place in the lot
/// given back. (A new connection or a datagram just closes, as it never began; the
/// connection is reported `Closed` and counted as ended.)
struct Pending {
    engine: Arc<Engine>,
    parts: Option<(Ticket, Work)>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.parts.is_some() {
            self.engine.control.counters.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        match self.parts.take() {
            Some((ticket, Work::Resume { request, .. })) => {
                self.engine.run(ticket, Work::Resume { request, end: true })
            }
            Some((_, Work::Stream(_, client, _, id, _))) => {
                self.engine.state(id, &client, ConnState::Closed);
            }
            _ => {}
        }
    }
}

impl Engine {
    /// Tells the `connection_state` hook, if there is one, of a connection that has no
    /// request (yet, or ever); a last state also counts the connection as ended. (A
    /// request reports its own states, and its end, through `StreamRequest::enter_state`.)
    pub(super) fn state(&self, id: ConnectionId, client: &Address, state: ConnState) {
        if let Some(hook) = &self.config.hooks.connection_state {
            report_state(hook, id, client, state);
        }
        if state.is_last() {
            self.control.counters.connections_ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `verify_request`: `false` turns the request down, after `shutdown_request`
    /// for a connection (as CPython does, bpo-26309); a panic in the hook counts as
    /// `false` and is reported.
    pub(super) fn verify(&self, client: &Address, connection: Option<&Connection>) -> bool {
        let Some(verify) = &self.config.hooks.verify_request else { return true };
        match panic::catch_unwind(AssertUnwindSafe(|| verify(client))) {
            Ok(true) => true,
            Ok(false) => {
                self.control.counters.denied.fetch_add(1, Ordering::Relaxed);
                if let Some(connection) = connection {
                    let _ = self.guarded(Phase::Respond, client, || self.config.hooks.shutdown_request(connection));
                }
                false
            }
            Err(payload) => {
                let error = Error::Panic { phase: Phase::Setup, message: panic_message(&*payload) };
                self.report(&error, Some(client));
                false
            }
        }
    }

    /// Turns a connection away when the server is full: the hook may write a short
    /// reply, then the connection is closed, on the serve loop's thread.
    fn refuse(&self, connection: &Connection, client: &Address) {
        self.control.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.control.counters.untracked.fetch_add(1, Ordering::Relaxed);
        let Some(hook) = &self.config.hooks.refuse_when_full else { return };
        // Never let a client that does not read stall the serve loop.
        let _ = connection.set_write_timeout(Some(REFUSE_WRITE_TIMEOUT));
        let _ = self.guarded(Phase::Respond, client, || hook(connection, client));
        // Closing with unread bytes makes the kernel send a reset, which can destroy the
        // reply before the client reads it: read what has arrived, then end the stream.
        let _ = connection.shutdown(Shutdown::Write);
        if connection.set_nonblocking(true).is_ok() {
            let mut scratch = [0u8; 4096];
            for _ in 0..16 {
                match (&*connection).read(&mut scratch) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
    }

    /// Runs a connection obtained outside the serve loop: see
    /// [`Server::process_request`](crate::Server::process_request).
    pub(crate) fn process_request(self: &Arc<Self>, connection: Connection, client: Address) -> Result<()> {
        if self.control.is_closed() {
            return Err(Error::Closed);
        }
        let (connections, exchanges) = self.waits_at_limit(self.inline);
        let slot = match self.control.wait_for_capacity(connections, exchanges, None) {
            Capacity::Free(slot) => slot,
            Capacity::Stopping | Capacity::Timer => None,
        };
        // Outside the serve loop there is no poller to park in: the connection ends
        // after its exchange.
        self.admit(Incoming::Stream(connection, client), None, slot, self.inline, false);
        Ok(())
    }
}
