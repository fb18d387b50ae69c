//! The `http`, `kv` and `echo` examples driven by real clients: curl, Python's
//! `http.client`, redis-cli, nc and socat, each run as a process against the example
//! running as a process, directly or through a `testing::FaultProxy` (curl with
//! latency, redis-cli against a reset).
//!
//! Ignored by default, as the tools are not part of a Rust toolchain: `.ci/real-clients`
//! installs them and runs `cargo test --test real_clients -- --ignored`. A missing tool
//! fails its test with the Debian package to install. Every tool and example runs under
//! a deadline and is killed when its guard drops; only `127.0.0.1:0` and temporary Unix
//! paths are bound.
//!
//! Unix only: the examples and the clients (curl, python3, redis-cli, nc, socat) run as
//! Unix processes, which a Windows test process under Wine cannot start.
#![cfg(unix)]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use socketserver::testing::{Fault, FaultProxy};
use support::process::{example_binary, run_to_exit, Spawned};
use support::{bounded, temp_socket_path, TempPath, TIMEOUT};

/// The longest one client invocation may take.
const TOOL_LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Tools, examples and processes
// ---------------------------------------------------------------------------------------

/// Fails the test unless `tool` is on the PATH, naming the Debian package to install.
fn require(tool: &str, package: &str) {
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(found, "`{tool}` is not installed: `apt-get install {package}` (or run .ci/real-clients)");
}

/// Builds the examples (outside the deadline: builds may be slow on a busy machine),
/// then runs the test `body` within 120 s.
fn real_client_test(body: impl FnOnce() + Send + 'static) {
    examples();
    bounded(Duration::from_secs(120), body);
}

/// The built examples' paths by name.
fn examples() -> &'static HashMap<String, PathBuf> {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| ["echo", "http", "kv"].map(|name| (name.to_string(), example_binary(name))).into())
}

/// What a finished client printed.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `command` with `stdin` to its end within `limit`, killing it and failing the
/// test if it takes longer.
fn run(command: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let finished = run_to_exit(command, stdin, limit);
    Output { ok: finished.status.success(), stdout: finished.stdout, stderr: finished.stderr }
}

/// Runs a client that must succeed; its stdout.
fn client(args: &[&str], stdin: &[u8]) -> String {
    let out = run(Command::new(args[0]).args(&args[1..]), stdin, TOOL_LIMIT);
    assert!(out.ok, "{args:?} failed; stderr: {}", out.stderr);
    out.stdout
}

/// A running example. Dropping it kills the process and reaps it.
struct Example {
    process: Spawned,
    /// What follows `listening on ` on the first stdout line.
    url: String,
}

impl Example {
    /// Starts the example and waits for its `listening on URL` line.
    fn start(name: &str, args: &[&str]) -> Example {
        let mut command = Command::new(&examples()[name]);
        command.args(args);
        let mut process = Spawned::start(command);
        let url = process.listening();
        Example { process, url }
    }

    /// Sends SIGTERM and waits for the process to end; its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.signal("TERM");
        self.process.wait_exit(TIMEOUT)
    }

    /// The port of `scheme://IP:PORT`.
    fn port(&self) -> String {
        let (_, port) = self.url.rsplit_once(':').expect("a URL ending in :PORT");
        port.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// http
// ---------------------------------------------------------------------------------------

const HELLO: &str = "hello, file\n";
const SECRET: &str = "the secret outside the root\n";

/// `DIR/root/hello.txt` and `DIR/root/page.html` to serve, `DIR/secret.txt` beside the
/// root that must never be served, and `DIR/root/link` pointing to it.
fn http_root() -> (TempPath, String) {
    let dir = TempPath::dir("http");
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("hello.txt"), HELLO).unwrap();
    std::fs::write(root.join("page.html"), "<p>page</p>\n").unwrap();
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("link")).unwrap();
    let root = root.to_str().unwrap().to_string();
    (dir, root)
}

fn start_http(extra: &[&str]) -> (TempPath, Example) {
    let (dir, root) = http_root();
    let mut args = vec!["--addr", "127.0.0.1:0", "--root", &root];
    args.extend_from_slice(extra);
    let http = Example::start("http", &args);
    assert!(http.url.starts_with("http://127.0.0.1:"), "{}", http.url);
    (dir, http)
}

