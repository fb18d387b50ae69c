//! The datagram receive path's truncation report (`DatagramRequest::truncated`), two
//! ways: in memory against the rule (a datagram longer than `max_packet_size` is cut
//! to it and says so; one that fits is whole and does not), and through real UDP
//! servers on loopback, whose receive path (a buffer one byte longer than the limit,
//! `recvfrom`) must report the same.
#![no_main]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use socketserver::testing::TestDatagram;
use socketserver::transport::Udp;
use socketserver::{BackgroundServer, DatagramRequest, UdpServer};

/// The limits the real servers are built with: the smallest, small, an MTU, the default.
const LIMITS: [usize; 4] = [1, 64, 1500, 8192];

/// A UDP server per limit, serving in the background for the whole run, answering each
/// datagram with `[truncated as u8]` followed by the packet it was given.
fn servers() -> &'static [SocketAddr; 4] {
    // Held for the whole run (reachable, so no leak to report), stopped never.
    static RUNNING: Mutex<Vec<BackgroundServer<Udp>>> = Mutex::new(Vec::new());
    static SERVERS: OnceLock<[SocketAddr; 4]> = OnceLock::new();
    SERVERS.get_or_init(|| {
        LIMITS.map(|limit| {
            let server = UdpServer::builder("127.0.0.1:0")
                .max_packet_size(limit)
                .bind(|req: &mut DatagramRequest| {
                    let truncated = req.truncated();
                    let (packet, reply) = req.packet_and_reply();
                    reply.push(u8::from(truncated));
                    reply.extend_from_slice(packet);
                    Ok(())
                })
                .expect("bind a UDP server on loopback");
            let addr = server.local_addr();
            RUNNING.lock().unwrap().push(server.serve_in_background().expect("serve in the background"));
            addr
        })
    })
}

fn client() -> &'static UdpSocket {
    static CLIENT: OnceLock<UdpSocket> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Loopback does not lose a datagram sent one at a time; a lost reply is a hang.
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else { return };
    let limit = LIMITS[usize::from(selector) % LIMITS.len()];
    let expect_truncated = packet.len() > limit;
    let kept = &packet[..packet.len().min(limit)];

    let (request, _socket) = TestDatagram::new(packet).max_packet_size(limit).request();
    assert_eq!(request.truncated(), expect_truncated, "{} bytes, limit {limit}", packet.len());
    assert_eq!(request.packet(), kept);

    let server = servers()[usize::from(selector) % LIMITS.len()];
    let client = client();
    client.send_to(packet, server).expect("send a datagram over loopback");
    let mut reply = vec![0; limit + 2];
    // libFuzzer's own timer signal may interrupt the wait (in this harness, not the server).
    let (n, from) = loop {
        match client.recv_from(&mut reply) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            result => break result.expect("the server's reply"),
        }
    };
    assert_eq!(from, server);
    assert_eq!(reply[0], u8::from(expect_truncated), "{} bytes, limit {limit}: truncated?", packet.len());
    assert_eq!(&reply[1..n], kept, "{} bytes, limit {limit}", packet.len());
});
