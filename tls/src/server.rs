//! The TLS server itself (Unix only: see `main.rs`).

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use socketserver::dispatch::Threading;
use socketserver::{Reader, RequestHandler, StreamRequest, TcpServer, Writer};

const GRACE: Duration = Duration::from_secs(2);
/// The longest line echoed; a longer one ends the connection instead of filling memory.
const MAX_LINE: usize = 8192;
const USAGE: &str = "usage: tls [--addr ADDR] [--cert FILE --key FILE] [--cert-out FILE] [--timeout SECS]
  defaults: --addr 127.0.0.1:8443 --timeout 10, and a self-signed certificate for localhost
  and 127.0.0.1 unless --cert and --key (PEM files) are given; --cert-out FILE writes its PEM";

struct Args {
    addr: SocketAddr,
    cert_and_key: Option<(PathBuf, PathBuf)>,
    cert_out: Option<PathBuf>,
    timeout: Duration,
}

/// Parses the command line; the error is the one line to print.
fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut addr, mut cert, mut key, mut cert_out, mut timeout) = (None, None, None, None, Duration::from_secs(10));
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--cert-out" => cert_out = Some(PathBuf::from(value()?)),
            "--timeout" => {
                let text = value()?;
                timeout = match text.parse::<f64>() {
                    Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Duration::from_secs_f64(secs),
                    _ => return Err(format!("bad --timeout {text:?}: expected seconds, above 0")),
                }
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let text = addr.unwrap_or_else(|| "127.0.0.1:8443".to_string());
    let addr = text.parse().map_err(|_| format!("bad --addr {text:?}: expected IP:PORT, like 127.0.0.1:8443"))?;
    let cert_and_key = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err("--cert needs --key".to_string()),
        (None, Some(_)) => return Err("--key needs --cert".to_string()),
    };
    Ok(Args { addr, cert_and_key, cert_out, timeout })
}

/// The certificate chain and key: read from PEM files, or made self-signed.
fn certificate(args: &Args) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let (chain, key, pem) = match &args.cert_and_key {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!("--cert {}: no certificate in the file", cert.display()));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--key {}: {e}", key.display()))?;
            let pem = fs::read_to_string(cert).map_err(|e| format!("--cert {}: {e}", cert.display()))?;
            (chain, key, pem)
        }
        None => {
            let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            let made = rcgen::generate_simple_self_signed(names).map_err(|e| format!("making a certificate: {e}"))?;
            let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()).into();
            (vec![made.cert.der().clone()], key, made.cert.pem())
        }
    };
    if let Some(out) = &args.cert_out {
        fs::write(out, pem).map_err(|e| format!("--cert-out {}: {e}", out.display()))?;
    }
    Ok((chain, key))
}

/// The request's reader and writer as one `Read + Write`, for a TLS library to wrap.
struct Plain<'a> {
    reader: &'a mut Reader,
    writer: &'a mut Writer,
}

impl<'a> Plain<'a> {
    fn of(request: &'a mut StreamRequest) -> Self {
        let (reader, writer) = request.reader_and_writer();
        Plain { reader, writer }
    }
}

impl Read for Plain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for Plain<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// The handler. Its one field is shared state: the TLS configuration (certificate,
/// key, session cache) that every connection's session starts from.
struct TlsEcho {
    config: Arc<ServerConfig>,
    timeout: Duration,
}

impl RequestHandler<StreamRequest> for TlsEcho {
    fn handle(&self, request: &mut StreamRequest) -> socketserver::HandlerResult {
        let mut session = ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        // The read timeout restarts with every byte; the deadline does not, so a client
        // that sends its ClientHello a byte at a time cannot hold the thread either.
        request.set_deadline(Some(Instant::now() + self.timeout));
        session.complete_io(&mut Plain::of(request))?;
        request.set_deadline(None);

        let mut tls = StreamOwned::new(session, Plain::of(request));
        let result = echo_lines(&mut tls);
        // close_notify tells the client that the echo ended here and was not cut off.
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(result?)
    }
}

/// Echoes each line of the TLS stream, which buffers the plain text itself.
fn echo_lines(tls: &mut (impl BufRead + Write)) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        // `take`: a client that never sends a newline gets MAX_LINE bytes in, not memory.
        match Read::take(&mut *tls, MAX_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(n) if n == MAX_LINE && !line.ends_with(b"\n") => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("line longer than {MAX_LINE} bytes")))
            }
            Ok(_) => tls.write_all(&line)?,
            // The client closed TCP without close_notify, as Python's ssl does without
            // unwrap(): that can truncate what the client sent, which an echo can ignore.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Binds, prints the address, serves until a signal, and closes.
fn run(args: Args) -> Result<(), String> {
    let (chain, key) = certificate(&args)?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS configuration: {e}"))?;
    let handler = TlsEcho { config: Arc::new(config), timeout: args.timeout };
    let server = TcpServer::builder(args.addr)
        .dispatch(Threading::new())
        .read_timeout(args.timeout)
        .write_timeout(args.timeout)
        .shutdown_deadline(GRACE)
        .handle_error(|error, client| match client {
            Some(client) => eprintln!("tls: {client}: {error}"),
            None => eprintln!("tls: {error}"),
        })
        .bind_handler(handler)
        .map_err(|e| e.to_string())?;
    // Ctrl-C or SIGTERM: refuse new connections at once, give running ones GRACE.
    let _signals = server.handle().shutdown_on_signals().map_err(|e| e.to_string())?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on tls://{}", server.local_addr())
        .and_then(|()| stdout.flush())
        .map_err(|e| e.to_string())?;
    drop(stdout);
    server.serve_forever().map_err(|e| e.to_string())?;
    server.close();
    Ok(())
}

pub(crate) fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("tls: {message}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tls: {message}");
            ExitCode::FAILURE
        }
    }
}
