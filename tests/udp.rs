//! UDP, over real sockets on loopback: replies come from the bound address, empty and
//! absent replies, truncation to `max_packet_size` (and telling the handler), extra sends
//! through the socket, addresses in use, and a socket the user bound. (Unix datagram
//! sockets: tests/unix.rs.)
//!
//! A datagram longer than the receive buffer (`max_packet_size` and one byte) is
//! truncated on Unix and a receive error on Windows, reported to `handle_error`
//! ([`OVERLONG_DATAGRAMS_TRUNCATED`]); the truncation tests check each platform's.

mod support;

use std::io::Write;
use std::net::UdpSocket;

#[cfg(unix)]
use socketserver::UnixDatagramServer;
use socketserver::{DatagramRequest, UdpServer, DEFAULT_MAX_PACKET_SIZE};
use support::{
    assert_addr_in_use, assert_overlong_datagram_reported, bounded, datagram_commands, echo_datagram, is_timeout,
    pattern, stop_background, udp_client, udp_exchange, Reports, LIMIT, NEGATIVE_WAIT, OVERLONG_DATAGRAMS_TRUNCATED,
    TIMEOUT,
};
#[cfg(unix)]
use support::{temp_socket_path, unix_dgram_client, unix_dgram_exchange, TempPath};

#[test]
fn udp_reply_comes_from_the_bound_address() {
    bounded(LIMIT, || {
        let server = UdpServer::bind("127.0.0.1:0", datagram_commands).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let client = udp_client();
        let (reply, from) = udp_exchange(&client, addr, b"ping");
        assert_eq!(reply, b"ping");
        assert_eq!(from, addr, "the reply must come from the server's bound address");
        // A second client gets its own reply, not the first one's.
        let other = udp_client();
        let (reply, from) = udp_exchange(&other, addr, b"pong");
        assert_eq!(reply, b"pong");
        assert_eq!(from, addr);
        stop_background(background);
    });
}

#[test]
fn udp_empty_reply_is_sent_when_reply_was_called() {
    bounded(LIMIT, || {
        let server = UdpServer::bind("127.0.0.1:0", datagram_commands).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let client = udp_client();
        // A 0-byte datagram, echoed: the handler calls reply() and writes nothing.
        let (reply, from) = udp_exchange(&client, addr, b"");
        assert_eq!(reply, b"", "a 0-byte datagram must get a 0-byte reply");
        assert_eq!(from, addr);
        // A handler that only touches reply() also sends a 0-byte datagram.
        let (reply, _) = udp_exchange(&client, addr, b"touch");
        assert_eq!(reply, b"");
        stop_background(background);
    });
}

#[test]
fn udp_no_reply_when_handler_never_calls_reply() {
    bounded(LIMIT, || {
        let server = UdpServer::bind("127.0.0.1:0", datagram_commands).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let client = udp_client();
        client.send_to(b"silent", addr).unwrap();
        client.set_read_timeout(Some(NEGATIVE_WAIT)).unwrap();
        let mut buf = [0; 64];
        match client.recv_from(&mut buf) {
            Err(e) if is_timeout(&e) => {}
            Ok((n, from)) => panic!("got a {n}-byte datagram {:?} from {from}; expected none", &buf[..n]),
            Err(e) => panic!("unexpected error: {e}"),
        }
        // The server is sequential: had "silent" produced a reply, it would come before the
        // reply to this next datagram.
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (reply, _) = udp_exchange(&client, addr, b"next");
        assert_eq!(reply, b"next", "the first datagram received must be the reply to \"next\"");
        stop_background(background);
    });
}

#[test]
fn udp_truncates_to_default_max_packet_size() {
    bounded(LIMIT, || {
        assert_eq!(DEFAULT_MAX_PACKET_SIZE, 8192);
        let reports = Reports::default();
        let server = UdpServer::builder("127.0.0.1:0").handle_error(reports.hook()).bind(datagram_commands).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let client = udp_client();
        let message = pattern(10_000);
        if OVERLONG_DATAGRAMS_TRUNCATED {
            let (reply, _) = udp_exchange(&client, addr, &message);
            assert_eq!(reply.len(), 8192, "a 10000-byte datagram must be truncated to 8192 bytes");
            assert!(reply == message[..8192], "the truncated packet must be the datagram's first bytes");
        } else {
            assert_overlong_datagram_reported(&client, addr, &message, &reports);
        }
        // One byte over the limit still fits the receive buffer: truncated everywhere.
        let (reply, _) = udp_exchange(&client, addr, &message[..8193]);
        assert!(reply == message[..8192], "an 8193-byte datagram must be truncated to 8192 bytes");
        // Exactly the limit passes whole.
        let (reply, _) = udp_exchange(&client, addr, &message[..8192]);
        assert_eq!(reply.len(), 8192);
        stop_background(background);
    });
}

