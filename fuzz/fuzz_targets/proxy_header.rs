//! The PROXY protocol parser (`socketserver::proxy_protocol::read_header`), v1 and v2,
//! over arbitrary bytes.
//!
//! Checked, besides "no panic": the result is the same whatever the reader's buffer
//! size (so no field depends on how the header straddles refills); the parser never
//! reads past what the protocol allows (107 bytes for v1, 16 plus the announced length
//! for v2); after a header, the bytes that follow are all left to the reader; a v1
//! `TCP4` header it accepts is exactly the text the addresses print as.
#![no_main]

use std::io::{BufReader, Read};
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use socketserver::proxy_protocol::{read_header, ProxyHeader};

/// Reads a header from `data` through a buffer of `capacity`: the outcome as text (an
/// error's kind and message, or the header) and how many bytes the reader consumed.
fn parse(data: &[u8], capacity: usize) -> (String, usize) {
    let mut reader = BufReader::with_capacity(capacity, data);
    let outcome = match read_header(&mut reader) {
        Ok(header) => format!("{header:?}"),
        Err(e) => format!("{:?}: {e}", e.kind()),
    };
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    (outcome, data.len() - rest.len())
}

fuzz_target!(|data: &[u8]| {
    let (outcome, consumed) = parse(data, 8192);
    for capacity in [1, 3, 16, 107] {
        assert_eq!(parse(data, capacity), (outcome.clone(), consumed), "with a buffer of {capacity}");
    }
    let limit = match data.first() {
        Some(b'\r') if data.len() >= 16 => 16 + usize::from(u16::from_be_bytes([data[14], data[15]])),
        Some(b'\r') => 16,
        _ => 107,
    };
    assert!(consumed <= limit, "consumed {consumed} bytes, more than the {limit} the header may take");

    let mut slice = data;
    let Ok(header) = read_header(&mut slice) else { return };
    let consumed = data.len() - slice.len();
    if let (ProxyHeader::Proxied { source, destination }, Some(b'P')) = (header, data.first()) {
        if let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) {
            let text = format!("PROXY TCP4 {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port());
            assert_eq!(&data[..consumed], text.as_bytes(), "a v1 header accepted but not canonical");
        }
    }
});
