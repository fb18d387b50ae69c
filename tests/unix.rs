//! Unix sockets, in the temp directory: datagram truncation and replies, a socket file
//! that lives as long as the server, live and busy paths (`AddrInUse`), stale files
//! replaced, paths that are not sockets kept, and sockets the user owns.
//!
//! Unix only: Unix sockets.
#![cfg(unix)]

mod support;

use std::fs;
use std::io;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::thread;
use std::time::Duration;

use socketserver::{Error, UnixDatagramServer, UnixStreamServer};
use support::{
    bounded, datagram_commands, echo_datagram, echo_stream, is_socket_file, is_timeout, join_within, pattern,
    stop_background, temp_socket_path, unix_dgram_client, unix_dgram_exchange, unix_echo, TempPath, LIMIT,
    NEGATIVE_WAIT, TIMEOUT,
};

#[test]
fn unix_datagram_truncates_and_replies_only_when_asked() {
    bounded(LIMIT, || {
        let path = temp_socket_path("udt");
        let _cleanup = TempPath::of(path.clone());
        let server = UnixDatagramServer::builder(&path).max_packet_size(100).bind(datagram_commands).unwrap();
        let background = server.serve_in_background().unwrap();
        let (client, _client_path) = unix_dgram_client("udtc");
        let message = pattern(1000);
        let reply = unix_dgram_exchange(&client, &path, &message);
        assert!(reply == message[..100], "expected the first 100 bytes, got {} bytes", reply.len());
        let reply = unix_dgram_exchange(&client, &path, b"");
        assert_eq!(reply, b"", "a 0-byte datagram must get a 0-byte reply");
        // No reply to "silent": the next datagram received is the reply to "next".
        client.send_to(b"silent", &path).unwrap();
        client.set_read_timeout(Some(NEGATIVE_WAIT)).unwrap();
        let mut buf = [0; 64];
        match client.recv_from(&mut buf) {
            Err(e) if is_timeout(&e) => {}
            Ok((n, _)) => panic!("got a {n}-byte datagram {:?}; expected none", &buf[..n]),
            Err(e) => panic!("unexpected error: {e}"),
        }
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(unix_dgram_exchange(&client, &path, b"next"), b"next");
        // Extra sends through the socket reach a Unix client too.
        client.send_to(b"extra", &path).unwrap();
        for expected in [&b"extra-1"[..], b"extra-2", b"reply"] {
            let (n, _) = client.recv_from(&mut buf).expect("a datagram from the handler");
            assert_eq!(&buf[..n], expected);
        }
        stop_background(background);
    });
}

#[test]
fn unix_stream_socket_file_lives_as_long_as_the_server() {
    bounded(LIMIT, || {
        let path = temp_socket_path("usl");
        let _cleanup = TempPath::of(path.clone());

        // stop()
        let server = UnixStreamServer::bind(&path, echo_stream).unwrap();
        assert_eq!(server.local_addr(), path);
        assert!(is_socket_file(&path), "the socket file must exist once bound");
        let background = server.serve_in_background().unwrap();
        assert_eq!(unix_echo(&path, b"hi"), b"hi");
        assert!(is_socket_file(&path), "the socket file must exist while serving");
        stop_background(background);
        assert!(!path.exists(), "stop() must remove the socket file");

        // close(), without ever serving
        let server = UnixStreamServer::bind(&path, echo_stream).unwrap();
        assert!(is_socket_file(&path));
        server.close();
        assert!(!path.exists(), "close() must remove the socket file");
        drop(server);

        // dropping the server
        let server = UnixStreamServer::bind(&path, echo_stream).unwrap();
        assert!(is_socket_file(&path));
        drop(server);
        assert!(!path.exists(), "dropping the server must remove the socket file");

        // dropping the background guard
        let background = UnixStreamServer::bind(&path, echo_stream).unwrap().serve_in_background().unwrap();
        assert_eq!(unix_echo(&path, b"hi"), b"hi");
        drop(background);
        assert!(!path.exists(), "dropping the background server must remove the socket file");
    });
}

#[test]
fn unix_datagram_socket_file_lives_as_long_as_the_server() {
    bounded(LIMIT, || {
        let path = temp_socket_path("udl");
        let _cleanup = TempPath::of(path.clone());
        let (client, _client_path) = unix_dgram_client("udlc");

        let server = UnixDatagramServer::bind(&path, echo_datagram).unwrap();
        assert_eq!(server.local_addr(), path);
        assert!(is_socket_file(&path), "the socket file must exist once bound");
        let background = server.serve_in_background().unwrap();
        assert_eq!(unix_dgram_exchange(&client, &path, b"hi"), b"hi");
        assert!(is_socket_file(&path), "the socket file must exist while serving");
        stop_background(background);
        assert!(!path.exists(), "stop() must remove the socket file");

        let server = UnixDatagramServer::bind(&path, echo_datagram).unwrap();
        server.close();
        assert!(!path.exists(), "close() must remove the socket file");
        drop(server);

        let server = UnixDatagramServer::bind(&path, echo_datagram).unwrap();
        drop(server);
        assert!(!path.exists(), "dropping the server must remove the socket file");

        let background = UnixDatagramServer::bind(&path, echo_datagram).unwrap().serve_in_background().unwrap();
        assert_eq!(unix_dgram_exchange(&client, &path, b"hi"), b"hi");
        drop(background);
        assert!(!path.exists(), "dropping the background server must remove the socket file");
    });
}

