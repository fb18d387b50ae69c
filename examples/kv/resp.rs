//! The request parser of the `kv` example: RESP2 arrays of bulk strings, and inline
//! commands, with Redis's limits.
//!
//! A file of its own, using only `std` and [`socketserver::Reader`], so that the fuzz
//! crate (`fuzz/fuzz_targets/kv_command.rs`) compiles this very file with
//! `#[path = "../../examples/kv/resp.rs"] mod resp;` and feeds it hostile bytes through
//! an in-memory `Reader` (`socketserver::testing`). An example cannot be a dependency,
//! and a copy in the fuzz crate would drift from the code that serves.

use std::io::{self, BufRead};

use socketserver::Reader;

/// Redis's own limit on an inline request or an array header line: 64 KiB.
pub const MAX_LINE: usize = 64 * 1024;
/// Redis's own limit on the items of one array: 1M.
pub const MAX_ITEMS: i64 = 1024 * 1024;
/// The longest bulk string: lower than Redis's 512 MB, as a map in one process's
/// memory is all there is.
pub const MAX_BULK: i64 = 64 * 1024 * 1024;
/// The most one command may take in memory, its items together, each counted with the
/// bytes it announces plus [`ITEM_OVERHEAD`]: Redis's `client-query-buffer-limit`,
/// which is twice its largest bulk string (1 GB for 512 MB), so here twice
/// [`MAX_BULK`]. Without it 16 items of 64 MiB each are 1 GiB held by one client.
pub const MAX_COMMAND_BYTES: u64 = 2 * MAX_BULK as u64;
/// What an item costs beyond its bytes (a `Vec`'s pointer, length and capacity), so that
/// a million empty items count too.
pub const ITEM_OVERHEAD: u64 = std::mem::size_of::<Vec<u8>>() as u64;

/// Why no command could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed, also in the middle of a request.
    Closed,
    /// The request is malformed or too big: reply with this and close.
    Protocol(&'static str),
    /// The reader failed (a reset, a timeout).
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> ReadError {
        ReadError::Io(error)
    }
}

/// How long the first command in `bytes` is, once all of it has arrived: `Some(n)`;
/// `None` while more bytes are needed. This is the server's frame
/// (`socketserver::Frame::with`): the engine gathers a whole command, holding no
/// thread, before [`read_command`] reads it, so reading never waits. It checks the
/// same limits as [`read_command`], without allocating: a request that is malformed or
/// over a limit is whole at once (`Some(bytes.len())`), so that `read_command` finds the
/// error in what has arrived and the client gets its `-ERR Protocol error` without the
/// server waiting for (or holding) more.
pub fn command_len(bytes: &[u8]) -> Option<usize> {
    let malformed = Some(bytes.len());
    // The end of the line that starts at `at`: `Err(())` when it is too long.
    let line_end = |at: usize| -> Result<Option<usize>, ()> {
        let rest = &bytes[at..];
        match rest.iter().take(MAX_LINE).position(|&b| b == b'\n') {
            Some(newline) => Ok(Some(at + newline + 1)),
            // As `read_line_bounded`: a line of MAX_LINE bytes may still end with the
            // next byte; one byte more without a newline is too long.
            None if rest.len() > MAX_LINE => Err(()),
            None => Ok(None),
        }
    };
    let text = |from: usize, to: usize| {
        let line = &bytes[from..to - 1];
        line.strip_suffix(b"\r").unwrap_or(line)
    };
    let Ok(first) = line_end(0) else { return malformed };
    let end = first?;
    let Some(count) = text(0, end).strip_prefix(b"*") else { return Some(end) };
    let Some(count) = number(count).filter(|&n| n <= MAX_ITEMS) else { return malformed };
    let mut budget = MAX_COMMAND_BYTES;
    let mut at = end;
    for _ in 0..count {
        let Ok(header) = line_end(at) else { return malformed };
        let end = header?;
        let Some(len) = text(at, end).strip_prefix(b"$") else { return malformed };
        let Some(len) = number(len).filter(|&n| (0..=MAX_BULK).contains(&n)) else { return malformed };
        let Some(left) = budget.checked_sub(len as u64 + ITEM_OVERHEAD) else { return malformed };
        budget = left;
        at = end + len as usize + 2;
        if at > bytes.len() {
            return None;
        }
        if &bytes[at - 2..at] != b"\r\n" {
            return malformed; // as `read_command`: "expected CRLF after a bulk string"
        }
    }
    Some(at)
}

