//! One request, on whatever thread the dispatch mode chose: the request value is built,
//! then `setup`, `handle`, `finish` and the server's own last step run, each caught and
//! reported on its own. A stream request that parks stops after `handle` and comes
//! back here for its next exchange ([`super::park`]).

use std::io::{self, BufRead};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::hub::Ready;
use super::park::Parked;
use super::Engine;
use crate::config::Hooks;
use crate::error::{Error, Phase};
use crate::handle::{CurrentServer, Ticket};
use crate::handler::{AnyHandler, HandlerResult, RequestHandler};
use crate::net::{Address, Connection, DatagramSocket};
use crate::report::panic_message;
use crate::request::{ConnState, ConnectionId, DatagramRequest, Pumped, States, StreamRequest};
use crate::sys;

/// How many pipelined messages of one connection run in a row before it yields to the
/// other connections that are ready (Redis and nginx bound a client's turn the same way).
const EXCHANGES_PER_TURN: u32 = 16;

/// How much of a body one connection sends in a row before it yields to the others
/// that are ready (a fast client of a large file must not hold a worker for all of it).
const SEND_PER_TURN: usize = 1 << 20;

/// How long after its accept a connection that has not sent its first message yet is
/// given for it when the server stops, as Go's `Server.Shutdown` treats new connections
/// (`StateNew`) as active for their first seconds: a client that connected just before
/// the stop and sends at once is answered, not closed unread; one that stays silent is
/// closed when this has passed (it holds the stop no longer).
pub(super) const NEW_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// How many reads of 8 KiB, without waiting, drop what a client sent of a message that
/// broke the frame before its connection closes with a `bad_message` reply (64 KiB).
const BAD_MESSAGE_DRAIN_READS: usize = 8;

/// What a job carries to the thread that runs it.
pub(super) enum Work {
    /// A new connection, and whether it may park in the server's poller (not outside
    /// the serve loop, `process_request`).
    Stream(Arc<Connection>, Address, bool, ConnectionId, Instant),
    /// A parked connection back for its next exchange, or (`end`) to be closed.
    Resume { request: Box<StreamRequest>, end: bool },
    /// A datagram, and when it was received.
    Datagram(Vec<u8>, Address, Arc<DatagramSocket>, Instant),
}

impl Work {
    pub(super) fn client(&self) -> &Address {
        match self {
            Work::Stream(_, client, ..) | Work::Datagram(_, client, ..) => client,
            Work::Resume { request, .. } => request.client_addr(),
        }
    }
}

impl Engine {
    /// Runs one request. `ticket` counts it as running until it is dropped, at the end
    /// (or it goes with the request when it parks).
    pub(super) fn run(&self, ticket: Ticket, work: Work) {
        let _current = CurrentServer::enter(ticket.control());
        let handler = match (&work, &self.handler) {
            (Work::Datagram(..), AnyHandler::Datagram(handler)) => {
                let Work::Datagram(packet, client, socket, received) = work else { unreachable!() };
                let report = |error: Error, client: &Address| self.report(&error, Some(client));
                let counters = &self.control.counters;
                counters.bytes_in.fetch_add(packet.len() as u64, Ordering::Relaxed);
                let mut request =
                    DatagramRequest::new(packet, self.config.max_packet_size, client, socket, self.handle());
                if !self.config.timings {
                    run_phases(&**handler, &mut request, &self.config.hooks, &report, Start::Setup);
                    return;
                }
                let began = Instant::now();
                counters.queue_wait.record(began.saturating_duration_since(received));
                run_phases(&**handler, &mut request, &self.config.hooks, &report, Start::Setup);
                counters.exchanges.record(began.elapsed());
                return;
            }
            (_, AnyHandler::Stream(handler)) => &**handler,
            _ => unreachable!("the transport fixes the handler's request type"),
        };
        match work {
            Work::Stream(connection, client, parks, id, accepted) => {
                if let Err(e) = self.configure(&connection) {
                    self.report(&Error::Io(e), Some(&client));
                    self.state(id, &client, ConnState::Closed);
                    return;
                }
                let config = &self.config;
                let request = Box::new(StreamRequest::new(
                    connection,
                    client,
                    self.handle(),
                    config.rbufsize,
                    config.wbufsize,
                    (config.read_timeout, config.write_timeout),
                ));
                let (mut request, mut ticket) = (request, ticket);
                request.states = Some(States::new(config.hooks.connection_state.clone(), id));
                request.ready_at = Some(accepted);
                request.accepted_at = Some(accepted);
                let waits = config.client_speaks_first || config.frame.is_some();
                if waits && parks {
                    // Nothing to do before the client's first bytes (or, with a frame, its
                    // first whole message): wait for them parked.
                    // Its first exchange, when it comes, reads under the fallback
                    // timeout too: a client that sends one byte holds no thread for ever.
                    if let Err(e) = request.prepare_to_park(config.idle_timeout) {
                        self.report(&Error::Io(e), Some(request.client_addr()));
                        return;
                    }
                    request.mark_unstarted();
                    match self.park(request, ticket) {
                        Ok(()) => return,
                        // The poller refused the socket (reported): a connection that
                        // waits for its first message cannot wait, and ends before it
                        // began, with no `setup`. (One without a frame starts at once
                        // instead, as it would have.) The server stops serving: it was
                        // accepted just before, and its first message is on its way: it
                        // is given until NEW_CONNECTION_GRACE after its accept for its
                        // first bytes, then starts, its reads bounded by its read
                        // timeout and the stop's deadline; silent, it closes unread.
                        Err(mut parked) if config.frame.is_some() && !self.home.state().lot().is_closed() => {
                            self.forget(&mut parked.request);
                            return;
                        }
                        Err(mut parked) => {
                            if self.home.state().lot().is_closed() && !self.first_bytes_within_grace(&parked.request) {
                                self.forget(&mut parked.request);
                                return;
                            }
                            (request, ticket) = (parked.request, parked.ticket);
                            let _ = request.resumed();
                        }
                    }
                }
                if self.open(&mut request) {
                    self.exchange(handler, request, ticket, parks, Start::Setup);
                }
            }
            Work::Resume { request, end } => self.continue_parked(handler, request, ticket, end),
            Work::Datagram(..) => unreachable!("handled above"),
        }
    }

