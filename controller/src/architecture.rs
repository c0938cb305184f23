//! The crate's rooms depend one way (issue 13): nothing imports `cli`, and the references
//! between rooms (`crate::ROOM` paths and `use crate::{...}` groups, in the whole file:
//! a test module is code of its room too) form no cycle. A new dependency that closes a
//! loop fails here, naming it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The room of a source file: its directory under src/, or its own name.
fn room(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// The rooms a file names, its tests included.
fn references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group, up to its closing brace.
            let (mut depth, mut item_start, mut items) = (0, 0, Vec::new());
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&group[item_start..j]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[item_start..j]);
                        item_start = j + 1;
                    }
                    _ => {}
                }
            }
            out.extend(items.into_iter().map(ident).filter(|s| !s.is_empty()));
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn rooms_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let from = room(rel);
        if ["main", "architecture", "fuzz_tests"].contains(&from.as_str()) {
            continue;
        }
        for to in references(&std::fs::read_to_string(f).unwrap()) {
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    println!("{edges:#?}");
    for (from, tos) in &edges {
        assert!(!tos.contains("cli"), "{from} imports cli: only main may");
    }
    // Depth-first search for a cycle, reporting its path.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == n) {
            panic!("rooms depend in a cycle: {} -> {n}", path[i..].join(" -> "));
        }
        if done.contains(n) {
            return;
        }
        path.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, path, done);
        }
        path.pop();
        done.insert(n.to_owned());
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        visit(n, &edges, &mut Vec::new(), &mut done);
    }
}

#[test]
fn references_are_read_from_paths_and_groups() {
    let text = "use crate::{a::b, c, d::{e, f}};\nfn x() { crate::g::h(); }\n#[cfg(test)]\nmod t { use crate::z; }";
    assert_eq!(references(text), ["a", "c", "d", "g", "z"].map(str::to_owned).into());
}
