//! Proves that the pinger grader can fail: every check, run on the untouched skeleton
//! (`src/pinger.rs`), must fail with a message that tells the student what to do.
//! Runs with `--features solution` only (CI's run), as the skeleton is then not the
//! library's `pinger` module.
#![cfg(feature = "solution")]

#[path = "graders/pinger.rs"]
mod grader;
#[path = "../src/pinger.rs"]
mod skeleton;

use skeleton::{ping, Report};

grader::impl_report!(Report);

/// The check failed, and its message names the unfinished part.
fn fails_with(check: &str, result: Result<(), String>, words: &[&str]) {
    let message = match result {
        Ok(()) => panic!("{check} passed on the skeleton: the grader cannot fail"),
        Err(message) => message,
    };
    println!("{check} on the skeleton:\n{message}\n");
    for word in words {
        assert!(message.contains(word), "{check}: the message lacks {word:?}:\n{message}");
    }
}

#[test]
fn every_check_fails_on_the_skeleton() {
    let todo = ["panicked", "not yet implemented", "TODO(1)"];
    fails_with("all_answered", grader::all_answered(ping), &todo);
    fails_with("lost_pings_are_the_dropped_ones", grader::lost_pings_are_the_dropped_ones(ping), &todo);
    fails_with("late_reply_is_not_counted", grader::late_reply_is_not_counted(ping), &todo);
    fails_with("stray_datagrams_are_ignored", grader::stray_datagrams_are_ignored(ping), &todo);
    fails_with("strays_do_not_extend_the_wait", grader::strays_do_not_extend_the_wait(ping), &todo);
    fails_with("silent_server_all_lost", grader::silent_server_all_lost(ping), &todo);
    fails_with(
        "statistics",
        grader::statistics(|rtts| Report { rtts }),
        &["Report::received panicked", "not yet implemented", "TODO(4)"],
    );
}
