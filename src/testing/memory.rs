//! In-memory stand-ins for a connection and a datagram socket, so that a handler can be
//! unit-tested without sockets: they take a socket's place through the seam the socket
//! layer offers (`crate::net::StreamDouble`, `DatagramDouble`).

use std::io;
use std::net::Shutdown;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::net::{Address, DatagramDouble, StreamDouble};

/// A stream connection over in-memory bytes: reads take the input it was made with, then
/// see end-of-file, as after a client's half-close; writes are kept for the test to read.
///
/// Clones share one connection, as `try_clone` does for a socket. Made by
/// [`testing::TestStream`](crate::testing::TestStream); its
/// [`output`](MemoryStream::output) is what a handler wrote.
#[derive(Debug, Clone)]
pub struct MemoryStream {
    state: Arc<Mutex<StreamState>>,
    peer: Address,
}

#[derive(Debug, Default)]
struct StreamState {
    input: Vec<u8>,
    read: usize,
    /// At most how many bytes each read returns, in turn (cycled); a 0 fails that read
    /// with `Interrupted`. Empty: each read gets all it asks for.
    read_sizes: Vec<usize>,
    next_size: usize,
    output: Vec<u8>,
    read_shut: bool,
    write_shut: bool,
}

impl MemoryStream {
    /// A connection from `peer` whose reads return `input`, then end-of-file.
    pub fn new(input: impl Into<Vec<u8>>, peer: Address) -> MemoryStream {
        let state = StreamState { input: input.into(), ..StreamState::default() };
        MemoryStream { state: Arc::new(Mutex::new(state)), peer }
    }

    /// Makes each read return at most the next of `sizes` bytes, in turn (see
    /// [`TestStream::read_sizes`](crate::testing::TestStream::read_sizes)).
    pub(crate) fn set_read_sizes(&self, sizes: Vec<usize>) {
        let mut state = self.state.lock();
        state.read_sizes = sizes;
        state.next_size = 0;
    }

    /// Everything written so far.
    pub fn output(&self) -> Vec<u8> {
        self.state.lock().output.clone()
    }

    /// Whether the write half was shut down, as the server's default
    /// `shutdown_request` does when a request ends (the client would read end-of-file).
    pub fn is_write_shut_down(&self) -> bool {
        self.state.lock().write_shut
    }

    /// The input not read yet.
    pub fn unread(&self) -> Vec<u8> {
        let state = self.state.lock();
        state.input[state.read..].to_vec()
    }
}

impl StreamDouble for MemoryStream {
    fn peer_addr(&self) -> Address {
        self.peer.clone()
    }

    fn duplicate(&self) -> Box<dyn StreamDouble> {
        Box::new(self.clone())
    }

    fn shutdown(&self, how: Shutdown) {
        let mut state = self.state.lock();
        match how {
            Shutdown::Read => state.read_shut = true,
            Shutdown::Write => state.write_shut = true,
            Shutdown::Both => (state.read_shut, state.write_shut) = (true, true),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.state.lock();
        if state.read_shut {
            return Ok(0);
        }
        let mut limit = buf.len();
        if !state.read_sizes.is_empty() {
            let size = state.read_sizes[state.next_size % state.read_sizes.len()];
            state.next_size = state.next_size.wrapping_add(1);
            if size == 0 {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "a read interrupted, as by a signal"));
            }
            limit = limit.min(size);
        }
        let start = state.read;
        let n = limit.min(state.input.len() - start);
        buf[..n].copy_from_slice(&state.input[start..start + n]);
        state.read += n;
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock();
        if state.write_shut {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection was shut down for writing"));
        }
        state.output.extend_from_slice(buf);
        Ok(buf.len())
    }
}

/// A datagram socket that keeps what is sent through it, for unit tests of datagram
/// handlers. Clones share the record. Made by
/// [`testing::TestDatagram`](crate::testing::TestDatagram).
#[derive(Debug, Clone, Default)]
pub struct MemorySocket {
    sent: Arc<Mutex<Vec<Datagram>>>,
}

/// A datagram's bytes and the address it was sent to.
type Datagram = (Vec<u8>, Address);

impl MemorySocket {
    /// A socket that has sent nothing yet.
    pub fn new() -> MemorySocket {
        MemorySocket::default()
    }

    /// Every datagram sent, in order, with the address it was sent to.
    pub fn sent(&self) -> Vec<Datagram> {
        self.sent.lock().clone()
    }
}

impl DatagramDouble for MemorySocket {
    fn send_to(&self, buf: &[u8], addr: &Address) -> usize {
        self.sent.lock().push((buf.to_vec(), addr.clone()));
        buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{test_client, Connection, InMemory};
    use std::time::Duration;

    #[test]
    fn reads_the_input_then_end_of_file_and_keeps_the_writes() {
        let stream = MemoryStream::new(&b"abc"[..], test_client());
        let mut buf = [0; 2];
        assert_eq!(stream.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf, b"ab");
        assert_eq!(stream.unread(), b"c");
        assert_eq!(stream.read(&mut buf).unwrap(), 1);
        assert_eq!(stream.read(&mut buf).unwrap(), 0);
        stream.write(b"out").unwrap();
        assert_eq!(stream.clone().output(), b"out");
        stream.shutdown(Shutdown::Write);
        assert!(stream.is_write_shut_down());
        assert_eq!(stream.write(b"more").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        let connection = Connection::Memory(InMemory(Box::new(stream)));
        assert!(connection.set_read_timeout(Some(Duration::ZERO)).is_err(), "refused, as std refuses it");
        assert!(connection.set_read_timeout(Some(Duration::from_secs(1))).is_ok());
    }

    #[test]
    fn reads_come_in_the_sizes_set_and_a_zero_is_interrupted() {
        let stream = MemoryStream::new(&b"abcdefg"[..], test_client());
        stream.set_read_sizes(vec![2, 0, 1]);
        let mut buf = [0; 8];
        assert_eq!(stream.read(&mut buf).unwrap(), 2);
        assert_eq!(stream.read(&mut buf).unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert_eq!(stream.read(&mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"c");
        assert_eq!(stream.read(&mut buf[..1]).unwrap(), 1, "the size is a limit, the buffer another");
        assert_eq!(stream.read(&mut buf).unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert_eq!(stream.read(&mut buf).unwrap(), 1);
        assert_eq!(stream.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"fg");
        assert_eq!(stream.unread(), b"");
    }
}
