//! The crate's error type.

use std::fmt;
use std::io;

/// What a handler's error becomes: any error, boxed, so that `?` takes every error type
/// and `handle_error` receives it whole ([`Error::Handler`]'s
/// `source`; downcast it to get the type back).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What handlers and [`RequestHandler`](crate::RequestHandler)'s methods return: `Ok(())`, or any error, to
/// be reported to `handle_error`.
pub type HandlerResult = Result<(), HandlerError>;

/// Which step of a request an error or panic came from.
///
/// Handlers run `setup`, `handle` and `finish` in that order; [`Phase::Respond`] is the
/// server's own last step (flushing the stream writer, or sending a datagram reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// [`RequestHandler::setup`](crate::RequestHandler::setup).
    Setup,
    /// [`RequestHandler::handle`](crate::RequestHandler::handle).
    Handle,
    /// [`RequestHandler::finish`](crate::RequestHandler::finish).
    Finish,
    /// Flushing the writer of a stream request, or sending a datagram reply.
    Respond,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Setup => "setup",
            Phase::Handle => "handle",
            Phase::Finish => "finish",
            Phase::Respond => "respond",
        })
    }
}

/// Everything that can go wrong in a server.
///
/// Errors about one request (a handler error, a panic, a failed thread spawn) reach the
/// server's `handle_error` hook and never end `serve_forever`; errors about the server
/// itself (binding, a broken listening socket) are returned.
///
/// `Debug` prints what `Display` does, then the chain of sources that the message does
/// not already include, so `fn main() -> Result<(), socketserver::Error>` ends with a
/// sentence, not a struct dump:
///
/// ```text
/// Error: address 127.0.0.1:8000 is in use; stop the other server or choose another address
///
/// Caused by:
///     Address already in use (os error 98)
/// ```
///
/// Match on the variants for the fields.
#[non_exhaustive]
pub enum Error {
    /// Binding failed because another socket holds the address.
    ///
    /// For TCP and UDP this is `EADDRINUSE`; for Unix sockets it means a live server
    /// answers at the path.
    AddrInUse {
        /// The address or path, as given.
        addr: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Creating, configuring, binding or listening on the server socket failed for a
    /// reason other than [`Error::AddrInUse`] (permission denied, an address that
    /// resolves to nothing, a Unix path that is not a socket, ...).
    Bind {
        /// The address or path, as given.
        addr: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A handler's `setup`, `handle` or `finish` returned an error, or the final flush or
    /// datagram reply failed.
    Handler {
        /// Where it happened.
        phase: Phase,
        /// The error the handler returned, whole: downcast it to its type
        /// (`source.downcast_ref::<io::Error>()`, or a type of your own). The server's
        /// own steps ([`Phase::Respond`]) report an [`io::Error`].
        source: HandlerError,
    },
    /// A handler panicked. The panic was caught; the server goes on serving.
    Panic {
        /// Where it happened.
        phase: Phase,
        /// The panic message, when the payload was a string.
        message: String,
    },
    /// The dispatch mode could not run a request (for example a thread could not be
    /// spawned). The connection was closed.
    Dispatch(io::Error),
    /// Accepting a connection or receiving a datagram failed. The serve loop goes on
    /// unless the listening socket itself is broken.
    Accept(io::Error),
    /// A client's message broke the server's declared [`Frame`](crate::Frame): longer
    /// than its maximum, or malformed (an [`InvalidData`](io::ErrorKind::InvalidData)
    /// error that says which). The connection was closed after `finish`; `handle` never
    /// saw the message.
    Message(io::Error),
    /// `serve_forever` or `handle_request` was called while another call on the same
    /// server was still running.
    AlreadyServing,
    /// The server was closed with [`Server::close`](crate::Server::close).
    Closed,
    /// Any other I/O error.
    Io(io::Error),
}

impl Error {
    /// Converts this error into an [`io::Error`], for callers that live in `io::Result`.
    ///
    /// The original [`io::Error`] is returned whole where there is one.
    pub fn into_io(self) -> io::Error {
        match self {
            Error::Handler { source, .. } => match source.downcast::<io::Error>() {
                Ok(io) => *io,
                Err(other) => io::Error::other(other),
            },
            Error::AddrInUse { source, .. }
            | Error::Bind { source, .. }
            | Error::Dispatch(source)
            | Error::Accept(source)
            | Error::Message(source)
            | Error::Io(source) => source,
            other => io::Error::other(other),
        }
    }

    /// The [`io::ErrorKind`] of the underlying error, or [`io::ErrorKind::Other`] (also
    /// for a handler error that is not an [`io::Error`]).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::AddrInUse { .. } => io::ErrorKind::AddrInUse,
            Error::Handler { source, .. } => {
                source.downcast_ref::<io::Error>().map_or(io::ErrorKind::Other, io::Error::kind)
            }
            Error::Bind { source, .. }
            | Error::Dispatch(source)
            | Error::Accept(source)
            | Error::Message(source)
            | Error::Io(source) => source.kind(),
            _ => io::ErrorKind::Other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AddrInUse { addr, .. } => {
                write!(f, "address {addr} is in use; stop the other server or choose another address")
            }
            Error::Bind { addr, source } => write!(f, "cannot bind {addr}: {source}"),
            Error::Handler { phase, source } => write!(f, "handler failed in {phase}: {source}"),
            Error::Panic { phase, message } => write!(f, "handler panicked in {phase}: {message}"),
            Error::Dispatch(e) => write!(f, "cannot dispatch request: {e}"),
            Error::Accept(e) => write!(f, "accept failed: {e}"),
            Error::Message(e) => write!(f, "bad message, connection closed: {e}"),
            Error::AlreadyServing => f.write_str(
                "the server is already serving (serve_forever or handle_request is running on another thread)",
            ),
            Error::Closed => f.write_str("the server is closed"),
            Error::Io(e) => e.fmt(f),
        }
    }
}

/// `Display`, then each source the message does not already contain, as `anyhow` and
/// `eyre` print an error returned from `main`.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.to_string();
        f.write_str(&message)?;
        let mut shown = message;
        let mut source = std::error::Error::source(self);
        let mut heading = false;
        while let Some(error) = source {
            let text = error.to_string();
            if !shown.contains(&text) {
                if !heading {
                    f.write_str("\n\nCaused by:")?;
                    heading = true;
                }
                write!(f, "\n    {text}")?;
                shown.push_str(&text);
            }
            source = error.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Handler { source, .. } => Some(&**source),
            Error::AddrInUse { source, .. }
            | Error::Bind { source, .. }
            | Error::Dispatch(source)
            | Error::Accept(source)
            | Error::Message(source)
            | Error::Io(source) => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        e.into_io()
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
