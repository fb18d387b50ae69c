//! The READMEs and the examples they point to say the same thing: the first program of
//! README.md and of README.zh-CN.md is `examples/hello.rs`, line for line (comments
//! aside), so that `cargo run --example hello` runs what a newcomer just read. (Every
//! Rust block of both READMEs is also compiled, and run where it does not serve for
//! ever, as a doctest: `ReadmeDoctests` in src/lib.rs.) And every relative link of the
//! course's Markdown (the READMEs, the guide, the labs) leads to a file that exists, so
//! that a chapter renamed or a lab moved is caught here rather than by a reader.

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

/// The Markdown files of the course: the READMEs, then every `.md` under `guide/` and
/// `labs/`.
fn course_files() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("README.zh-CN.md")];
    let mut dirs = vec![root.join("guide"), root.join("labs")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files
}

/// The targets of the Markdown links `[text](target)` in `markdown` that are relative
/// paths (not a URL, not an anchor of the same page), without their `#anchor`. Code
/// blocks and code spans are skipped: `[..](..)` there is code, not a link.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        // Code spans are dropped: the text between pairs of backticks.
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let path = target.split('#').next().unwrap_or("");
            if !path.is_empty() && !path.contains("://") && !path.starts_with("mailto:") {
                links.push(path.to_string());
            }
            rest = &after[end..];
        }
    }
    links
}

#[test]
fn every_relative_link_of_the_readmes_guide_and_labs_leads_to_a_file() {
    let files = course_files();
    assert!(files.len() > 2, "the guide and the labs are found");
    let mut broken = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for link in relative_links(&text) {
            let target = file.parent().unwrap().join(&link);
            if !target.exists() {
                broken.push(format!("{}: ({link})", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to files that do not exist:\n{}", broken.join("\n"));
}

#[test]
fn the_link_finder_finds_links_and_skips_code() {
    let markdown = "see [ch. 2](02-tcp.md#udp), [Python](https://python.org) and [top](#top)\n\
                    `[not](a-link.md)`\n```text\n[nor](this.md)\n```\n[last](../labs/README.md)";
    assert_eq!(relative_links(markdown), ["02-tcp.md", "../labs/README.md"]);
}