#[test]
fn unix_stream_live_path_is_addr_in_use_and_first_server_keeps_serving() {
    bounded(LIMIT, || {
        let path = temp_socket_path("usa");
        let _cleanup = TempPath::of(path.clone());
        let first = UnixStreamServer::bind(&path, echo_stream).unwrap().serve_in_background().unwrap();
        assert_eq!(unix_echo(&path, b"one"), b"one");

        match UnixStreamServer::bind(&path, echo_stream) {
            Err(e @ Error::AddrInUse { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()), "error must name the path: {e}");
                assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            }
            Err(e) => panic!("expected Error::AddrInUse, got {e:?}"),
            Ok(_) => panic!("a second server bound a live path"),
        }
        assert!(is_socket_file(&path), "the failed bind must leave the live socket file alone");
        assert_eq!(unix_echo(&path, b"two"), b"two", "the first server must keep serving");
        stop_background(first);
        assert!(!path.exists());
    });
}

#[test]
fn unix_datagram_live_path_is_addr_in_use_and_first_server_keeps_serving() {
    bounded(LIMIT, || {
        let path = temp_socket_path("uda");
        let _cleanup = TempPath::of(path.clone());
        let (client, _client_path) = unix_dgram_client("udac");
        let first = UnixDatagramServer::bind(&path, echo_datagram).unwrap().serve_in_background().unwrap();
        assert_eq!(unix_dgram_exchange(&client, &path, b"one"), b"one");

        match UnixDatagramServer::bind(&path, echo_datagram) {
            Err(e @ Error::AddrInUse { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()), "error must name the path: {e}");
            }
            Err(e) => panic!("expected Error::AddrInUse, got {e:?}"),
            Ok(_) => panic!("a second server bound a live path"),
        }
        // A stream server at a live datagram path is refused too.
        match UnixStreamServer::bind(&path, echo_stream) {
            Err(Error::AddrInUse { .. }) => {}
            Err(e) => panic!("expected Error::AddrInUse, got {e:?}"),
            Ok(_) => panic!("a stream server bound a live datagram path"),
        }
        assert!(is_socket_file(&path), "the failed bind must leave the live socket file alone");
        assert_eq!(unix_dgram_exchange(&client, &path, b"two"), b"two", "the first server must keep serving");
        stop_background(first);
        assert!(!path.exists());
    });
}

#[test]
fn unix_stream_bind_at_a_live_but_busy_path_does_not_hang() {
    // A live server whose accept queue is full (it is busy, or not serving yet) still
    // answers at the path; a second bind there must report AddrInUse, not block.
    bounded(LIMIT, || {
        let path = temp_socket_path("usb");
        let _cleanup = TempPath::of(path.clone());
        let first = UnixStreamServer::builder(&path).backlog(1).bind(echo_stream).unwrap();
        // Fill the accept queue with non-blocking connects until the kernel refuses more.
        let mut queued = Vec::new();
        loop {
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
            socket.set_nonblocking(true).unwrap();
            match socket.connect(&socket2::SockAddr::unix(&path).unwrap()) {
                Ok(()) => queued.push(socket),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the accept queue: {e}"),
            }
            assert!(queued.len() < 1000, "the accept queue never filled");
        }
        let second_path = path.clone();
        let second = thread::spawn(move || UnixStreamServer::bind(&second_path, echo_stream).map(drop));
        let result = join_within(second, Duration::from_secs(5));
        match result {
            Err(Error::AddrInUse { .. }) => {}
            Err(e) => panic!("expected Error::AddrInUse, got {e:?}"),
            Ok(()) => panic!("a second server bound a live path"),
        }
        assert!(is_socket_file(&path));
        drop(queued);
        drop(first);
    });
}

#[test]
fn unix_stream_stale_socket_file_is_replaced() {
    bounded(LIMIT, || {
        let path = temp_socket_path("uss");
        let _cleanup = TempPath::of(path.clone());
        drop(UnixListener::bind(&path).unwrap()); // std leaves the file behind
        assert!(is_socket_file(&path), "setup: the stale socket file must exist");
        let server = UnixStreamServer::bind(&path, echo_stream).expect("a stale socket file must be replaced");
        let background = server.serve_in_background().unwrap();
        assert_eq!(unix_echo(&path, b"fresh"), b"fresh");
        stop_background(background);
        assert!(!path.exists());
    });
}

#[test]
fn unix_datagram_stale_socket_file_is_replaced() {
    bounded(LIMIT, || {
        let path = temp_socket_path("uds");
        let _cleanup = TempPath::of(path.clone());
        drop(UnixDatagram::bind(&path).unwrap());
        assert!(is_socket_file(&path), "setup: the stale socket file must exist");
        let server = UnixDatagramServer::bind(&path, echo_datagram).expect("a stale socket file must be replaced");
        let background = server.serve_in_background().unwrap();
        let (client, _client_path) = unix_dgram_client("udsc");
        assert_eq!(unix_dgram_exchange(&client, &path, b"fresh"), b"fresh");
        stop_background(background);
        assert!(!path.exists());
    });
}

