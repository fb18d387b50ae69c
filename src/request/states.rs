//! Connection states, reported to the hook of `Builder::connection_state` (Go's
//! `http.Server.ConnState`; Python has none).

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crate::net::Address;

/// Where a stream connection is in its life, as the hook of
/// [`Builder::connection_state`](crate::Builder::connection_state) reports it.
///
/// Every connection starts [`New`](ConnState::New) and ends with exactly one of
/// [`Closed`](ConnState::Closed), [`Refused`](ConnState::Refused) or
/// [`Denied`](ConnState::Denied). In between it goes from [`Active`](ConnState::Active)
/// (an exchange runs) to [`Parked`](ConnState::Parked) (waiting in the poller, no thread)
/// and back, once per parking. Messages pipelined in one turn stay `Active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// Accepted; not yet in an exchange.
    New,
    /// In an exchange: `setup` and `handle` (or the next message's `handle`) run for it.
    Active,
    /// Parked: waiting in the server's poller for the client's next bytes (or its first
    /// message, or room to send), holding no thread (Go's `StateIdle`).
    Parked,
    /// Closed, after its exchanges or before any (the client left first, a failure).
    Closed,
    /// Turned away because the server was full
    /// ([`refuse_when_full`](crate::Builder::refuse_when_full)).
    Refused,
    /// Turned away by [`verify_request`](crate::Builder::verify_request), or, with the
    /// PROXY protocol, a peer that is not a trusted proxy or a bad header.
    Denied,
}

impl ConnState {
    /// Whether this is a connection's last state.
    pub fn is_last(self) -> bool {
        matches!(self, ConnState::Closed | ConnState::Refused | ConnState::Denied)
    }
}

/// A stream connection's number in its server, in the order connections were accepted
/// (from 1); never reused, so it keys a table of open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The hook a builder was given.
pub(crate) type StateHook = Arc<dyn Fn(ConnectionId, &Address, ConnState) + Send + Sync>;

/// Calls `hook`; a panic in it is caught and logged (or written to stderr without a
/// logger: it may run in a `drop`, where a panic would abort), and the connection goes on.
pub(crate) fn report_state(hook: &StateHook, id: ConnectionId, client: &Address, state: ConnState) {
    if panic::catch_unwind(AssertUnwindSafe(|| hook(id, client, state))).is_err() {
        let message = format!("the connection_state hook panicked for {client} {id} ({state:?})");
        crate::report::log_or_stderr(log::Level::Error, &message);
    }
}

/// A connection's number, state now and the server's hook (if any), kept by its
/// request.
pub(crate) struct States {
    hook: Option<StateHook>,
    id: ConnectionId,
    now: ConnState,
}

impl States {
    pub(crate) fn new(hook: Option<StateHook>, id: ConnectionId) -> States {
        States { hook, id, now: ConnState::New }
    }

    /// Moves to `state` and reports it, if it is a change and none came after a last
    /// state; `true` if it moved.
    pub(crate) fn enter(&mut self, client: &Address, state: ConnState) -> bool {
        if self.now == state || self.now.is_last() {
            return false;
        }
        self.now = state;
        if let Some(hook) = &self.hook {
            report_state(hook, self.id, client, state);
        }
        true
    }
}
