//! Messages an operator must see: through `log` when a logger takes them, else stderr.

use std::io::{self, Write};

/// The `log` target of the serve loop's messages, kept from when the engine was one
/// module (`server`) so that users' log filters go on matching.
pub(crate) const LOG_TARGET: &str = "socketserver::server";

/// Logs `message`, or writes it to stderr when no logger takes that level: for what an
/// operator must see even without a logger (request errors, running out of descriptors).
pub(crate) fn log_or_stderr(level: log::Level, message: &str) {
    if log::log_enabled!(target: LOG_TARGET, level) {
        log::log!(target: LOG_TARGET, level, "{message}");
    } else {
        // Not eprintln!, which panics when stderr is a closed pipe: a report must never
        // take the server down.
        let mut stderr = io::stderr().lock();
        let _ = writeln!(stderr, "socketserver: {message}");
    }
}

/// The message of a caught panic, when its payload is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic with a non-string payload)".to_string()
    }
}
