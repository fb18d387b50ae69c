//! Scripted servers (`testing::ScriptedServer`) over real sockets: each action's effect
//! on a std client, and each way a client can deviate, reported with the step and the
//! first differing byte.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::panic;
use std::time::{Duration, Instant};

use socketserver::testing::{Script, ScriptedServer};
use socketserver::{ByteOrder, Frame};

/// The bound of every client read: a failure, never a hang.
const LIMIT: Duration = Duration::from_secs(10);

fn connect(server: &ScriptedServer) -> TcpStream {
    let client = TcpStream::connect(server.addr()).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    client
}

fn read_line(client: &TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(client).read_line(&mut line).unwrap();
    line
}

fn failures(server: ScriptedServer) -> String {
    server.verify().expect_err("the client deviated").to_string()
}

#[test]
fn a_client_that_follows_the_script_gets_its_replies_and_a_transcript() {
    let script = Script::new().expect_line("HELLO").reply("WELCOME\n").expect(b"bye").reply("ok").close();
    let server = ScriptedServer::tcp([script]).unwrap();
    let mut client = connect(&server);
    client.write_all(b"HELLO\r\n").unwrap();
    assert_eq!(read_line(&client), "WELCOME\n");
    client.write_all(b"bye").unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"ok", "the reply, then the end of the stream (close)");

    let transcript = server.verify().unwrap();
    assert_eq!(transcript.conversations.len(), 1);
    let conversation = &transcript.conversations[0];
    assert_eq!(conversation.client, client.local_addr().unwrap());
    assert_eq!(conversation.received(), b"HELLO\r\nbye");
    assert_eq!(conversation.sent(), b"WELCOME\nok");
    let times: Vec<Duration> = conversation.events.iter().map(|e| e.at).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order: {times:?}");
}

