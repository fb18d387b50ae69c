//! What a handler may be and return (issue 14): a closure whose request type the
//! transport gives, any error type through `?`, reported whole to `handle_error`, and a
//! shared `Arc` of a handler.

mod support;

use std::io::{BufRead, Write};
use std::net::Shutdown;
use std::num::ParseIntError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use socketserver::{Error, HandlerResult, Phase, RequestHandler, StreamRequest, TcpServer, UdpServer};
use support::{bounded, connect, read_text, recv, stop_background, udp_echo_once, LIMIT};

/// `TcpServer::bind(addr, |req| ..)` and `UdpServer::bind(addr, |req| ..)` compile with
/// no type annotation, and `?` takes an `io::Error`, a `ParseIntError` and a `Utf8Error`
/// in one closure. (Before, this was E0282, "type annotations needed".)
#[test]
fn closures_infer_their_request_type_and_take_any_error() {
    bounded(LIMIT, || {
        let server = TcpServer::bind("127.0.0.1:0", |req| {
            let mut line = String::new();
            while req.reader().read_line(&mut line)? > 0 {
                let n: u64 = line.trim().parse()?;
                writeln!(req.writer(), "{}", n + 1)?;
                line.clear();
            }
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut client = connect(addr);
        client.write_all(b"41\n1\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_text(&client), "42\n2\n");
        stop_background(background);

        let server = UdpServer::bind("127.0.0.1:0", |req| {
            let text = std::str::from_utf8(req.packet())?.to_uppercase();
            req.reply().extend_from_slice(text.as_bytes());
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        assert_eq!(udp_echo_once(addr, b"ping"), b"PING");
        stop_background(background);
    });
}

/// A parse error returned by `?` reaches `handle_error` as itself: the hook downcasts
/// `Error::Handler`'s source back to `ParseIntError`. (Before, handlers returned
/// `io::Result` and such errors needed `map_err(io::Error::other)`.)
#[test]
fn a_handler_error_of_any_type_reaches_handle_error_whole() {
    bounded(LIMIT, || {
        let (tx, reported) = mpsc::channel();
        let server = TcpServer::builder("127.0.0.1:0")
            .handle_error(move |error, _| {
                if let Error::Handler { phase: Phase::Handle, source } = error {
                    let _ = tx.send(source.downcast_ref::<ParseIntError>().cloned());
                }
            })
            .bind(|req| {
                let mut line = String::new();
                req.reader().read_line(&mut line)?;
                let n: u64 = line.trim().parse()?;
                writeln!(req.writer(), "{n}")?;
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut client = connect(addr);
        client.write_all(b"forty-two\n").unwrap();
        assert_eq!(read_text(&client), "");
        let parse_error = recv(&reported, "handle_error").expect("the source is the ParseIntError itself");
        assert_eq!(parse_error, "forty-two".parse::<u64>().unwrap_err());
        stop_background(background);
    });
}

#[derive(Default)]
struct Counter {
    served: AtomicU64,
}

impl RequestHandler<StreamRequest> for Counter {
    fn handle(&self, req: &mut StreamRequest) -> HandlerResult {
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        writeln!(req.writer(), "{n}")?;
        Ok(())
    }
}

/// An `Arc` of a handler is a handler, so the test keeps a clone and reads the count the
/// server's requests made, with no wrapper type.
#[test]
fn an_arc_of_a_handler_is_a_handler() {
    bounded(LIMIT, || {
        let counter = Arc::new(Counter::default());
        let server = TcpServer::bind_handler("127.0.0.1:0", counter.clone()).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        assert_eq!(read_text(connect(addr)), "1\n");
        assert_eq!(read_text(connect(addr)), "2\n");
        stop_background(background);
        assert_eq!(counter.served.load(Ordering::SeqCst), 2);
    });
}

/// A function that builds a server can name the Python-named type in its signature
/// (it was a namespace, not a type), and a TCP handler reads the client's IP and port
/// without `.as_inet().expect(..)` (issue 14).
#[test]
fn python_named_servers_are_types_and_inet_clients_have_an_ip() {
    fn build() -> Result<socketserver::ThreadingTcpServer, Error> {
        socketserver::ThreadingTcpServer::bind("127.0.0.1:0", |req| {
            let ip = req.client_addr().ip().expect("a TCP client has an IP address");
            let port = req.client_addr().port().expect("and a port");
            writeln!(req.writer(), "{ip} {port}")?;
            Ok(())
        })
    }
    bounded(LIMIT, || {
        let server = build().unwrap();
        let addr = server.local_addr(); // a Server method, through Deref
        let background = server.serve_in_background().unwrap();
        let client = connect(addr);
        let local = client.local_addr().unwrap();
        assert_eq!(read_text(client), format!("{} {}\n", local.ip(), local.port()));
        stop_background(background);
    });
}

/// The first loop everyone writes compiles and works: `req.reader().lines()` with
/// `writeln!(req.writer(), ..)` and `req.client_addr()` inside, and a look at the
/// reader's buffer in the loop (pipelined lines). For datagrams, `req.reply()` is
/// written from `req.packet()` and `req.client_addr()` in one statement. (Before, these
/// were E0499 and E0502: `reader()`, `writer()` and `reply()` borrowed the request
/// mutably.)
#[test]
fn reading_and_writing_go_together_in_one_loop() {
    bounded(LIMIT, || {
        let server = TcpServer::bind("127.0.0.1:0", |req| {
            for line in req.reader().lines() {
                let line = line?;
                let _pipelined = req.reader().buffer().len();
                writeln!(req.writer(), "{} {line}", req.client_addr().ip().expect("TCP"))?;
            }
            writeln!(req.writer(), "bye {}", req.client_addr())?;
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut client = connect(addr);
        client.write_all(b"one\ntwo\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let local = client.local_addr().unwrap();
        assert_eq!(read_text(&client), format!("127.0.0.1 one\n127.0.0.1 two\nbye {local}\n"));
        stop_background(background);

        let server = UdpServer::bind("127.0.0.1:0", |req| {
            req.reply().write_all(req.packet())?;
            write!(req.reply(), " from {}", req.client_addr().ip().expect("UDP"))?;
            Ok(())
        })
        .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        assert_eq!(udp_echo_once(addr, b"ping"), b"ping from 127.0.0.1");
        stop_background(background);
    });
}
