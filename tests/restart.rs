//! `socketserver::restart` through the `restart` example: clients connect, ask and read
//! their answer without a pause while the server restarts three times on `SIGHUP`, and
//! not one request is refused, reset or left unanswered.
//!
//! Unix only, as the module is.
#![cfg(unix)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::bounded;
use support::process::{example_binary, signal, Spawned};

/// What the clients saw.
#[derive(Default, Debug)]
struct Tally {
    /// Answers by the pid that gave them.
    served: HashMap<u32, u64>,
    refused: u64,
    reset: u64,
    unanswered: u64,
    /// The first few failures, as text.
    failures: Vec<String>,
}

/// One request on a new connection: the pid that answered, or how it failed.
fn ask(addr: SocketAddr, n: u64) -> Result<u32, (ErrorKind, String)> {
    let fail = |e: std::io::Error| (e.kind(), e.to_string());
    let stream = TcpStream::connect(addr).map_err(fail)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(fail)?;
    (&stream).write_all(format!("{n}\n").as_bytes()).map_err(fail)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(fail)?;
    // "pid 1234: 17"
    let pid = answer.strip_prefix("pid ").and_then(|rest| rest.split(':').next()).and_then(|pid| pid.parse().ok());
    match pid {
        Some(pid) if answer.trim_end().ends_with(&format!(": {n}")) => Ok(pid),
        _ => Err((ErrorKind::UnexpectedEof, format!("no answer to {n}: {answer:?}"))),
    }
}

/// Whether process `pid` has ended (gone, or a zombie no one reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) if std::path::Path::new("/proc/self/stat").exists() => true,
        // No /proc (macOS, the BSDs): ask kill(1).
        Err(_) => !Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success()),
    }
}

/// "pid N listening on tcp://ADDR": N and ADDR.
fn listening(line: &str) -> (u32, SocketAddr) {
    let rest = line.strip_prefix("pid ").unwrap_or_else(|| panic!("not a listening line: {line:?}"));
    let (pid, url) = rest.split_once(" listening on tcp://").unwrap_or_else(|| panic!("{line:?}"));
    (pid.parse().unwrap(), url.parse().unwrap())
}

