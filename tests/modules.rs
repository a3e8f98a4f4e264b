//! The module graph of `src/` is a tree pointing down: no two modules depend on each other,
//! directly or through others. A type two modules need lives below both.
//!
//! Each file is a module (`mod.rs` is its folder's). An edge A -> B is a path in A's code
//! (`use` lines and inline `crate::`/`super::`/`self::` paths; comments, strings and
//! `#[cfg(test)] mod` blocks left out) that names B or an item inside B, with re-exports
//! (`pub use`, `pub(crate) use`) followed to where the item is defined. Edges are lifted to the
//! children of the two modules' closest common ancestor, so a cycle between folders counts as
//! one. `src/bin` (the command) is left out: it is a crate of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module, as the path of names from the crate root (`[]` is `lib.rs`).
type Module = Vec<String>;

#[test]
fn src_has_no_module_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&root, &root, &mut files);
    assert!(
        files.len() > 20,
        "only {} modules found in src/",
        files.len()
    );
    let graph = Graph::of(&files);
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "module cycles in src/ (move the item two modules share below both):\n{}",
        cycles.join("\n")
    );
}

/// The check finds a cycle when there is one, through a re-export and a folder too.
#[test]
fn a_planted_cycle_is_found() {
    let files = BTreeMap::from([
        (vec![], "mod a; mod b; pub use b::Thing;".to_string()),
        (
            vec!["a".to_string()],
            "//! Docs.\nuse crate::Thing; // b, through the root's re-export\n".to_string(),
        ),
        (vec!["b".to_string()], "mod inner;".to_string()),
        (
            vec!["b".to_string(), "inner".to_string()],
            "use crate::a::Other;\n#[cfg(test)]\nmod tests { use crate::c::X; }".to_string(),
        ),
    ]);
    let cycles = Graph::of(&files).cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].starts_with("a <-> b"), "{cycles:?}");
    // The same tree without the edge back has none.
    let mut acyclic = files.clone();
    acyclic.insert(vec!["a".to_string()], "use std::fmt;".to_string());
    assert!(Graph::of(&acyclic).cycles().is_empty());
}

/// Strings and comments do not count as paths.
#[test]
fn paths_in_strings_and_comments_are_not_edges() {
    let files = BTreeMap::from([
        (vec![], "mod a; mod b;".to_string()),
        (
            vec!["a".to_string()],
            "/* crate::b::X */ const S: &str = \"crate::b::Y\"; const R: &str = r#\"super::b\"#;\nfn f<'a>(c: char) -> bool { c == '\"' }\nuse crate::b::Z;"
                .to_string(),
        ),
        (
            vec!["b".to_string()],
            "// use crate::a::X;\nconst T: &str = \"use crate::a::Y;\";".to_string(),
        ),
    ]);
    let graph = Graph::of(&files);
    assert!(graph.cycles().is_empty());
    assert_eq!(graph.edges.len(), 1, "{:?}", graph.edges);
}

/// Reads every `.rs` file under `dir` (but `src/bin`) into `files`, by module.
fn read_tree(root: &Path, dir: &Path, files: &mut BTreeMap<Module, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).expect("under src/");
        if rel.starts_with("bin") {
            continue;
        }
        if path.is_dir() {
            read_tree(root, &path, files);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let mut module: Module = rel
            .parent()
            .into_iter()
            .flat_map(|p| p.iter())
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let stem = path.file_stem().expect("a file name").to_string_lossy();
        if !(stem == "mod" || (module.is_empty() && (stem == "lib" || stem == "main"))) {
            module.push(stem.into_owned());
        }
        let code = std::fs::read_to_string(&path).expect("a source file");
        files.insert(module, code);
    }
}

/// Modules, what each re-exports, and the edges between siblings.
struct Graph {
    /// Edges lifted to siblings, each with one reference that makes it (module: path).
    edges: BTreeMap<(Module, Module), String>,
}

