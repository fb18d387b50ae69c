//! The engine: one serve loop for every transport and dispatch mode, admission of each
//! request, and running a request's phases.
//!
//! - [`serve`]: a serve call, its loop (one per pool worker), the supervisor, the lead
//!   (waiting in the poller and accepting), the back-off when descriptors run out.
//! - [`hub`]: shared readiness: the server's one poller, the ready queue and the turns
//!   of the free loops (leader/followers), so that a busy loop holds only its own
//!   exchange.
//! - [`park`]: the parked connections (the lot), with their idle deadlines.
//! - [`admit`]: what happens to a connection or datagram between `accept` and the
//!   handler: `verify_request`, the limits on connections and exchanges, refusing when
//!   full, dispatch.
//! - [`run`]: one request on the thread the mode chose: gathering a framed message,
//!   setup, handle, a body sent from the poller, finish, respond, parking.
//!
//! The lifecycle and the counts it waits on live in the control block
//! ([`crate::handle`]), which the engine owns beside the handler, so that requests and
//! handles never reach the handler.

mod admit;
mod hub;
mod park;
mod run;
mod serve;

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::dispatch::Dispatch;
use crate::error::{Error, Phase, Result};
use crate::handle::{Control, CurrentServer, ServeCall, ServerHandle};
use crate::handler::AnyHandler;
use crate::net::{Address, Bound, Connection, SocketOptions};
use crate::report::{log_or_stderr, panic_message};

pub(crate) use run::{run_phases, Outcome, Phases, Start};

/// How a server binds its address again after a shutdown interrupted the socket.
pub(crate) struct Rebind {
    pub(crate) options: SocketOptions,
    pub(crate) reopen: fn(&Address, &SocketOptions) -> Result<Bound>,
}

/// A server without its transport type: the handler, the mode, the settings, and the
/// control block that handles and requests share.
pub(crate) struct Engine {
    control: Arc<Control>,
    handler: AnyHandler,
    dispatch: Dispatch,
    /// The serve loop runs each request itself (sequential mode): no job to box.
    inline: bool,
    /// How many serve loops run at once: one, or a pool's workers, plus one when the
    /// pool refuses when full (a loop free to accept and refuse while every worker runs
    /// a request).
    loops: usize,
    /// A pool that refuses when full: its loops refuse a connection while this many
    /// requests run (parked connections not counted), so the spare loop never starts one.
    refuse_at_exchanges: Option<usize>,
    config: Config,
    rebind: Rebind,
    /// The server's one poller, made when the server is built so that serving needs no
    /// new descriptor, and the parked connections and ready queue its loops share.
    home: Arc<hub::Home>,
}

