//! The TLS example, run as a child process: TLS wraps the request's stream in the
//! handler, and the crate knows nothing of it.
//!
//! Clients are rustls (a dev-dependency) and Python's `ssl` module, each trusting only
//! the certificate the example wrote with `--cert-out` (or was given with `--cert`). The
//! tests check the echo, that certificate verification really happens, that a
//! plain-text client, an overlong line and a handshake that never ends each cost one
//! connection and nothing more, and a clean exit on SIGTERM.
//!
//! Cargo builds the example (this package's binary) before this test runs. Every wait has
//! a deadline, every child process is killed when its guard drops, and only `127.0.0.1:0`
//! is bound. The helpers are the crate's own (`tests/support`).
//!
//! Unix only, as the example's TLS library is here.
#![cfg(unix)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::process::Spawned;
use support::{bounded, connect, spawn_scoped, TempPath, TIMEOUT};

/// The example's longest line (`MAX_LINE` in src/server.rs).
const MAX_LINE: usize = 8192;

// ---------------------------------------------------------------------------------------
// Building and running the example
// ---------------------------------------------------------------------------------------

fn tls_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tls"))
}

/// Runs `command` to its end within `limit`, returning its status, stdout and stderr.
fn run_to_exit(mut command: Command, limit: Duration) -> (ExitStatus, String, String) {
    let finished = support::process::run_to_exit(&mut command, b"", limit);
    (finished.status, finished.stdout, finished.stderr)
}

/// Runs the test `body` within 90 s.
fn tls_test(body: impl FnOnce() + Send + 'static) {
    bounded(Duration::from_secs(90), body);
}

/// A file in the temp directory, removed on drop.
fn temp_pem(tag: &str) -> TempPath {
    TempPath::file(&format!("tls-{tag}"), "pem")
}

/// A running tls example. Dropping it kills the process and reaps it.
struct Tls {
    process: Spawned,
    addr: SocketAddr,
}

impl Tls {
    /// Starts the example on a free port and waits for its `listening on tls://` line.
    fn start(extra: &[&str]) -> Tls {
        let mut command = Command::new(tls_binary());
        command.args(["--addr", "127.0.0.1:0"]).args(extra).env("RUST_BACKTRACE", "1");
        let mut process = Spawned::start(command);
        let url = process.listening();
        let addr =
            url.strip_prefix("tls://").unwrap_or_else(|| panic!("tls {extra:?}: listening on {url:?}, not tls://ADDR"));
        let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{url:?}: not IP:PORT: {e}"));
        assert_ne!(addr.port(), 0, "{url:?} shows port 0, not the real port");
        Tls { process, addr }
    }

