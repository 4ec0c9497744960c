//! The crate's modules import each other one way only: no cycle between the top-level
//! modules, and the layering described in `src/broker/mod.rs` holds (`broker` is
//! below `bus` and `runtime`; `bus` never reaches into `runtime`).
//!
//! The graph is read from the sources: every `crate::<module>` path outside comments,
//! with the crate root's re-exports (`crate::Bus`, …) mapped to the module that defines them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Root re-exports and the module each comes from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Bus", "bus"),
    ("Context", "context"),
    ("Error", "error"),
    ("Result", "error"),
    ("HandlerError", "handler"),
    ("Message", "message"),
    ("Priority", "message"),
    ("Worker", "runtime"),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    match name.as_str() {
        "lib" => None,
        "private" => Some("__private".into()),
        _ => Some(name),
    }
}

/// The top-level modules `code` names through `crate::…`.
fn references(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            // `use crate::{a, b::c}` names several.
            let names: Vec<&str> = if let Some(group) = after.strip_prefix('{') {
                group
                    .split(['}', ';'])
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .collect()
            } else {
                vec![after]
            };
            for n in names {
                let head: String = n
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&head) {
                    out.insert(head);
                } else if let Some((_, m)) = ROOT_ITEMS.iter().find(|(item, _)| *item == head) {
                    out.insert((*m).to_owned());
                }
            }
            rest = after;
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        let code = std::fs::read_to_string(f).unwrap();
        let refs = references(&code, &modules);
        let entry = g.entry(m.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != m));
    }
    g
}

/// A cycle through `start`, if any.
fn cycle_from(
    g: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in g.get(at).into_iter().flatten() {
        if next == start {
            let mut c = path.clone();
            c.push(start.to_owned());
            return Some(c);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(c) = cycle_from(g, start, next, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn the_modules_form_no_cycle() {
    let g = graph();
    assert!(g.len() > 10, "the sources were not found: {g:?}");
    for m in g.keys() {
        if let Some(c) = cycle_from(&g, m, m, &mut vec![m.clone()]) {
            panic!("module cycle: {}\nthe graph: {g:#?}", c.join(" -> "));
        }
    }
}

#[test]
fn the_layers_depend_one_way() {
    let g = graph();
    let deps = |m: &str| g.get(m).cloned().unwrap_or_default();
    for upper in [
        "bus",
        "runtime",
        "context",
        "testing",
        "handler",
        "__private",
    ] {
        assert!(
            !deps("broker").contains(upper),
            "broker must not depend on {upper}: {:?}",
            deps("broker")
        );
    }
    for m in ["runtime", "testing"] {
        assert!(
            !deps("bus").contains(m),
            "bus depends on {m}: {:?}",
            deps("bus")
        );
    }
    assert!(deps("bus").contains("broker") && deps("runtime").contains("broker"));
    // The reference detector works: a known edge is seen.
    assert!(deps("testing").contains("runtime"), "{g:#?}");
}