    /// Runs a parked connection's next exchange (or, `end`, its end) on this thread: what
    /// [`Engine::run`] does with a [`Work::Resume`].
    pub(super) fn resume(&self, ticket: Ticket, request: Box<StreamRequest>, end: bool) {
        let _current = CurrentServer::enter(ticket.control());
        let AnyHandler::Stream(handler) = &self.handler else { unreachable!("only a stream server parks connections") };
        self.continue_parked(&**handler, request, ticket, end);
    }

    fn continue_parked(
        &self,
        handler: &dyn RequestHandler<StreamRequest>,
        mut request: Box<StreamRequest>,
        ticket: Ticket,
        end: bool,
    ) {
        if end {
            // Idle past its timeout, or a shutdown: a body still on its way is given up,
            // not sent on this thread.
            request.abandon_send();
        }
        let start = if end { Start::Finish } else { Start::Resume };
        self.exchange(handler, request, ticket, true, start);
    }

    /// What comes before a connection's `setup`: its PROXY header, then `verify_request`
    /// on the client it names. `false`: the connection is turned away (and reported).
    fn open(&self, request: &mut StreamRequest) -> bool {
        #[cfg(feature = "proxy-protocol")]
        if self.config.peer(request.client_addr()) == crate::config::Peer::Proxy {
            if let Err(source) = request.read_proxy_header(self.config.proxy_header_timeout) {
                self.control.counters.bad_proxy_headers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.report(
                    &Error::Handler { phase: Phase::Setup, source: source.into() },
                    Some(request.client_addr()),
                );
                request.enter_state(ConnState::Denied);
                return false;
            }
            let verified = self.verify(request.client_addr(), Some(request.connection()));
            if !verified {
                request.enter_state(ConnState::Denied);
            }
            return verified;
        }
        let _ = request;
        true
    }

