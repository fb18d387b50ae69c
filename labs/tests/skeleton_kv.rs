//! Proves that the grader of lab `kv` can fail: run on the untouched skeleton
//! (`labs/src/kv.rs`), every check must fail, with a message that tells the student
//! what to do. Built only with `--features solution` (CI), when `labs::kv` is the
//! solution and the skeleton is compiled here on its own.
#![cfg(feature = "solution")]

#[path = "../src/kv.rs"]
#[allow(dead_code)]
mod skeleton;

#[path = "graders/kv.rs"]
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
    fails("commands", grader::check_commands(skeleton::server), &[closed, "GET greeting"]);
    fails("errors", grader::check_errors_keep_connection(skeleton::server), &[closed]);
    fails("pipelining", grader::check_pipelining(skeleton::server), &["100"]);
    fails("shared store", grader::check_shared_store(skeleton::server), &[closed]);
    fails("half command", grader::check_half_command_does_not_block(skeleton::server), &["Frame::lines"]);
    fails("max line", grader::check_line_of_max_length_accepted(skeleton::server, max), &["MAX_LINE"]);
    fails("long line", grader::check_long_line_refused(skeleton::server, max), &["client connected before"]);
    fails("200 clients", grader::check_many_idle_clients(skeleton::server), &["setter"]);
}
