//! The shape of `agent/src`, checked: folders by role, imports pointing one way, no import
//! circles between files, and no long functions.
//!
//! * **Layers.** A folder may import only from itself and from the folders below it in
//!   [`LAYERS`] (`cli` at the top, `resilience` and `log` at the bottom). A constant that a lower
//!   folder needs lives there, never above it.
//! * **No circles.** Between the files themselves (`crate::a::b` paths and `super::` paths, test
//!   modules excluded), the import graph has no cycle.
//! * **Short functions.** No function outside tests is longer than [`FUNCTION_LINES_MAX`] lines
//!   (TigerBeetle's rule), and the check-in loop's driver file stays under
//!   [`DRIVER_LINES_MAX`].
//!
//! This reads the source as text: a `crate::` path in a comment counts too, which keeps comments
//! honest about where things live.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// From the bottom up; one entry per layer, folders of a layer may not import each other.
const LAYERS: &[&[&str]] = &[
    &["resilience", "log"],
    &["server"],
    &["config"],
    &["store", "host"],
    &["commands"],
    &["checkin"],
    &["cli"],
];

const FUNCTION_LINES_MAX: usize = 70;
const DRIVER_LINES_MAX: usize = 300;
/// The file that holds the check-in loop's driver.
const DRIVER_FILE: &str = "checkin/driver.rs";

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src`, as its path relative to `src`.
fn files() -> Vec<PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, base, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &src(), &mut out);
    out
}

/// The file's text without its `#[cfg(test)]` module (tests may reach anywhere).
fn code(rel: &Path) -> String {
    let text = std::fs::read_to_string(src().join(rel)).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The module path of a file: `store/mod.rs` is `["store"]`, `store/atomic.rs` is
/// `["store", "atomic"]`, `lib.rs` is `[]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The paths this file names: `crate::a::b::c` as `[a, b, c]`, and `super::x` resolved.
fn imported_paths(rel: &Path, text: &str) -> Vec<Vec<String>> {
    let module = module_of(rel);
    let is_mod_file = rel.file_name().is_some_and(|f| f == "mod.rs");
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", {
        // `super` of `a/b.rs` is `a`; of `a/mod.rs` it is the crate root.
        let mut m = module.clone();
        if !is_mod_file || !m.is_empty() {
            m.pop();
        }
        m
    })] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut path = base.clone();
            let mut tail = rest;
            loop {
                let end = tail.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(tail.len());
                if end == 0 {
                    break;
                }
                path.push(tail[..end].to_string());
                tail = &tail[end..];
                match tail.strip_prefix("::") {
                    Some(t) => tail = t,
                    None => break,
                }
            }
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

/// The file a module path lands in: the longest prefix that is a file.
fn resolve(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]).cloned())
}

fn layer_of(folder: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&folder))
}

#[test]
fn every_folder_has_a_layer_and_imports_only_below_itself() {
    let mut problems = Vec::new();
    for rel in files() {
        let module = module_of(&rel);
        let Some(folder) = module.first().filter(|_| rel.components().count() > 1) else { continue };
        let Some(own) = layer_of(folder) else {
            problems.push(format!("{}: folder {folder:?} has no layer in LAYERS", rel.display()));
            continue;
        };
        for path in imported_paths(&rel, &code(&rel)) {
            let target = &path[0];
            if target == folder {
                continue;
            }
            match layer_of(target) {
                Some(l) if l < own => {}
                Some(_) => problems.push(format!("{} imports crate::{} (not below {folder})", rel.display(), path.join("::"))),
                None => {}
            }
        }
    }
    assert!(problems.is_empty(), "imports that point up or sideways:\n  {}", problems.join("\n  "));
}

#[test]
fn no_import_circles_between_files() {
    let all = files();
    let modules: BTreeMap<Vec<String>, PathBuf> = all.iter().filter(|r| !r.ends_with("main.rs")).map(|r| (module_of(r), r.clone())).collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for rel in all.iter().filter(|r| !r.ends_with("main.rs") && !r.ends_with("lib.rs")) {
        let targets = edges.entry(rel.clone()).or_default();
        for path in imported_paths(rel, &code(rel)) {
            if let Some(t) = resolve(&path, &modules) {
                if &t != rel && !t.ends_with("lib.rs") {
                    targets.insert(t);
                }
            }
        }
    }
    // A depth-first search that reports the first cycle it meets.
    fn visit(
        n: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|s| s == n).unwrap();
                let mut cycle = stack[at..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        let cycle = visit(n, &edges, &mut state, &mut Vec::new());
        let shown = cycle.map(|c| c.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -> "));
        assert!(shown.is_none(), "import circle: {}", shown.unwrap());
    }
}

/// Functions longer than the limit, as `file:line name (n lines)`. A function runs from its
/// `fn` line to the line that closes it at the same indentation.
fn long_functions(rel: &Path, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        // Any visibility, then any of async/const/unsafe, then `fn `.
        let mut rest = trimmed;
        if let Some(after) = rest.strip_prefix("pub") {
            rest = match after.strip_prefix('(') {
                Some(inner) => inner.split_once(") ").map_or("", |(_, r)| r),
                None => after.trim_start(),
            };
        }
        for qualifier in ["const ", "async ", "unsafe "] {
            rest = rest.strip_prefix(qualifier).unwrap_or(rest);
        }
        let is_fn = rest.starts_with("fn ");
        if !is_fn || trimmed.ends_with(';') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let close = " ".repeat(indent) + "}";
        let Some(end) = lines[i..].iter().position(|l| l.trim_end() == close) else { continue };
        let length = end + 1;
        let name: String = trimmed.split("fn ").nth(1).unwrap_or("").chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if length > FUNCTION_LINES_MAX {
            out.push(format!("{}:{} {name} ({length} lines)", rel.display(), i + 1));
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_seventy_lines() {
    let long: Vec<String> = files().iter().flat_map(|rel| long_functions(rel, &code(rel))).collect();
    assert!(long.is_empty(), "functions over {FUNCTION_LINES_MAX} lines:\n  {}", long.join("\n  "));
}

#[test]
fn the_loop_driver_is_short() {
    let text = std::fs::read_to_string(src().join(DRIVER_FILE)).unwrap_or_else(|e| panic!("{DRIVER_FILE}: {e}"));
    let n = text.lines().count();
    assert!(n <= DRIVER_LINES_MAX, "{DRIVER_FILE} has {n} lines; the driver stays under {DRIVER_LINES_MAX}");
}

#[test]
fn the_checker_sees_a_circle_and_a_long_function() {
    // The checks above must be able to fail: a made-up file importing upwards and a long one.
    let paths = imported_paths(Path::new("server/protocol.rs"), "use crate::config::limits::X; use super::transport::Y;");
    assert_eq!(paths, vec![vec!["config".to_string(), "limits".into(), "X".into()], vec!["server".into(), "transport".into(), "Y".into()]]);
    let body = format!("fn f() {{\n{}}}\n", "    x();\n".repeat(FUNCTION_LINES_MAX));
    assert_eq!(long_functions(Path::new("x.rs"), &body).len(), 1);
    assert!(layer_of("config") > layer_of("server"));
}