/// Binding at `path` must fail with `Error::Bind` naming it.
fn expect_bind_error<S>(result: socketserver::Result<S>, path: &Path, what: &str) {
    match result {
        Err(e @ Error::Bind { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{what}: error must name the path: {text}");
            if let Error::Bind { addr, .. } = &e {
                assert_eq!(addr, &path.display().to_string(), "{what}");
            }
        }
        Err(e) => panic!("{what}: expected Error::Bind, got {e:?}"),
        Ok(_) => panic!("{what}: bound over something that is not a socket"),
    }
}

#[test]
fn unix_path_that_is_not_a_socket_is_a_bind_error_and_kept() {
    bounded(LIMIT, || {
        // A regular file.
        let file = temp_socket_path("unf");
        let _file_cleanup = TempPath::of(file.clone());
        fs::write(&file, b"precious").unwrap();
        expect_bind_error(UnixStreamServer::bind(&file, echo_stream), &file, "stream server on a regular file");
        expect_bind_error(UnixDatagramServer::bind(&file, echo_datagram), &file, "datagram server on a regular file");
        assert_eq!(fs::read(&file).unwrap(), b"precious", "the regular file must not be touched");

        // A directory.
        let dir = temp_socket_path("und");
        let _dir_cleanup = TempPath::of(dir.clone());
        fs::create_dir(&dir).unwrap();
        expect_bind_error(UnixStreamServer::bind(&dir, echo_stream), &dir, "stream server on a directory");
        expect_bind_error(UnixDatagramServer::bind(&dir, echo_datagram), &dir, "datagram server on a directory");
        assert!(fs::metadata(&dir).unwrap().is_dir(), "the directory must not be touched");
    });
}

#[test]
fn unix_stream_from_listener_leaves_the_users_file() {
    bounded(LIMIT, || {
        let path = temp_socket_path("usf");
        let _cleanup = TempPath::of(path.clone());
        let listener = UnixListener::bind(&path).unwrap();
        let server = UnixStreamServer::from_listener(listener).bind(echo_stream).unwrap();
        assert_eq!(server.local_addr(), path);
        let background = server.serve_in_background().unwrap();
        assert_eq!(unix_echo(&path, b"mine"), b"mine");
        stop_background(background);
        assert!(is_socket_file(&path), "closing a server built from_listener must not remove the user's file");
    });
}

#[test]
fn unix_datagram_from_socket_leaves_the_users_file() {
    bounded(LIMIT, || {
        let path = temp_socket_path("udf");
        let _cleanup = TempPath::of(path.clone());
        let socket = UnixDatagram::bind(&path).unwrap();
        let server = UnixDatagramServer::from_socket(socket).bind(echo_datagram).unwrap();
        let background = server.serve_in_background().unwrap();
        let (client, _client_path) = unix_dgram_client("udfc");
        assert_eq!(unix_dgram_exchange(&client, &path, b"mine"), b"mine");
        stop_background(background);
        assert!(is_socket_file(&path), "closing a server built from_socket must not remove the user's file");
    });
}

/// A client that sends and never reads fills its queue (ten datagrams on Linux); the
/// replies after that find no room. Each waits for room, at most 1 s, then fails and is
/// reported; the wait pauses rather than spins (a Unix datagram socket reports room to
/// a poller however full its peer's queue is), and the server serves the next client.
#[cfg(target_os = "linux")]
#[test]
fn a_reply_to_a_client_that_does_not_read_waits_without_spinning_then_fails() {
    support::bounded_alone(LIMIT, || {
        let path = temp_socket_path("deaf");
        let _cleanup = TempPath::of(path.clone());
        let (errors_tx, errors) = std::sync::mpsc::channel();
        let errors_tx = std::sync::Mutex::new(errors_tx);
        let server = UnixDatagramServer::builder(&path)
            .handle_error(move |e, _| {
                let _ = errors_tx.lock().unwrap().send(e.to_string());
            })
            .bind(echo_datagram)
            .unwrap();
        let background = server.serve_in_background().unwrap();
        let (deaf, _deaf_path) = unix_dgram_client("deafc");
        let ticks_before = support::linux::cpu_ticks(std::process::id());
        for n in 0..14u8 {
            deaf.send_to(&[n], &path).unwrap();
        }
        let first = errors.recv_timeout(TIMEOUT).expect("a reply that found no room is reported");
        assert!(first.contains("respond"), "reported as the reply's failure: {first}");
        let ticks = support::linux::cpu_ticks(std::process::id()) - ticks_before;
        assert!(ticks < 50, "the wait for room used {ticks}0 ms of CPU in about a second: it spun");
        // Another client is served meanwhile or soon after.
        let (client, _client_path) = unix_dgram_client("deafok");
        assert_eq!(unix_dgram_exchange(&client, &path, b"still here"), b"still here");
        drop(deaf);
        stop_background(background);
    });
}