/// A response as `curl -i` shows it: status, lowercase header names, body.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

fn parse_response(text: &str) -> Response {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Response { status, headers, body: body.to_string() }
}

fn curl(args: &[&str]) -> Response {
    let mut all = vec!["curl", "-sS", "-i", "--max-time", "10"];
    all.extend_from_slice(args);
    parse_response(&client(&all, b""))
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn curl_get_and_head() {
    require("curl", "curl");
    real_client_test(|| {
        let (_dir, http) = start_http(&[]);

        let file = curl(&[&format!("{}/hello.txt", http.url)]);
        assert_eq!(file.status, 200);
        assert_eq!(file.body, HELLO);
        assert_eq!(file.headers["content-length"], HELLO.len().to_string());
        assert_eq!(file.headers["content-type"], "text/plain; charset=utf-8");
        assert!(file.headers["date"].ends_with(" GMT"), "{:?}", file.headers["date"]);

        let head = curl(&["-I", &format!("{}/hello.txt", http.url)]);
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["content-length"], HELLO.len().to_string(), "HEAD tells the length of the GET body");
        assert_eq!(head.body, "", "HEAD has no body");

        let page = curl(&[&format!("{}/page.html", http.url)]);
        assert_eq!((page.status, page.headers["content-type"].as_str()), (200, "text/html; charset=utf-8"));
        let index = curl(&[&format!("{}/", http.url)]);
        assert!(index.status == 200 && index.body.contains("<html>"), "{} {:?}", index.status, index.body);
        let health = curl(&[&format!("{}/health", http.url)]);
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        let missing = curl(&[&format!("{}/missing.txt", http.url)]);
        assert_eq!(missing.status, 404);
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn curl_reuses_the_connection() {
    require("curl", "curl");
    real_client_test(|| {
        let (_dir, http) = start_http(&[]);
        let (a, b) = (format!("{}/hello.txt", http.url), format!("{}/health", http.url));
        // One line per transfer: a new connection for the first, none for the second.
        let out = client(
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-w",
                "%{num_connects}\n",
                &a,
                &b,
            ],
            b"",
        );
        let connects: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(connects, [1, 0], "two requests should share one connection: {out:?}");

        // HTTP/1.0 closes unless keep-alive is asked for; HTTP/1.1 closes when asked to.
        let http10 = client(
            &[
                "curl",
                "-sS",
                "-0",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-w",
                "%{num_connects}\n",
                &a,
                &b,
            ],
            b"",
        );
        assert_eq!(http10, "1\n1\n", "HTTP/1.0 without keep-alive");
        let asked = curl(&["-0", "-H", "Connection: keep-alive", &b]);
        assert_eq!(asked.headers["connection"], "keep-alive");
        let close = curl(&["-H", "Connection: close", &b]);
        assert_eq!((close.status, close.headers["connection"].as_str()), (200, "close"));
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn curl_cannot_leave_the_root() {
    require("curl", "curl");
    real_client_test(|| {
        let (_dir, http) = start_http(&[]);
        for path in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/.%2e/secret.txt",
            "/..%2fsecret.txt",
            "/hello.txt/../../secret.txt",
            "/../../../../../../etc/passwd",
            "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/link",
        ] {
            let response = curl(&["--path-as-is", &format!("{}{path}", http.url)]);
            assert!([400, 403, 404].contains(&response.status), "{path}: status {}", response.status);
            assert!(
                !response.body.contains("secret") && !response.body.contains("root:"),
                "{path} leaked {:?}",
                response.body
            );
        }
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn curl_gets_405_414_431_and_400() {
    require("curl", "curl");
    require("nc", "netcat-openbsd");
    real_client_test(|| {
        let (_dir, http) = start_http(&[]);
        for method in ["POST", "PUT", "DELETE"] {
            let response = curl(&["-X", method, "-d", "data", &format!("{}/hello.txt", http.url)]);
            assert_eq!(response.status, 405, "{method}");
            assert_eq!(response.headers["allow"], "GET, HEAD", "{method}");
        }
        let long_url = format!("{}/{}", http.url, "a".repeat(9000));
        assert_eq!(curl(&[&long_url]).status, 414);
        let big_header = format!("X-Big: {}", "b".repeat(9000));
        assert_eq!(curl(&["-H", &big_header, &format!("{}/", http.url)]).status, 431);
        let many: Vec<String> = (0..200).map(|i| format!("X-H{i}: {}", "c".repeat(200))).collect();
        let mut args: Vec<&str> = many.iter().flat_map(|h| ["-H", h.as_str()]).collect();
        let root = format!("{}/", http.url);
        args.push(&root);
        assert_eq!(curl(&args).status, 431, "too many headers");

        // Malformed requests, as only a raw client sends them.
        for request in
            ["GARBAGE\r\n\r\n", "GET /\r\n\r\n", "GET / HTTP/1.1\r\nno colon\r\n\r\n", "GET / HTTP/1.1\r\n\r\n"]
        {
            let reply = client(&["nc", "-N", "-w", "10", "127.0.0.1", &http.port()], request.as_bytes());
            assert!(reply.starts_with("HTTP/1.1 400 "), "{request:?} got {reply:?}");
        }
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn prometheus_parses_the_http_examples_metrics() {
    require("python3", "python3");
    real_client_test(|| {
        let (_dir, http) = start_http(&[]);
        // A few requests first, then /metrics read by Prometheus's own Python parser.
        let script = r#"
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
port = sys.argv[1]
for path in ["/health", "/hello.txt", "/health"]:
    urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read()
r = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
print("content-type", r.headers["Content-Type"])
for family in text_string_to_metric_families(r.read().decode()):
    samples = {s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value for s in family.samples}
    if family.type == "histogram":
        print(family.name, family.type, samples[family.name + "_count"], samples[family.name + "_bucket{le=+Inf}"], len(samples) - 2)
    else:
        print(family.name, family.type, next(iter(samples.values())))
"#;
        let out = client(&["python3", "-c", script, &http.port()], b"");
        let value = |name: &str| -> Vec<String> {
            out.lines()
                .find(|line| line.split(' ').next() == Some(name))
                .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
                .split(' ')
                .skip(1)
                .map(str::to_string)
                .collect()
        };
        assert_eq!(value("content-type"), ["text/plain;", "version=0.0.4"], "{out}");
        // Three requests on three connections before /metrics was read.
        let number = |text: &str| text.parse::<f64>().unwrap_or_else(|_| panic!("{text:?} in:\n{out}"));
        assert_eq!(value("http_requests_finished")[0], "counter", "{out}");
        assert_eq!(number(&value("http_requests_finished")[1]), 3.0, "{out}");
        assert_eq!(value("http_connections_accepted")[0], "counter", "{out}");
        assert!(number(&value("http_connections_accepted")[1]) >= 4.0, "{out}");
        assert_eq!(value("http_workers_busy")[0], "gauge", "{out}");
        assert_eq!(number(&value("http_workers_busy")[1]), 1.0, "the /metrics request itself: {out}");
        assert!(number(&value("http_received_bytes")[1]) > 0.0, "{out}");
        for histogram in ["http_queue_wait_seconds", "http_exchange_duration_seconds"] {
            let fields = value(histogram);
            assert_eq!(fields[0], "histogram", "{out}");
            assert_eq!(number(&fields[1]), number(&fields[2]), "count = the +Inf bucket: {out}");
            assert!(number(&fields[1]) >= 3.0, "{histogram}: {out}");
            assert_eq!(fields[3], "17", "16 bounds and +Inf, then sum: {out}");
        }
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn python_http_client_keeps_the_connection() {
    require("python3", "python3");
    real_client_test(|| {
        let (_dir, http) = start_http(&["--timeout", "1"]);
        let script = r#"
import email.utils, http.client, socket, sys, time
port = int(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
sock = None
for path in ["/hello.txt", "/health", "/", "/missing"]:
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    sock = sock or conn.sock
    print(path, r.status, len(body), r.getheader("Content-Type"), conn.sock is sock)
date = email.utils.parsedate_to_datetime(r.getheader("Date"))
print("date-skew-ok", abs(date.timestamp() - time.time()) < 300)
# An idle connection is closed after the server's --timeout (1 s here).
s = socket.create_connection(("127.0.0.1", port), timeout=10)
start = time.monotonic()
print("idle-closed", s.recv(1) == b"", time.monotonic() - start < 8)
"#;
        let out = client(&["python3", "-c", script, &http.port()], b"");
        let expected = [
            format!("/hello.txt 200 {} text/plain; charset=utf-8 True", HELLO.len()),
            "/health 200 3 text/plain; charset=utf-8 True".to_string(),
        ];
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], expected, "{out}");
        assert!(lines[2].starts_with("/ 200 ") && lines[2].ends_with("text/html; charset=utf-8 True"), "{out}");
        assert!(
            lines[3].starts_with("/missing 404 ") && lines[3].ends_with(" True"),
            "a 404 keeps the connection: {out}"
        );
        assert_eq!(lines[4..], ["date-skew-ok True", "idle-closed True True"], "{out}");
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn python_slow_request_head_is_cut() {
    require("python3", "python3");
    real_client_test(|| {
        // Each byte comes well within the 1 s read timeout, so only the deadline on the
        // whole head (twice --timeout) can end this; without it the client would go on 15 s.
        let (_dir, http) = start_http(&["--timeout", "1"]);
        let script = r#"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
s.settimeout(0.2)
start, reply = time.monotonic(), b""
while time.monotonic() - start < 15:
    try:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    except socket.timeout:
        try:
            s.sendall(b"a")
        except OSError:
            break
    except OSError:
        break
print("cut", time.monotonic() - start < 10, repr(reply))
"#;
        let out = client(&["python3", "-c", script, &http.port()], b"");
        assert_eq!(out, "cut True b''\n", "a trickled request head must be closed without a response");
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn curl_gets_503_beyond_max_connections() {
    require("curl", "curl");
    real_client_test(|| {
        let (_dir, http) = start_http(&["--max-connections", "1", "--timeout", "30"]);
        let url = format!("{}/health", http.url);

        // A kept-alive connection, answered once so it is surely being served, holds the
        // only slot until it closes.
        let mut held = support::connect(http.url.strip_prefix("http://").unwrap().parse().unwrap());
        held.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reply = Vec::new();
        let mut chunk = [0; 1024];
        while !reply.ends_with(b"\r\n\r\nok\n") {
            let n = held.read(&mut chunk).expect("the held connection's response");
            assert!(n > 0, "the held connection closed: {:?}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&chunk[..n]);
        }

        let busy = curl(&[&url]);
        assert_eq!(busy.status, 503, "{}", busy.body);
        assert_eq!(busy.headers["connection"], "close");
        assert_eq!(busy.body, "503 Service Unavailable\n");

        // The slot frees once the held client leaves.
        drop(held);
        support::wait_until(TIMEOUT, "a 200 after the held connection closed", || curl(&[&url]).status == 200);
    });
}

// ---------------------------------------------------------------------------------------
// kv
// ---------------------------------------------------------------------------------------

/// Runs `redis-cli --no-raw -p PORT ARGS...`; its output.
fn redis(kv: &Example, args: &[&str]) -> String {
    let port = kv.port();
    let mut all = vec!["redis-cli", "--no-raw", "-p", &port];
    all.extend_from_slice(args);
    client(&all, b"").trim_end().to_string()
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn redis_cli_commands() {
    require("redis-cli", "redis-tools");
    real_client_test(|| {
        let kv = Example::start("kv", &["--addr", "127.0.0.1:0"]);
        let cases: &[(&[&str], &str)] = &[
            (&["PING"], "PONG"),
            (&["ping", "hi there"], "\"hi there\""),
            (&["ECHO", "x y"], "\"x y\""),
            (&["GET", "k"], "(nil)"),
            (&["SET", "k", "v1"], "OK"),
            (&["GET", "k"], "\"v1\""),
            (&["EXISTS", "k", "k", "nope"], "(integer) 2"),
            (&["INCR", "k"], "(error) ERR value is not an integer or out of range"),
            (&["INCR", "n"], "(integer) 1"),
            (&["INCR", "n"], "(integer) 2"),
            (&["SET", "n", "9223372036854775807"], "OK"),
            (&["INCR", "n"], "(error) ERR increment or decrement would overflow"),
            (&["DEL", "k", "n", "nope"], "(integer) 2"),
            (&["GET", "k"], "(nil)"),
            (&["SET", "t", "v", "EX", "100"], "OK"),
            (&["GET", "t"], "\"v\""),
            (&["SET", "t", "v", "EX", "0"], "(error) ERR invalid expire time in 'set' command"),
            (&["SET", "t", "v", "NX"], "(error) ERR syntax error"),
            (&["GET"], "(error) ERR wrong number of arguments for 'get' command"),
            (&["FLUSHALL"], "(error) ERR unknown command 'FLUSHALL'"),
            (&["COMMAND"], "(empty array)"),
            (&["CONFIG", "GET", "appendonly"], "1) \"appendonly\"\n2) \"no\""),
            (&["QUIT"], "OK"),
        ];
        for (args, expected) in cases {
            assert_eq!(redis(&kv, args), *expected, "redis-cli {args:?}");
        }
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn redis_cli_pipelined() {
    require("redis-cli", "redis-tools");
    require("nc", "netcat-openbsd");
    real_client_test(|| {
        let kv = Example::start("kv", &["--addr", "127.0.0.1:0"]);
        let port = kv.port();

        // --pipe sends everything at once, then counts the replies.
        let mut commands = Vec::new();
        for i in 0..2000 {
            let (key, value) = (format!("key:{i}"), format!("value {i}"));
            write!(commands, "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n", key.len(), value.len()).unwrap();
            commands.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n");
        }
        let out = client(&["redis-cli", "-p", &port, "--pipe"], &commands);
        assert!(out.contains("errors: 0, replies: 4000"), "{out}");
        assert_eq!(redis(&kv, &["GET", "counter"]), "\"2000\"");
        assert_eq!(redis(&kv, &["GET", "key:1999"]), "\"value 1999\"");

        // Several commands on redis-cli's stdin, answered in order.
        let out = client(&["redis-cli", "--no-raw", "-p", &port], b"SET a 1\nINCR a\nGET a\nNOSUCH\nDEL a\n");
        assert_eq!(out, "OK\n(integer) 2\n\"2\"\n(error) ERR unknown command 'NOSUCH'\n(integer) 1\n");

        // Inline and RESP requests mixed in one write, as nc sends them.
        let out = client(
            &["nc", "-N", "-w", "10", "127.0.0.1", &port],
            b"PING\r\nECHO hi\r\n*1\r\n$4\r\nPING\r\nGET a\r\nQUIT\r\n",
        );
        assert_eq!(out, "+PONG\r\n$2\r\nhi\r\n+PONG\r\n$-1\r\n+OK\r\n");
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn kv_protocol_errors_close_the_connection() {
    require("nc", "netcat-openbsd");
    real_client_test(|| {
        let kv = Example::start("kv", &["--addr", "127.0.0.1:0"]);
        let long_line = format!("{}\r\nPING\r\n", "a".repeat(70_000));
        let cases: [(&[u8], &str); 4] = [
            (b"*1\r\n$abc\r\nPING\r\n", "invalid bulk length"),
            (b"*x\r\nPING\r\n", "invalid multibulk length"),
            (b"*1\r\n+PING\r\nPING\r\n", "expected '$'"),
            (long_line.as_bytes(), "too big inline request"),
        ];
        for (request, message) in cases {
            // The PING after the bad request is never answered: the connection was closed.
            let out = client(&["nc", "-N", "-w", "10", "127.0.0.1", &kv.port()], request);
            assert_eq!(
                out,
                format!("-ERR Protocol error: {message}\r\n"),
                "{:?}",
                String::from_utf8_lossy(&request[..20])
            );
        }
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn sigterm_stops_http_and_kv() {
    require("curl", "curl");
    require("redis-cli", "redis-tools");
    require("kill", "procps");
    real_client_test(|| {
        let (_dir, mut http) = start_http(&[]);
        assert_eq!(curl(&[&format!("{}/health", http.url)]).status, 200);
        assert!(http.terminate().success(), "http should exit 0 on SIGTERM");
        let mut kv = Example::start("kv", &["--addr", "127.0.0.1:0"]);
        assert_eq!(redis(&kv, &["PING"]), "PONG");
        assert!(kv.terminate().success(), "kv should exit 0 on SIGTERM");
    });
}

// ---------------------------------------------------------------------------------------
// echo
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn nc_and_socat_against_echo() {
    require("nc", "netcat-openbsd");
    require("socat", "socat");
    real_client_test(|| {
        let tcp = Example::start("echo", &["--addr", "127.0.0.1:0"]);
        let addr = tcp.url.strip_prefix("tcp://").expect("tcp:// URL").to_string();
        assert_eq!(client(&["nc", "-N", "-w", "10", "127.0.0.1", &tcp.port()], b"hello tcp\n"), "hello tcp\n");
        let big: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let out = run(Command::new("socat").args(["-t", "10", "-", &format!("TCP:{addr}")]), &big, TOOL_LIMIT);
        assert!(out.ok && out.stdout.as_bytes() == big, "socat TCP echoed {} of {} bytes", out.stdout.len(), big.len());

        let udp = Example::start("echo", &["--proto", "udp", "--addr", "127.0.0.1:0"]);
        assert_eq!(client(&["nc", "-u", "-w", "2", "127.0.0.1", &udp.port()], b"hello udp"), "hello udp");

        let path = temp_socket_path("real-unix");
        let path_text = path.to_str().unwrap();
        let _unix = Example::start("echo", &["--proto", "unix", "--addr", path_text]);
        assert_eq!(client(&["nc", "-N", "-w", "10", "-U", path_text], b"hello unix\n"), "hello unix\n");
        let socat = client(&["socat", "-t", "10", "-", &format!("UNIX-CONNECT:{path_text}")], b"hello socat\n");
        assert_eq!(socat, "hello socat\n");
    });
}

// ---------------------------------------------------------------------------------------
// Through a FaultProxy (the `retry` example's faults, met by real clients)
// ---------------------------------------------------------------------------------------

/// A proxy in front of the example's `IP:PORT` (from its `scheme://IP:PORT` URL).
fn proxy_in_front(example: &Example) -> FaultProxy {
    let (_, addr) = example.url.split_once("://").expect("a URL with a scheme");
    FaultProxy::tcp(addr).expect("the fault proxy starts")
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn curl_through_a_proxy_with_latency() {
    require("curl", "curl");
    real_client_test(|| {
        let (_dir, http) = start_http(&[]);
        let proxy = proxy_in_front(&http);
        let latency = Duration::from_millis(400);
        proxy.add(Fault::latency(latency, Duration::ZERO)).unwrap();
        let url = format!("http://{}/hello.txt", proxy.addr());
        let out = client(&["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code} %{time_total}\n", &url], b"");
        let (body, figures) = out.split_once('\n').unwrap_or_else(|| panic!("curl printed {out:?}"));
        assert_eq!(format!("{body}\n"), HELLO);
        let (code, total) = figures.trim().split_once(' ').unwrap_or_else(|| panic!("curl printed {out:?}"));
        assert_eq!(code, "200");
        let total: f64 = total.parse().unwrap_or_else(|_| panic!("time_total {total:?}"));
        assert!(total >= latency.as_secs_f64(), "curl's time_total {total} s, under the {latency:?} latency");
        eprintln!("curl through {latency:?} of latency: time_total {total} s");
    });
}

#[test]
#[ignore = "drives the examples with curl, redis-cli, socat and nc: run by .ci/real-clients, which installs them"]
fn redis_cli_through_a_proxy_that_resets() {
    require("redis-cli", "redis-tools");
    real_client_test(|| {
        let kv = Example::start("kv", &["--addr", "127.0.0.1:0"]);
        assert_eq!(redis(&kv, &["SET", "greeting", "hello"]), "OK");
        let proxy = proxy_in_front(&kv);
        // `$5\r\nhello\r\n` is 11 bytes: the reset comes in the middle of the reply.
        proxy.add(Fault::reset_after_bytes(4)).unwrap();
        let port = proxy.addr().port().to_string();
        let out = run(Command::new("redis-cli").args(["--no-raw", "-p", &port, "GET", "greeting"]), b"", TOOL_LIMIT);
        eprintln!("redis-cli through the reset: stdout {:?}, stderr {:?}", out.stdout, out.stderr);
        assert!(!out.ok, "redis-cli should fail on a reset; stdout: {:?}", out.stdout);
        let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
        assert!(said.contains("connection reset"), "redis-cli says what went wrong: {said:?}");
        assert!(!out.stdout.contains("\"hello\""), "the value was cut off: {:?}", out.stdout);
        assert_eq!(proxy.connections(), 1);
        // The server lost one connection, not its service: the next client is served.
        assert_eq!(redis(&kv, &["GET", "greeting"]), "\"hello\"");
        assert_eq!(redis(&kv, &["PING"]), "PONG");
    });
}
