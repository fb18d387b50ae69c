//! An echo server on every transport and dispatch mode.
//!
//! ```text
//! cargo run --release --example echo -- [--proto tcp|udp|unix] [--mode sequential|threading|pool]
//!                                       [--workers N] [--addr ADDR]
//! ```
//!
//! Prints `listening on tcp://IP:PORT` (or `udp://`, `unix://PATH`) once bound. Streams
//! echo every byte until the client's end-of-file; UDP replies to each datagram with its
//! bytes. SIGINT or SIGTERM (Ctrl-C or Ctrl-Break on Windows) stops accepting at once,
//! gives running clients up to 2 s, then exits 0. Runs on Linux, macOS, the BSDs and
//! Windows; `--proto unix` on Unix only.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socketserver::dispatch::{Dispatch, Pool};
use socketserver::transport::Transport;
#[cfg(unix)]
use socketserver::UnixStreamServer;
use socketserver::{
    Builder, DatagramRequest, Frame, Reader, RequestHandler, Server, StreamRequest, TcpServer, UdpServer, Writer,
    DEFAULT_RBUFSIZE,
};

const GRACE: Duration = Duration::from_secs(2);
const USAGE: &str =
    "usage: echo [--proto tcp|udp|unix] [--mode sequential|threading|pool] [--workers N] [--park|--no-park] [--addr ADDR]
  defaults: --proto tcp --mode threading --addr 127.0.0.1:9999 (unix: --addr PATH is required)
  --park: streams wait in the poller between reads, holding no thread (a thread per active
          exchange, not per client); the default in sequential and pool modes
  --no-park: a thread per client from connect to close; the default in threading mode
  --count-states: count every connection state in a connection_state hook, and
          --no-timings: do not time requests (both for the benchmark of their cost)";

/// Where to listen, checked against the protocol.
enum Listen {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
}

enum Mode {
    Sequential,
    Threading,
    Pool,
}

struct Args {
    listen: Listen,
    mode: Mode,
    workers: Option<usize>,
    /// Park stream connections between messages (`--park`, the default but in threading
    /// mode), or give each a thread for its whole life (`--no-park`).
    park: Option<bool>,
    /// `--count-states`: a `connection_state` hook that counts (the benchmark's).
    count_states: bool,
    /// `--no-timings`: `Builder::timings(false)` (the benchmark's).
    timings: bool,
}

/// Parses the command line; the error is the one line to print.
fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut proto, mut mode, mut workers, mut addr) = ("tcp".to_string(), Mode::Threading, None, None);
    let mut park = None;
    let (mut count_states, mut timings) = (false, true);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--proto" => proto = value()?,
            "--mode" => {
                mode = match value()?.as_str() {
                    "sequential" => Mode::Sequential,
                    "threading" => Mode::Threading,
                    "pool" => Mode::Pool,
                    other => return Err(format!("unknown --mode {other:?}: expected sequential, threading or pool")),
                }
            }
            "--workers" => {
                let text = value()?;
                match text.parse::<usize>() {
                    Ok(n) if n > 0 => workers = Some(n),
                    _ => return Err(format!("bad --workers {text:?}: expected a whole number of at least 1")),
                }
            }
            "--addr" => addr = Some(value()?),
            "--park" => park = Some(true),
            "--no-park" => park = Some(false),
            "--count-states" => count_states = true,
            "--no-timings" => timings = false,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let inet = |addr: Option<String>| {
        let text = addr.unwrap_or_else(|| "127.0.0.1:9999".to_string());
        text.parse().map_err(|_| format!("bad --addr {text:?}: expected IP:PORT, like 127.0.0.1:9999 or [::1]:0"))
    };
    let listen = match proto.as_str() {
        "tcp" => Listen::Tcp(inet(addr)?),
        "udp" => Listen::Udp(inet(addr)?),
        "unix" => Listen::Unix(addr.ok_or("--proto unix needs --addr PATH")?.into()),
        other => return Err(format!("unknown --proto {other:?}: expected tcp, udp or unix")),
    };
    Ok(Args { listen, mode, workers, park, count_states, timings })
}

fn dispatch(args: &Args) -> Dispatch {
    match args.mode {
        Mode::Sequential => Dispatch::sequential(),
        Mode::Threading => Dispatch::threading(),
        Mode::Pool => args.workers.map_or_else(Pool::default, Pool::new).into(),
    }
}

/// Echoes every byte as it arrives until the client's end-of-file, on one thread for
/// the whole connection (`--no-park`).
///
/// Straight from the reader's buffer (`fill_buf`/`consume`) rather than `io::copy`,
/// which would read into an 8 KiB buffer of its own on the thread's stack: with a thread
/// per connection, that is a stack page more for every idle client.
fn echo_stream(request: &mut StreamRequest) -> io::Result<()> {
    let _ = request.connection().set_nodelay(true);
    let (reader, writer) = request.reader_and_writer();
    loop {
        if !echo_some(reader, writer)? {
            return Ok(());
        }
    }
}

