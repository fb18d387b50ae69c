//! The floor: a hand-written `std::net` echo server, no crate.
//!
//! ```text
//! std_echo --proto tcp|udp|unix --mode thread|pool [--workers N] --addr ADDR
//! ```
//!
//! Prints `listening on tcp://IP:PORT` (or `udp://`, `unix://PATH`) like the crate's `echo`
//! example, then serves until killed (SIGTERM's default action ends it at once).
//!
//! - `thread`: a new thread per connection (streams) or per datagram (UDP), as
//!   `ThreadingMixIn` does.
//! - `pool`: `N` threads spawned up front, each blocking in `accept` (streams) or
//!   `recv_from` (UDP) on one shared socket and serving what it got inline.
//!
//! Streams: `TCP_NODELAY`, an 8 KiB buffer, echo every read until end-of-file.
//! Datagrams: an 8 KiB buffer (Python's `max_packet_size`), reply with the same bytes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

const BUF: usize = 8192;
const USAGE: &str = "usage: std_echo --proto tcp|udp|unix --mode thread|pool [--workers N] --addr ADDR";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Thread,
    Pool,
}

fn echo<S: Read + Write>(mut stream: S) {
    let mut buf = [0u8; BUF];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn serve_tcp(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    echo(stream);
}

fn announce(url: String) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {url}")?;
    out.flush()
}

fn pool_threads(workers: usize, body: impl Fn() + Send + Clone + 'static) -> io::Result<()> {
    let mut handles = Vec::with_capacity(workers);
    for i in 0..workers {
        let body = body.clone();
        handles.push(thread::Builder::new().name(format!("std-pool-{i}")).spawn(body)?);
    }
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

fn tcp(addr: SocketAddr, mode: Mode, workers: usize) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    announce(format!("tcp://{}", listener.local_addr()?))?;
    match mode {
        Mode::Thread => loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    // A failed spawn drops the connection; the server goes on.
                    let _ = thread::Builder::new().spawn(move || serve_tcp(stream));
                }
                Err(_) => continue,
            }
        },
        Mode::Pool => {
            let listener = Arc::new(listener);
            pool_threads(workers, move || loop {
                if let Ok((stream, _)) = listener.accept() {
                    serve_tcp(stream);
                }
            })
        }
    }
}

fn unix(path: &str, mode: Mode, workers: usize) -> io::Result<()> {
    let listener = UnixListener::bind(path)?;
    announce(format!("unix://{path}"))?;
    match mode {
        Mode::Thread => loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = thread::Builder::new().spawn(move || echo::<UnixStream>(stream));
                }
                Err(_) => continue,
            }
        },
        Mode::Pool => {
            let listener = Arc::new(listener);
            pool_threads(workers, move || loop {
                if let Ok((stream, _)) = listener.accept() {
                    echo(stream);
                }
            })
        }
    }
}

fn udp(addr: SocketAddr, mode: Mode, workers: usize) -> io::Result<()> {
    let socket = Arc::new(UdpSocket::bind(addr)?);
    announce(format!("udp://{}", socket.local_addr()?))?;
    match mode {
        // Thread per datagram: what `ThreadingUDPServer` does.
        Mode::Thread => {
            let mut buf = [0u8; BUF];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
                let packet = buf[..n].to_vec();
                let socket = Arc::clone(&socket);
                let _ = thread::Builder::new().spawn(move || {
                    let _ = socket.send_to(&packet, peer);
                });
            }
        }
        Mode::Pool => pool_threads(workers, move || {
            let mut buf = [0u8; BUF];
            loop {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        }),
    }
}

fn main() -> ExitCode {
    let (mut proto, mut mode, mut workers, mut addr) = (None, None, None, None);
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next();
        match (flag.as_str(), value) {
            ("--proto", Some(v)) => proto = Some(v),
            ("--mode", Some(v)) if v == "thread" => mode = Some(Mode::Thread),
            ("--mode", Some(v)) if v == "pool" => mode = Some(Mode::Pool),
            ("--workers", Some(v)) => match v.parse::<usize>() {
                Ok(n) if n > 0 => workers = Some(n),
                _ => {
                    eprintln!("std_echo: bad --workers {v:?}\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            ("--addr", Some(v)) => addr = Some(v),
            _ => {
                eprintln!("std_echo: bad argument {flag:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(proto), Some(mode), Some(addr)) = (proto, mode, addr) else {
        eprintln!("std_echo: --proto, --mode and --addr are required\n{USAGE}");
        return ExitCode::from(2);
    };
    let workers = workers.unwrap_or_else(|| thread::available_parallelism().map_or(2, |n| n.get()).max(2));
    let inet = || addr.parse::<SocketAddr>().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad --addr"));
    let result = match proto.as_str() {
        "tcp" => inet().and_then(|a| tcp(a, mode, workers)),
        "udp" => inet().and_then(|a| udp(a, mode, workers)),
        "unix" => unix(&addr, mode, workers),
        other => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown --proto {other:?}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("std_echo: {e}");
            ExitCode::FAILURE
        }
    }
}
