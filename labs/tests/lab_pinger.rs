//! Grades the pinger lab: `cargo test -p labs --test lab_pinger`.
//!
//! Each test runs your `labs::pinger::ping` against a UDP server of the grader's on
//! 127.0.0.1 (see `graders/pinger.rs`) and fails with what the server did, what was
//! expected and what your report said. `labs/pinger.md` explains each check.

#[path = "graders/pinger.rs"]
mod grader;

use labs::pinger::{ping, Report};

grader::impl_report!(Report);

#[test]
fn every_ping_answered() {
    if let Err(m) = grader::all_answered(ping) {
        panic!("{m}")
    }
}

#[test]
fn lost_pings_are_the_dropped_ones() {
    if let Err(m) = grader::lost_pings_are_the_dropped_ones(ping) {
        panic!("{m}")
    }
}

#[test]
fn late_reply_is_not_counted() {
    if let Err(m) = grader::late_reply_is_not_counted(ping) {
        panic!("{m}")
    }
}

#[test]
fn stray_datagrams_are_ignored() {
    if let Err(m) = grader::stray_datagrams_are_ignored(ping) {
        panic!("{m}")
    }
}

#[test]
fn strays_do_not_extend_the_wait() {
    if let Err(m) = grader::strays_do_not_extend_the_wait(ping) {
        panic!("{m}")
    }
}

#[test]
fn silent_server_all_lost() {
    if let Err(m) = grader::silent_server_all_lost(ping) {
        panic!("{m}")
    }
}

#[test]
fn statistics() {
    if let Err(m) = grader::statistics(|rtts| Report { rtts }) {
        panic!("{m}")
    }
}