/// Echoes what has arrived, then parks the connection until more does:
/// a few threads serve every client, however many keep their connection open, and none
/// waits in the backlog for a worker. The server's frame ([`Frame::bytes`]) runs it only
/// once bytes have arrived, read without waiting, so its read never blocks.
fn echo_parking(request: &mut StreamRequest) -> io::Result<()> {
    if request.exchanges() == 1 {
        let _ = request.connection().set_nodelay(true);
    }
    let (reader, writer) = request.reader_and_writer();
    if echo_some(reader, writer)? {
        request.park();
    }
    Ok(())
}

/// Echoes one read's worth; `false` at the client's end-of-file.
fn echo_some(reader: &mut Reader, writer: &mut Writer) -> io::Result<bool> {
    let received = reader.fill_buf()?;
    if received.is_empty() {
        return Ok(false);
    }
    writer.write_all(received)?;
    let n = received.len();
    reader.consume(n);
    Ok(true)
}

/// Replies to a datagram with its own bytes (an empty one gets an empty reply).
fn echo_datagram(request: &mut DatagramRequest) -> io::Result<()> {
    let (packet, reply) = request.packet_and_reply();
    reply.extend_from_slice(packet);
    Ok(())
}

/// The builder with the frame, if any.
fn framed<T: Transport<Request = StreamRequest>>(builder: Builder<T>, frame: &Option<Frame>) -> Builder<T> {
    match frame {
        Some(frame) => builder.frame(frame.clone()),
        None => builder,
    }
}

/// States counted by `--count-states`.
static STATES: AtomicU64 = AtomicU64::new(0);

/// Binds, prints the address, serves until a signal, and closes.
fn run<T: Transport>(
    builder: Builder<T>,
    handler: impl RequestHandler<T::Request>,
    url: impl Fn(&T::Addr) -> String,
    (count_states, timings): (bool, bool),
) -> Result<(), socketserver::Error> {
    let mut builder = builder.timings(timings);
    if count_states {
        builder = builder.connection_state(|_, _, _| {
            STATES.fetch_add(1, Ordering::Relaxed);
        });
    }
    let server: Server<T> = builder
        .shutdown_deadline(GRACE)
        .handle_error(|error, client| match client {
            Some(client) => eprintln!("echo: {client}: {error}"),
            None => eprintln!("echo: {error}"),
        })
        .bind_handler(handler)?;
    // Ctrl-C or SIGTERM: refuse new connections at once, give running ones GRACE.
    let _signals = server.handle().shutdown_on_signals()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", url(&server.local_addr()))?;
    stdout.flush()?;
    drop(stdout);
    server.serve_forever()?;
    server.close();
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("echo: {message}");
            return ExitCode::from(2);
        }
    };
    // Parking, sequential and pool modes serve every client with their few threads (the
    // loop, the workers); without it a client holds a thread, and a pool's worker, from
    // connect to close. Threading does not park by default: a thread per client is the
    // fastest while there are fewer active clients than the machine runs well (a resumed
    // exchange costs a handoff to another thread); with hundreds, --park keeps the
    // threads to the active exchanges, so that none of them starves.
    let park = args.park.unwrap_or(!matches!(args.mode, Mode::Threading));
    let stream_handler: fn(&mut StreamRequest) -> io::Result<()> = if park { echo_parking } else { echo_stream };
    let mode = dispatch(&args);
    // An echo has no messages: whatever has arrived is one (`Frame::bytes`). Declared,
    // the server reads it without waiting, in the poller, and a client that connects and
    // says nothing holds no worker.
    let frame = park.then(|| Frame::bytes(DEFAULT_RBUFSIZE));
    let ops = (args.count_states, args.timings);
    let result = match args.listen {
        Listen::Tcp(addr) => {
            run(framed(TcpServer::builder(addr).dispatch(mode), &frame), stream_handler, |a| format!("tcp://{a}"), ops)
        }
        Listen::Udp(addr) => run(UdpServer::builder(addr).dispatch(mode), echo_datagram, |a| format!("udp://{a}"), ops),
        #[cfg(unix)]
        Listen::Unix(path) => {
            let builder = framed(UnixStreamServer::builder(path).dispatch(mode), &frame);
            run(builder, stream_handler, |p| format!("unix://{}", p.display()), ops)
        }
        #[cfg(not(unix))]
        Listen::Unix(path) => {
            eprintln!("echo: --proto unix ({}) needs Unix sockets, which this system does not have", path.display());
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo: {error}");
            ExitCode::FAILURE
        }
    }
}
