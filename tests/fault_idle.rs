//! The fault proxy asks nothing of a socket it has nothing to do with: a client that
//! resets while its direction has ended costs no CPU. A test binary of its own, so that
//! the process's CPU time is the proxy's and its servers' alone.
#![cfg(target_os = "linux")]

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use socketserver::dispatch::Threading;
use socketserver::testing::FaultProxy;
use socketserver::TcpServer;

/// Every wait in this test gives up after this.
const PATIENCE: Duration = Duration::from_secs(5);

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// A client that half-closes, then resets, while the proxy asks nothing of its socket
/// (its direction has ended, nothing is due to it): the poller reports the reset, and
/// the proxy must not wake for it again and again (it used to re-arm the socket for
/// nothing, and epoll reports a reset whatever the interest: a spin until the server
/// closed).
#[test]
fn a_client_reset_while_nothing_is_asked_of_it_costs_no_cpu() {
    // A server that reads to the end, then holds the connection open, silent.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    let server = TcpServer::builder("127.0.0.1:0")
        .dispatch(Threading::new())
        .bind(move |req: &mut socketserver::StreamRequest| {
            io::copy(&mut req.reader(), &mut io::sink())?;
            let _ = held.lock().unwrap().recv_timeout(PATIENCE);
            Ok(())
        })
        .unwrap();
    let upstream = server.local_addr();
    let _server = server.serve_in_background().unwrap();
    let proxy = FaultProxy::tcp(upstream).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).unwrap();
    client.write_all(b"x").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // the proxy passes the close on
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
    drop(client); // RST
    std::thread::sleep(Duration::from_millis(100));
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time() - before;
    let _ = release.send(());
    assert!(used < Duration::from_millis(300), "the proxy used {used:?} of CPU in 1 s for a gone client");
}