#[test]
fn udp_truncates_to_custom_max_packet_size() {
    bounded(LIMIT, || {
        let reports = Reports::default();
        let server = UdpServer::builder("127.0.0.1:0")
            .max_packet_size(100)
            .handle_error(reports.hook())
            .bind_handler(datagram_commands)
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let client = udp_client();
        let message = pattern(1000);
        if OVERLONG_DATAGRAMS_TRUNCATED {
            let (reply, _) = udp_exchange(&client, addr, &message);
            assert!(reply == message[..100], "expected the first 100 bytes, got {} bytes", reply.len());
        } else {
            assert_overlong_datagram_reported(&client, addr, &message, &reports);
        }
        let (reply, _) = udp_exchange(&client, addr, &message[..101]);
        assert!(reply == message[..100], "expected the first 100 bytes of 101, got {} bytes", reply.len());
        let (reply, _) = udp_exchange(&client, addr, &message[..100]);
        assert_eq!(reply.len(), 100);
        let (reply, _) = udp_exchange(&client, addr, &message[..50]);
        assert!(reply == message[..50], "a short datagram must arrive whole");
        stop_background(background);
    });
}

/// The handler is told when a datagram was cut, for UDP and Unix datagrams, exactly at
/// the limit and one byte past it.
#[test]
fn datagram_handlers_see_whether_a_packet_was_truncated() {
    bounded(LIMIT, || {
        let flag = |req: &mut DatagramRequest| {
            let answer = format!("{} {}", req.packet().len(), req.truncated());
            req.reply().write_all(answer.as_bytes())
        };
        let reports = Reports::default();
        let server = UdpServer::builder("127.0.0.1:0")
            .max_packet_size(100)
            .handle_error(reports.hook())
            .bind_handler(flag)
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let client = udp_client();
        for (len, expected) in [(99, "99 false"), (100, "100 false"), (101, "100 true"), (5000, "100 true")] {
            if len > 101 && !OVERLONG_DATAGRAMS_TRUNCATED {
                assert_overlong_datagram_reported(&client, addr, &pattern(len), &reports);
                continue;
            }
            let (reply, _) = udp_exchange(&client, addr, &pattern(len));
            assert_eq!(String::from_utf8_lossy(&reply), expected, "a {len}-byte datagram over UDP");
        }
        stop_background(background);
        assert_eq!(reports.len(), usize::from(!OVERLONG_DATAGRAMS_TRUNCATED), "{:?}", reports.take());

        // Unix datagram sockets truncate on every Unix.
        #[cfg(unix)]
        {
            let path = temp_socket_path("trunc");
            let _cleanup = TempPath::of(path.clone());
            let server = UnixDatagramServer::builder(&path).max_packet_size(100).bind_handler(flag).unwrap();
            let background = server.serve_in_background().unwrap();
            let (client, _client_path) = unix_dgram_client("truncc");
            for (len, expected) in [(100, "100 false"), (101, "100 true")] {
                let reply = unix_dgram_exchange(&client, &path, &pattern(len));
                assert_eq!(String::from_utf8_lossy(&reply), expected, "a {len}-byte Unix datagram");
            }
            stop_background(background);
        }
    });
}

#[test]
fn udp_handler_sends_extra_datagrams_through_the_socket() {
    bounded(LIMIT, || {
        let server = UdpServer::bind("127.0.0.1:0", datagram_commands).unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let client = udp_client();
        client.send_to(b"extra", addr).unwrap();
        let mut buf = [0; 64];
        for expected in [&b"extra-1"[..], b"extra-2", b"reply"] {
            let (n, from) = client.recv_from(&mut buf).expect("a datagram from the handler");
            assert_eq!(&buf[..n], expected);
            assert_eq!(from, addr);
        }
        stop_background(background);
    });
}

#[test]
fn udp_second_bind_on_same_port_is_addr_in_use() {
    bounded(LIMIT, || {
        let first = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
        let addr = first.local_addr();
        assert_addr_in_use(UdpServer::bind(addr, echo_datagram), addr, "UDP, SocketAddr");
        assert_addr_in_use(UdpServer::bind(format!("127.0.0.1:{}", addr.port()), echo_datagram), addr, "UDP, string");
        let background = first.serve_in_background().unwrap();
        let (reply, _) = udp_exchange(&udp_client(), addr, b"still here");
        assert_eq!(reply, b"still here", "the first server must keep serving");
        stop_background(background);
    });
}

#[test]
fn udp_from_socket_serves() {
    bounded(LIMIT, || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let server = UdpServer::from_socket(socket).bind(echo_datagram).unwrap();
        assert_eq!(server.local_addr(), addr);
        let background = server.serve_in_background().unwrap();
        let (reply, from) = udp_exchange(&udp_client(), addr, b"yours");
        assert_eq!(reply, b"yours");
        assert_eq!(from, addr);
        stop_background(background);
    });
}
