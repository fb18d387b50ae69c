//! Proves that the grader of lab `web` can fail: run on the untouched skeleton
//! (`labs/src/web.rs`), every check must fail, with a message that tells the student
//! what to do. Built only with `--features solution` (CI), when `labs::web` is the
//! solution and the skeleton is compiled here on its own.
#![cfg(feature = "solution")]

#[path = "../src/web.rs"]
mod skeleton; // its own `#![allow(dead_code, ..)]` covers the unfinished parts

#[path = "graders/web.rs"]
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
    let closed = "closed the connection without answering";
    fails("index", grader::check_index(skeleton::server), &[closed, "GET /index.html"]);
    fails("content types", grader::check_content_types(skeleton::server), &[closed, "hello.txt"]);
    fails("binary file", grader::check_binary_file(skeleton::server), &[closed, "image.png"]);
    fails("percent-encoded", grader::check_percent_encoded_name(skeleton::server), &[closed, "%20"]);
    fails("not found", grader::check_not_found(skeleton::server), &[closed, "missing.html"]);
    fails("other methods", grader::check_other_methods(skeleton::server), &[closed, "POST"]);
    fails("bad request", grader::check_bad_request(skeleton::server), &[closed, "HELLO"]);
    fails("path escape", grader::check_path_escape(skeleton::server), &[closed, "secret.txt"]);
    fails("slow client", grader::check_slow_client_does_not_block(skeleton::server), &["Threading"]);
}