impl Engine {
    pub(crate) fn new(
        control: Arc<Control>,
        handler: AnyHandler,
        dispatch: Dispatch,
        config: Config,
        rebind: Rebind,
    ) -> io::Result<Engine> {
        let inline = dispatch.is_sequential();
        let refuses = config.hooks.refuse_when_full.is_some();
        let (loops, refuse_at_exchanges) = match dispatch.as_pool() {
            Some(pool) if refuses => (pool.workers() + 1, Some(pool.workers())),
            Some(pool) => (pool.workers(), None),
            None => (1, None),
        };
        let home = hub::Home::new()?;
        Ok(Engine { control, handler, dispatch, inline, loops, refuse_at_exchanges, config, rebind, home })
    }

    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.control
    }

    pub(crate) fn handle(&self) -> ServerHandle {
        ServerHandle::new(self.control.clone())
    }

    /// Whether serve calls and `close` wait for the requests they started.
    pub(crate) fn waits_for_requests(&self) -> bool {
        self.dispatch.waits_for_requests()
    }

    /// Starts a serve call, binding the address again if a shutdown let go of the socket
    /// (and running `after_bind` on the new socket).
    pub(crate) fn begin(&self, forever: bool) -> Result<Option<ServeCall>> {
        let local = self.control.local();
        self.control.begin(forever, || {
            let bound = (self.rebind.reopen)(local, &self.rebind.options)?;
            // As every server socket: the serve loop takes what it has and waits in the
            // poller, never in the socket.
            if let Err(e) = bound.endpoint.set_nonblocking() {
                if let Some(path) = &bound.owned_path {
                    path.remove();
                }
                return Err(Error::Bind { addr: local.to_string(), source: e });
            }
            if let Some(hook) = &self.config.hooks.after_bind {
                if let Err(source) = hook(local) {
                    // As a failed first bind: close the socket, and bind again next time.
                    if let Some(path) = &bound.owned_path {
                        path.remove();
                    }
                    return Err(Error::Bind { addr: local.to_string(), source });
                }
            }
            Ok(bound)
        })
    }

    /// Closes the server: see [`Server::close`](crate::Server::close).
    pub(crate) fn close(self: &Arc<Self>) {
        self.close_by(self.config.shutdown_deadline.map(|d| Instant::now() + d));
    }

    /// As `close`, waiting at most until `deadline` for requests still running (then
    /// their connections are closed, and threads that still do not end are not joined).
    /// An instant, not a duration, so that a stop that already waited for the same
    /// deadline does not wait again.
    pub(crate) fn close_by(self: &Arc<Self>, deadline: Option<Instant>) {
        if CurrentServer::is(&self.control) {
            // From a handler or hook: closing would wait for this very request. Stop
            // serving; the close itself happens when the server is dropped.
            self.control.shutdown();
            return;
        }
        let Some(owned_path) = self.control.close() else { return };
        // No serve call runs now: the connections parked between calls end here.
        self.end_parked();
        // Requests started by handle_request in a threaded mode may still run.
        let drained = !self.waits_for_requests() || self.control.await_requests(deadline);
        if drained {
            self.dispatch.close();
        } else {
            log_or_stderr(log::Level::Error, "closing the server without joining request threads that did not end");
        }
        if let Some(path) = owned_path {
            path.remove();
        }
    }

    /// Reports an error of a request (or of accepting) to `handle_error`, whose default
    /// logs it, or writes it to stderr without a logger.
    pub(crate) fn report(&self, error: &Error, client: Option<&Address>) {
        self.control.counters.errors.fetch_add(1, Ordering::Relaxed);
        match &self.config.hooks.handle_error {
            Some(hook) => {
                if panic::catch_unwind(AssertUnwindSafe(|| hook(error, client))).is_err() {
                    log_or_stderr(
                        log::Level::Error,
                        &format!("the handle_error hook panicked while reporting: {error}"),
                    );
                }
            }
            // Through `log` when a logger takes errors; otherwise to stderr, as Python's
            // handle_error does, so that an error never vanishes.
            None => match client {
                Some(client) => log_or_stderr(log::Level::Error, &format!("request from {client}: {error}")),
                None => log_or_stderr(log::Level::Error, &error.to_string()),
            },
        }
    }

    /// Runs a hook of the server's own on a request's behalf; its error or panic is
    /// reported to `handle_error` as the request's. Returns whether it succeeded.
    fn guarded(&self, phase: Phase, client: &Address, hook: impl FnOnce() -> io::Result<()>) -> bool {
        let error = match panic::catch_unwind(AssertUnwindSafe(hook)) {
            Ok(Ok(())) => return true,
            Ok(Err(source)) => Error::Handler { phase, source: source.into() },
            Err(payload) => Error::Panic { phase, message: panic_message(&*payload) },
        };
        self.report(&error, Some(client));
        false
    }

    /// Sets the configured options on an accepted connection.
    fn configure(&self, connection: &Connection) -> io::Result<()> {
        if self.config.nodelay {
            connection.set_nodelay(true)?;
        }
        if self.config.read_timeout.is_some() {
            connection.set_read_timeout(self.config.read_timeout)?;
        }
        if self.config.write_timeout.is_some() {
            connection.set_write_timeout(self.config.write_timeout)?;
        }
        Ok(())
    }
}
