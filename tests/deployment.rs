//! Deployment behind real tools: systemd socket activation through
//! `systemd-socket-activate` (package systemd), and the PROXY protocol headers a real
//! haproxy (package haproxy) sends.
//!
//! The tests are ignored by default because they run those programs; `.ci/deployment`
//! installs them and runs `cargo test --all-features --test deployment -- --ignored
//! --test-threads 1`. A missing program fails its test, naming the package.
//!
//! An activation test runs twice: as the parent, it starts `systemd-socket-activate`,
//! which starts this test binary again, filtered to the same test, with `CHILD` set; the
//! child takes the passed sockets and serves one request, and the parent checks the reply
//! and the child's exit status.
//!
//! Linux only: socket activation (`activation`) is Linux's, and the tools (systemd,
//! haproxy, the examples) are Linux processes.
#![cfg(target_os = "linux")]

mod support;

use std::env;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::activation::ListenFds;
use socketserver::{DatagramRequest, StreamRequest, TcpServer, UdpServer};
use support::process::Guarded;
use support::{bounded, TempPath, TIMEOUT};

/// The deadline of each test.
const LIMIT: Duration = Duration::from_secs(60);
/// Set for the test binary that systemd-socket-activate starts: that run is the server.
const CHILD: &str = "SOCKETSERVER_DEPLOYMENT_CHILD";
/// A free port is found by binding port 0 and closing; another process may take it
/// before the tool binds it, so a test tries this many times.
const ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs systemd-socket-activate (package systemd): run .ci/deployment"]
fn socket_activation_serves_named_tcp_listeners() {
    if env::var_os(CHILD).is_some() {
        return activated_tcp_server();
    }
    bounded(LIMIT, || {
        let dir = TempPath::dir("activation-tcp");
        let (mut activated, mut client) = until_started(|| {
            let (web, admin) = (free_tcp_port(), free_tcp_port());
            let mut activated = activate(
                &dir,
                "socket_activation_serves_named_tcp_listeners",
                &[
                    format!("--listen=127.0.0.1:{web}"),
                    format!("--listen=127.0.0.1:{admin}"),
                    "--fdname=web:admin".to_string(),
                    format!("--setenv=EXPECTED_ADMIN_PORT={admin}"),
                ],
            );
            let client = connect_while_running(SocketAddr::from(([127, 0, 0, 1], web)), &mut activated);
            client.map(|client| (activated, client))
        });
        client.write_all(b"hello").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        let read = client.read_to_string(&mut reply);
        let status = activated.wait(TIMEOUT);
        let output = activated.output();
        assert!(read.is_ok() && status.success(), "reply {read:?}, activated server {status}; its output:\n{output}");
        assert_eq!(reply, "activated: hello", "output:\n{output}");
    });
}

/// The README's command: the http example under `systemd-socket-activate` serves the
/// socket it was passed (and exits cleanly on SIGTERM).
#[test]
#[ignore = "needs systemd-socket-activate (package systemd): run .ci/deployment"]
fn the_http_example_serves_a_passed_socket() {
    let http = support::process::example_binary("http");
    bounded(LIMIT, move || {
        let dir = TempPath::dir("activation-http");
        let (mut activated, mut client) = until_started(|| {
            let port = free_tcp_port();
            let args = [format!("--listen=127.0.0.1:{port}"), http.display().to_string()];
            let mut activated = Process::start("systemd-socket-activate", "systemd", &args, &dir);
            let client = connect_while_running(SocketAddr::from(([127, 0, 0, 1], port)), &mut activated);
            client.map(|client| (activated, client))
        });
        client.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        let read = client.read_to_string(&mut reply);
        assert!(read.is_ok() && reply.starts_with("HTTP/1.1 200 OK\r\n"), "{read:?} {reply:?}\n{}", activated.output());
        let stop = Command::new("kill").args(["-TERM", &activated.child.id().to_string()]).status().unwrap();
        assert!(stop.success());
        let status = activated.wait(TIMEOUT);
        assert!(status.success(), "the http example ended with {status}:\n{}", activated.output());
    });
}

