//! A server's metrics: what [`Stats`] counts, plus what operating a server needs (busy
//! workers and their limit, requests waiting to start, how long they waited, how long
//! exchanges took, bytes in and out), and their Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::handle::{Durations, ServerHandle, Stats, BUCKETS_MICROS};

/// A snapshot of a server's metrics, read with [`ServerHandle::metrics`]; rendered for
/// Prometheus by [`Metrics::to_prometheus`].
///
/// Counted since the server was built, each value read on its own (relaxed atomics, no
/// lock but the one [`Stats`] takes), so under load the numbers are close to, but not
/// exactly, one instant's. Recording them costs a few atomic adds per exchange, and two
/// clock reads that [`Builder::timings`](crate::Builder::timings) can turn off
/// (`cargo run --release -p bench -- --runs 3 --scenario ops-c16` shows the cost).
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use socketserver::TcpServer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TcpServer::bind("127.0.0.1:0", |req| {
///     let mut line = String::new();
///     req.reader().read_line(&mut line)?;
///     req.writer().write_all(line.as_bytes())?;
///     Ok(())
/// })?;
/// let (addr, handle) = (server.local_addr(), server.handle());
/// let server = server.serve_in_background()?;
///
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(b"hello\n")?;
/// let mut echo = String::new();
/// BufReader::new(&client).read_line(&mut echo)?;
/// drop(client);
/// server.stop()?;
///
/// let metrics = handle.metrics();
/// assert_eq!(metrics.stats.finished, 1);
/// assert_eq!((metrics.bytes_in, metrics.bytes_out), (6, 6));
/// assert_eq!(metrics.exchange_duration.count, 1);
/// let text = metrics.to_prometheus("echo");
/// assert!(text.contains("echo_requests_finished_total 1\n"));
/// assert!(text.contains("echo_exchange_duration_seconds_count 1\n"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// What [`ServerHandle::stats`] reads.
    pub stats: Stats,
    /// Requests in an exchange now: running, not waiting to start and not parked.
    pub busy: usize,
    /// At most this many run at once, if the dispatch mode has a limit: a pool's workers,
    /// `Threading::max_threads`, 1 for sequential. `busy` at the limit means the server
    /// is saturated.
    pub busy_limit: Option<usize>,
    /// Requests handed to the dispatch mode that have not started yet (a pool's queue,
    /// a thread about to start).
    pub waiting: usize,
    /// Stream connections open now, parked ones included: accepted and not yet closed,
    /// refused or denied.
    pub connections_open: u64,
    /// Stream connections accepted so far.
    pub connections_accepted: u64,
    /// From the server seeing a request ready (a connection accepted, a datagram
    /// received, a parked connection reported readable by the poller) to its exchange
    /// starting: how long requests wait inside the server for a worker. A saturated
    /// pool shows here as the readable connections it finds together and serves in
    /// turn; the time a client waits before the server looks (in the kernel's backlog or
    /// socket buffer while every worker is busy) is not in it: `busy` at `busy_limit`
    /// tells that. An exchange that starts without waiting (the connection's next
    /// message already there, read without parking) is not counted.
    pub queue_wait: Histogram,
    /// How long exchanges took (`setup` and `handle` and the reply's flush; a
    /// datagram's whole handling).
    pub exchange_duration: Histogram,
    /// Bytes read from clients through requests' readers (and datagrams received).
    pub bytes_in: u64,
    /// Bytes written to clients through requests' writers and `send_from`, and
    /// [`bad_message`](crate::Builder::bad_message) replies (and datagram replies).
    pub bytes_out: u64,
}

/// A histogram of durations: how many took at most each bound.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Histogram {
    /// `(bound, count)`, cumulative: how many took at most `bound`, from 100 µs to 10 s
    /// about ×2.5 apart; everything is `count`.
    pub buckets: Vec<(Duration, u64)>,
    /// How many were recorded.
    pub count: u64,
    /// Their total.
    pub sum: Duration,
}

impl Histogram {
    fn read(durations: &Durations) -> Histogram {
        let (counts, sum) = durations.read();
        let mut total = 0;
        let buckets = BUCKETS_MICROS
            .iter()
            .zip(counts)
            .map(|(&bound, count)| {
                total += count;
                (Duration::from_micros(bound), total)
            })
            .collect();
        Histogram { buckets, count: counts.iter().sum(), sum }
    }

