//! A reference: the tokio echo server, as its README writes it, on tokio's
//! multi-threaded runtime (a worker per core). Only the benchmark uses tokio; the crate
//! has no async runtime.
//!
//! ```text
//! tokio_echo --proto tcp --mode mt [--workers N] --addr ADDR
//! ```
//!
//! Prints `listening on tcp://IP:PORT` like the crate's `echo` example, then serves until
//! killed. `TCP_NODELAY`, an 8 KiB buffer, echo every read until end-of-file.

use std::io::Write;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const USAGE: &str = "usage: tokio_echo --proto tcp --mode mt [--workers N] --addr ADDR";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut workers) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--proto", Some(p)) if p == "tcp" => {}
            ("--mode", Some(_)) => {}
            ("--workers", Some(n)) => workers = n.parse::<usize>().ok(),
            ("--addr", Some(a)) => addr = Some(a),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(addr) = addr else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_io();
    if let Some(n) = workers {
        runtime.worker_threads(n);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tokio_echo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on tcp://{}", listener.local_addr()?)?;
        out.flush()?;
        drop(out);
        loop {
            let (mut socket, _) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0; 8192];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if socket.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_echo: {e}");
            ExitCode::FAILURE
        }
    }
}
