//! The top-level modules depend on one another without a cycle, as their
//! `crate::` paths say (comments aside), so each can be read, tested and
//! changed from the bottom up.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every top-level module's uses of the others.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    collect(src, &mut files);
    let tops: BTreeSet<String> = files
        .iter()
        .map(|f| top(src, f))
        .filter(|t| t != "lib" && t != "main")
        .collect();
    let mut graph: Graph = tops.iter().map(|t| (t.clone(), BTreeSet::new())).collect();
    for file in &files {
        let from = top(src, file);
        let Some(uses) = graph.get_mut(&from) else {
            continue;
        };
        let text = fs::read_to_string(file).expect("a source file");
        let code: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for to in used(&code) {
            if to != from && tops.contains(&to) {
                uses.insert(to);
            }
        }
    }
    graph
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("the source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The top-level module a file belongs to.
fn top(src: &Path, file: &Path) -> String {
    let first = file
        .strip_prefix(src)
        .expect("under src")
        .components()
        .next();
    let name = first.expect("a file").as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// The names right after `crate::`, with those of `use crate::{a, b::c}` groups.
fn used(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(leading_name(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || item.is_empty() {
                    item.push(c);
                }
            }
            names.push(leading_name(&item));
        } else {
            names.push(leading_name(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn leading_name(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 5, "read too few modules: {graph:?}");
    if let Some(cycle) = cycle(&graph) {
        panic!(
            "the modules {} depend on each other in a cycle",
            cycle.join(" -> ")
        );
    }
}

/// The model is the bottom layer: the file, the data plane, the agent and
/// the API all speak it, and it speaks none of them.
#[test]
fn the_model_uses_no_other_module() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert_eq!(
        graph["model"],
        BTreeSet::new(),
        "model uses {:?}",
        graph["model"]
    );
    assert!(graph["config"].contains("model"), "{graph:?}");
}

#[test]
fn a_cycle_is_found_and_named() {
    let uses = |pairs: &[(&str, &[&str])]| -> Graph {
        pairs
            .iter()
            .map(|(from, to)| (from.to_string(), to.iter().map(|t| t.to_string()).collect()))
            .collect()
    };
    assert_eq!(
        cycle(&uses(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        cycle(&uses(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])])),
        None
    );
    assert_eq!(
        used("use crate::{\n    agent::{self, Agent},\n    model::Model,\n};\nlet x = crate::net::ifindex(n);"),
        ["agent", "model", "net"]
    );
}