/// Reads one command: a RESP array of bulk strings, or an inline line of words. An
/// empty array or blank line gives no words. `line` is scratch space, kept between
/// calls to save allocations.
///
/// Memory is bounded before it is spent: an array's announced items and bytes are
/// checked against [`MAX_ITEMS`], [`MAX_BULK`] and [`MAX_COMMAND_BYTES`] before they are
/// read, and a bulk string's buffer grows as its bytes arrive, never past its announced
/// length.
pub fn read_command(input: &mut Reader, line: &mut Vec<u8>) -> Result<Vec<Vec<u8>>, ReadError> {
    read_line(input, line, "too big inline request")?;
    let Some(count) = line.strip_prefix(b"*") else {
        return Ok(line.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()).map(<[u8]>::to_vec).collect());
    };
    let count = number(count).filter(|&n| n <= MAX_ITEMS).ok_or(ReadError::Protocol("invalid multibulk length"))?;
    let mut args = Vec::with_capacity(count.clamp(0, 16) as usize);
    let mut budget = MAX_COMMAND_BYTES;
    for _ in 0..count {
        read_line(input, line, "too big bulk count string")?;
        let Some(len) = line.strip_prefix(b"$") else {
            return Err(ReadError::Protocol("expected '$'"));
        };
        let len =
            number(len).filter(|&n| (0..=MAX_BULK).contains(&n)).ok_or(ReadError::Protocol("invalid bulk length"))?;
        let cost = len as u64 + ITEM_OVERHEAD;
        budget = budget.checked_sub(cost).ok_or(ReadError::Protocol("command exceeds the query buffer limit"))?;
        let mut arg = read_exactly(input, len as usize + 2)?;
        if !arg.ends_with(b"\r\n") {
            return Err(ReadError::Protocol("expected CRLF after a bulk string"));
        }
        arg.truncate(len as usize);
        args.push(arg);
    }
    Ok(args)
}

/// Reads `n` bytes into a buffer that doubles as they arrive but never holds more than
/// `n`: a client announcing 64 MiB and sending nothing costs nothing, and one sending
/// them costs 64 MiB, not the 128 MiB a doubling `Vec` may reserve.
fn read_exactly(input: &mut Reader, n: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    while out.len() < n {
        if out.len() == out.capacity() {
            let target = (out.capacity() * 2).max(4096).min(n);
            out.reserve_exact(target - out.len());
        }
        let available = match input.fill_buf() {
            Ok([]) => return Err(ReadError::Closed),
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        let take = available.len().min(n - out.len()).min(out.capacity() - out.len());
        out.extend_from_slice(&available[..take]);
        input.consume(take);
    }
    Ok(out)
}

/// Reads a line of at most `MAX_LINE` bytes into `line`, without its `\r\n` (or `\n`).
/// A longer line is a protocol error; its rest is never read, so it costs no memory.
fn read_line(input: &mut Reader, line: &mut Vec<u8>, too_long: &'static str) -> Result<(), ReadError> {
    line.clear();
    if let Err(e) = input.read_line_bounded(line, MAX_LINE) {
        let too_big = e.kind() == io::ErrorKind::InvalidData;
        return Err(if too_big { ReadError::Protocol(too_long) } else { ReadError::Io(e) });
    }
    if line.pop() != Some(b'\n') {
        return Err(ReadError::Closed);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(())
}

/// A decimal integer, as Redis reads them (`string2ll`): `0`, or an optional `-` and
/// digits without a leading zero, in range, nothing else. So `007`, `-0`, `+1`, ` 1`
/// and `1 ` are not integers, for lengths as for `INCR` and `EX`.
pub fn number(text: &[u8]) -> Option<i64> {
    if text == b"0" {
        return Some(0);
    }
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}
