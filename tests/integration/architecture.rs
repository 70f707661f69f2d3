//! The shape of the code, checked: no two files of a crate import each other,
//! directly or round a circle. A circle means neither side can be read,
//! tested or moved without the other; the fix is usually a small module
//! both can import. Two edges are not counted: a re-export (`pub use`),
//! which is how a parent shows its children's items, not a use of them; and
//! a file using what a module it is nested in defines (`super::Context`):
//! the parent is the home of what its children share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`k8s::sync`) → the file that holds it.
fn modules(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// Every path a file names (`crate::…`, `super::…`, `self::…` or a child
/// module's), in `use` items (groups expanded) and inline, made absolute.
fn named_paths(source: &str, module: &str) -> Vec<String> {
    // A file's own tests (`#[cfg(test)] mod tests`) are not its shape.
    let tests = regex::Regex::new(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s").unwrap();
    let source = tests.find(source).map_or(source, |m| &source[..m.start()]);
    let code: String = source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    let uses =
        regex::Regex::new(r"(?s)(\bpub(?:\([a-z]+\))?\s+)?\buse\s+([A-Za-z_][^;]*);").unwrap();
    for item in uses.captures_iter(&code) {
        if item.get(1).is_none() {
            expand(&item[2].replace(char::is_whitespace, ""), &mut paths);
        }
    }
    let body = uses.replace_all(&code, "");
    let inline = regex::Regex::new(r"\b[a-z_][a-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+").unwrap();
    paths.extend(inline.find_iter(&body).map(|m| m.as_str().to_owned()));
    paths
        .into_iter()
        .filter_map(|path| absolute(&path, module))
        .collect()
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(tree.trim_end_matches("::").to_owned());
        return;
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&format!("{prefix}{}", &inner[start..i]), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&format!("{prefix}{}", &inner[start..]), out);
    }
}

fn absolute(path: &str, module: &str) -> Option<String> {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut parts = path.split("::").peekable();
    let first = parts.next()?;
    match first {
        "crate" => base.clear(),
        "self" => {}
        "super" => {
            base.pop()?;
            while parts.peek() == Some(&"super") {
                parts.next();
                base.pop()?;
            }
        }
        // A bare first segment is a child module or another crate; the
        // caller keeps only paths that land in a module of this one.
        child => base.push(child),
    }
    base.extend(parts.filter(|p| *p != "self" && *p != "*"));
    Some(base.join("::"))
}

/// The file a path lands in: its longest prefix that is a module.
fn owner<'a>(path: &str, modules: &'a BTreeMap<String, PathBuf>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|prefix| modules.get_key_value(&prefix).map(|(k, _)| k.as_str()))
}

fn is_ancestor(ancestor: &str, of: &str) -> bool {
    ancestor.is_empty() || of.starts_with(&format!("{ancestor}::"))
}

/// The crate's import graph between files.
fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(root);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let source = std::fs::read_to_string(file).unwrap();
        let targets = edges.entry(module.clone()).or_default();
        for path in named_paths(&source, module) {
            if let Some(target) = owner(&path, &modules)
                && target != module
                && !is_ancestor(target, module)
            {
                targets.insert(target.to_owned());
            }
        }
    }
    edges
}

/// Circles of the graph: its strongly connected parts of two files or more.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.to_owned()];
        while let Some(node) = pending.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|node| (node, reaches(node))).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for (node, reachable) in &reach {
        let circle: Vec<String> = reachable
            .iter()
            .filter(|other| reach.get(other).is_some_and(|back| back.contains(*node)))
            .cloned()
            .collect();
        if circle.len() > 1 {
            found.insert(circle);
        }
    }
    found.into_iter().collect()
}

fn assert_no_circles(crate_root: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_root);
    let edges = graph(&root);
    assert!(edges.len() > 3, "the modules of {crate_root} were found");
    let circles = circles(&edges);
    assert!(
        circles.is_empty(),
        "files of {crate_root} that import each other: {circles:#?}"
    );
}

#[test]
fn no_two_files_of_the_orchestrator_import_each_other() {
    assert_no_circles("src");
}

#[test]
fn no_two_files_of_the_core_import_each_other() {
    assert_no_circles("core/src");
}

#[test]
fn no_two_files_of_the_reference_agents_import_each_other() {
    assert_no_circles("agents/src");
}

#[test]
fn the_circle_check_sees_a_circle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("k8s")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod cli;\npub mod k8s;\n").unwrap();
    std::fs::write(src.join("cli.rs"), "use crate::k8s::runtime::Kube;\n").unwrap();
    std::fs::write(src.join("k8s/mod.rs"), "pub mod runtime;\npub mod pods;\n").unwrap();
    std::fs::write(
        src.join("k8s/runtime.rs"),
        "use super::pods::{pod, Settings};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("k8s/pods.rs"),
        "fn f() { let _ = crate::cli::STEP; }\n",
    )
    .unwrap();
    let circles = circles(&graph(src));
    assert_eq!(
        circles,
        [vec![
            "cli".to_owned(),
            "k8s::pods".to_owned(),
            "k8s::runtime".to_owned()
        ]]
    );
}

#[test]
fn the_core_depends_on_no_async_runtime_database_engine_or_cluster_client() {
    let manifest =
        std::fs::read_to_string(format!("{}/core/Cargo.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let manifest: toml_like::Manifest = toml_like::parse(&manifest);
    for forbidden in [
        "tokio",
        "sqlx",
        "kube",
        "k8s-openapi",
        "bollard",
        "axum",
        "reqwest",
    ] {
        assert!(
            !manifest.dependencies.iter().any(|d| d == forbidden),
            "core/Cargo.toml depends on {forbidden}"
        );
    }
    assert!(
        manifest.dependencies.iter().any(|d| d == "serde"),
        "the parse found the dependencies"
    );
}

/// Just enough of a Cargo manifest: the names under `[dependencies]`.
mod toml_like {
    pub struct Manifest {
        pub dependencies: Vec<String>,
    }

    pub fn parse(text: &str) -> Manifest {
        let mut section = "";
        let mut dependencies = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[dependencies]"
                && let Some((name, _)) = line.split_once('=')
            {
                dependencies.push(name.trim().to_owned());
            }
        }
        Manifest { dependencies }
    }
}
