//! Graceful shutdown on SIGINT and SIGTERM (feature `signals`, on by default).

use std::fmt;
use std::io;
use std::thread::{self, JoinHandle};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::handle::ServerHandle;

impl ServerHandle {
    /// Shuts the server down when the process receives SIGINT (Ctrl-C) or SIGTERM (what
    /// `systemctl stop`, `docker stop` and `kill` send): the server refuses new
    /// connections at once and `serve_forever` returns once running requests end (see
    /// [`Builder::shutdown_deadline`](crate::Builder::shutdown_deadline)).
    ///
    /// A second signal, while running requests are still being waited for (a hung one,
    /// with no [`shutdown_deadline`](crate::Builder::shutdown_deadline)), ends the
    /// process at once with the signal's default action, as a second Ctrl-C does in most
    /// servers.
    ///
    /// A thread named `socketserver-signals` waits for the signals, so a handler does
    /// nothing but set a flag and write to a pipe (the safe way, through `signal-hook`).
    /// While the returned guard lives, the two signals no longer end the process at the
    /// first; drop it to stop listening (the default action is not restored: signal-hook
    /// cannot do that safely, so a later signal is ignored unless another listener is
    /// registered).
    ///
    /// # Errors
    /// An error if the signal handlers cannot be installed or the thread cannot start.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Write;
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// let server = TcpServer::bind("127.0.0.1:9000", |req: &mut StreamRequest| req.writer().write_all(b"hi"))?;
    /// let _signals = server.handle().shutdown_on_signals()?;
    /// server.serve_forever()?; // returns after Ctrl-C or SIGTERM
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_on_signals(&self) -> io::Result<SignalShutdown> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let control = signals.handle();
        let server = self.clone();
        let thread = thread::Builder::new().name("socketserver-signals".into()).spawn(move || {
            let mut stopping = None;
            for signal in signals.forever() {
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                if stopping.is_some() {
                    log::warn!("{name} again: exiting without waiting for running requests");
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    continue;
                }
                log::info!("{name}: shutting down");
                // On a thread of its own, so this one hears a second signal while
                // shutdown waits for running requests.
                let server = server.clone();
                stopping = Some(thread::spawn(move || server.shutdown()));
            }
            if let Some(stopping) = stopping {
                let _ = stopping.join();
            }
        });
        match thread {
            Ok(thread) => Ok(SignalShutdown { control, thread: Some(thread) }),
            Err(e) => {
                control.close();
                Err(e)
            }
        }
    }
}

/// Listens for SIGINT and SIGTERM on behalf of a server until dropped; see
/// [`ServerHandle::shutdown_on_signals`].
pub struct SignalShutdown {
    control: Handle,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for SignalShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalShutdown").finish_non_exhaustive()
    }
}

impl Drop for SignalShutdown {
    fn drop(&mut self) {
        self.control.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