    /// An upper estimate of the `q`-th quantile (`0.5` for the median, `0.99`): the
    /// bound of the bucket it falls in, `None` with no samples or past the last bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        self.buckets.iter().find(|(_, at_most)| *at_most >= rank).map(|(bound, _)| *bound)
    }

    /// The mean, `None` with no samples.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| self.sum / self.count.min(u64::from(u32::MAX)) as u32)
    }
}

impl ServerHandle {
    /// The server's [`Metrics`] now.
    pub fn metrics(&self) -> Metrics {
        let control = self.control();
        let counters = &control.counters;
        // What ends is read before what starts: a connection that comes and goes between
        // the two reads is then counted as open for a moment, never missed below zero.
        let waiting = counters.waiting.load(Ordering::Relaxed);
        let stats = control.stats();
        let ended = counters.connections_ended.load(Ordering::Relaxed);
        let accepted = counters.connections.load(Ordering::Relaxed);
        Metrics {
            busy: stats.active.saturating_sub(waiting),
            busy_limit: control.workers(),
            waiting,
            connections_open: accepted.saturating_sub(ended),
            connections_accepted: accepted,
            queue_wait: Histogram::read(&counters.queue_wait),
            exchange_duration: Histogram::read(&counters.exchanges),
            bytes_in: counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: counters.bytes_out.load(Ordering::Relaxed),
            stats,
        }
    }
}

impl Metrics {
    /// The metrics in Prometheus's text exposition format (version 0.0.4), each name
    /// beginning with `prefix` and `_`: counters end in `_total`, durations are
    /// histograms in seconds. A plain function, with no metrics library: serve it at
    /// `/metrics` (the `http` example does), or write it to a file for node_exporter's
    /// textfile collector.
    ///
    /// `prefix` should be a valid metric name (letters, digits, `_`); other characters
    /// are replaced by `_`.
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let prefix: String = prefix
            .chars()
            .enumerate()
            .map(|(i, c)| if c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()) { c } else { '_' })
            .collect();
        let s = &self.stats;
        // (name, type, help, value): one line of HELP, one of TYPE, one sample each.
        let mut scalars = vec![
            ("requests_received_total", "counter", "Connections accepted and datagrams received.", s.received),
            ("requests_finished_total", "counter", "Requests that ended.", s.finished),
            ("errors_total", "counter", "Errors and caught panics reported to handle_error.", s.errors),
            ("refused_total", "counter", "Connections refused because the server was full.", s.refused),
            ("denied_total", "counter", "Requests turned down by verify_request or as untrusted peers.", s.denied),
            (
                "bad_proxy_headers_total",
                "counter",
                "Connections closed for a bad PROXY protocol header.",
                s.bad_proxy_headers,
            ),
            ("requests_active", "gauge", "Requests running now, parked connections not included.", s.active as u64),
            ("connections_parked", "gauge", "Connections parked in the poller now, with no thread.", s.parked as u64),
            ("connections_open", "gauge", "Stream connections open now, parked ones included.", self.connections_open),
            ("connections_accepted_total", "counter", "Stream connections accepted.", self.connections_accepted),
            ("workers_busy", "gauge", "Requests in an exchange now.", self.busy as u64),
        ];
        if let Some(limit) = self.busy_limit {
            scalars.push(("workers_limit", "gauge", "Requests the dispatch mode runs at once at most.", limit as u64));
        }
        scalars.extend([
            (
                "requests_waiting",
                "gauge",
                "Requests handed to the dispatch mode, not started yet.",
                self.waiting as u64,
            ),
            ("received_bytes_total", "counter", "Bytes read from clients.", self.bytes_in),
            ("sent_bytes_total", "counter", "Bytes written to clients.", self.bytes_out),
        ]);
        let mut out = String::new();
        for (name, kind, help, value) in scalars {
            let _ =
                writeln!(out, "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} {kind}\n{prefix}_{name} {value}");
        }
        histogram(
            &mut out,
            &prefix,
            "queue_wait_seconds",
            "From a request being ready to its exchange starting.",
            &self.queue_wait,
        );
        histogram(&mut out, &prefix, "exchange_duration_seconds", "How long exchanges took.", &self.exchange_duration);
        out
    }
}

fn histogram(out: &mut String, prefix: &str, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} histogram");
    for (bound, at_most) in &h.buckets {
        let _ = writeln!(out, "{prefix}_{name}_bucket{{le=\"{}\"}} {at_most}", bound.as_secs_f64());
    }
    let _ = writeln!(out, "{prefix}_{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{prefix}_{name}_sum {}", h.sum.as_secs_f64());
    let _ = writeln!(out, "{prefix}_{name}_count {}", h.count);
}