/// Kills every process the test saw, however it ends: the processes after the first
/// are not the test's children, and no guard of the support module knows them.
struct Reaper(Arc<Mutex<Vec<u32>>>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.0.lock().unwrap().iter() {
            if !ended(*pid) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

/// Waits until `done` holds, at most 30 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < Duration::from_secs(30), "waited 30 s for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn three_restarts_refuse_reset_and_drop_no_request() {
    let exe = example_binary("restart");
    bounded(Duration::from_secs(150), move || {
        let mut command = Command::new(exe);
        command.args(["--addr", "127.0.0.1:0"]);
        let mut server = Spawned::start(command);
        let (mut pid, addr) = listening(&server.line());
        let pids = Arc::new(Mutex::new(vec![pid]));
        let _reaper = Reaper(pids.clone());

        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..3u64)
            .map(|client| {
                let (tally, stop) = (tally.clone(), stop.clone());
                thread::spawn(move || {
                    let mut n = client * 1_000_000;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let outcome = ask(addr, n);
                        let mut tally = tally.lock().unwrap();
                        match outcome {
                            Ok(pid) => *tally.served.entry(pid).or_default() += 1,
                            Err((kind, text)) => {
                                match kind {
                                    ErrorKind::ConnectionRefused => tally.refused += 1,
                                    ErrorKind::ConnectionReset
                                    | ErrorKind::ConnectionAborted
                                    | ErrorKind::BrokenPipe => tally.reset += 1,
                                    _ => tally.unanswered += 1,
                                }
                                if tally.failures.len() < 5 {
                                    tally.failures.push(format!("request {n}: {kind:?}: {text}"));
                                }
                            }
                        }
                        drop(tally);
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        let served_by = |pid: u32| tally.lock().unwrap().served.get(&pid).copied().unwrap_or(0);

        for round in 1..=3 {
            wait_until(&format!("pid {pid} to serve 200 requests"), || served_by(pid) >= 200);
            signal(pid, "HUP");
            let (next, same) = listening(&server.line());
            assert_eq!(same, addr, "the new process listens on the same address");
            assert_ne!(next, pid, "a new process");
            pids.lock().unwrap().push(next);
            wait_until(&format!("the old pid {pid} to exit (round {round})"), || ended(pid));
            wait_until(&format!("the new pid {next} to serve 200 requests"), || served_by(next) >= 200);
            pid = next;
        }
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.join().unwrap();
        }
        let tally = tally.lock().unwrap();
        eprintln!("served by pid: {:?}", tally.served);
        assert_eq!(
            (tally.refused, tally.reset, tally.unanswered),
            (0, 0, 0),
            "refused, reset, unanswered across three restarts: {:?}",
            tally.failures
        );
        assert_eq!(tally.served.len(), 4, "four processes served in turn: {:?}", tally.served);

        signal(pid, "TERM");
        wait_until("the last process to stop on SIGTERM", || ended(pid));
        let first = server.wait_exit(Duration::from_secs(10));
        assert!(first.success(), "the first process exited cleanly after its drain: {first}");
    });
}

/// What systemd's notification socket receives from `notify_fd_store`: `FDSTORE=1` and
/// the name, with the listening socket itself, which still accepts.
#[cfg(target_os = "linux")]
#[test]
fn the_file_descriptor_store_message_carries_the_socket_and_its_name() {
    use std::io::IoSliceMut;
    use std::mem::MaybeUninit;
    use std::net::TcpListener;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use socketserver::restart::notify_fd_store;

    let dir = std::env::temp_dir().join(format!("ss-fdstore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();

    let bad = notify_fd_store(path.as_os_str(), &[("a:b", listener.as_fd())]).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");
    notify_fd_store(path.as_os_str(), &[("web", listener.as_fd())]).unwrap();

    let mut bytes = [0u8; 256];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(&systemd, &mut [IoSliceMut::new(&mut bytes)], &mut control, RecvFlags::empty())
        .expect("the notification");
    assert_eq!(&bytes[..got.bytes], b"FDSTORE=1\nFDNAME=web\n");
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(passed) = message {
            fds.extend(passed);
        }
    }
    assert_eq!(fds.len(), 1, "one descriptor with the message");
    let stored = TcpListener::from(fds.pop().unwrap());
    assert_eq!(stored.local_addr().unwrap(), listener.local_addr().unwrap(), "the same socket");
    drop(listener); // the stored copy keeps it open, as systemd's does across a restart
    let client = TcpStream::connect(stored.local_addr().unwrap()).unwrap();
    let (accepted, _) = stored.accept().unwrap();
    assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_program_that_fails_or_never_answers_is_an_error_and_the_sockets_stay() {
    use std::net::TcpListener;
    use std::os::fd::AsFd;

    use socketserver::restart::hand_over;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let began = Instant::now();
    let exited = hand_over(Command::new("false"), &[("web", listener.as_fd())], Duration::from_secs(10)).unwrap_err();
    assert!(exited.to_string().contains("ended before it was ready"), "{exited}");
    assert!(began.elapsed() < Duration::from_secs(5), "seen when it exits, not at the deadline");

    let mut silent = Command::new("sleep");
    silent.arg("30");
    let began = Instant::now();
    let late = hand_over(silent, &[("web", listener.as_fd())], Duration::from_millis(300)).unwrap_err();
    assert_eq!(late.kind(), ErrorKind::TimedOut, "{late}");
    assert!(began.elapsed() < Duration::from_secs(5), "bounded by its time: {:?}", began.elapsed());

    // The socket is untouched: it still accepts.
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
}

/// A process of the same user that finds the hand-over socket first gets nothing: on
/// Linux the old program checks the peer's pid (`SO_PEERCRED`) and closes any other
/// connection unanswered, then hands the sockets to the new program.
#[cfg(target_os = "linux")]
#[test]
fn a_stranger_that_connects_first_gets_no_socket() {
    use std::io::Read;
    use std::net::TcpListener;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use socketserver::restart::hand_over;

    let exe = example_binary("restart");
    bounded(Duration::from_secs(60), move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // The stranger: watches the temporary directory for this process's hand-over
        // socket, connects at once, and reads what it is given.
        let prefix = format!("socketserver-handoff-{}-", std::process::id());
        let stranger = thread::spawn(move || {
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(20) {
                let found = std::fs::read_dir(std::env::temp_dir())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .find(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|entry| entry.path().join("s"));
                if let Some(Ok(mut stolen)) = found.map(UnixStream::connect) {
                    stolen.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut got = Vec::new();
                    let read = stolen.read_to_end(&mut got);
                    return (read.map(|_| got.len()), true);
                }
                thread::sleep(Duration::from_millis(1));
            }
            (Ok(0), false)
        });
        // The new program waits a moment before it connects, so that the stranger is first.
        let mut slow = Command::new("sh");
        slow.arg("-c").arg("sleep 0.5; exec \"$0\" --addr 127.0.0.1:0").arg(&exe);
        slow.stdout(std::process::Stdio::null());
        let mut child = hand_over(slow, &[("web", listener.as_fd())], Duration::from_secs(20)).expect("the hand-over");
        let (read, connected) = stranger.join().unwrap();
        assert!(connected, "the stranger found the socket");
        assert_eq!(read.unwrap(), 0, "the stranger was closed unanswered: no names, no sockets");
        // The real new program got the socket: it serves on the listener's address.
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (&client).write_all(b"hi\n").unwrap();
        let mut answer = String::new();
        BufReader::new(&client).read_line(&mut answer).unwrap();
        assert!(answer.ends_with(": hi\n"), "{answer:?}");
        let _ = child.kill();
        let _ = child.wait();
    });
}