/// The child of `socket_activation_serves_named_tcp_listeners`: systemd-socket-activate
/// passes two listeners, named "web" and "admin".
fn activated_tcp_server() {
    bounded(LIMIT, || {
        assert!(!close_on_exec(3) && !close_on_exec(4), "the descriptors were passed close-on-exec");

        let mut fds = ListenFds::take().expect("ListenFds::take");
        assert_eq!(fds.len(), 2);
        assert_eq!(fds.names(), ["web", "admin"]);
        // The environment is left alone (removing a variable is not thread-safe); a child
        // would ignore the variables, since LISTEN_PID names this process, not the child.
        assert_eq!(env::var("LISTEN_PID").ok(), Some(std::process::id().to_string()));
        assert!(close_on_exec(3) && close_on_exec(4), "take did not set FD_CLOEXEC");
        assert!(ListenFds::take().unwrap().is_empty(), "a second take found the descriptors again");

        // The wrong taker refuses, naming the descriptor, and leaves it for the right one.
        let e = fds.take_udp_socket("admin").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("descriptor 4 (\"admin\") is a listening TCP socket, not a UDP socket"), "{e}");
        let admin = fds.take_tcp_listener("admin").unwrap().expect("the admin listener");
        let admin_port: u16 = env::var("EXPECTED_ADMIN_PORT").unwrap().parse().unwrap();
        assert_eq!(admin.local_addr().unwrap().port(), admin_port);
        assert!(fds.take_tcp_listener("admin").unwrap().is_none(), "a descriptor was taken twice");

        let web = fds.take_tcp_listener(0).unwrap().expect("the web listener");
        let server = TcpServer::from_listener(web)
            .bind_handler(|req: &mut StreamRequest| {
                let mut message = String::new();
                req.reader().read_to_string(&mut message)?;
                write!(req.writer(), "activated: {message}")
            })
            .unwrap();
        assert!(server.handle_request().unwrap(), "no request was handled");
    });
}

#[test]
#[ignore = "needs systemd-socket-activate (package systemd): run .ci/deployment"]
fn socket_activation_serves_a_udp_socket() {
    if env::var_os(CHILD).is_some() {
        return activated_udp_server();
    }
    bounded(LIMIT, || {
        let dir = TempPath::dir("activation-udp");
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let (mut activated, reply) = until_started(|| {
            let port = free_udp_port();
            let options = ["--datagram".to_string(), format!("--listen=127.0.0.1:{port}")];
            let mut activated = activate(&dir, "socket_activation_serves_a_udp_socket", &options);
            // A datagram sent before systemd-socket-activate binds is lost: send until one
            // is answered.
            let deadline = Instant::now() + TIMEOUT;
            let mut buf = [0; 64];
            loop {
                let exited = activated.exited().is_some();
                client.send_to(b"ping", ("127.0.0.1", port)).unwrap();
                match client.recv_from(&mut buf) {
                    Ok((n, _)) => return Some((activated, buf[..n].to_vec())),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) => panic!("recv: {e}"),
                }
                if exited {
                    return None;
                }
                assert!(Instant::now() < deadline, "no reply within {TIMEOUT:?}; output:\n{}", activated.output());
            }
        });
        let status = activated.wait(TIMEOUT);
        let output = activated.output();
        assert!(status.success(), "activated server {status}; its output:\n{output}");
        assert_eq!(String::from_utf8_lossy(&reply), "activated: ping", "output:\n{output}");
    });
}

/// The child of `socket_activation_serves_a_udp_socket`: one UDP socket, no name.
fn activated_udp_server() {
    bounded(LIMIT, || {
        let mut fds = ListenFds::take().expect("ListenFds::take");
        // Without LISTEN_FDNAMES, systemd's default name.
        assert_eq!(fds.names(), ["unknown"]);
        let e = fds.take_tcp_listener(0).unwrap_err();
        assert!(
            e.to_string().contains("descriptor 3 (\"unknown\") is a UDP socket, not a listening TCP socket"),
            "{e}"
        );
        let socket = fds.take_udp_socket(0).unwrap().expect("the UDP socket");
        let server = UdpServer::from_socket(socket)
            .bind_handler(|req: &mut DatagramRequest| {
                let reply = [b"activated: ", req.packet()].concat();
                req.reply().write_all(&reply)
            })
            .unwrap();
        assert!(server.handle_request().unwrap(), "no request was handled");
    });
}

