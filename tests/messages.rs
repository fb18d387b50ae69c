//! Errors that teach: what a student sees when something goes wrong, with no setup.

mod support;

use std::io::{self, Read, Write};
use std::process::Stdio;

#[cfg(target_os = "linux")]
use socketserver::{Error, UnixStreamServer};
use socketserver::{StreamRequest, TcpServer};
use support::process::{rerun_this_test, run_to_exit};
use support::{bounded, connect, LIMIT};

/// With no logger installed, the default handle_error writes the error and the client's
/// address to stderr, as Python's does, instead of letting it vanish. Checked in a child
/// process (this test binary run again), whose stderr the test reads.
#[test]
fn without_a_logger_handler_errors_go_to_stderr() {
    bounded(LIMIT, || {
        if std::env::var_os("MESSAGES_CHILD").is_some() {
            let server = TcpServer::bind_handler("127.0.0.1:0", |_: &mut StreamRequest| -> io::Result<()> {
                Err(io::Error::other("the handler's own words"))
            })
            .unwrap();
            let addr = server.local_addr();
            println!("client {}", {
                let background = server.serve_in_background().unwrap();
                let mut client = connect(addr);
                let local = client.local_addr().unwrap();
                client.read_to_end(&mut Vec::new()).unwrap();
                background.stop().unwrap();
                local
            });
            return;
        }
        let mut command = rerun_this_test("without_a_logger_handler_errors_go_to_stderr");
        let output = run_to_exit(command.env("MESSAGES_CHILD", "1"), b"", support::TIMEOUT);
        let (stdout, stderr) = (&output.stdout, &output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        // libtest prints "test NAME ... " on the same line before the child's own output.
        let client = stdout
            .lines()
            .find_map(|line| line.split_once("client ").map(|(_, addr)| addr.trim()))
            .expect("the child's client address");
        let expected =
            format!("socketserver: request from {client}: handler failed in handle: the handler's own words");
        assert!(stderr.lines().any(|line| line == expected), "expected {expected:?} on stderr, got:\n{stderr}");
    });
}

// Unix sockets; the limit (107 bytes) is Linux's.
#[cfg(target_os = "linux")]
#[test]
fn a_unix_path_too_long_says_how_long_it_may_be() {
    let path = std::env::temp_dir().join("x".repeat(120));
    let error = UnixStreamServer::bind(&path, |_: &mut StreamRequest| Ok(())).unwrap_err();
    assert!(matches!(error, Error::Bind { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("at most 107 bytes"), "{message}");
    assert!(message.contains(&format!("this one is {}", path.as_os_str().len())), "{message}");
    assert!(!path.exists());
}

#[test]
fn an_address_in_use_names_it_and_says_what_to_do() {
    let first = TcpServer::bind_handler("127.0.0.1:0", |req: &mut StreamRequest| req.writer().write_all(b"x")).unwrap();
    let addr = first.local_addr();
    let error = TcpServer::bind(addr, |_: &mut StreamRequest| Ok(())).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    let message = error.to_string();
    assert!(message.contains(&addr.to_string()) && message.contains("in use"), "{message}");
    assert!(message.contains("stop the other server or choose another address"), "{message}");
}

/// A report to a closed stderr (`server 2>&1 | tee log` whose reader died) must not take
/// the server down: eprintln! would panic on the broken pipe.
#[test]
fn reports_to_a_closed_stderr_do_not_stop_the_server() {
    bounded(LIMIT, || {
        if std::env::var_os("MESSAGES_CLOSED_STDERR").is_some() {
            let server = TcpServer::bind_handler("127.0.0.1:0", |_: &mut StreamRequest| -> io::Result<()> {
                Err(io::Error::other("reported to a closed pipe"))
            })
            .unwrap();
            let addr = server.local_addr();
            let background = server.serve_in_background().unwrap();
            for _ in 0..3 {
                connect(addr).read_to_end(&mut Vec::new()).unwrap();
            }
            let handle = background.handle();
            background.stop().expect("the server survived its reports");
            println!("served {}", handle.stats().finished);
            return;
        }
        let mut child = rerun_this_test("reports_to_a_closed_stderr_do_not_stop_the_server")
            .env("MESSAGES_CLOSED_STDERR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take()); // the reader of stderr is gone
        let mut stdout = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success() && stdout.contains("served 3"), "{status}: {stdout}");
    });
}

/// What `fn main() -> Result<(), socketserver::Error>` prints is the error's `Debug`
/// (`Error: {err:?}`): it must read as the message, then the sources the message lacks,
/// not a dump of the enum (issue 14).
#[test]
fn an_error_returned_from_main_prints_its_message_and_its_cause() {
    bounded(LIMIT, || {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = TcpServer::builder(addr)
            .reuse_address(false)
            .bind_handler(|_: &mut StreamRequest| -> io::Result<()> { Ok(()) })
            .expect_err("the address is taken");
        let printed = format!("{error:?}");
        assert!(printed.starts_with(&format!("address {addr} is in use")), "{printed}");
        assert!(printed.contains("\n\nCaused by:\n    "), "the OS error follows: {printed}");
        assert!(!printed.contains("AddrInUse {"), "no struct dump: {printed}");
        assert!(!printed.contains("source:"), "no struct dump: {printed}");

        // A source the message already includes is not repeated.
        let error = socketserver::Error::Io(io::Error::other("disk on fire"));
        assert_eq!(format!("{error:?}"), "disk on fire");
    })
}

/// Ctrl-C (SIGINT) with a client connected says what the shutdown waits for and how to
/// skip it, and ends within its default deadline (5 s) instead of waiting for the client
/// forever (issue 14). In a child process (this test binary run again), which raises
/// SIGINT at itself; its stderr and its duration are checked here.
#[cfg(unix)]
#[test]
fn ctrl_c_says_what_it_waits_for_and_ends_within_its_deadline() {
    bounded(LIMIT, || {
        if std::env::var_os("MESSAGES_CTRL_C_CHILD").is_some() {
            let server = socketserver::ThreadingTcpServer::bind("127.0.0.1:0", |req| {
                std::io::copy(&mut req.reader(), &mut std::io::sink())?; // until the client goes
                Ok(())
            })
            .unwrap();
            let _signals = server.handle().shutdown_on_signals().unwrap();
            let client = connect(server.local_addr());
            let handle = server.handle();
            let raiser = std::thread::spawn(move || {
                support::wait_until(support::TIMEOUT, "the client's request to run", || handle.stats().active == 1);
                signal_hook::low_level::raise(signal_hook::consts::SIGINT).unwrap();
            });
            let start = std::time::Instant::now();
            server.serve_forever().unwrap();
            println!("served for {} ms", start.elapsed().as_millis());
            raiser.join().unwrap();
            drop(client);
            return;
        }
        let mut command = rerun_this_test("ctrl_c_says_what_it_waits_for_and_ends_within_its_deadline");
        let output = run_to_exit(command.env("MESSAGES_CTRL_C_CHILD", "1"), b"", support::TIMEOUT);
        let (stdout, stderr) = (&output.stdout, &output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stderr.contains(
                "SIGINT: shutting down; waiting up to 5 s for 1 connection(s); press Ctrl-C again to stop now"
            ),
            "stderr: {stderr}"
        );
        let served: u64 = stdout
            .lines()
            .find_map(|line| line.split_once("served for ")?.1.strip_suffix(" ms")?.parse().ok())
            .expect("the child's time");
        assert!(served < 9_000, "the shutdown took {served} ms");
    });
}

/// A read that times out says so: `TimedOut`, "timed out: the client sent nothing for
/// 200ms", on every platform (Unix said "Resource temporarily unavailable (os error
/// 11)", which says nothing of time; Python says "timed out").
#[test]
fn a_read_timeout_says_it_timed_out() {
    bounded(LIMIT, || {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let server = TcpServer::builder("127.0.0.1:0")
            .read_timeout(std::time::Duration::from_millis(200))
            .handle_error(move |error, _| {
                let _ = tx.lock().unwrap().send((error.kind(), error.to_string()));
            })
            .bind(|req: &mut StreamRequest| {
                req.reader().read_exact(&mut [0u8; 1])?;
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let _silent = connect(addr);
        let (kind, text) = rx.recv_timeout(support::TIMEOUT).expect("the timeout is reported");
        assert_eq!(kind, io::ErrorKind::TimedOut, "{text}");
        assert!(text.contains("timed out: the client sent nothing for 200ms"), "{text}");
        background.stop().unwrap();
    });
}

/// The timeout message holds with a deadline set too (the read timeout, sooner, ran
/// out), and a `WouldBlock` from a socket the handler made non-blocking stays one.
#[test]
fn a_read_timeout_under_a_deadline_says_so_and_a_nonblocking_read_stays_would_block() {
    bounded(LIMIT, || {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let server = TcpServer::builder("127.0.0.1:0")
            .read_timeout(std::time::Duration::from_millis(200))
            .bind(move |req: &mut StreamRequest| {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                req.set_deadline(Some(deadline));
                let timed = req.reader().read_exact(&mut [0u8; 1]).unwrap_err();
                req.set_deadline(None);
                req.connection().set_nonblocking(true)?;
                let now = req.reader().read(&mut [0u8; 1]).unwrap_err();
                let _ = tx.lock().unwrap().send((timed.kind(), timed.to_string(), now.kind()));
                Ok(())
            })
            .unwrap();
        let addr = server.local_addr();
        let background = server.serve_in_background().unwrap();
        let _silent = connect(addr);
        let (kind, text, now) = rx.recv_timeout(support::TIMEOUT).expect("the handler reports");
        assert_eq!(kind, io::ErrorKind::TimedOut, "{text}");
        assert!(text.contains("timed out: the client sent nothing for 200ms"), "{text}");
        assert_eq!(now, io::ErrorKind::WouldBlock, "a non-blocking read with nothing there");
        background.stop().unwrap();
    });
}
