//! Graceful shutdown on SIGINT and SIGTERM, or Ctrl-C and Ctrl-Break on Windows (feature
//! `signals`, on by default).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::handle::ServerHandle;
use crate::report::log_or_stderr;

impl ServerHandle {
    /// Shuts the server down when the process is asked to stop: SIGINT (Ctrl-C) or
    /// SIGTERM (what `systemctl stop`, `docker stop` and `kill` send) on Unix, Ctrl-C or
    /// Ctrl-Break on Windows. The server refuses new connections at once and
    /// `serve_forever` returns once running requests end, or after
    /// [`SIGNAL_SHUTDOWN_DEADLINE`] (5 s; a shorter
    /// [`Builder::shutdown_deadline`](crate::Builder::shutdown_deadline) counts), when
    /// their connections are closed. With requests running it says so on stderr (or at
    /// `warn` through `log`, with a logger): "SIGINT: shutting down; waiting up to 5 s
    /// for 2 connection(s); press Ctrl-C again to stop now".
    ///
    /// A second signal, while running requests are still being waited for, ends the
    /// process at once, as a second Ctrl-C does in most servers.
    ///
    /// A handler that ignores its closed connection (it sleeps, or computes) is left
    /// running and reported a second after the deadline. With a thread per request,
    /// `serve_forever` returns then, and dropping or closing the server does not wait
    /// for that handler again. In sequential and pool modes the handler runs on the
    /// serve loop's own thread, and `serve_forever` cannot return before it does: the
    /// process was asked to stop, so one second later it ends as at a second signal,
    /// saying why ("serve_forever is still held by a handler that ignores its closed
    /// connection; ending the process"). So a program that returns from `main` after
    /// `serve_forever` ends within the deadline and two seconds of a signal, in every
    /// mode.
    ///
    /// While the returned guard lives, these signals no longer end the process at the
    /// first; drop it to stop listening (the default action is not restored: that
    /// cannot be done safely, so a later signal is ignored unless another listener is
    /// registered).
    ///
    /// # Platform-specific behavior
    ///
    /// On Unix a thread named `socketserver-signals` waits for the signals (through
    /// `signal-hook`, so the signal handler only sets a flag and writes to a pipe), and a
    /// second signal ends the process with the signal's default action. On Windows the
    /// console control handler is installed once per process (through `ctrlc`) and
    /// serves every guard alive; a second Ctrl-C ends the process with
    /// `STATUS_CONTROL_C_EXIT`, as Windows's default handler does.
    ///
    /// # Errors
    /// An error if the signal handlers cannot be installed or the thread cannot start.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Write;
    /// use socketserver::TcpServer;
    ///
    /// let server = TcpServer::bind("127.0.0.1:9000", |req| { req.writer().write_all(b"hi")?; Ok(()) })?;
    /// let _signals = server.handle().shutdown_on_signals()?;
    /// server.serve_forever()?; // returns after Ctrl-C or SIGTERM
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_on_signals(&self) -> io::Result<SignalShutdown> {
        imp::listen(self.clone()).map(|inner| SignalShutdown { _inner: inner })
    }
}

/// Listens for the stop signals on behalf of a server until dropped; see
/// [`ServerHandle::shutdown_on_signals`].
pub struct SignalShutdown {
    _inner: imp::Listener,
}

impl fmt::Debug for SignalShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalShutdown").finish_non_exhaustive()
    }
}