#[test]
fn bytes_that_differ_are_reported_with_the_step_and_the_first_differing_byte() {
    let server = ScriptedServer::tcp([Script::new().expect(b"GET /a\n").reply("never")]).unwrap();
    let mut client = connect(&server);
    client.write_all(b"GET /b\n").unwrap();
    // The server stops the script at the difference: the client gets no reply.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let message = failures(server);
    assert!(message.contains("connection 1, step 1"), "{message}");
    assert!(message.contains(r#"byte 5 is "b" where "a" was expected"#), "{message}");
    assert!(message.contains(r#"received "GET /b\n""#), "{message}");
}

#[test]
fn a_line_that_differs_and_an_early_close_are_reported() {
    let server = ScriptedServer::tcp([Script::new().expect_line("PING"), Script::new().expect(b"12345")]).unwrap();
    let mut first = connect(&server);
    first.write_all(b"PONG\n").unwrap();
    let _ = first.read(&mut [0; 8]);
    let mut second = connect(&server);
    second.write_all(b"12").unwrap();
    second.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = second.read(&mut [0; 8]);
    let message = failures(server);
    assert!(message.contains(r#"expected "PING", received "PONG""#), "{message}");
    assert!(message.contains("connection 2, step 1"), "{message}");
    assert!(message.contains("closed the connection after 2 of 5 byte(s)"), "{message}");
}

#[test]
fn steps_never_reached_fail_unless_allowed() {
    let server = ScriptedServer::tcp([Script::new().expect(b"a").reply("b").expect(b"c")]).unwrap();
    let mut client = connect(&server);
    client.write_all(b"a").unwrap();
    let mut reply = [0; 1];
    client.read_exact(&mut reply).unwrap();
    drop(client);
    // Usually lets the server see the close before the stop; either way the client left
    // between steps 2 and 3, and step 3 was never reached.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let message = failures(server);
    assert!(message.contains("step(s) 3..3 never reached"), "{message}");
    assert!(!message.contains("closed the connection"), "not a deviation of the client's: {message}");

    let server = ScriptedServer::tcp([Script::new().expect(b"a").reply("b").expect(b"c").allow_unused()]).unwrap();
    let mut client = connect(&server);
    client.write_all(b"a").unwrap();
    client.read_exact(&mut reply).unwrap();
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(50));
    server.verify().unwrap();

    // A script whose connection never came.
    let server = ScriptedServer::tcp([Script::new().expect(b"x")]).unwrap();
    let message = failures(server);
    assert!(message.contains("1 of the 1 connection script(s) were never used"), "{message}");
}

#[test]
fn a_reset_fails_the_clients_next_read_with_connection_reset() {
    let server = ScriptedServer::tcp([Script::new().expect_line("hi").reset()]).unwrap();
    let mut client = connect(&server);
    client.write_all(b"hi\n").unwrap();
    let mut buf = [0; 16];
    let read = client.read(&mut buf);
    let kind = read.as_ref().map_err(io::Error::kind);
    assert_eq!(kind, Err(io::ErrorKind::ConnectionReset), "a reset, not an end of stream: {read:?}");
    server.verify().unwrap();
}

#[test]
fn a_close_is_the_end_of_the_stream_and_a_connection_beyond_the_scripts_a_failure() {
    let server = ScriptedServer::tcp([Script::new().close()]).unwrap();
    let mut client = connect(&server);
    assert_eq!(client.read(&mut [0; 16]).unwrap(), 0);
    let mut extra = connect(&server);
    assert_eq!(extra.read(&mut [0; 16]).unwrap_or(0), 0, "closed");
    let message = failures(server);
    assert!(message.contains("connection 2"), "{message}");
    assert!(message.contains("not in the script, which has 1 connection(s)"), "{message}");
}

#[test]
fn a_retrying_client_sees_a_reset_then_an_answer() {
    // The kind of client these servers are for: it retries once on a reset.
    fn fetch(addr: std::net::SocketAddr) -> io::Result<String> {
        let mut last = None;
        for _ in 0..2 {
            let mut client = TcpStream::connect(addr)?;
            client.set_read_timeout(Some(LIMIT))?;
            client.write_all(b"GET\n")?;
            let mut answer = String::new();
            match BufReader::new(&client).read_line(&mut answer) {
                Ok(n) if n > 0 => return Ok(answer),
                Ok(_) => last = Some(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }
    let server =
        ScriptedServer::tcp([Script::new().expect_line("GET").reset(), Script::new().expect_line("GET").reply("42\n")])
            .unwrap();
    assert_eq!(fetch(server.addr()).unwrap(), "42\n");
    let transcript = server.verify().unwrap();
    assert_eq!(transcript.conversations.len(), 2, "two connections: the retry");
}

#[test]
fn a_server_that_stops_answering_makes_the_client_time_out_and_a_wait_delays_the_reply() {
    let server = ScriptedServer::tcp([Script::new().expect_line("1").stop_answering()]).unwrap();
    let mut client = connect(&server);
    client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    client.write_all(b"1\n").unwrap();
    let read = client.read(&mut [0; 16]).map_err(|e| e.kind());
    assert!(
        matches!(read, Err(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
        "no answer and no end: the client's timeout, got {read:?}"
    );
    server.verify().unwrap();

    let wait = Duration::from_millis(300);
    let server = ScriptedServer::tcp([Script::new().expect_line("2").wait(wait).reply("late\n")]).unwrap();
    let mut client = connect(&server);
    let sent = Instant::now();
    client.write_all(b"2\n").unwrap();
    assert_eq!(read_line(&client), "late\n");
    assert!(sent.elapsed() >= wait, "the reply waited {wait:?}: {:?}", sent.elapsed());
    server.verify().unwrap();
}

#[test]
fn silence_past_an_expectations_time_and_bytes_after_the_last_step_are_failures() {
    let script = Script::new().expect_within(Duration::from_millis(100)).expect(b"anything");
    let server = ScriptedServer::tcp([script]).unwrap();
    let client = connect(&server);
    // The expectation gives up after 100 ms and the server closes: wait for that end.
    assert_eq!((&client).read(&mut [0; 8]).unwrap_or(0), 0);
    let message = failures(server);
    assert!(message.contains("nothing more within the expectation's time"), "{message}");

    let server = ScriptedServer::tcp([Script::new().expect(b"one")]).unwrap();
    let mut client = connect(&server);
    client.write_all(b"one and more").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = client.read(&mut [0; 8]);
    let message = failures(server);
    assert!(message.contains(r#"after the script's last step, the client sent " and more""#), "{message}");
}

#[test]
fn a_framed_message_is_expected_by_its_payload() {
    let frame = Frame::length_prefix(2, ByteOrder::BigEndian, 1024);
    let server = ScriptedServer::tcp([Script::new().expect_frame(&frame, "hello").reply(b"\x00\x02ok")]).unwrap();
    let mut client = connect(&server);
    frame.write_message(&mut client, b"hello").unwrap();
    let answer = frame.read_message(BufReader::new(&client)).unwrap().unwrap();
    assert_eq!(frame.payload(&answer), b"ok");
    let transcript = server.verify().unwrap();
    assert_eq!(transcript.conversations[0].received(), b"\x00\x05hello");
}

#[test]
fn dropped_without_verify_a_server_with_failures_panics_with_them() {
    let result = panic::catch_unwind(|| {
        let server = ScriptedServer::tcp([Script::new().expect(b"x")]).unwrap();
        drop(server);
    });
    let payload = result.expect_err("unused script: a failure");
    let message = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("dropped without verify()"), "{message}");

    // No failure: no panic.
    let server = ScriptedServer::tcp([Script::new().allow_unused().expect(b"x")]).unwrap();
    drop(server);
}

fn udp_client(server: &ScriptedServer) -> UdpSocket {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(server.addr()).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    client
}

#[test]
fn udp_expectations_replies_and_silence() {
    let script = Script::new().expect(b"ping 1").reply(b"pong 1").expect_line("ping 2").stop_answering();
    let server = ScriptedServer::udp(script).unwrap();
    let client = udp_client(&server);
    client.send(b"ping 1").unwrap();
    let mut buf = [0; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong 1");
    client.send(b"ping 2\n").unwrap();
    client.send(b"ping 3").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(client.recv(&mut buf).is_err(), "no answer once silent");
    // Datagrams are received in order by a sequential server: wait until all three are in.
    let deadline = Instant::now() + LIMIT;
    while server.transcript().conversations.first().map_or(0, |c| c.events.len()) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let transcript = server.verify().unwrap();
    assert_eq!(transcript.conversations[0].received(), b"ping 1ping 2\nping 3");
    assert_eq!(transcript.conversations[0].datagrams(), [&b"ping 1"[..], b"ping 2\n", b"ping 3"]);
    assert_eq!(transcript.conversations[0].sent(), b"pong 1");
}

#[test]
fn an_empty_line_is_reported_as_one() {
    let server = ScriptedServer::tcp([Script::new().expect_line("GET a").expect_line("GET b")]).unwrap();
    let mut client = connect(&server);
    client.write_all(b"GET a\n\n").unwrap();
    // The server gives up on the connection at the deviation, and closes it.
    assert_eq!(client.read(&mut [0; 16]).unwrap(), 0);
    let message = failures(server);
    assert!(
        message.contains("step 2 (expect the line \"GET b\"): expected \"GET b\", received an empty line"),
        "{message}"
    );
}

#[test]
fn a_udp_datagram_that_differs_or_comes_after_the_script_is_a_failure() {
    let server = ScriptedServer::udp(Script::new().expect(b"abc").reply(b"ok")).unwrap();
    let client = udp_client(&server);
    client.send(b"abd").unwrap();
    client.send(b"late").unwrap();
    let deadline = Instant::now() + LIMIT;
    while server.transcript().conversations.first().map_or(0, |c| c.events.len()) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let message = failures(server);
    assert!(message.contains(r#"byte 2 is "d" where "c" was expected"#), "{message}");
    assert!(message.contains(r#"after the script's last step, a datagram"#), "{message}");
}

#[test]
fn a_udp_script_cannot_close_or_reset_and_a_udp_wait_delays_the_reply() {
    let error = ScriptedServer::udp(Script::new().expect(b"x").reset()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("cannot reset"), "{error}");

    let wait = Duration::from_millis(300);
    let server = ScriptedServer::udp(Script::new().expect(b"q").wait(wait).reply(b"a")).unwrap();
    let client = udp_client(&server);
    let sent = Instant::now();
    client.send(b"q").unwrap();
    let mut buf = [0; 8];
    assert_eq!(client.recv(&mut buf).unwrap(), 1);
    assert!(sent.elapsed() >= wait, "{:?}", sent.elapsed());
    server.verify().unwrap();
}
