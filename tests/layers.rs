//! The crate's modules form layers: each uses only the modules declared before it in
//! `src/lib.rs` (platform, sockets, the control block, requests, handlers, the engine,
//! then the public builder and server). This test reads the sources and fails on a
//! `crate::` path that points down the list, which is how an import circle would start.
//!
//! Files inside one module (`src/engine/serve.rs` and `src/engine/mod.rs`, say) may use
//! each other; the rule is between modules.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules of `src/lib.rs`, in declaration order.
fn module_order() -> Vec<String> {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("pub mod ").or_else(|| line.strip_prefix("mod ")))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level modules a file's code (not its comments) names through `crate::`,
/// with the line of each.
fn uses(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.is_empty() {
                // `use crate::{a, b}`: each name in the braces.
                let inside = rest.trim_start_matches('{');
                let group = inside.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let item: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !item.is_empty() {
                        found.push((item, n + 1));
                    }
                }
            } else {
                found.push((name, n + 1));
            }
        }
    }
    found
}

#[test]
fn modules_use_only_the_modules_declared_before_them() {
    let order = module_order();
    assert!(order.len() > 10, "read the module list of src/lib.rs: {order:?}");
    let rank: HashMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(src()).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs");
        if module == "lib" {
            continue; // the root declares and re-exports everything
        }
        let Some(&own) = rank.get(module) else {
            panic!("{} belongs to no module declared in src/lib.rs", relative.display());
        };
        for (used, line) in uses(&fs::read_to_string(file).unwrap()) {
            match rank.get(used.as_str()) {
                Some(&other) if other > own => violations.push(format!(
                    "{}:{line}: `{module}` uses `{used}`, which is declared after it in src/lib.rs",
                    relative.display()
                )),
                Some(_) => {}
                // A name re-exported at the root: code inside the crate must say which
                // module it comes from, or the layer it depends on cannot be seen.
                None => violations.push(format!(
                    "{}:{line}: `crate::{used}` goes through the crate root; name its module",
                    relative.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_uses_down_the_list() {
    let found = uses("use crate::engine::Engine;\n// crate::server in a comment\nuse crate::{error, net::Address};");
    let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["engine", "error", "net"]);
}
