//! A stop that gives up on a handler which ignores its connection says so once, and
//! waits for it once: the other waits of the same stop (the background thread's, the
//! serve loop's, the close's) neither wait the grace again nor repeat the report. They
//! used to report it three times, and to spend the grace more than once.
//!
//! A test binary of its own: it installs a logger for the process, to count the
//! reports.

mod support;

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use socketserver::{HandlerResult, StreamRequest, TcpServer};
use support::{bounded, connect, Gate, LIMIT, MODES};

/// The messages the crate logged.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("socketserver")
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_handler_left_behind_is_reported_once_per_stop() {
    let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
    log::set_logger(capture).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    bounded(LIMIT, || {
        for mode in MODES {
            capture.0.lock().unwrap().clear();
            let started = Gate::new();
            let gate = started.clone();
            let deaf = move |_: &mut StreamRequest| -> HandlerResult {
                let _ = gate.pass("deaf"); // says it began; nobody releases it
                thread::sleep(Duration::from_secs(20));
                Ok(())
            };
            let control = started.control();
            let server = TcpServer::builder("127.0.0.1:0")
                .dispatch(mode.dispatch())
                .shutdown_deadline(Duration::from_millis(200))
                .bind(deaf)
                .unwrap();
            let addr = server.local_addr();
            let background = server.serve_in_background().unwrap().stop_timeout(Duration::from_millis(200));
            let _client = connect(addr);
            control.expect_arrival("the deaf handler");
            let stopped = background.stop();
            assert!(stopped.is_err(), "{mode}: the handler was left behind, and the stop says so");
            let reports: Vec<String> =
                capture.0.lock().unwrap().iter().filter(|m| m.contains("left running")).cloned().collect();
            assert_eq!(reports.len(), 1, "{mode}: one report of the handler left behind: {reports:#?}");
        }
    });
}
