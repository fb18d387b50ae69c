//! A line server that restarts on `SIGHUP` without refusing a client: it hands its
//! listening socket to a new copy of itself (`socketserver::restart`), which serves from
//! it at once; the old one stops accepting, drains, and exits. Each answer names the
//! process that served it.
//!
//! ```text
//! cargo run --example restart -- --addr 127.0.0.1:9000 &
//! echo hi | nc -N 127.0.0.1 9000        # pid 1234: hi
//! kill -HUP 1234                        # "pid 1240 serves; pid 1234 drains"
//! echo hi | nc -N 127.0.0.1 9000        # pid 1240: hi
//! ```
//!
//! SIGINT or SIGTERM stop the process serving now. Unix only.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    match unix::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("restart: handing sockets to a new process needs Unix (see socketserver::restart)");
    std::process::exit(2);
}

#[cfg(unix)]
mod unix {
    use std::io::{self, BufRead, Write};
    use std::net::TcpListener;
    use std::os::fd::AsFd;
    use std::time::Duration;

    use signal_hook::consts::SIGHUP;
    use socketserver::dispatch::Pool;
    use socketserver::restart::{self, Inherited};
    use socketserver::{Frame, StreamRequest, TcpServer};

    /// How long the old process gives its connections to finish once the new one serves.
    const DRAIN: Duration = Duration::from_secs(5);
    /// How long the new process may take to say it serves.
    const START_WITHIN: Duration = Duration::from_secs(10);

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let addr = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
            [] => "127.0.0.1:9000".to_string(),
            [flag, addr] if flag == "--addr" => addr.clone(),
            _ => return Err("usage: restart [--addr IP:PORT]".into()),
        };
        // Before anything else: a SIGHUP that comes while this process starts waits for
        // it to serve, instead of killing it (the default action).
        let mut hangups = signal_hook::iterator::Signals::new([SIGHUP])?;
        // Started by `hand_over`: the old process's socket; started by hand: a new one.
        let mut inherited = Inherited::receive()?;
        let listener = match inherited.as_mut().and_then(|i| i.take_tcp_listener("web")) {
            Some(listener) => listener,
            None => TcpListener::bind(&addr)?,
        };
        let local = listener.local_addr()?;
        // `from_listener`: a shutdown leaves the socket open, for the process that
        // serves next (a socket the server bound itself would be shut down).
        // A line at a time, parked in between: a drain then closes the connections idle
        // between lines at once (their clients connect again, to the new process), and
        // waits only for the lines being answered.
        let server = TcpServer::from_listener(listener.try_clone()?)
            .dispatch(Pool::new(4))
            .frame(Frame::lines(4096))
            .shutdown_deadline(DRAIN)
            .bind(|req: &mut StreamRequest| {
                let mut line = String::new();
                if req.reader().read_line(&mut line)? > 0 {
                    write!(req.writer(), "pid {}: {line}", std::process::id())?;
                    req.park();
                }
                Ok(())
            })?;
        let handle = server.handle();
        let _signals = handle.shutdown_on_signals()?;
        println!("pid {} listening on tcp://{local}", std::process::id());
        io::stdout().flush()?;
        if let Some(inherited) = inherited {
            inherited.ready()?; // the old process may stop now
        }

        // SIGHUP: start the next process on the same socket; once it serves, this one
        // stops accepting and drains. A failed start leaves this one serving.
        let restarter = handle.clone();
        std::thread::spawn(move || {
            for _ in hangups.forever() {
                let next = restart::this_program()
                    .and_then(|program| restart::hand_over(program, &[("web", listener.as_fd())], START_WITHIN));
                match next {
                    Ok(child) => {
                        eprintln!("restart: pid {} serves; pid {} drains", child.id(), std::process::id());
                        restarter.shutdown();
                        return;
                    }
                    Err(e) => eprintln!("restart: the new process did not start ({e}); still serving"),
                }
            }
        });
        server.serve_forever()?;
        server.close();
        Ok(())
    }
}
