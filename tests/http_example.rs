//! The `http` example against a hostile client, over real sockets: what issue 15 found
//! (a symbolic-link race out of the root, a FIFO that hung a thread, a second `Host`),
//! each attack run against the example as a child process.
//!
//! Unix only, as `tests/echo_example.rs` (the example runs as a child process); the
//! race needs Linux's `renameat2(RENAME_EXCHANGE)`. Every wait has a deadline; only
//! `127.0.0.1:0` and temporary directories are used.
#![cfg(unix)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use support::process::{example_binary, Spawned};
use support::{bounded, connect, TempPath, LIMIT, TIMEOUT};

const INSIDE: &str = "inside the root\n";
const SECRET: &str = "the secret outside the root\n";

/// The example serving `root` on a free port, with `args`; its address.
fn start(root: &TempPath, args: &[&str]) -> (Spawned, SocketAddr) {
    let mut command = Command::new(example_binary("http"));
    command.args(["--addr", "127.0.0.1:0", "--root", root.arg()]).args(args);
    let mut http = Spawned::start(command);
    let url = http.listening();
    let addr = url.strip_prefix("http://").expect("an http:// URL").parse().expect("IP:PORT");
    (http, addr)
}

/// A keep-alive connection that reads whole responses.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client { stream: BufReader::new(connect(addr)) }
    }

    /// Sends `request` as is and reads one response: its status and body.
    fn send(&mut self, request: &str) -> (u16, String) {
        self.stream.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("a status line within the client's timeout");
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn get(&mut self, path: &str) -> (u16, String) {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
    }
}

/// `DIR/root` with `race/passwd` (INSIDE) and `DIR/outside/passwd` (SECRET): the root to
/// serve and the directory a symbolic link must never lead into.
fn root_and_outside() -> (TempPath, TempPath) {
    let dir = TempPath::dir("http-hostile");
    let root = TempPath::of(dir.join("root"));
    std::fs::create_dir_all(root.join("race")).unwrap();
    std::fs::write(root.join("race/passwd"), INSIDE).unwrap();
    std::fs::create_dir(dir.join("outside")).unwrap();
    std::fs::write(dir.join("outside/passwd"), SECRET).unwrap();
    (dir, root)
}