impl Graph {
    fn of(files: &BTreeMap<Module, String>) -> Graph {
        let code: BTreeMap<Module, String> = files
            .iter()
            .map(|(m, c)| (m.clone(), without_tests(&strip(c))))
            .collect();
        let mut exports: BTreeMap<Module, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        let mut uses: BTreeMap<Module, Vec<Vec<String>>> = BTreeMap::new();
        for (module, code) in &code {
            for (public, tree) in use_statements(code) {
                for path in expand(&tree) {
                    if public && let Some(last) = path.last() {
                        let name = last.1.clone();
                        exports
                            .entry(module.clone())
                            .or_default()
                            .insert(name, path.iter().map(|(s, _)| s.clone()).collect());
                    }
                    uses.entry(module.clone())
                        .or_default()
                        .push(path.into_iter().map(|(s, _)| s).collect());
                }
            }
            for path in inline_paths(code) {
                uses.entry(module.clone()).or_default().push(path);
            }
        }
        let known: BTreeSet<Module> = code.keys().cloned().collect();
        let resolver = Resolver {
            known: &known,
            exports: &exports,
        };
        let mut edges = BTreeMap::new();
        for (from, paths) in &uses {
            for path in paths {
                let Some(to) = resolver.resolve(from, path, 0) else {
                    continue;
                };
                let k = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if from.len() <= k || to.len() <= k {
                    // An ancestor or a descendant: not an edge between siblings.
                    continue;
                }
                let (a, b) = (from[..=k].to_vec(), to[..=k].to_vec());
                edges
                    .entry((a, b))
                    .or_insert_with(|| format!("{}: {}", name(from), path.join("::")));
            }
        }
        Graph { edges }
    }

    /// Each strongly connected component of more than one module, with the edges inside it.
    fn cycles(&self) -> Vec<String> {
        let nodes: BTreeSet<&Module> = self.edges.keys().flat_map(|(a, b)| [a, b]).collect();
        let nodes: Vec<&Module> = nodes.into_iter().collect();
        let at = |m: &Module| nodes.iter().position(|n| *n == m).expect("a node");
        let mut next = vec![Vec::new(); nodes.len()];
        for (a, b) in self.edges.keys() {
            next[at(a)].push(at(b));
        }
        let mut out = Vec::new();
        for component in tarjan(&next) {
            if component.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = component.iter().copied().collect();
            let mut names: Vec<String> = members.iter().map(|&i| name(nodes[i])).collect();
            names.sort();
            let mut line = names.join(" <-> ");
            for ((a, b), why) in &self.edges {
                if members.contains(&at(a)) && members.contains(&at(b)) {
                    line.push_str(&format!("\n    {} -> {} ({why})", name(a), name(b)));
                }
            }
            out.push(line);
        }
        out
    }
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

/// Follows paths to the module that defines what they name.
struct Resolver<'a> {
    known: &'a BTreeSet<Module>,
    exports: &'a BTreeMap<Module, BTreeMap<String, Vec<String>>>,
}

impl Resolver<'_> {
    /// The module `path`, written in `from`, names (or names an item of); `None` for another
    /// crate's path.
    fn resolve(&self, from: &Module, path: &[String], depth: usize) -> Option<Module> {
        if depth > 16 {
            return None;
        }
        let (mut at, rest): (Module, &[String]) = match path.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &path[1..]),
            Some("self") => (from.clone(), &path[1..]),
            Some("super") => {
                let ups = path.iter().take_while(|s| *s == "super").count();
                (
                    from[..from.len().saturating_sub(ups)].to_vec(),
                    &path[ups..],
                )
            }
            Some(first) => {
                // A child module of `from` (`use state::State` in a `mod.rs`), or another crate.
                let mut child = from.clone();
                child.push(first.to_string());
                if !self.known.contains(&child) {
                    return None;
                }
                (from.clone(), path)
            }
            None => return None,
        };
        for (i, seg) in rest.iter().enumerate() {
            let mut child = at.clone();
            child.push(seg.clone());
            if self.known.contains(&child) {
                at = child;
                continue;
            }
            if let Some(target) = self.exports.get(&at).and_then(|e| e.get(seg)) {
                let mut followed = target.clone();
                followed.extend(rest[i + 1..].iter().cloned());
                return self.resolve(&at, &followed, depth + 1).or(Some(at));
            }
            break;
        }
        Some(at)
    }
}

