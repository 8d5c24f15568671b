//! The layering stated in ARCHITECTURE.md, checked on the source: which top-level modules each
//! layer may import, and no import cycles between top-level modules.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// What each layer may import from the crate (besides itself). Modules not listed are edges
/// or entry points, which may import anything below them; only cycles are checked for them.
const ALLOWED: &[(&str, &[&str])] = &[
    ("twilio", &[]),
    ("secrets", &[]),
    ("config", &["secrets"]),
    ("logging", &["config"]),
    ("net", &[]),
    ("events", &[]),
    ("metrics", &["twilio"]),
    ("db", &["config", "events", "secrets"]),
    (
        "domain",
        &["config", "db", "events", "metrics", "secrets", "twilio"],
    ),
    ("state", &["config", "db", "domain", "metrics", "secrets"]),
];

/// Top-level modules each top-level module of `src/` imports through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let src = stack[0].clone();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .iter()
                .next()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            if matches!(top.as_str(), "lib" | "main" | "testkit") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap();
            // Unit tests may reach across layers to build their fixtures.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            graph.entry(top.clone()).or_default().extend(crate_imports(code));
        }
    }
    for (module, deps) in &mut graph {
        deps.remove(module);
    }
    graph
}

/// The top-level names after `crate::`, including those inside `use crate::{a, b::c}`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut current = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        names.insert(first_segment(&current));
                        current.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    names.insert(first_segment(&current));
                    break;
                }
                if depth == 1 {
                    current.push(c);
                }
            }
        } else {
            names.insert(first_segment(rest));
        }
    }
    names.remove("");
    names
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn each_layer_imports_only_what_it_may() {
    let graph = imports();
    for (layer, allowed) in ALLOWED {
        let deps = graph.get(*layer).cloned().unwrap_or_default();
        let extra: Vec<_> = deps.iter().filter(|d| !allowed.contains(&d.as_str())).collect();
        assert!(extra.is_empty(), "{layer} must not import {extra:?}");
    }
    assert!(graph["domain"].contains("db"), "the scan sees imports");
}

#[test]
fn top_level_modules_import_each_other_in_no_cycle() {
    let graph = imports();
    fn reaches(
        graph: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        graph
            .get(from)
            .into_iter()
            .flatten()
            .any(|next| next == to || (seen.insert(next.clone()) && reaches(graph, next, to, seen)))
    }
    for (module, deps) in &graph {
        for dep in deps {
            assert!(
                !reaches(&graph, dep, module, &mut BTreeSet::new()),
                "{module} imports {dep}, which imports {module} back"
            );
        }
    }
}

#[test]
fn the_scanner_reads_grouped_and_nested_imports() {
    let names = crate_imports("use crate::{a::b, c::{d, e}, f};\nlet x = crate::g::h();");
    assert_eq!(names, ["a", "c", "f", "g"].map(String::from).into());
}
