//! The READMEs and the examples they point to say the same thing: the first program of
//! README.md and of README.zh-CN.md is `examples/hello.rs`, line for line (comments
//! aside), so that `cargo run --example hello` runs what a newcomer just read. (Every
//! Rust block of both READMEs is also compiled, and run where it does not serve for
//! ever, as a doctest: `ReadmeDoctests` in src/lib.rs.)

use std::fs;
use std::path::Path;

fn read(name: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The code of the first ```rust block of a Markdown file.
fn first_rust_block(markdown: &str) -> String {
    let start = markdown.find("```rust").expect("a ```rust block");
    let body = &markdown[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

/// Code without comments and blank lines, for a comparison that a translated comment
/// does not fail.
fn code(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split("//").next().unwrap().trim_end().to_string())
        .filter(|line| !line.trim().is_empty())
        .collect()
}

#[test]
fn the_first_program_of_each_readme_is_examples_hello() {
    let hello = code(&read("examples/hello.rs"));
    for readme in ["README.md", "README.zh-CN.md"] {
        let block = code(&first_rust_block(&read(readme)));
        assert_eq!(block, hello, "{readme}'s first program differs from examples/hello.rs");
    }
}
