//! The PROXY protocol option without a proxy: headers written by hand, good and bad.
//! (Behind a real haproxy: tests/deployment.rs, run by .ci/deployment.)
#![cfg(feature = "proxy-protocol")]

mod support;

use std::io::{self, BufRead, Read, Write};
use std::sync::{Arc, Mutex};

use socketserver::dispatch::Threading;
use socketserver::proxy_protocol::IpNet;
use socketserver::{Error, Phase, StreamRequest, TcpServer};
use support::{bounded, connect, stop_background, LIMIT};

#[test]
fn the_header_sets_the_client_address_and_bad_headers_never_reach_the_handler() {
    bounded(LIMIT, || {
        let errors: Arc<Mutex<Vec<(Phase, io::ErrorKind, String)>>> = Arc::default();
        let record = errors.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .proxy_protocol(true)
            .handle_error(move |error, _| {
                if let Error::Handler { phase, source } = error {
                    record.lock().unwrap().push((*phase, error.kind(), source.to_string()));
                }
            })
            .bind(|req: &mut StreamRequest| {
                let mut rest = String::new();
                req.reader().read_to_string(&mut rest)?;
                let proxy = req.proxy_addr().map(ToString::to_string).unwrap_or_else(|| "none".into());
                let client = req.client_addr().to_string();
                Ok(write!(req.writer(), "{client} {proxy} {rest}")?)
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let exchange = |bytes: &[u8]| {
            let mut client = connect(addr);
            client.write_all(bytes).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reply = String::new();
            let _ = client.read_to_string(&mut reply);
            (reply, client.local_addr().unwrap())
        };

        let (reply, local) = exchange(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\nbody");
        assert_eq!(reply, format!("[2001:db8::1]:4000 {local} body"));
        // v2 LOCAL (a proxy's health check): the peer's own address stays.
        let mut local_v2 = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
        local_v2.extend_from_slice(b"ping");
        let (reply, local) = exchange(&local_v2);
        assert_eq!(reply, format!("{local} none ping"));
        // Without a header, or with a broken one: closed, reported, handler not run.
        for bad in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"PROXY TCP4 1.2.3.4\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"] {
            let (reply, _) = exchange(bad);
            assert_eq!(reply, "", "{:?} reached the handler", String::from_utf8_lossy(bad));
        }
        stop_background(background);
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 3, "{errors:?}");
        for (phase, kind, message) in errors.iter() {
            assert_eq!(*phase, Phase::Setup);
            assert!(matches!(kind, io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof), "{kind:?}: {message}");
            assert!(message.starts_with("PROXY protocol"), "{message}");
        }
    });
}

/// Behind a PROXY protocol proxy, verify_request judges the client the header names,
/// not the proxy.
#[test]
fn verify_request_sees_the_client_named_by_the_proxy_header() {
    bounded(LIMIT, || {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            .proxy_protocol(true)
            .verify_request(move |client| {
                record.lock().unwrap().push(client.to_string());
                client.as_inet().is_some_and(|a| a.ip().to_string() != "198.51.100.9")
            })
            .bind_handler(|req: &mut StreamRequest| {
                let client = req.client_addr().to_string();
                req.writer().write_all(client.as_bytes())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let ask = |header: &[u8]| {
            let mut client = connect(addr);
            client.write_all(header).unwrap();
            let mut reply = String::new();
            let _ = client.read_to_string(&mut reply);
            reply
        };
        assert_eq!(ask(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n"), "203.0.113.7:51000");
        assert_eq!(ask(b"PROXY TCP4 198.51.100.9 192.0.2.1 51000 443\r\n"), "", "a denied client got a reply");
        let stats = background.handle().stats();
        stop_background(background);
        assert_eq!(*seen.lock().unwrap(), ["203.0.113.7:51000", "198.51.100.9:51000"]);
        assert_eq!(stats.denied, 1);
    });
}

/// Issue 15: a v2 header that declares a UDP (DGRAM) source, sent on a TCP connection,
/// is refused: the handler does not run and the client address never becomes the one it
/// names.
#[test]
fn a_v2_header_declaring_udp_on_a_tcp_connection_is_refused() {
    bounded(LIMIT, || {
        let reports = support::Reports::default();
        let server = TcpServer::builder("127.0.0.1:0")
            .proxy_protocol(true)
            .handle_error(reports.hook())
            .bind_handler(|req: &mut StreamRequest| {
                let client = req.client_addr().to_string();
                req.writer().write_all(client.as_bytes())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        // PROXY, AF_INET + DGRAM (0x12): 203.0.113.7:51000 -> 192.0.2.1:443.
        let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c".to_vec();
        header.extend([203, 0, 113, 7, 192, 0, 2, 1, 0xc7, 0x38, 0x01, 0xbb]);
        let mut client = connect(addr);
        client.write_all(&header).unwrap();
        let mut reply = String::new();
        let _ = client.read_to_string(&mut reply);
        assert_eq!(reply, "", "a DGRAM header reached the handler");
        reports.wait_for(1, "the refused header's report");
        stop_background(background);
        match &reports.take_reported()[..] {
            [support::Reported::Handler(Phase::Setup, io::ErrorKind::InvalidData, text)] => {
                assert!(text.contains("datagram (DGRAM)"), "{text}")
            }
            other => panic!("{other:?}"),
        }
    });
}

/// Issue 15: the PROXY header deadline is a setting. A sequential server waits for one
/// silent peer only as long as `proxy_header_timeout` says (here 100 ms, against the
/// default of 10 s that held every other client up as long), then serves the next one.
#[test]
fn the_proxy_header_deadline_is_configurable() {
    bounded(LIMIT, || {
        let reports = support::Reports::default();
        let server = TcpServer::builder("127.0.0.1:0")
            .proxy_protocol(true)
            .proxy_header_timeout(std::time::Duration::from_millis(100))
            .handle_error(reports.hook())
            .bind_handler(|req: &mut StreamRequest| {
                let client = req.client_addr().to_string();
                req.writer().write_all(client.as_bytes())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let silent = connect(addr);
        let mut proxy = connect(addr);
        // Well under the default deadline: a server still waiting 10 s fails this read.
        proxy.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        proxy.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n").unwrap();
        let mut reply = String::new();
        proxy.read_to_string(&mut reply).expect("served once the silent peer timed out");
        assert_eq!(reply, "203.0.113.7:51000");
        reports.wait_for(1, "the silent peer's report");
        drop(silent);
        stop_background(background);
        match &reports.take_reported()[..] {
            [support::Reported::Handler(Phase::Setup, kind, text)] => {
                assert_eq!(*kind, io::ErrorKind::TimedOut, "{text}")
            }
            other => panic!("{other:?}"),
        }
    });
}

/// A server that trusts only its proxies' network (here 10.0.0.0/8, which no test peer
/// is in): a direct client sending a forged header is closed unread, and counted as
/// denied; `verify_request` and the handler never see it.
#[test]
fn a_forged_header_from_an_untrusted_peer_is_refused() {
    bounded(LIMIT, || {
        let verified = Arc::new(Mutex::new(Vec::new()));
        let record = verified.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            .dispatch(Threading::new())
            .trusted_proxies(["10.0.0.0/8".parse::<IpNet>().unwrap()])
            .verify_request(move |client| {
                record.lock().unwrap().push(client.to_string());
                true
            })
            .bind_handler(|req: &mut StreamRequest| {
                let client = req.client_addr().to_string();
                req.writer().write_all(client.as_bytes())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        for forged in [&b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n"[..], b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"]
        {
            let mut client = connect(addr);
            let _ = client.write_all(forged);
            let mut reply = Vec::new();
            let _ = client.read_to_end(&mut reply); // an end of file, or a reset for the unread bytes
            assert_eq!(reply, b"", "an untrusted peer was served");
        }
        support::wait_until(support::TIMEOUT, "both refusals counted", || background.handle().stats().denied == 2);
        let stats = background.handle().stats();
        stop_background(background);
        assert_eq!((stats.denied, stats.bad_proxy_headers, stats.finished), (2, 0, 0), "{stats:?}");
        assert!(verified.lock().unwrap().is_empty(), "verify_request saw {:?}", verified.lock().unwrap());
    });
}

/// With `allow_direct_clients`, a peer that is not a trusted proxy is served as itself:
/// its forged header is only data, and its address never changes, for
/// `verify_request` or the handler.
#[test]
fn a_direct_client_keeps_its_own_address_whatever_it_sends() {
    bounded(LIMIT, || {
        let verified = Arc::new(Mutex::new(Vec::new()));
        let record = verified.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            .trusted_proxies(["10.0.0.0/8".parse::<IpNet>().unwrap(), "2001:db8::/32".parse().unwrap()])
            .allow_direct_clients(true)
            .verify_request(move |client| {
                record.lock().unwrap().push(client.to_string());
                true
            })
            .bind_handler(|req: &mut StreamRequest| {
                let mut line = String::new();
                req.reader().read_line(&mut line)?;
                let proxy = req.proxy_addr().map(ToString::to_string).unwrap_or_else(|| "none".into());
                let client = req.client_addr().to_string();
                write!(req.writer(), "{client} {proxy} {line}")
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let mut client = connect(addr);
        client.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n").unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        let own = client.local_addr().unwrap().to_string();
        assert_eq!(reply, format!("{own} none PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n"));
        stop_background(background);
        assert_eq!(*verified.lock().unwrap(), [own]);
    });
}

/// A trusted proxy (loopback here) whose header is malformed, cut short or late: closed,
/// reported, and counted in `Stats::bad_proxy_headers`; a good header from it names the
/// client, whom `verify_request` then judges.
#[test]
fn a_trusted_proxy_with_a_bad_header_is_closed_and_counted() {
    bounded(LIMIT, || {
        let reports = support::Reports::default();
        let verified = Arc::new(Mutex::new(Vec::new()));
        let record = verified.clone();
        let server = TcpServer::builder("127.0.0.1:0")
            .trusted_proxies(["127.0.0.0/8".parse::<IpNet>().unwrap()])
            .proxy_header_timeout(std::time::Duration::from_millis(200))
            .handle_error(reports.hook())
            .verify_request(move |client| {
                record.lock().unwrap().push(client.to_string());
                true
            })
            .bind_handler(|req: &mut StreamRequest| {
                let client = req.client_addr().to_string();
                req.writer().write_all(client.as_bytes())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let ask = |bytes: &[u8], half_close: bool| {
            let mut client = connect(addr);
            client.write_all(bytes).unwrap();
            if half_close {
                client.shutdown(std::net::Shutdown::Write).unwrap();
            }
            let mut reply = String::new();
            let _ = client.read_to_string(&mut reply);
            reply
        };
        assert_eq!(ask(b"GET / HTTP/1.1\r\n\r\n", true), "", "malformed");
        assert_eq!(ask(b"PROXY TCP4 203.0.113.7", true), "", "cut short");
        assert_eq!(ask(b"PROXY TCP4 203.0.113.7 ", false), "", "late");
        assert_eq!(ask(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n", false), "203.0.113.7:51000");
        reports.wait_for(3, "three reports");
        let stats = background.handle().stats();
        stop_background(background);
        assert_eq!((stats.bad_proxy_headers, stats.denied), (3, 0), "{stats:?}");
        let kinds: Vec<io::ErrorKind> = reports
            .take_reported()
            .into_iter()
            .map(|r| match r {
                support::Reported::Handler(Phase::Setup, kind, _) => kind,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, [io::ErrorKind::InvalidData, io::ErrorKind::UnexpectedEof, io::ErrorKind::TimedOut]);
        assert_eq!(*verified.lock().unwrap(), ["203.0.113.7:51000"], "verify_request saw the client, only");
    });
}

/// IPv6 proxies, on an IPv6 listener: a trusted `::1` is believed, and with `::1` not
/// trusted the same header is refused.
#[test]
fn ipv6_proxies_are_trusted_by_address() {
    bounded(LIMIT, || {
        let serve = |trusted: &str| {
            TcpServer::builder("[::1]:0").trusted_proxies([trusted.parse::<IpNet>().unwrap()]).bind_handler(
                |req: &mut StreamRequest| {
                    let client = req.client_addr().to_string();
                    req.writer().write_all(client.as_bytes())
                },
            )
        };
        let Ok(trusting) = serve("::1") else {
            eprintln!("skipped: no IPv6 loopback to bind");
            return;
        };
        let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
        for (server, expected) in [(trusting, "[2001:db8::7]:51000"), (serve("fe80::/10").unwrap(), "")] {
            let addr = server.local_addr();
            let background = server.serve_in_background().unwrap();
            let mut client = connect(addr);
            let _ = client.write_all(header);
            let mut reply = String::new();
            let _ = client.read_to_string(&mut reply);
            assert_eq!(reply, expected);
            stop_background(background);
        }
    });
}