    /// Runs a stream request's exchanges from `start` on this thread until it parks
    /// (and leaves with its ticket) or ends.
    fn exchange(
        &self,
        handler: &dyn RequestHandler<StreamRequest>,
        mut request: Box<StreamRequest>,
        mut ticket: Ticket,
        parks: bool,
        mut start: Start,
    ) {
        let report = |error: Error, client: &Address| self.report(&error, Some(client));
        // A reply or body that could not be sent: the client's leaving is no error.
        let send_failed = |source: io::Error, client: &Address| {
            if !is_disconnect(&source) {
                report(Error::Handler { phase: Phase::Respond, source: source.into() }, client);
            }
        };
        // Exchanges run in a row in this turn (this one included).
        let mut turn = 1;
        loop {
            // When this exchange's handler returned, if the timings read the clock then:
            // the park that follows counts its idle time from there, without reading it
            // again (one of three clock reads per message).
            let mut handled_at = None;
            if let (Start::Resume, true) = (start, request.sending()) {
                // Parked for room to send: the body goes on.
                start = Start::Send;
            }
            if let Start::Resume = start {
                // The poller reported the socket: bytes, the end of the stream, or an
                // error. Only a message makes an exchange; a client that left while
                // parked gets its `finish`, and its reset is no error of the server's.
                // A connection parked before its first exchange (`client_speaks_first`,
                // a frame) has not been set up: it starts now, or, gone, ends with no
                // `finish`.
                let unstarted = request.exchanges() == 0;
                // Not begun, and it cannot park again because the server stops: it was
                // accepted just before the stop, and its client's first message is on
                // its way. It is given until NEW_CONNECTION_GRACE after its accept for
                // its first bytes; then it is served, with blocking reads bounded by its
                // read timeout and the stop's deadline, rather than closed unread. A
                // client silent that long closes unread.
                let mut at_stop = false;
                if unstarted && !request.opened {
                    // Sent back by a stop before anything came (`end_parked`): its first
                    // bytes are waited for here, within the grace, before a read that
                    // would block.
                    let stopping = parks && self.home.state().lot().is_closed();
                    if stopping && request.reader_mut().buffer().is_empty() && !self.first_bytes_within_grace(&request)
                    {
                        break;
                    }
                    match self.first_bytes(&mut request) {
                        Gathered::Message => {}
                        Gathered::Partial => {
                            // Woken with nothing after all: wait again.
                            match self.park_again(request, ticket, parks) {
                                Ok(()) => return,
                                Err(parked) => (request, ticket) = (parked.request, parked.ticket),
                            }
                            if !parks || !self.home.state().lot().is_closed() {
                                break;
                            }
                            if !self.first_bytes_within_grace(&request) {
                                break;
                            }
                            at_stop = true;
                        }
                        Gathered::End | Gathered::Bad(_) => break,
                    }
                    if !self.open(&mut request) {
                        break;
                    }
                    request.opened = true;
                }
                start = if at_stop {
                    if request.resumed() {
                        Start::Setup
                    } else {
                        Start::Handle
                    }
                } else {
                    let mut gathered = self.gather(&mut request);
                    if let Gathered::Partial = gathered {
                        match self.park_again(request, ticket, parks) {
                            Ok(()) => return,
                            Err(parked) => {
                                (request, ticket) = (parked.request, parked.ticket);
                                // It cannot wait parked: the server stops. The first
                                // message of a new connection is read on as it comes,
                                // within the grace of new connections; any other
                                // connection ends here, its message cut.
                                let first = parks && request.exchanges() == 0;
                                gathered = match first && self.home.state().lot().is_closed() {
                                    true => self.gather_within_grace(&mut request),
                                    false => Gathered::End,
                                };
                            }
                        }
                    }
                    match gathered {
                        Gathered::Message => {
                            request.partial_since = None;
                            if request.resumed() {
                                Start::Setup
                            } else {
                                Start::Handle
                            }
                        }
                        Gathered::Partial | Gathered::End => Start::Finish,
                        Gathered::Bad(e) => {
                            self.bad_message(&mut request, e);
                            Start::Finish
                        }
                    }
                };
            }
            if let (Start::Finish, true) = (start, request.exchanges() == 0) {
                break; // closed before it started: nothing to finish
            }
            let outcome = match start {
                Start::Send => match self.send(&mut request, parks) {
                    // All sent: on as `handle` said, to its next message or its end.
                    Ok(Pumped::Done) if request.take_park() => Outcome::Parked,
                    Ok(Pumped::Done) => {
                        start = Start::Finish;
                        continue;
                    }
                    // The client's window is full: wait for room, parked; or, the turn
                    // spent, let the others that are ready run first.
                    Ok(pumped) => {
                        let parked = match pumped {
                            Pumped::Blocked => self.park(request, ticket),
                            _ => self.requeue(request, ticket),
                        };
                        match parked {
                            Ok(()) => return,
                            Err(parked) => (request, ticket) = (parked.request, parked.ticket),
                        }
                        if request.sending_reply() {
                            // A reply the writer held, which cannot wait parked (the server
                            // stops): sent blocking, within the write timeout and the
                            // stop's deadline, as a running request's reply is.
                            if let Err(source) = request.send_rest() {
                                send_failed(source, request.client_addr());
                            }
                        }
                        request.abandon_send();
                        start = Start::Finish;
                        continue;
                    }
                    Err(source) => {
                        send_failed(source, request.client_addr());
                        request.abandon_send();
                        start = Start::Finish;
                        continue;
                    }
                },
                Start::Setup | Start::Handle if !self.config.timings => {
                    request.enter_state(ConnState::Active);
                    run_phases(handler, &mut *request, &self.config.hooks, &report, start)
                }
                Start::Setup | Start::Handle => {
                    request.enter_state(ConnState::Active);
                    let counters = &self.control.counters;
                    let began = Instant::now();
                    if let Some(ready) = request.ready_at.take() {
                        counters.queue_wait.record(began.saturating_duration_since(ready));
                    }
                    let outcome = run_phases(handler, &mut *request, &self.config.hooks, &report, start);
                    let now = Instant::now();
                    counters.exchanges.record(now.saturating_duration_since(began));
                    handled_at = Some(now);
                    outcome
                }
                _ => run_phases(handler, &mut *request, &self.config.hooks, &report, start),
            };
            match outcome {
                Outcome::Ended => break,
                Outcome::Sending => {
                    start = Start::Send;
                    continue;
                }
                Outcome::Parked => {}
            }
            // `handle` parked the connection. A reply it left in the writer goes out from
            // the poller, as a body does, and the connection parks once it is sent.
            // (Not once the server stops: the flush is then a running request's, bounded
            // by the write timeout and the stop's deadline, and the reply is not cut.)
            // (The writer first: an unbuffered server takes no lock here.)
            if parks
                && request.reply_buffered()
                && !self.home.state().lot().is_closed()
                && request.send_buffered_reply()
            {
                request.park();
                start = Start::Send;
                continue;
            }
            if request.reply_buffered() {
                // The flush may wait for the client: the idle time counts from after it.
                handled_at = None;
            }
            if let Err(source) = request.prepare_to_park(self.config.idle_timeout) {
                report(Error::Handler { phase: Phase::Respond, source: source.into() }, request.client_addr());
                start = Start::Finish;
                continue;
            }
            if !parks {
                start = Start::Finish;
                continue;
            }
            // What the client sent meanwhile is taken now, without waiting, rather than
            // through the poller: a client that streams (a 64 KiB message read 8 KiB at
            // a time) or answers fast goes on in this turn, and a poller round trip and
            // the wake-up of another thread are saved. Whatever came since is not lost if
            // the read is not tried: the poller reports it (edge-triggered, the park
            // arms the socket again unless the last read drained it; arming, the poller
            // looks at what is there already). So it is tried when it is likely to find bytes:
            // the last read filled what it asked for (a short one found the socket
            // empty; tokio clears a socket's readiness on a short read for the same
            // reason), or such reads found the client's next message lately. Otherwise
            // every message of a request-reply client would pay a system call that
            // finds nothing (one in three of its calls at 1,000 connections). A read is
            // tried anyway now and then, to notice a client that begins to answer fast:
            // one exchange in eight, and half as often after each such try that found
            // nothing, down to one in 64 (a slow client's tries cost a read per 64
            // messages, not per 8). (Not once the server stops serving: the connection
            // ends after this exchange. Not on Windows, where a read without waiting
            // costs three calls.)
            let stopping = self.home.state().lot().is_closed();
            let hopeful = !request.reader_mut().drained() || request.early_reads >= 2;
            let probe = request.exchanges() % (8 << request.quiet_probes) == 0;
            if sys::CHEAP_READ_WITHOUT_WAITING
                && !stopping
                && turn < EXCHANGES_PER_TURN
                && request.reader_mut().buffer().is_empty()
                && (hopeful || probe)
            {
                let limit =
                    self.config.frame.as_ref().map_or(self.config.rbufsize.max(1), |f| f.max_len().saturating_add(1));
                match request.reader_mut().read_available(limit) {
                    Ok(0) => {
                        start = Start::Finish;
                        continue;
                    }
                    Ok(_) => {
                        request.early_reads = (request.early_reads + 1).min(3);
                        request.quiet_probes = 0;
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                        request.early_reads = request.early_reads.saturating_sub(1);
                        if !hopeful {
                            request.quiet_probes = (request.quiet_probes + 1).min(3);
                        }
                    }
                    Err(e) => {
                        let _ = gone(request.client_addr(), e);
                        start = Start::Finish;
                        continue;
                    }
                }
            }
            let buffered = request.reader_mut().buffer();
            let whole = match &self.config.frame {
                _ if buffered.is_empty() => Ok(false),
                None => Ok(true),
                Some(frame) => self.frame_end(frame, buffered).map(|whole| whole.is_some()),
            };
            match whole {
                Err(e) => {
                    self.bad_message(&mut request, e);
                    start = Start::Finish;
                    continue;
                }
                // The next message is here already (pipelined): no need to wait for it,
                // but after a few in a row the connection yields its turn to the others
                // that are ready, and comes back after them.
                Ok(true) => {
                    turn += 1;
                    if turn < EXCHANGES_PER_TURN {
                        let _ = request.resumed();
                        start = Start::Handle;
                        continue;
                    }
                    match self.requeue(request, ticket) {
                        Ok(()) => return,
                        Err(parked) => {
                            (request, ticket) = (parked.request, parked.ticket);
                            start = Start::Finish;
                            continue;
                        }
                    }
                }
                // Nothing, or the start of the next message: wait for it in the poller.
                Ok(false) => {}
            }
            match self.park_at(request, ticket, handled_at.unwrap_or_else(Instant::now)) {
                Ok(()) => return,
                Err(parked) => {
                    (request, ticket) = (parked.request, parked.ticket);
                    start = Start::Finish;
                }
            }
        }
        if parks {
            self.forget(&mut request);
        }
        drop(request);
        drop(ticket);
    }

