//! One request, on whatever thread the dispatch mode chose: the request value is built,
//! then `setup`, `handle`, `finish` and the server's own last step run, each caught and
//! reported on its own.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use super::Engine;
use crate::config::Hooks;
use crate::error::{Error, Phase};
use crate::handle::{CurrentServer, Ticket};
use crate::handler::{AnyHandler, RequestHandler};
use crate::net::{Address, Connection, DatagramSocket};
use crate::report::panic_message;
use crate::request::{DatagramRequest, StreamRequest};

/// What a job carries to the thread that runs it.
pub(super) enum Work {
    Stream(Arc<Connection>, Address),
    Datagram(Vec<u8>, Address, Arc<DatagramSocket>),
}

impl Work {
    pub(super) fn client(&self) -> &Address {
        match self {
            Work::Stream(_, client) | Work::Datagram(_, client, _) => client,
        }
    }
}

impl Engine {
    /// Runs one request. `ticket` counts it as running until it is dropped, at the end.
    pub(super) fn run(&self, ticket: Ticket, work: Work) {
        let _current = CurrentServer::enter(ticket.control());
        let report = |error: Error, client: &Address| self.report(&error, Some(client));
        match (work, &self.handler) {
            (Work::Stream(connection, client), AnyHandler::Stream(handler)) => {
                if let Err(e) = self.configure(&connection) {
                    self.report(&Error::Io(e), Some(&client));
                    return;
                }
                let config = &self.config;
                #[cfg(feature = "proxy-protocol")]
                let from_proxy = config.peer(&client) == crate::config::Peer::Proxy;
                let mut request = StreamRequest::new(
                    connection,
                    client,
                    self.handle(),
                    config.rbufsize,
                    config.wbufsize,
                    (config.read_timeout, config.write_timeout),
                );
                #[cfg(feature = "proxy-protocol")]
                if from_proxy {
                    if let Err(source) = request.read_proxy_header(config.proxy_header_timeout) {
                        self.control.counters.bad_proxy_headers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.report(&Error::Handler { phase: Phase::Setup, source }, Some(request.client_addr()));
                        return;
                    }
                    if !self.verify(request.client_addr(), Some(request.connection())) {
                        return;
                    }
                }
                run_phases(&**handler, &mut request, &config.hooks, &report);
            }
            (Work::Datagram(packet, client, socket), AnyHandler::Datagram(handler)) => {
                let mut request =
                    DatagramRequest::new(packet, self.config.max_packet_size, client, socket, self.handle());
                run_phases(&**handler, &mut request, &self.config.hooks, &report);
            }
            _ => unreachable!("the transport fixes the handler's request type"),
        }
    }
}

/// What the phase runner needs from a request type.
pub(crate) trait Phases {
    fn client(&self) -> &Address;
    /// The server's last step for the request, after `finish`.
    fn respond(&mut self, hooks: &Hooks) -> io::Result<()>;
}

impl Phases for StreamRequest {
    fn client(&self) -> &Address {
        self.client_addr()
    }

    fn respond(&mut self, hooks: &Hooks) -> io::Result<()> {
        self.flush_writer()?;
        hooks.shutdown_request(self.connection())
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

/// setup, handle, finish, respond: each caught and reported on its own, so a failing
/// `handle` still gets its `finish`. The same for a server's request and an in-memory
/// one ([`crate::testing`]).
pub(crate) fn run_phases<R: Phases + 'static>(
    handler: &dyn RequestHandler<R>,
    request: &mut R,
    hooks: &Hooks,
    report: &dyn Fn(Error, &Address),
) {
    let step = |request: &mut R, phase: Phase, f: &dyn Fn(&mut R) -> io::Result<()>| -> bool {
        let error = match panic::catch_unwind(AssertUnwindSafe(|| f(request))) {
            Ok(Ok(())) => return true,
            Ok(Err(source)) => Error::Handler { phase, source },
            Err(payload) => Error::Panic { phase, message: panic_message(&*payload) },
        };
        report(error, request.client());
        false
    };
    if !step(request, Phase::Setup, &|r| handler.setup(r)) {
        return;
    }
    step(request, Phase::Handle, &|r| handler.handle(r));
    step(request, Phase::Finish, &|r| handler.finish(r));
    step(request, Phase::Respond, &|r| r.respond(hooks));
}