/// `code` without comments, and with every string and char literal emptied.
fn strip(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &code[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if code[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if code[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(hashes) = raw_string_start(rest)
            && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            i = code[body..]
                .find(&close)
                .map_or(b.len(), |j| body + j + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && is_char_literal(rest) {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The number of `#`s if `s` starts a raw string (`r"`, `r#"`, `br"`, ...).
fn raw_string_start(s: &str) -> Option<usize> {
    let s = s.strip_prefix('b').unwrap_or(s);
    let s = s.strip_prefix('r')?;
    let hashes = s.bytes().take_while(|&c| c == b'#').count();
    (s.as_bytes().get(hashes) == Some(&b'"')).then_some(hashes)
}

/// Whether the `'` that `s` starts opens a char literal (not a lifetime or a label).
fn is_char_literal(s: &str) -> bool {
    let mut chars = s.chars().skip(1);
    match chars.next() {
        Some('\\') => true,
        Some(_) => chars.next() == Some('\''),
        None => false,
    }
}

/// `code` without its `#[cfg(test)] mod name { ... }` blocks.
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_mod = after
            .strip_prefix("mod ")
            .and_then(|m| m.find(['{', ';']).map(|j| m.as_bytes()[j] == b'{'))
            .unwrap_or(false);
        if !is_mod {
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        }
        let open = rest[at..].find('{').expect("a block") + at;
        let mut depth = 0;
        let mut end = rest.len();
        for (j, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Every `use` statement's tree, and whether it re-exports (`pub use`, `pub(...) use`).
fn use_statements(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = find_word(code, "use", from) {
        let Some(end) = code[at..].find(';').map(|j| at + j) else {
            break;
        };
        let before = code[..at].trim_end();
        let public = before.ends_with("pub")
            || before.ends_with(')') && {
                let open = before.rfind('(').unwrap_or(0);
                before[..open].trim_end().ends_with("pub")
            };
        out.push((public, code[at + 3..end].trim().to_string()));
        from = end;
    }
    out
}

/// The next occurrence of `word` at or after `from`, as a whole word.
fn find_word(code: &str, word: &str, mut from: usize) -> Option<usize> {
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while let Some(j) = code[from..].find(word) {
        let at = from + j;
        let before = at.checked_sub(1).map(|i| code.as_bytes()[i]);
        let after = code.as_bytes().get(at + word.len()).copied();
        if !before.is_some_and(ident) && !after.is_some_and(ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The paths of a use tree (`a::{b, c::d as e, self}`), each segment with the name it binds
/// (the alias for the last one).
fn expand(tree: &str) -> Vec<Vec<(String, String)>> {
    let tree: String = tree
        .chars()
        .filter(|c| !c.is_whitespace() || *c == ' ')
        .collect();
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<(String, String)> = tree[..open]
            .split("::")
            .filter(|s| !s.trim().is_empty())
            .map(|s| (s.trim().to_string(), s.trim().to_string()))
            .collect();
        let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (j, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&body[start..j]);
                    start = j + 1;
                }
                _ => {}
            }
        }
        parts.push(&body[start..]);
        let mut out = Vec::new();
        for part in parts.into_iter().filter(|p| !p.trim().is_empty()) {
            for tail in expand(part) {
                let mut path = head.clone();
                path.extend(tail);
                out.push(path);
            }
        }
        return out;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim())),
        None => (tree, None),
    };
    let mut segs: Vec<(String, String)> = path
        .split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "*")
        .map(|s| (s.to_string(), s.to_string()))
        .collect();
    if segs.len() > 1 && segs.last().is_some_and(|(s, _)| s == "self") {
        segs.pop();
    }
    if let (Some(alias), Some(last)) = (alias, segs.last_mut()) {
        last.1 = alias.to_string();
    }
    vec![segs]
}

/// Every path outside `use` lines that starts with `crate::`, `super::` or `self::`.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(j) = code[from..].find(start) {
            let at = from + j;
            from = at + start.len();
            if at > 0 && (ident(b[at - 1]) || b[at - 1] == b':') {
                continue;
            }
            let mut end = at;
            while end < b.len() && (ident(b[end]) || code[end..].starts_with("::")) {
                end += if b[end] == b':' { 2 } else { 1 };
            }
            let path: Vec<String> = code[at..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            out.push(path);
        }
    }
    out
}

/// Tarjan's strongly connected components of the graph `next` (adjacency lists).
fn tarjan(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Walk<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on: Vec<bool>,
        count: usize,
        out: Vec<Vec<usize>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.count);
            self.low[v] = self.count;
            self.count += 1;
            self.stack.push(v);
            self.on[v] = true;
            for &w in &self.next[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(i) if self.on[w] => self.low[v] = self.low[v].min(i),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.out.push(component);
            }
        }
    }
    let n = next.len();
    let mut walk = Walk {
        next,
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on: vec![false; n],
        count: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if walk.index[v].is_none() {
            walk.visit(v);
        }
    }
    walk.out
}