    /// A connection that has ended: the poller forgets it before it is closed, and its
    /// key is given back.
    fn forget(&self, request: &mut StreamRequest) {
        if let Some(registration) = request.registration.take() {
            let key = registration.key();
            drop(registration);
            self.home.state().lot().release(key);
        }
    }

    /// Sends what the connection takes of a body from `send_from`, the writer's bytes
    /// first; without a poller to wait in, all of it, blocking.
    fn send(&self, request: &mut StreamRequest, parks: bool) -> io::Result<Pumped> {
        if !parks {
            request.flush_writer()?;
            request.send_rest()?;
            return Ok(Pumped::Done);
        }
        request.begin_send()?;
        request.pump(SEND_PER_TURN)
    }

    /// Queues a connection that yields its turn with work left (a buffered message, a
    /// body to send): it comes back after the others that are ready. Gives it back when
    /// the server has stopped serving.
    fn requeue(&self, request: Box<StreamRequest>, ticket: Ticket) -> Result<(), Parked> {
        self.control.parked();
        let mut request = request;
        request.ready_at = Some(Instant::now());
        match self.home.state().requeue(Ready::Exchange(Parked::new(request, ticket, None))) {
            Ok(true) => Ok(()),
            Ok(false) => {
                // No follower to take it: the loop in the poller must look at the queue.
                self.home.wake();
                Ok(())
            }
            Err(ready) => {
                self.control.unparked();
                Err(ready.into_parked())
            }
        }
    }

