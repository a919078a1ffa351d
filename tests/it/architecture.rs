//! The layering of docs/architecture.md, checked on the source itself: the engine imports no
//! front module and not the peer server, and no two modules import each other, directly or
//! round a longer cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, by module path (`node::get`, `peer::auth`, `crate` for
/// lib.rs), with whether it is a folder's `mod.rs`.
fn modules() -> BTreeMap<String, (PathBuf, bool)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).expect("under src/");
            let mut parts: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let is_mod = parts.last().is_some_and(|p| p == "mod");
            if is_mod {
                parts.pop();
            }
            let name = if parts == ["lib"] {
                "crate".to_owned()
            } else {
                parts.join("::")
            };
            (name, (path, is_mod))
        })
        .collect()
}

/// The module a path names: the longest module path that starts it.
fn resolve<'a>(modules: &'a BTreeMap<String, (PathBuf, bool)>, path: &str) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|candidate| modules.get_key_value(&candidate).map(|(k, _)| k.as_str()))
}

/// Which module imports which: from the `use crate::…` and `use super::…` lines outside test
/// code. A folder's `mod.rs` re-exporting its own children is not an import.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, (path, is_mod)) in &modules {
        if name == "crate" {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a source file");
        let text = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or_default();
        let parent = name.rsplit_once("::").map_or("", |(p, _)| p);
        for line in text.lines() {
            let line = line.trim_start();
            let line = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub(super) "))
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            let Some(rest) = line.strip_prefix("use ") else {
                continue;
            };
            let full = if let Some(path) = rest.strip_prefix("crate::") {
                path.to_owned()
            } else if let Some(path) = rest.strip_prefix("super::") {
                // `super` of a folder's mod.rs is the folder's parent.
                let base = if *is_mod {
                    parent
                } else {
                    name.rsplit_once("::").map_or("", |(p, _)| p)
                };
                if base.is_empty() {
                    path.to_owned()
                } else {
                    format!("{base}::{path}")
                }
            } else {
                continue;
            };
            let full = full.trim_end_matches(';');
            let Some(target) = resolve(&modules, full) else {
                continue;
            };
            if target == name || (*is_mod && target.starts_with(&format!("{name}::"))) {
                continue;
            }
            graph
                .entry(name.clone())
                .or_default()
                .insert(target.to_owned());
        }
    }
    graph
}

/// The front: what users touch, which nothing below may import.
const FRONT: [&str; 7] = [
    "groupcache",
    "builder",
    "handle",
    "middleware",
    "discovery",
    "typed",
    "metrics",
];

fn is_in(module: &str, layer: &str) -> bool {
    module == layer || module.starts_with(&format!("{layer}::"))
}

#[test]
fn nothing_below_the_front_imports_it_and_only_the_front_imports_the_peer_server() {
    let graph = imports();
    assert!(
        graph.contains_key("node::get"),
        "the graph was read: {graph:?}"
    );
    let is_front = |module: &str| FRONT.iter().any(|front| is_in(module, front));
    let mut wrong = Vec::new();
    for (from, targets) in &graph {
        if is_front(from) || from == "peer::server" {
            continue;
        }
        for to in targets {
            if is_front(to) || to == "peer::server" {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
}

#[test]
fn no_module_imports_itself_round_a_cycle() {
    let graph = imports();
    // Tarjan's strongly connected components; any with two modules or more is a cycle.
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        cycles: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        for next in state.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.stack.contains(&next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                component.push(top);
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                state.cycles.push(component);
            }
        }
    }
    let mut state = State {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        cycles: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    assert!(state.cycles.is_empty(), "import cycles: {:?}", state.cycles);
}
