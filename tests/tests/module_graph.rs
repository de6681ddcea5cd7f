//! ARCHITECTURE.md promises that no crate's modules import each other in a
//! circle: every crate reads from its root down. This test reads every
//! crate's sources, follows `crate::<module>` paths (and items the crate
//! root re-exports from a module), and fails naming each circle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name → the sibling modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without line comments (doc links name modules too).
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Items the crate root re-exports (`pub use module::{A, B}`), by name.
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for statement in root.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident(rest);
        let Some(items) = rest.strip_prefix(module).and_then(|r| r.strip_prefix("::")) else {
            continue;
        };
        for item in items.split(|c: char| c == ',' || c == '{' || c == '}' || c.is_whitespace()) {
            if !item.is_empty() && item != "*" && item != "as" {
                out.insert(item.to_string(), module.to_string());
            }
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let root = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists())
        .map(|p| code(&std::fs::read_to_string(p).unwrap()))
        .unwrap_or_default();
    let reexported = reexports(&root);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" || module == "bin" {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let uses = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap_or(group.len())]
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .map(ident)
                    .collect(),
                None => vec![ident(rest)],
            };
            for name in names {
                let target = reexported.get(name).map(String::as_str).unwrap_or(name);
                if !target.is_empty() && target != module {
                    uses.insert(target.to_string());
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    graph
}

/// One circle through each module that is on one, as `a -> b -> a`.
fn circles(graph: &Graph) -> BTreeSet<String> {
    fn walk(graph: &Graph, path: &mut Vec<String>, found: &mut BTreeSet<String>) {
        let here = path.last().unwrap().clone();
        for next in &graph[&here] {
            if let Some(at) = path.iter().position(|m| m == next) {
                let mut circle = path[at..].to_vec();
                // One spelling per circle: start at its smallest module.
                let start = (0..circle.len()).min_by_key(|&i| &circle[i]).unwrap();
                circle.rotate_left(start);
                circle.push(circle[0].clone());
                found.insert(circle.join(" -> "));
            } else if path.len() < graph.len() {
                path.push(next.clone());
                walk(graph, path, found);
                path.pop();
            }
        }
    }
    let mut found = BTreeSet::new();
    for module in graph.keys() {
        walk(graph, &mut vec![module.clone()], &mut found);
    }
    found
}

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_circle() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(workspace.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .collect();
    sources.push(workspace.join("chaos/src"));
    sources.push(workspace.join("tests/src"));
    sources.sort();
    let mut report = Vec::new();
    for src in &sources {
        let graph = graph(src);
        for circle in circles(&graph) {
            report.push(format!("{}: {circle}", src.display()));
        }
    }
    assert!(
        sources.len() > 10,
        "found only {} crates under {}",
        sources.len(),
        workspace.display()
    );
    assert!(
        report.is_empty(),
        "modules importing each other in a circle:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let graph: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_string(), uses.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        circles(&graph),
        BTreeSet::from(["a -> b -> c -> a".to_string()])
    );
}