/// Starts this test binary under systemd-socket-activate, filtered to `test`, as the
/// child.
fn activate(dir: &TempDir, test: &str, options: &[String]) -> Process {
    let mut args = options.to_vec();
    args.push(format!("--setenv={CHILD}=1"));
    args.push(env::current_exe().unwrap().into_os_string().into_string().unwrap());
    args.extend(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"].map(String::from));
    Process::start("systemd-socket-activate", "systemd", &args, dir)
}

use support::linux::close_on_exec;

// ---------------------------------------------------------------------------------------
// The PROXY protocol, from haproxy
// ---------------------------------------------------------------------------------------

#[cfg(feature = "proxy-protocol")]
mod proxy_protocol {
    use super::*;
    use socketserver::proxy_protocol::{read_header, ProxyHeader};
    use std::io::{BufRead, BufReader};

    #[test]
    #[ignore = "needs haproxy: run .ci/deployment"]
    fn haproxy_send_proxy_v1_gives_the_client_address() {
        bounded(LIMIT, || {
            let dir = TempPath::dir("haproxy-v1");
            let seen = proxied_hello(&dir, "send-proxy");
            assert!(seen.starts_with(b"PROXY TCP4 "), "not a v1 header: {:?}", String::from_utf8_lossy(&seen));
        });
    }

    #[test]
    #[ignore = "needs haproxy: run .ci/deployment"]
    fn haproxy_send_proxy_v2_with_tlvs_gives_the_client_address() {
        bounded(LIMIT, || {
            let dir = TempPath::dir("haproxy-v2");
            let seen = proxied_hello(&dir, "send-proxy-v2 proxy-v2-options crc32c");
            assert!(seen.starts_with(b"\r\n\r\n\0\r\nQUIT\n\x21\x11"), "not a v2 PROXY TCP4 header: {seen:?}");
            let length = u16::from_be_bytes([seen[14], seen[15]]);
            assert!(length > 12, "haproxy sent no TLV after the 12 address bytes, so none was skipped");
        });
    }

    #[test]
    #[ignore = "needs haproxy: run .ci/deployment"]
    fn haproxy_v2_health_check_is_local() {
        bounded(LIMIT, || {
            let dir = TempPath::dir("haproxy-check");
            let backend = TcpListener::bind("127.0.0.1:0").unwrap();
            // The check waits for "ok" (up to `timeout check`), so the connection stays open
            // until the header is read. An explicit `tcp-check connect` would need `default`
            // to send the PROXY header.
            let checks = "    option tcp-check\n    tcp-check expect string ok\n    timeout check 10s\n";
            let server = format!("{} send-proxy-v2 check inter 2s", backend.local_addr().unwrap());
            let (haproxy, checked) = until_started(|| {
                let mut haproxy = start_haproxy(&dir, free_tcp_port(), &server, checks);
                accept_while_running(&backend, &mut haproxy).map(|checked| (haproxy, checked))
            });
            let mut reader = BufReader::new(Recorder { stream: checked, seen: Vec::new() });
            let header = read_header(&mut reader);
            let seen = &reader.get_ref().seen;
            assert_eq!(header.unwrap(), ProxyHeader::Local, "haproxy sent {seen:?}");
            assert_eq!(seen[12], 0x20, "not a v2 LOCAL header: {seen:?}");
            let answered = reader.get_mut().stream.write_all(b"ok");
            assert!(answered.is_ok(), "{answered:?}; haproxy's output:\n{}", haproxy.output());
        });
    }

    /// The server itself behind haproxy, v1 and v2, trusting haproxy's address only: the
    /// handler sees the real client address, and the proxy's separately.
    #[test]
    #[ignore = "needs haproxy: run .ci/deployment"]
    fn a_proxy_protocol_server_behind_haproxy_sees_the_client() {
        use socketserver::{dispatch::Threading, StreamRequest, TcpServer};
        bounded(LIMIT, || {
            for options in ["send-proxy", "send-proxy-v2"] {
                let dir = TempPath::dir("haproxy-server");
                let server = TcpServer::builder("127.0.0.1:0")
                    .dispatch(Threading::new())
                    // haproxy connects from loopback: the one peer whose headers count.
                    .trusted_proxies(["127.0.0.1".parse::<socketserver::proxy_protocol::IpNet>().unwrap()])
                    .bind_handler(|req: &mut StreamRequest| {
                        let mut line = String::new();
                        req.reader().read_line(&mut line)?;
                        let proxy = req.proxy_addr().map(ToString::to_string).unwrap_or_default();
                        let client = req.client_addr().to_string();
                        write!(req.writer(), "{client} via {proxy}: {line}")
                    })
                    .unwrap();
                let backend = format!("{} {options}", server.local_addr());
                let background = server.serve_in_background().unwrap();
                let (_haproxy, mut client) = until_started(|| {
                    let frontend = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
                    let mut haproxy = start_haproxy(&dir, frontend.port(), &backend, "");
                    let client = connect_while_running(frontend, &mut haproxy)?;
                    Some((haproxy, client))
                });
                client.write_all(b"hello\n").unwrap();
                let mut reply = String::new();
                BufReader::new(&client).read_line(&mut reply).unwrap();
                let (client_part, rest) = reply.split_once(" via ").expect("reply shape");
                assert_eq!(client_part, client.local_addr().unwrap().to_string(), "{options}: {reply:?}");
                assert!(rest.starts_with("127.0.0.1:") && rest.ends_with(": hello\n"), "{options}: {reply:?}");
                drop(client);
                let stats = background.handle().stats();
                assert_eq!((stats.denied, stats.bad_proxy_headers), (0, 0), "{options}: {stats:?}");
                background.stop().unwrap();
            }
        });
    }

    /// Starts haproxy in front of a listener with `server_options` on its server line,
    /// sends "hello\n" through it, reads the PROXY header on the listener's side and
    /// checks it and the bytes after it. Returns the bytes read from the connection.
    fn proxied_hello(dir: &TempDir, server_options: &str) -> Vec<u8> {
        let backend = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("{} {server_options}", backend.local_addr().unwrap());
        let (mut haproxy, mut client, frontend) = until_started(|| {
            let frontend = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
            let mut haproxy = start_haproxy(dir, frontend.port(), &server, "");
            let client = connect_while_running(frontend, &mut haproxy)?;
            Some((haproxy, client, frontend))
        });
        client.write_all(b"hello\n").unwrap();
        let proxied = accept_while_running(&backend, &mut haproxy).expect("haproxy exited");

        let mut reader = BufReader::new(Recorder { stream: proxied, seen: Vec::new() });
        let header = read_header(&mut reader).unwrap();
        let expected = ProxyHeader::Proxied { source: client.local_addr().unwrap(), destination: frontend };
        assert_eq!(header, expected, "haproxy sent {:?}", reader.get_ref().seen);
        // The client's bytes after the header are left for the handler.
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "hello\n");
        reader.into_inner().seen
    }

    /// Runs haproxy in the foreground with one frontend on `port` and one backend server.
    fn start_haproxy(dir: &TempDir, port: u16, server: &str, backend_options: &str) -> Process {
        let config = format!(
            "global\n    maxconn 64\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10s\n    timeout server 10s\n\n\
             frontend front\n    bind 127.0.0.1:{port}\n    default_backend back\n\n\
             backend back\n{backend_options}    server s1 {server}\n"
        );
        let path = dir.join("haproxy.cfg");
        fs::write(&path, config).unwrap();
        Process::start("haproxy", "haproxy", &["-db".into(), "-f".into(), path.to_str().unwrap().into()], dir)
    }

    /// Accepts one connection on `listener` while `process` runs; `None` if it exits first.
    fn accept_while_running(listener: &TcpListener, process: &mut Process) -> Option<TcpStream> {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let exited = process.exited();
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
                    return Some(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
            if let Some(status) = exited {
                eprintln!("{} exited ({status}) before connecting:\n{}", process.program, process.output());
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "no connection from {} after {TIMEOUT:?}:\n{}",
                process.program,
                process.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A reader that keeps a copy of every byte read through it.
    struct Recorder {
        stream: TcpStream,
        seen: Vec<u8>,
    }

    impl Read for Recorder {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.stream.read(buf)?;
            self.seen.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers: processes, ports, waits
// ---------------------------------------------------------------------------------------

/// A program a test started, with its output in a file. Killed and reaped on drop.
struct Process {
    child: Guarded,
    program: &'static str,
    log: PathBuf,
}

impl Process {
    /// Starts `program`; a missing program fails the test, naming its package.
    fn start(program: &'static str, package: &str, args: &[String], dir: &TempPath) -> Process {
        let log = dir.unique(&format!("{program}.log"));
        let out = File::create(&log).unwrap();
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        let hint = format!("install the package {package} (apt-get install {package}), or run .ci/deployment");
        let child = Guarded::spawn_or_hint(&mut command, &hint);
        Process { child, program, log }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.exited()
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the program to exit, failing the test (with its output) after `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {limit:?}; output:\n{}",
                self.program,
                self.output()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A directory for configs and logs, removed on drop.
type TempDir = TempPath;

/// Runs `attempt` until it returns `Some`, at most `ATTEMPTS` times; it returns `None`
/// when the program it started exited before serving (its output is then in the log
/// the panic message names).
fn until_started<T>(mut attempt: impl FnMut() -> Option<T>) -> T {
    for _ in 0..ATTEMPTS {
        if let Some(started) = attempt() {
            return started;
        }
    }
    panic!("the program exited before serving, {ATTEMPTS} times; its output is printed above");
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Connects to `addr` once `process` listens there; `None` if it exits first.
fn connect_while_running(addr: SocketAddr, process: &mut Process) -> Option<TcpStream> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let exited = process.exited();
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(stream) => {
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(TIMEOUT)).unwrap();
                return Some(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => panic!("connect to {addr}: {e}"),
        }
        if let Some(status) = exited {
            eprintln!("{} exited ({status}) before listening on {addr}:\n{}", process.program, process.output());
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "{} not listening on {addr} after {TIMEOUT:?}:\n{}",
            process.program,
            process.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
}
