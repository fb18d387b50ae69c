//! The request `Reader` (`read_line_bounded`, `fill_buf`/`consume`, `read`,
//! `read_exact`) over a connection that delivers the input in arbitrary pieces, with
//! interrupted reads among them, checked step by step against a model: a cursor into
//! the input.
#![no_main]

use std::io::{self, BufRead, Read};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use socketserver::testing::TestStream;

#[derive(Arbitrary, Debug)]
enum Op {
    ReadLineBounded(u16),
    FillBuf,
    Consume(u16),
    Read(u16),
    ReadExact(u16),
    Buffer,
}

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    /// The reader's buffer size (0 is taken as 1, as the server does).
    rbufsize: u16,
    /// At most how many bytes each read of the connection returns; 0: interrupted.
    read_sizes: Vec<u8>,
    ops: Vec<Op>,
}

fn is_interrupted<T>(result: &io::Result<T>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::Interrupted)
}

fuzz_target!(|input: Input| {
    let Input { data, rbufsize, read_sizes, ops } = input;
    let rbufsize = usize::from(rbufsize % 4096);
    // All zeros would interrupt every read forever.
    let sizes: Vec<usize> = read_sizes.iter().map(|&s| usize::from(s)).collect();
    let sizes = if sizes.iter().all(|&s| s == 0) { Vec::new() } else { sizes };
    let (request, _connection) = TestStream::new(data.clone()).rbufsize(rbufsize).read_sizes(sizes).request();
    let mut reader = request.reader();
    // The model: everything before `pos` has been consumed, in order.
    let mut pos = 0;
    for op in ops.into_iter().take(64) {
        let rest = &data[pos..];
        // The reader's buffer is always a prefix of what is left.
        assert!(rest.starts_with(reader.buffer()), "the buffer is not what comes next");
        match op {
            Op::ReadLineBounded(max) => {
                let max = usize::from(max);
                let mut line = b"kept".to_vec();
                let result = reader.read_line_bounded(&mut line, max);
                assert_eq!(&line[..4], b"kept", "read_line_bounded overwrote what the line held");
                let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
                match result {
                    Ok(n) => {
                        assert!(end <= max, "a line of {end} bytes accepted with max {max}");
                        assert_eq!((n, &line[4..]), (end, &rest[..end]));
                        pos += end;
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                        assert!(end > max, "a line of {end} bytes refused with max {max}");
                        assert_eq!(&line[4..], &rest[..max], "on error the line holds its first max bytes");
                        pos += max;
                    }
                }
            }
            Op::FillBuf => {
                let result = reader.fill_buf().map(<[u8]>::to_vec);
                if is_interrupted(&result) {
                    continue;
                }
                let buf = result.expect("an in-memory read fails only when interrupted");
                assert!(rest.starts_with(&buf));
                assert_eq!(buf.is_empty(), rest.is_empty(), "fill_buf returned nothing before the end");
                assert!(buf.len() <= rbufsize.max(1), "more than rbufsize buffered");
            }
            Op::Consume(n) => {
                let n = usize::from(n);
                let buffered = reader.buffer().len();
                reader.consume(n);
                pos += n.min(buffered);
            }
            Op::Read(n) => {
                let mut buf = vec![0xa5; usize::from(n)];
                let result = reader.read(&mut buf);
                if is_interrupted(&result) {
                    continue;
                }
                let got = result.unwrap();
                assert!(got <= buf.len());
                assert_eq!(&buf[..got], &rest[..got]);
                assert!(got > 0 || buf.is_empty() || rest.is_empty(), "read returned 0 before the end");
                pos += got;
            }
            Op::ReadExact(n) => {
                let n = usize::from(n);
                let mut buf = vec![0; n];
                match reader.read_exact(&mut buf) {
                    Ok(()) => {
                        assert!(n <= rest.len(), "read_exact of {n} with {} left", rest.len());
                        assert_eq!(buf, rest[..n]);
                        pos += n;
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                        assert!(n > rest.len(), "read_exact of {n} failed with {} left", rest.len());
                        // What a failed read_exact consumed is unspecified: stop here.
                        return;
                    }
                }
            }
            Op::Buffer => {}
        }
    }
});
