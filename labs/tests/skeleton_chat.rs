//! Proves that the grader of lab `chat` can fail: run on the untouched skeleton
//! (`labs/src/chat.rs`), every check must fail, with a message that tells the student
//! what to do. Built only with `--features solution` (CI), when `labs::chat` is the
//! solution and the skeleton is compiled here on its own.
#![cfg(feature = "solution")]

#[path = "../src/chat.rs"]
mod skeleton;

#[path = "graders/chat.rs"]
mod grader;

/// The check's result on the skeleton: it must be an error containing each of `words`.
fn fails(name: &str, result: Result<(), String>, words: &[&str]) {
    match result {
        Ok(()) => panic!("{name}: the grader passed the untouched skeleton"),
        Err(message) => {
            println!("{name} on the skeleton:\n{message}\n");
            for word in words {
                assert!(message.contains(word), "{name}: the message should contain {word:?}:\n{message}");
            }
        }
    }
}

#[test]
fn the_grader_fails_on_the_skeleton() {
    let max = skeleton::MAX_LINE;
    let closed = "closed the connection without answering";
    let welcome = ["alice: after sending its name", closed, "req.park()"];
    fails("two clients", grader::check_two_clients(skeleton::server), &welcome);
    fails("join and leave", grader::check_join_and_leave(skeleton::server), &welcome);
    fails("bad names", grader::check_bad_names(skeleton::server), &welcome);
    fails("order", grader::check_order(skeleton::server), &["ann: after sending its name", closed]);
    fails("abrupt disconnect", grader::check_abrupt_disconnect(skeleton::server), &welcome);
    fails("max line", grader::check_line_of_max_length(skeleton::server, max), &welcome);
    fails("long line", grader::check_long_line(skeleton::server, max), &welcome);
    fails("flood", grader::check_flood(skeleton::server, max), &welcome);
    fails("many clients", grader::check_many_clients(skeleton::server), &["user1: after sending its name", closed]);
    fails("slow reader", grader::check_slow_reader(skeleton::server, max), &welcome);
}
