//! The `kv` example's RESP parser (`examples/kv/resp.rs`, compiled here as it is there)
//! over hostile bytes, read through the crate's `Reader` in arbitrary pieces.
//!
//! Checked, besides "no panic": each command parsed is the same whether the bytes come
//! at once or in pieces, with interrupted reads among them; every command stays within
//! the limits (items, bulk length, the query buffer limit in all); and the server's
//! frame (`command_len`) agrees with the parser: what it calls whole is read as one
//! command, or found malformed, without wanting more, and what it calls incomplete
//! leaves the parser wanting more.
#![no_main]

#[allow(dead_code)]
#[path = "../../examples/kv/resp.rs"]
mod resp;

use libfuzzer_sys::fuzz_target;
use resp::{command_len, read_command, ReadError, ITEM_OVERHEAD, MAX_BULK, MAX_COMMAND_BYTES, MAX_ITEMS};
use socketserver::testing::TestStream;

/// Every command on one connection, as text, until it closes, errs or is refused.
fn commands(input: &[u8], sizes: &[usize]) -> Vec<String> {
    let (mut request, _connection) = TestStream::new(input).read_sizes(sizes.iter().copied()).request();
    let mut line = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..256 {
        match read_command(request.reader_and_writer().0, &mut line) {
            Ok(args) => {
                assert!(args.len() as i64 <= MAX_ITEMS);
                let total: u64 = args.iter().map(|a| a.len() as u64 + ITEM_OVERHEAD).sum();
                assert!(total <= MAX_COMMAND_BYTES, "a command of {total} bytes");
                assert!(args.iter().all(|a| a.len() as i64 <= MAX_BULK));
                seen.push(format!("{args:?}"));
            }
            Err(ReadError::Io(e)) => panic!("the parser failed: {e}"),
            Err(other) => {
                seen.push(format!("{other:?}"));
                break;
            }
        }
    }
    seen
}

/// The frame and the parser agree on where the first command ends.
fn frame_agrees(input: &[u8]) {
    let mut line = Vec::new();
    match command_len(input) {
        Some(n) => {
            let (mut request, _connection) = TestStream::new(&input[..n]).request();
            let reader = request.reader_and_writer().0;
            match read_command(reader, &mut line) {
                Ok(_) => assert!(reader.buffer().is_empty(), "the frame said {n} bytes; the parser left some"),
                Err(ReadError::Closed) => panic!("the frame said {n} bytes are whole; the parser wanted more"),
                Err(_) => {}
            }
        }
        None => {
            let (mut request, _connection) = TestStream::new(input).request();
            let parsed = read_command(request.reader_and_writer().0, &mut line);
            assert!(matches!(parsed, Err(ReadError::Closed)), "the frame wanted more; the parser said {parsed:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the pieces the connection delivers (0: an interrupted read).
    let split = data.len().min(4);
    let (head, input) = data.split_at(split);
    let mut sizes: Vec<usize> = head.iter().map(|&b| usize::from(b % 64)).collect();
    if sizes.iter().all(|&s| s == 0) {
        sizes = vec![1];
    }
    assert_eq!(commands(input, &sizes), commands(input, &[]), "pieces of {sizes:?} changed the parse");
    frame_agrees(input);
});
