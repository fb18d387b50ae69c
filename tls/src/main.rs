//! A TLS line-echo server: rustls in the handler, the crate unaware of TLS.
//!
//! ```text
//! cargo run --release -p tls -- [--addr ADDR] [--cert FILE --key FILE]
//!                                [--cert-out FILE] [--timeout SECS]
//! ```
//!
//! Without `--cert`/`--key` (PEM files) it makes a self-signed certificate for
//! `localhost` and `127.0.0.1` at startup; `--cert-out FILE` writes that certificate's
//! PEM, for clients to trust:
//!
//! ```text
//! cargo run --release -p tls -- --addr 127.0.0.1:8443 --cert-out /tmp/tls.pem
//! openssl s_client -connect 127.0.0.1:8443 -CAfile /tmp/tls.pem -verify_return_error
//! ```
//!
//! Prints `listening on tls://IP:PORT` once bound, then echoes each line over TLS.
//! `--timeout` (default 10 s) bounds the whole handshake and each later read and write.
//! SIGINT or SIGTERM stops accepting at once, gives running clients up to 2 s, then
//! exits 0.
//!
//! # Where TLS goes
//!
//! The wrapping point is the handler: it starts a `rustls::ServerConnection` for each
//! request and runs it over the request's stream. The crate itself stays TLS-agnostic
//! and has no TLS dependency (rustls is a dependency of this example's own package, so
//! that the crate's other examples build no TLS stack): any
//! TLS library that wraps a `Read + Write` works the same way, such as `native-tls`
//! (`TlsAcceptor::accept(stream)`) or `openssl` (`SslStream::new(ssl, stream)`).
//!
//! The stream under TLS is the request's own reader and writer
//! (`req.reader_and_writer()`, joined into one `Read + Write` by [`Plain`]). Wrapping
//! the raw `req.connection()` (`&Connection` is `Read + Write` too) also works, but
//! through the reader and writer:
//!
//! - bytes the reader already buffered reach TLS: with `Builder::proxy_protocol`, the
//!   start of the ClientHello often arrives in the same segment as the PROXY header and
//!   sits in the reader's buffer, where a read from the connection would miss it;
//! - `StreamRequest::set_deadline` applies, which bounds the handshake as a whole.
//!
//! Once the stream is wrapped, plain-text reads and writes through `req.reader()` and
//! `req.writer()` would mix raw bytes into the TLS records; here the borrow checker
//! rules that out, since the TLS stream holds both for as long as it lives.
//!
//! # Platform-specific behavior
//!
//! Unix only: rustls's crypto here is `ring`, whose C code does not build for the
//! Windows target the crate's CI checks. Elsewhere the example says so and exits 2.

#[cfg(unix)]
mod server;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    server::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("tls: this example runs on Unix (its TLS library's crypto, ring, is not built for this system here)");
    std::process::ExitCode::from(2)
}