/// A symbolic link is never followed below the root, whether it leads out of the root
/// or stays inside.
#[test]
fn symbolic_links_below_the_root_are_404() {
    let _ = example_binary("http");
    bounded(LIMIT, || {
        let (dir, root) = root_and_outside();
        std::os::unix::fs::symlink(dir.join("outside"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(dir.join("outside/passwd"), root.join("secret")).unwrap();
        std::os::unix::fs::symlink("race", root.join("in")).unwrap();
        let (_http, addr) = start(&root, &[]);
        let mut client = Client::new(addr);
        assert_eq!(client.get("/race/passwd"), (200, INSIDE.to_string()));
        for path in ["/out/passwd", "/secret", "/in/passwd"] {
            let (status, body) = client.get(path);
            assert_eq!(status, 404, "{path}: {body}");
            assert!(!body.contains("secret"), "{path} leaked {body:?}");
        }
    });
}

/// Issue 15: a directory swapped for a symbolic link to the outside, again and again,
/// while a client asks for a file below it. Checking a canonical path and then opening
/// it by name served the outside file 86 times in 3,000; resolved once, by opening, it
/// is served never.
#[cfg(target_os = "linux")]
#[test]
fn a_directory_swapped_for_a_symlink_never_leads_out_of_the_root() {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let _ = example_binary("http");
    bounded(LIMIT, || {
        let (dir, root) = root_and_outside();
        // `race` (a directory) and `swap` (a link out) trade places in one atomic step.
        std::os::unix::fs::symlink(dir.join("outside"), root.join("swap")).unwrap();
        let (_http, addr) = start(&root, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, race, swap) = (stop.clone(), root.join("race"), root.join("swap"));
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    renameat_with(CWD, &race, CWD, &swap, RenameFlags::EXCHANGE).expect("renameat2 EXCHANGE");
                    swaps += 1;
                }
                swaps
            })
        };
        let mut client = Client::new(addr);
        let (mut inside, mut refused) = (0, 0);
        for i in 0..3000 {
            match client.get("/race/passwd") {
                (200, body) => {
                    assert_eq!(body, INSIDE, "request {i} was served a file outside the root");
                    inside += 1;
                }
                (404, _) => refused += 1,
                (status, body) => panic!("request {i}: {status} {body}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = support::join_within(swapper, TIMEOUT);
        assert!(swaps > 100, "the directory was swapped only {swaps} times: no race was run");
        assert!(inside > 0, "the file inside the root was never served ({refused} refused)");
    });
}

/// Issue 15: opening a FIFO for reading blocks until a writer comes, which no timeout
/// covers. In sequential mode that stopped the whole server; now it is 404 at once and
/// the next client is served.
#[test]
fn a_fifo_under_the_root_is_404_and_blocks_no_one() {
    let _ = example_binary("http");
    bounded(LIMIT, || {
        let (_dir, root) = root_and_outside();
        rustix::fs::mkfifoat(rustix::fs::CWD, root.join("fifo"), rustix::fs::Mode::from_raw_mode(0o644))
            .expect("mkfifo");
        let (_http, addr) = start(&root, &["--mode", "sequential"]);
        let mut client = Client::new(addr);
        client.stream.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(client.get("/fifo").0, 404, "a FIFO is not a file to serve");
        assert_eq!(client.get("/race/passwd"), (200, INSIDE.to_string()));
        drop(client);
        // And another client, on a server that serves one connection at a time.
        assert_eq!(Client::new(addr).get("/health"), (200, "ok\n".to_string()));
    });
}

/// RFC 9112, 3.2: a request with two `Host` header lines is answered 400, even when
/// they agree; one `Host` is served.
#[test]
fn a_second_host_header_is_400() {
    let _ = example_binary("http");
    bounded(LIMIT, || {
        let (_dir, root) = root_and_outside();
        let (_http, addr) = start(&root, &[]);
        for hosts in ["Host: a\r\nHost: b\r\n", "Host: a\r\nhost: a\r\n", "HOST: a\r\nX-Other: 1\r\nHost: a\r\n"] {
            let (status, body) = Client::new(addr).send(&format!("GET /health HTTP/1.1\r\n{hosts}\r\n"));
            assert_eq!(status, 400, "{hosts:?}: {body}");
        }
        assert_eq!(Client::new(addr).send("GET /health HTTP/1.1\r\nHost: a\r\n\r\n"), (200, "ok\n".to_string()));
    });
}

/// Found by a hostile review: a request line (or a header line) longer than its limit
/// was answered 414 (431) only once the head ended; one that never ended was closed
/// silently at the idle timeout. The frame now calls the head whole as soon as its
/// unfinished line is over the limit, and the answer comes at once.
#[test]
fn an_over_long_line_is_answered_before_the_head_ends() {
    let _ = example_binary("http");
    bounded(LIMIT, || {
        let (_dir, root) = root_and_outside();
        let (_http, addr) = start(&root, &["--timeout", "30"]);
        // Unfinished lines one byte over the limit (8 KiB, the line's end included), a
        // finished one over it, and more header lines than allowed, none of them followed
        // by the end of the head.
        let over = |prefix: &str| format!("{prefix}{}", "a".repeat(8193 - prefix.len()));
        let many: String = (0..101).map(|n| format!("X-{n}: 1\r\n")).collect();
        let heads = [
            (over("GET /"), 414),
            (format!("GET / HTTP/1.1\r\n{}", over("X-Long: ")), 431),
            (format!("GET / HTTP/1.1\r\n{}\r\nHost: x\r\n", over("X-Long: ")), 431),
            (format!("GET / HTTP/1.1\r\n{many}"), 431),
        ];
        for (head, status) in heads {
            let mut client = Client::new(addr);
            client.stream.get_mut().write_all(head.as_bytes()).unwrap();
            let mut line = String::new();
            client.stream.read_line(&mut line).expect("a status line within the client's timeout");
            assert!(line.starts_with(&format!("HTTP/1.1 {status} ")), "{line:?}");
        }
        // A request line at the limit, its end included, is still a request.
        let path = "a".repeat(8192 - "GET / HTTP/1.1\r\n".len());
        assert_eq!(Client::new(addr).get(&format!("/{path}")).0, 404);
    });
}

/// Kept-alive clients park between requests: a pool of one worker serves several open
/// connections in turn (issue 13).
#[test]
fn one_worker_serves_many_kept_alive_connections() {
    bounded(LIMIT, || {
        let (_dir, root) = root_and_outside();
        let (_http, addr) = start(&root, &["--mode", "pool", "--workers", "1"]);
        let mut clients: Vec<Client> = (0..8).map(|_| Client::new(addr)).collect();
        for _round in 0..3 {
            for client in &mut clients {
                assert_eq!(client.get("/race/passwd"), (200, INSIDE.to_string()));
            }
        }
    });
}

/// Issue 19: request heads are framed, so a client that sends half a head (or trickles
/// one) holds no worker: a pool of one answers a fresh client meanwhile, and the slow
/// request once its head is whole.
#[test]
fn a_half_sent_request_head_holds_no_worker() {
    bounded(LIMIT, || {
        let (_dir, root) = root_and_outside();
        let (_http, addr) = start(&root, &["--mode", "pool", "--workers", "1", "--timeout", "30"]);
        let mut slow = Client::new(addr);
        slow.stream.get_mut().write_all(b"GET /race/passwd HTTP/1.1\r\nHo").unwrap();
        let mut fresh = Client::new(addr);
        for piece in ["s", "t: x", "\r", "\n"] {
            assert_eq!(fresh.get("/race/passwd"), (200, INSIDE.to_string()), "a fresh client beside a half head");
            slow.stream.get_mut().write_all(piece.as_bytes()).unwrap();
        }
        assert_eq!(slow.send("\r\n"), (200, INSIDE.to_string()));
    });
}

/// Issue 19: a client reading a large file slowly held its worker for the whole file.
/// Files are sent from the poller now (`StreamRequest::send_from`): a pool of one worker
/// answers a fresh client while the slow one's window is full, and the slow one still
/// gets every byte, then its next answer on the same connection.
#[test]
fn a_slow_reader_of_a_large_file_holds_no_worker() {
    const BIG: usize = 16 << 20;
    bounded(LIMIT, || {
        let (_dir, root) = root_and_outside();
        std::fs::write(root.join("big"), vec![b'b'; BIG]).unwrap();
        let (_http, addr) = start(&root, &["--mode", "pool", "--workers", "1", "--timeout", "30"]);
        let mut slow = connect(addr);
        slow.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        // It reads nothing for now: the file fills its window and the server's.
        let mut fresh = Client::new(addr);
        for _ in 0..3 {
            assert_eq!(fresh.get("/race/passwd"), (200, INSIDE.to_string()), "beside a slow reader");
        }
        let mut slow = Client { stream: BufReader::new(slow) };
        let mut head = String::new();
        while head != "\r\n" {
            head.clear();
            slow.stream.read_line(&mut head).unwrap();
        }
        let mut body = vec![0u8; BIG];
        slow.stream.read_exact(&mut body).unwrap();
        assert!(body.iter().all(|&b| b == b'b'));
        assert_eq!(slow.get("/race/passwd"), (200, INSIDE.to_string()), "kept alive after the file");
    });
}
