//! The `http` example's request parser (`examples/http/parse.rs`, compiled here as it
//! is there) over hostile bytes, read through the crate's `Reader` in arbitrary pieces.
//!
//! Checked, besides "no panic": each request parsed is the same whether the bytes come
//! at once or in pieces, with interrupted reads among them; an accepted request has a
//! token method and a path starting with `/`; the path's segments never contain `.`,
//! `..`, a `/` or a NUL.
#![no_main]

#[allow(dead_code)]
#[path = "../../examples/http/parse.rs"]
mod parse;

use libfuzzer_sys::fuzz_target;
use parse::{read_request, segments, Incoming};
use socketserver::testing::TestStream;

/// Every request on one connection, as text, until it closes, errs or is refused.
fn requests(input: &[u8], sizes: &[usize]) -> Vec<String> {
    let (mut request, _connection) = TestStream::new(input).read_sizes(sizes.iter().copied()).request();
    let mut seen = Vec::new();
    for _ in 0..64 {
        match read_request(request.reader_and_writer().0) {
            Ok(Incoming::Request(r)) => {
                assert!(!r.method.is_empty() && r.method.bytes().all(|b| b.is_ascii_graphic()), "{r:?}");
                assert!(r.path.starts_with(b"/"), "{r:?}");
                if let Ok(segments) = segments(&r.path) {
                    for s in &segments {
                        assert!(!s.is_empty() && s != b"." && s != b"..", "{r:?}: {s:?}");
                        assert!(!s.contains(&b'/') && !s.contains(&0), "{r:?}: {s:?}");
                    }
                }
                let keep_alive = r.keep_alive;
                seen.push(format!("{r:?}"));
                if !keep_alive {
                    break;
                }
            }
            Ok(other) => {
                seen.push(format!("{other:?}"));
                break;
            }
            Err(e) => {
                // In memory, a read fails only when interrupted, and the parser's reads
                // retry that; nothing else may come out.
                panic!("the parser failed: {e}");
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the pieces the connection delivers (0: an interrupted read).
    let split = data.len().min(4);
    let (head, input) = data.split_at(split);
    let mut sizes: Vec<usize> = head.iter().map(|&b| usize::from(b % 64)).collect();
    if sizes.iter().all(|&s| s == 0) {
        sizes = vec![1];
    }
    assert_eq!(requests(input, &sizes), requests(input, &[]), "pieces of {sizes:?} changed the parse");
});