/// How long a signal-driven shutdown lets running requests take before their
/// connections are closed, unless [`Builder::shutdown_deadline`](crate::Builder::shutdown_deadline)
/// is shorter: 5 seconds.
pub const SIGNAL_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// A duration as a person reads it: `5 s`, `0.5 s`.
fn seconds(duration: Duration) -> String {
    let text = format!("{:.3}", duration.as_secs_f64());
    format!("{} s", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Says what the shutdown waits for, then shuts `server` down on a thread of its own,
/// so that the caller goes on hearing signals while shutdown waits for running requests.
///
/// A handler that ignores its closed connection past the deadline is left running, and
/// where it runs on a serve loop's own thread (sequential, pool) `serve_forever` cannot
/// return before it does. The process was asked to stop: rather than wait for it with no
/// bound, `end_process` ends the process as a second signal would, one second later.
fn shut_down_in_the_background(
    server: ServerHandle,
    signal: &'static str,
    end_process: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let active = server.stats().active;
    if active == 0 {
        log::info!("{signal}: shutting down"); // nothing to wait for: quiet, as before
    } else {
        let message = format!(
            "{signal}: shutting down; waiting up to {} for {active} connection(s); press Ctrl-C again to stop now",
            seconds(server.deadline_within(SIGNAL_SHUTDOWN_DEADLINE))
        );
        log_or_stderr(log::Level::Warn, &message);
    }
    std::thread::spawn(move || {
        if !server.shutdown_within(SIGNAL_SHUTDOWN_DEADLINE) {
            let message = format!(
                "{signal}: serve_forever is still held by a handler that ignores its closed connection; ending the \
                 process"
            );
            log_or_stderr(log::Level::Error, &message);
            end_process();
        }
    })
}

#[cfg(unix)]
mod imp {
    use std::io;
    use std::thread::{self, JoinHandle};

    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::{Handle, Signals};

    use super::shut_down_in_the_background;
    use crate::handle::ServerHandle;

    pub(super) struct Listener {
        control: Handle,
        thread: Option<JoinHandle<()>>,
    }

    pub(super) fn listen(server: ServerHandle) -> io::Result<Listener> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let control = signals.handle();
        let thread = thread::Builder::new().name("socketserver-signals".into()).spawn(move || {
            let mut stopping = None;
            for signal in signals.forever() {
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                if stopping.is_some() {
                    log::warn!("{name} again: exiting without waiting for running requests");
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    continue;
                }
                let end = move || drop(signal_hook::low_level::emulate_default_handler(signal));
                stopping = Some(shut_down_in_the_background(server.clone(), name, end));
            }
            if let Some(stopping) = stopping {
                let _ = stopping.join();
            }
        });
        match thread {
            Ok(thread) => Ok(Listener { control, thread: Some(thread) }),
            Err(e) => {
                control.close();
                Err(e)
            }
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            self.control.close();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(windows)]
mod imp {
    use std::io;
    use std::sync::OnceLock;

    use parking_lot::Mutex;

    use super::shut_down_in_the_background;
    use crate::handle::ServerHandle;

    /// The exit status of a process that Ctrl-C ended (`STATUS_CONTROL_C_EXIT`).
    const CONTROL_C_EXIT: u32 = 0xC000_013A;

    /// The servers to shut down at the next Ctrl-C, under the id of their guard, and
    /// whether one Ctrl-C came already.
    struct Registry {
        next_id: u64,
        servers: Vec<(u64, ServerHandle)>,
        stopping: bool,
    }

    static REGISTRY: Mutex<Registry> =
        parking_lot::const_mutex(Registry { next_id: 0, servers: Vec::new(), stopping: false });
    /// `ctrlc` takes one handler per process: it is installed once and serves every guard.
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

    pub(super) struct Listener {
        id: u64,
    }

    /// Runs on `ctrlc`'s own thread, not in the console's handler.
    fn on_ctrl_c() {
        let mut registry = REGISTRY.lock();
        if registry.servers.is_empty() {
            return;
        }
        if registry.stopping {
            log::warn!("Ctrl-C again: exiting without waiting for running requests");
            std::process::exit(CONTROL_C_EXIT as i32);
        }
        registry.stopping = true;
        for (_, server) in &registry.servers {
            drop(shut_down_in_the_background(server.clone(), "Ctrl-C", || std::process::exit(CONTROL_C_EXIT as i32)));
        }
    }

    pub(super) fn listen(server: ServerHandle) -> io::Result<Listener> {
        let installed = INSTALLED.get_or_init(|| ctrlc::set_handler(on_ctrl_c).map_err(|e| e.to_string()));
        if let Err(e) = installed {
            return Err(io::Error::other(format!("cannot install the Ctrl-C handler: {e}")));
        }
        let mut registry = REGISTRY.lock();
        registry.next_id += 1;
        let id = registry.next_id;
        registry.servers.push((id, server));
        Ok(Listener { id })
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let mut registry = REGISTRY.lock();
            registry.servers.retain(|(id, _)| *id != self.id);
            if registry.servers.is_empty() {
                registry.stopping = false;
            }
        }
    }
}