    /// Sends SIGTERM, checks for exit status 0 within the 2 s grace and a margin, and
    /// returns what the process wrote to stderr.
    fn terminate(&mut self) -> String {
        self.process.signal("TERM");
        let status = self.process.wait_exit(TIMEOUT);
        let stderr = self.process.stderr_text();
        assert_eq!(status.code(), Some(0), "tls ended with {status} after SIGTERM; stderr: {stderr}");
        stderr
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// A rustls configuration that trusts the certificates in `pem` and nothing else.
fn trusting(pem: &Path, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pem).expect("read the certificate PEM") {
        roots.add(cert.expect("a PEM certificate")).expect("a certificate rustls accepts as a root");
    }
    assert!(!roots.is_empty(), "{} holds no certificate", pem.display());
    let config =
        ClientConfig::builder_with_protocol_versions(versions).with_root_certificates(roots).with_no_client_auth();
    Arc::new(config)
}

/// Connects and completes the handshake for `name` (a DNS name or an IP address).
fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> io::Result<TlsClient> {
    let name = ServerName::try_from(name.to_string()).expect("a valid server name");
    let session = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut client = StreamOwned::new(session, connect(addr));
    client.conn.complete_io(&mut client.sock)?;
    Ok(client)
}

/// Sends `bytes` and reads back exactly as many.
fn assert_echoes(client: &mut TlsClient, bytes: &[u8]) {
    client.write_all(bytes).expect("send over TLS");
    let mut back = vec![0; bytes.len()];
    client.read_exact(&mut back).unwrap_or_else(|e| panic!("no echo of {} bytes over TLS: {e}", bytes.len()));
    assert!(back == bytes, "the echo differs: sent {} bytes, got {:?}...", bytes.len(), &back[..back.len().min(40)]);
}

/// Reads to the end: the server's close_notify (a truncating close is an error here).
fn read_to_close_notify(client: &mut TlsClient) -> Vec<u8> {
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the server ends the TLS stream with close_notify");
    rest
}

/// Waits until the server closes `stream`, writing `drip` a byte at a time meanwhile
/// (every 200 ms); fails after `limit`.
fn assert_closed_within(stream: &mut TcpStream, drip: &[u8], limit: Duration, what: &str) {
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + limit;
    let mut drip = drip.iter().cycle();
    loop {
        let mut buf = [0; 64];
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!("{what}: the server sent {:?} to a client that never finished a handshake", &buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(Instant::now() < deadline, "{what}: the connection is still open after {limit:?}");
        if let Some(&byte) = drip.next() {
            if stream.write_all(&[byte]).is_err() {
                return; // closed by the server under our write
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn rustls_client_trusting_the_written_certificate_gets_each_line_back() {
    tls_test(|| {
        let pem = temp_pem("cert");
        let mut server = Tls::start(&["--cert-out", pem.arg()]);
        let config = trusting(&pem, rustls::DEFAULT_VERSIONS);

        // The certificate names both localhost and 127.0.0.1.
        for name in ["localhost", "127.0.0.1"] {
            let mut client = tls_connect(server.addr, config.clone(), name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(client.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3), "{name}");
            assert_echoes(&mut client, b"hello\n");
            assert_echoes(&mut client, b"\n");
            assert_echoes(&mut client, "caf\u{e9} \u{2713}\n".as_bytes());
            assert_echoes(&mut client, b"\0\xff binary\r\n");
            // Several lines in one record come back whole, in order.
            assert_echoes(&mut client, b"one\ntwo\nthree\n");
            let longest = [vec![b'x'; MAX_LINE - 1], b"\n".to_vec()].concat();
            assert_echoes(&mut client, &longest);
            // A last line without a newline is echoed when the client ends the stream.
            client.write_all(b"no newline").unwrap();
            client.conn.send_close_notify();
            client.flush().unwrap();
            assert_eq!(read_to_close_notify(&mut client), b"no newline", "{name}");
        }

        // TLS 1.2 works too (rustls's `tls12` feature).
        let mut client = tls_connect(server.addr, trusting(&pem, &[&rustls::version::TLS12]), "localhost").unwrap();
        assert_eq!(client.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        assert_echoes(&mut client, b"over TLS 1.2\n");
        drop(client);

        let stderr = server.terminate();
        assert_eq!(errors_in(&stderr), 0, "well-behaved clients caused errors: {stderr}");
    });
}

#[test]
fn the_certificate_is_verified_and_given_files_are_used() {
    tls_test(|| {
        // A certificate and key of our own, served with --cert/--key.
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (temp_pem("given-cert"), temp_pem("given-key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&*key, made.signing_key.serialize_pem()).unwrap();
        let out = temp_pem("given-out");
        let server = Tls::start(&["--cert", cert.arg(), "--key", key.arg(), "--cert-out", out.arg()]);
        assert_eq!(
            std::fs::read_to_string(&*out).unwrap(),
            made.cert.pem(),
            "--cert-out writes the served certificate"
        );

        let mut client = tls_connect(server.addr, trusting(&cert, rustls::DEFAULT_VERSIONS), "localhost").unwrap();
        assert_echoes(&mut client, b"served with the given certificate\n");

        // That certificate names localhost only.
        let wrong_name = tls_connect(server.addr, trusting(&cert, rustls::DEFAULT_VERSIONS), "127.0.0.1");
        let error = wrong_name.expect_err("a certificate without 127.0.0.1 must not verify for it");
        assert!(error.to_string().contains("certificate"), "expected a certificate error, got {error}");

        // A client that trusts a different certificate refuses the server's.
        let other = temp_pem("other");
        std::fs::write(&other, rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap().cert.pem())
            .unwrap();
        let untrusted = tls_connect(server.addr, trusting(&other, rustls::DEFAULT_VERSIONS), "localhost");
        let error = untrusted.expect_err("a certificate the client does not trust must not verify");
        assert!(error.to_string().contains("certificate"), "expected a certificate error, got {error}");

        // Those failed handshakes cost the server nothing.
        assert_echoes(&mut client, b"still served\n");
    });
}

/// The lines of the example's stderr that are not the signal's own notice ("SIGTERM:
/// shutting down; waiting up to 5 s for 1 connection(s) ..."), which comes when a
/// client's close has not yet reached the server as it is stopped.
fn errors_in(stderr: &str) -> usize {
    stderr.lines().filter(|line| !line.contains("shutting down; waiting up to")).count()
}

#[test]
fn plain_text_client_gets_no_echo_and_the_server_keeps_serving() {
    tls_test(|| {
        let pem = temp_pem("plain");
        let mut server = Tls::start(&["--cert-out", pem.arg()]);
        let config = trusting(&pem, rustls::DEFAULT_VERSIONS);
        let mut before = tls_connect(server.addr, config.clone(), "localhost").unwrap();
        assert_echoes(&mut before, b"before\n");

        for request in [&b"hello in plain text\n"[..], b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"] {
            let mut plain = connect(server.addr);
            plain.write_all(request).unwrap();
            let mut reply = Vec::new();
            plain.read_to_end(&mut reply).expect("the server closes a plain-text connection");
            // At most a TLS alert record (content type 21), never the text.
            assert!(reply.is_empty() || reply[0] == 21, "a plain-text client got {reply:?}");
            assert!(!reply.windows(5).any(|w| request.windows(5).any(|r| r == w)), "the text came back: {reply:?}");
        }

        // A connection that was open before, and a new one, are both still served.
        assert_echoes(&mut before, b"after\n");
        let mut after = tls_connect(server.addr, config, "localhost").unwrap();
        assert_echoes(&mut after, b"new client\n");
        drop((before, after));

        let stderr = server.terminate();
        // The signal's own line ("waiting up to 5 s for 1 connection(s)") may come too,
        // when a client's close has not reached the server yet: the example's errors are
        // its `tls:` lines.
        assert_eq!(errors_in(&stderr), 2, "one error line per plain-text client expected: {stderr}");
    });
}

#[test]
fn a_line_over_the_limit_ends_only_that_connection() {
    tls_test(|| {
        let pem = temp_pem("long");
        let server = Tls::start(&["--cert-out", pem.arg()]);
        let config = trusting(&pem, rustls::DEFAULT_VERSIONS);
        let mut other = tls_connect(server.addr, config.clone(), "localhost").unwrap();

        let mut client = tls_connect(server.addr, config.clone(), "localhost").unwrap();
        assert_echoes(&mut client, b"short\n");
        client.write_all(&vec![b'y'; MAX_LINE + 1]).unwrap();
        client.flush().unwrap();
        // No echo of the long line, and a clean TLS close rather than a cut connection.
        assert_eq!(read_to_close_notify(&mut client), b"");

        assert_echoes(&mut other, b"unaffected\n");
    });
}

#[test]
fn a_handshake_that_never_ends_is_cut_at_the_timeout() {
    tls_test(|| {
        let pem = temp_pem("stall");
        let server = Tls::start(&["--timeout", "1", "--cert-out", pem.arg()]);
        let config = trusting(&pem, rustls::DEFAULT_VERSIONS);
        let limit = Duration::from_secs(8);

        thread::scope(|scope| {
            // Connects and sends nothing: the read timeout alone would end this one.
            spawn_scoped(scope, || assert_closed_within(&mut connect(server.addr), b"", limit, "a silent client"));
            // The header of a 512-byte handshake record, then a byte every 200 ms: each read
            // succeeds within the 1 s timeout, so only a deadline on the whole handshake ends it.
            spawn_scoped(scope, || {
                let drip = [&[0x16, 0x03, 0x01, 0x02, 0x00][..], &[0; 512]].concat();
                assert_closed_within(&mut connect(server.addr), &drip, limit, "a client dripping its ClientHello");
            });
            // Meanwhile, and afterwards, a real client is served.
            let mut client = tls_connect(server.addr, config.clone(), "localhost").unwrap();
            assert_echoes(&mut client, b"served during the stall\n");
        });
        let mut client = tls_connect(server.addr, config, "localhost").unwrap();
        assert_echoes(&mut client, b"served after the stall\n");
    });
}

/// Python's `ssl` module, verifying against the written certificate as any client would:
/// by host name, by IP address, and with TLS 1.2 at most.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
for name, max_version in [("localhost", None), ("127.0.0.1", None), ("localhost", ssl.TLSVersion.TLSv1_2)]:
    ctx = ssl.create_default_context(cafile=cafile)
    if max_version:
        ctx.maximum_version = max_version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"first " + name.encode() + b"\nsecond\n")
            reply = b""
            while reply.count(b"\n") < 2:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                reply += chunk
            print(name, tls.version(), reply.decode().replace("\n", "|"))
"#;

#[test]
fn python_ssl_client_verifies_and_gets_its_lines_back() {
    tls_test(|| {
        let pem = temp_pem("python");
        let mut server = Tls::start(&["--cert-out", pem.arg()]);
        if let Err(e) = Command::new("python3").arg("--version").stdout(Stdio::null()).status() {
            panic!("python3 is part of this project's test machine, but cannot be run: {e}");
        }
        let mut python = Command::new("python3");
        python.args(["-c", PYTHON_CLIENT, &server.addr.port().to_string(), pem.arg()]);
        let (status, stdout, stderr) = run_to_exit(python, Duration::from_secs(30));
        assert!(status.success(), "the Python ssl client failed ({status}):\n{stderr}");
        assert_eq!(
            stdout,
            "localhost TLSv1.3 first localhost|second|\n\
             127.0.0.1 TLSv1.3 first 127.0.0.1|second|\n\
             localhost TLSv1.2 first localhost|second|\n"
        );
        // Python closes without close_notify; the example takes that as the end, not an error.
        let stderr = server.terminate();
        assert_eq!(errors_in(&stderr), 0, "Python's clients caused errors: {stderr}");
    });
}

#[test]
fn bad_arguments_exit_2_and_bad_files_exit_1() {
    tls_test(|| {
        let cases: &[(&[&str], i32, &str)] = &[
            (&["--addr", "127.0.0.1:0", "--bogus"], 2, "--bogus"),
            (&["--addr", "127.0.0.1:0", "--cert", "c.pem"], 2, "--key"),
            (&["--addr", "127.0.0.1:0", "--key", "k.pem"], 2, "--cert"),
            (&["--addr", "127.0.0.1:0", "--timeout", "0"], 2, "0"),
            (&["--addr", "127.0.0.1:0", "--timeout"], 2, "--timeout"),
            (&["--addr", "not-an-address"], 2, "not-an-address"),
            (
                &["--addr", "127.0.0.1:0", "--cert", "/nonexistent/c.pem", "--key", "/nonexistent/k.pem"],
                1,
                "/nonexistent/c.pem",
            ),
        ];
        for &(args, code, named) in cases {
            let mut command = Command::new(tls_binary());
            command.args(args);
            let (status, stdout, stderr) = run_to_exit(command, TIMEOUT);
            assert_eq!(status.code(), Some(code), "tls {args:?}: status {status}, stderr {stderr:?}");
            assert_eq!(stderr.lines().count(), 1, "tls {args:?}: stderr must be one line: {stderr:?}");
            assert!(stderr.contains(named), "tls {args:?}: stderr {stderr:?} does not name {named:?}");
            assert!(stdout.is_empty(), "tls {args:?}: nothing belongs on stdout, got {stdout:?}");
        }
    });
}
