//! Lifecycle benchmark: how fast `shutdown()` takes effect on an idle server, and what an
//! idle server costs, for every transport and mode, side by side with Python's
//! `socketserver` (run with `python3` when present).
//!
//! ```text
//! cargo bench --bench lifecycle
//! ```
//!
//! Prints a Markdown table. Figures are medians, 99th percentiles and maxima over 20
//! tries; the machine is shared, so expect some spread, but a polling design shows up as
//! tens of wakeups per second and a latency of hundreds of milliseconds.
//!
//! # As a CI gate
//!
//! ```text
//! LIFECYCLE_GATE_P99_MS=50 cargo bench --bench lifecycle    # or .ci/lifecycle-gate
//! ```
//!
//! With `LIFECYCLE_GATE_P99_MS` set, the run exits with status 1, naming the rows, when
//! the 99th percentile of shutdown latency of any of our rows is above that many
//! milliseconds (status 2 for a value that is not a number). Other variables:
//! `LIFECYCLE_TRIES` (shutdowns per row, default 20; with 100 the 99th percentile
//! forgives one outlier) and `LIFECYCLE_PYTHON=0` (no Python column; without `python3`
//! on the machine there is none either way).
//!
//! Linux only: it reads each thread's CPU time and context switches from `/proc`.

#[cfg(target_os = "linux")]
mod linux;

#[cfg(target_os = "linux")]
fn main() {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("lifecycle: this benchmark reads /proc and runs on Linux only");
}
