/// Runs each request inline in the serve loop, one at a time, as Python's plain
/// `TCPServer` and `UDPServer` do.
///
/// While a request runs, no other is accepted; new connections wait in the backlog.
/// Good for UDP servers with short handlers, for teaching, and for tests that want a
/// strict order. It is the default; [`Dispatch::sequential`](super::Dispatch::sequential)
/// says the same.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;