    /// Where the first message of `bytes` ends, by the server's frame: the user's frame
    /// function runs here, on a worker, so a panic in it is caught and becomes a bad
    /// message (its connection closed), never a worker lost.
    fn frame_end(&self, frame: &crate::frame::Frame, bytes: &[u8]) -> io::Result<Option<usize>> {
        panic::catch_unwind(AssertUnwindSafe(|| frame.complete(bytes))).unwrap_or_else(|payload| {
            let message = format!("the frame function panicked: {}", panic_message(&*payload));
            Err(io::Error::new(io::ErrorKind::InvalidData, message))
        })
    }

    /// A message broke the frame: the `bad_message` hook's reply is sent, without
    /// waiting (what the socket does not take now is dropped: a hostile client must not
    /// hold the thread here), and the error is reported. A hook that fails sends
    /// nothing, not the half it wrote. The caller ends the connection.
    fn bad_message(&self, request: &mut StreamRequest, error: io::Error) {
        if let Some(hook) = &self.config.bad_message {
            let mut reply = Vec::new();
            if !self.guarded(Phase::Respond, request.client_addr(), || hook(&error, &mut reply)) {
                reply.clear();
            }
            let mut sent = 0;
            // Nothing is buffered in the writer here: a message is framed only once the
            // exchange before it has flushed its reply.
            while sent < reply.len() {
                match request.connection().write_available(&reply[sent..]) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            self.control.counters.bytes_out.fetch_add(sent as u64, Ordering::Relaxed);
            // What the client sent of its message and has arrived is read and dropped,
            // without waiting and up to 64 KiB: closing a socket with unread bytes resets
            // the connection, and the reset can reach the client before it reads the
            // reply. Best effort: bytes still on their way, or more than that, still
            // make the close a reset (a lingering close would wait for them).
            let mut scratch = [0; 8192];
            for _ in 0..BAD_MESSAGE_DRAIN_READS {
                match request.connection().read_available(&mut scratch) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        self.report(&Error::Message(error), Some(request.client_addr()));
    }

    /// At a stop, for a connection that has not sent its first message yet: waits until
    /// its first bytes (or its end) arrive, at most until [`NEW_CONNECTION_GRACE`] after
    /// its accept (or the stop's deadline, if sooner). Whether they did. (A test double,
    /// with no accept time, has no grace: whether something is there now.)
    fn first_bytes_within_grace(&self, request: &StreamRequest) -> bool {
        match self.grace_ends(request) {
            Some(ends) => request.connection().wait_input(ends),
            None => request.connection().has_input(),
        }
    }

    /// When a stop's grace for a new connection's first message ends:
    /// [`NEW_CONNECTION_GRACE`] after its accept, or the stop's deadline if sooner.
    /// `None` for a test double, which has no accept time.
    pub(super) fn grace_ends(&self, request: &StreamRequest) -> Option<Instant> {
        let ends = request.accepted_at? + NEW_CONNECTION_GRACE;
        Some(self.control.deadline().map_or(ends, |deadline| deadline.min(ends)))
    }

    /// At a stop, a new connection whose first message is not whole yet: reads on as its
    /// bytes come, until the message is whole, the client ends, or the grace of new
    /// connections (cut short by the stop's deadline) is up, which is `Partial`.
    fn gather_within_grace(&self, request: &mut StreamRequest) -> Gathered {
        let Some(ends) = self.grace_ends(request) else { return Gathered::Partial };
        loop {
            if !request.connection().wait_input(ends) {
                return Gathered::Partial;
            }
            match self.gather(request) {
                Gathered::Partial if Instant::now() < ends => {}
                gathered => return gathered,
            }
        }
    }

    /// Reads a parked connection's first bytes, before its PROXY header is read and
    /// `verify_request` runs: whether the client sent something or left. Without
    /// waiting (see [`look`]).
    fn first_bytes(&self, request: &mut StreamRequest) -> Gathered {
        let reader = request.reader_mut();
        let read = match &self.config.frame {
            Some(frame) => reader.read_available(frame.max_len().saturating_add(1)),
            None => look(reader),
        };
        match read {
            Ok(0) => Gathered::End,
            Ok(_) => Gathered::Message,
            // Woken with nothing after all (or nothing within the read timeout): wait
            // again, parked.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Gathered::Partial,
            Err(e) => gone(request.client_addr(), e),
        }
    }

    /// Whether a parked connection the poller reported has a message for `handle`,
    /// read without waiting: without a frame, any bytes (the handler reads the rest
    /// itself, see [`look`]); with one, a whole message.
    fn gather(&self, request: &mut StreamRequest) -> Gathered {
        let (reader, client) = request.reader_and_client();
        let gone = |e: io::Error| gone(client, e);
        let Some(frame) = &self.config.frame else {
            return match look(reader) {
                Ok(0) => Gathered::End,
                Ok(_) => Gathered::Message,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Gathered::Partial,
                Err(e) => gone(e),
            };
        };
        // One byte past the maximum: a message that long has shown it is too long.
        let limit = frame.max_len().saturating_add(1);
        loop {
            // (Nothing buffered, the usual case at a wake: nothing to look at yet.)
            match reader.buffer().is_empty() {
                true => {}
                false => match self.frame_end(frame, reader.buffer()) {
                    Ok(Some(_)) => return Gathered::Message,
                    Ok(None) => {}
                    Err(e) => return Gathered::Bad(e),
                },
            }
            match reader.read_available(limit) {
                Ok(0) => return Gathered::End,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Gathered::Partial,
                Err(e) => return gone(e),
            }
        }
    }

    /// Parks a request whose message is not whole yet, or whose wake had nothing.
    fn park_again(&self, request: Box<StreamRequest>, ticket: Ticket, parks: bool) -> Result<(), Parked> {
        match parks {
            true => self.park(request, ticket),
            false => Err(Parked::new(request, ticket, None)),
        }
    }

    /// Parks a request in the server's poller. Gives it back when it cannot park: the
    /// server has stopped serving, or the socket could not be put in the poller.
    fn park(&self, request: Box<StreamRequest>, ticket: Ticket) -> Result<(), Parked> {
        self.park_at(request, ticket, Instant::now())
    }

    /// [`Engine::park`], its idle time counted from `now` (a moment ago).
    fn park_at(&self, mut request: Box<StreamRequest>, ticket: Ticket, now: Instant) -> Result<(), Parked> {
        let home = &self.home;
        let lot = home.state().lot();
        let writing = request.sending();
        // Sending, the park follows a send that found the buffer full. Reading, the
        // reader's last read is the engine's, or the handler's through the reader: a read
        // of the socket by other means only takes bytes, which leaves none unreported.
        let drained = writing || request.reader_mut().drained();
        let (key, watched) = match &mut request.registration {
            Some(registration) => (registration.key(), registration.watches(writing, drained)),
            None => {
                let key = lot.allocate();
                match home.register(key, request.connection_arc()) {
                    Ok(Some(registration)) => request.registration = Some(registration),
                    Ok(None) => {
                        lot.release(key);
                        return Err(Parked::new(request, ticket, None));
                    }
                    Err(e) => {
                        lot.release(key);
                        self.report(&Error::Io(e), Some(request.client_addr()));
                        return Err(Parked::new(request, ticket, None));
                    }
                }
                (key, false)
            }
        };
        // A message begun and not whole: its idle time counts from its first byte, so
        // that a client that drips a byte now and then is not waited for for ever.
        let since = if writing || request.reader_mut().buffer().is_empty() {
            request.partial_since = None;
            now
        } else {
            *request.partial_since.get_or_insert(now)
        };
        // A client that takes nothing of a body for the write timeout (else the idle
        // timeout) is closed.
        let timeout =
            if writing { self.config.write_timeout.or(self.config.idle_timeout) } else { self.config.idle_timeout };
        let deadline = timeout.map(|timeout| since + timeout);
        // Counted, and reported, before it is armed: once armed, a loop may take it out
        // at once, and run it on another thread.
        request.enter_state(ConnState::Parked);
        self.control.parked();
        // Held while the socket is armed: once parked, the request may be taken out
        // and closed by a stop at any time.
        let connection = request.connection_arc().clone();
        let edge = request.registration.as_ref().is_some_and(|r| r.edge_triggered());
        let arm = || home.arm(&connection, key, writing, edge);
        let arm_here = edge.then_some(&arm as &dyn Fn() -> io::Result<()>);
        match lot.park(key, Parked::new(request, ticket, deadline), watched, arm_here) {
            Ok(placed) => {
                if let Err(e) = if placed.arm { arm() } else { Ok(()) } {
                    // Not armed: no event will come for it. Ended here, unless a stop
                    // (or its deadline) took it out meanwhile, to end it there.
                    let Some(parked) = lot.take(key) else { return Ok(()) };
                    self.control.unparked();
                    self.report(&Error::Io(e), Some(parked.request.client_addr()));
                    return Err(parked);
                }
                if placed.first_deadline {
                    // The loop may be waiting with no deadline, or a later one.
                    home.wake();
                }
                Ok(())
            }
            Err((parked, not_armed)) => {
                self.control.unparked();
                if let Some(e) = not_armed {
                    // Not armed (under the lot's lock): taken back out, and ended here.
                    self.report(&Error::Io(e), Some(parked.request.client_addr()));
                }
                Err(parked)
            }
        }
    }
}

/// What the phase runner needs from a request type.
pub(crate) trait Phases {
    fn client(&self) -> &Address;
    /// The server's last step for the request, after `finish`.
    fn respond(&mut self, hooks: &Hooks) -> io::Result<()>;
    /// Whether a body waits to be sent from the poller before `finish` (or a park).
    fn sending(&self) -> bool {
        false
    }
    /// Gives up a body left to send (after a failed `handle`).
    fn abandon_send(&mut self) {}
    /// Whether the handler parked the request in the exchange that just ran (and
    /// forgets it, for the next).
    fn take_park(&mut self) -> bool {
        false
    }
    /// In memory, after a park: whether the client's input has more for another
    /// exchange, which then begins.
    fn next_exchange(&mut self) -> bool {
        false
    }
}

impl Phases for StreamRequest {
    fn client(&self) -> &Address {
        self.client_addr()
    }

    fn respond(&mut self, hooks: &Hooks) -> io::Result<()> {
        self.flush_writer()?;
        // A body from `send_from` that no poller sent (in memory): sent now.
        self.send_rest()?;
        hooks.shutdown_request(self.connection())
    }

    fn take_park(&mut self) -> bool {
        StreamRequest::take_park(self)
    }

    fn sending(&self) -> bool {
        StreamRequest::sending(self)
    }

    fn abandon_send(&mut self) {
        StreamRequest::abandon_send(self)
    }

    fn next_exchange(&mut self) -> bool {
        let more = matches!(self.reader_mut().fill_buf(), Ok(bytes) if !bytes.is_empty());
        if more {
            self.resumed();
        }
        more
    }
}

impl Phases for DatagramRequest {
    fn client(&self) -> &Address {
        self.client_addr()
    }

    fn respond(&mut self, _: &Hooks) -> io::Result<()> {
        DatagramRequest::respond(self)
    }
}

/// A parked connection's read failed (a reset, mostly): it ends, no error of the
/// server's.
/// The first read of a connection the poller reported, for a server without a frame:
/// the bytes buffered, else what the socket has, without waiting (`Ok(0)`: the end of
/// the stream; `WouldBlock`: nothing). A report is no promise
/// of bytes: edge-triggered, the poller reports each arrival, and one that came while the
/// connection ran may be for bytes its last exchange read itself. A read that waited
/// would then hold this thread until the client's next message; this one lets the
/// connection park again.
fn look(reader: &mut crate::request::Reader) -> io::Result<usize> {
    match reader.buffer().len() {
        0 => {
            let all = reader.capacity();
            reader.read_available(all)
        }
        buffered => Ok(buffered),
    }
}

fn gone(client: &Address, e: io::Error) -> Gathered {
    log::debug!(target: crate::report::LOG_TARGET, "parked connection from {client}: {e}");
    Gathered::End
}

/// The client went away: its connection just ends, no error of the server's.
fn is_disconnect(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(error.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected)
}

/// What a parked connection that the poller reported has for its next exchange.
enum Gathered {
    /// A message (with a frame, whole).
    Message,
    /// The start of a message, or nothing after all: park again.
    Partial,
    /// The end of the stream, or an error.
    End,
    /// A message that breaks the frame.
    Bad(io::Error),
}

/// Where [`run_phases`] begins.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// A new request: `setup` first.
    Setup,
    /// A parked request whose next bytes are in its reader: `handle`.
    Handle,
    /// A parked request the poller reported, not yet read from (the engine makes it
    /// `Handle` or `Finish`).
    Resume,
    /// A parked request whose connection ends: `finish` and `respond`.
    Finish,
    /// A body from `send_from` to send (on), before the connection parks or ends.
    Send,
}

/// How [`run_phases`] left the request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ended,
    /// `handle` parked it: `finish` has not run.
    Parked,
    /// `handle` left a body to send (`send_from`): the engine sends it, then goes on as
    /// `handle` said (park or finish).
    Sending,
}

/// setup, handle, finish, respond, from `start`: each caught and reported on its own,
/// so a failing `handle` still gets its `finish`; a `handle` that parks the request
/// stops there. The same for a server's request and an in-memory one
/// ([`crate::testing`]).
pub(crate) fn run_phases<R: Phases + 'static>(
    handler: &dyn RequestHandler<R>,
    request: &mut R,
    hooks: &Hooks,
    report: &dyn Fn(Error, &Address),
    start: Start,
) -> Outcome {
    let step = |request: &mut R, phase: Phase, f: &dyn Fn(&mut R) -> HandlerResult| -> bool {
        let error = match panic::catch_unwind(AssertUnwindSafe(|| f(request))) {
            Ok(Ok(())) => return true,
            Ok(Err(source)) => Error::Handler { phase, source },
            Err(payload) => Error::Panic { phase, message: panic_message(&*payload) },
        };
        report(error, request.client());
        false
    };
    if let Start::Setup = start {
        if !step(request, Phase::Setup, &|r| handler.setup(r)) {
            return Outcome::Ended;
        }
    }
    if !matches!(start, Start::Finish) {
        let handled = step(request, Phase::Handle, &|r| handler.handle(r));
        if !handled {
            // A body after a failure would go out as if nothing had happened.
            request.abandon_send();
        } else if request.sending() {
            return Outcome::Sending;
        }
        // Parking after a failed `handle` would hide the failure: the connection ends.
        if request.take_park() && handled {
            return Outcome::Parked;
        }
    }
    step(request, Phase::Finish, &|r| handler.finish(r));
    step(request, Phase::Respond, &|r| Ok(r.respond(hooks)?));
    Outcome::Ended
}
