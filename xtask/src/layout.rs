//! `cargo xtask layout`: the workspace's shape, checked (CI runs it):
//!
//! - no first-party crate holds more than [`MAX_CRATE_SHARE`] of the source lines (`src/` of
//!   every crate and of xtask);
//! - no function is longer than [`MAX_FN_LINES`] lines, from the line of its `fn` to its
//!   closing brace, outside the numeric kernels of explr-nn ([`KERNEL_CRATES`]);
//! - the `explr` binary's own code (`main.rs` and `cli/`) is under [`MAX_BINARY_LINES`] lines;
//! - no crate has a module cycle: module `a` uses module `b` when `a` names a path
//!   `crate::b…` or `super::b…` outside its `#[cfg(test)]` modules.
//!
//! The scan is lexical: comments, strings and character literals are blanked first, so that
//! a brace or a `fn` inside them counts for nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The largest share of the workspace's source lines one crate may hold.
pub const MAX_CRATE_SHARE: f64 = 0.25;
/// The longest function allowed, in lines.
pub const MAX_FN_LINES: usize = 120;
/// The most lines the `explr` binary's own modules may hold together.
pub const MAX_BINARY_LINES: usize = 500;
/// Crates whose functions are numeric kernels, exempt from [`MAX_FN_LINES`].
pub const KERNEL_CRATES: &[&str] = &["crates/nn"];
/// The binary's own code, relative to the workspace root.
const BINARY_ROOT: &str = "crates/replicate/src";

/// One crate's source files.
struct Crate {
    /// Its folder, relative to the workspace root (`crates/nn`, `xtask`).
    dir: String,
    /// Every `.rs` file under `src/`, with its text.
    files: Vec<(PathBuf, String)>,
}

impl Crate {
    fn lines(&self) -> usize {
        self.files.iter().map(|(_, t)| t.lines().count()).sum()
    }
}

/// Runs every check, prints the measurements and fails on any violation.
pub fn run(root: &Path) -> Result<()> {
    let crates = load(root)?;
    let mut problems = Vec::new();
    let total: usize = crates.iter().map(Crate::lines).sum();
    println!("source lines: {total}");
    for c in &crates {
        let share = c.lines() as f64 / total as f64;
        println!("  {:<20} {:>6} ({:.1} %)", c.dir, c.lines(), 100.0 * share);
        if share > MAX_CRATE_SHARE {
            problems.push(format!(
                "{} holds {:.1} % of the source lines (at most {:.0} %): split it by layer",
                c.dir,
                100.0 * share,
                100.0 * MAX_CRATE_SHARE
            ));
        }
    }
    let binary = binary_lines(&crates);
    println!("explr binary (main.rs and cli/): {binary} lines");
    if binary >= MAX_BINARY_LINES {
        problems.push(format!(
            "the explr binary's own code is {binary} lines (under {MAX_BINARY_LINES} allowed): \
             move logic into the library"
        ));
    }
    let mut longest = Vec::new();
    for c in &crates {
        for (path, text) in &c.files {
            for f in functions(&blank(text)) {
                longest.push((f.lines, path.clone(), f));
            }
        }
    }
    longest.sort_by_key(|l| std::cmp::Reverse(l.0));
    println!("longest functions:");
    for (lines, path, f) in longest.iter().take(8) {
        println!("  {lines:>4}  {}:{} {}", path.display(), f.line, f.name);
    }
    for (lines, path, f) in &longest {
        let kernel = KERNEL_CRATES.iter().any(|k| path.starts_with(k));
        if *lines > MAX_FN_LINES && !kernel {
            problems.push(format!(
                "{}:{} fn {} is {lines} lines (at most {MAX_FN_LINES})",
                path.display(),
                f.line,
                f.name
            ));
        }
    }
    for c in &crates {
        for cycle in module_cycles(c) {
            problems.push(format!("{}: module cycle {}", c.dir, cycle.join(" → ")));
        }
    }
    if problems.is_empty() {
        println!("layout: ok");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("layout: {p}");
        }
        bail!("{} layout problem(s)", problems.len())
    }
}

/// Every crate under `crates/`, and xtask, with its sources.
fn load(root: &Path) -> Result<Vec<Crate>> {
    let mut dirs: Vec<String> = std::fs::read_dir(root.join("crates"))
        .context("reading crates/")?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| format!("crates/{}", e.file_name().to_string_lossy()))
        .collect();
    dirs.sort();
    dirs.push("xtask".into());
    dirs.into_iter()
        .map(|dir| {
            let mut files = Vec::new();
            collect_rs(root, &Path::new(&dir).join("src"), &mut files)?;
            files.sort();
            Ok(Crate { dir, files })
        })
        .collect()
}

fn collect_rs(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            collect_rs(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(root.join(&path))
                .with_context(|| format!("reading {}", path.display()))?;
            out.push((path, text));
        }
    }
    Ok(())
}

/// Lines of the `explr` binary's own modules: `main.rs` and everything under `cli/`.
fn binary_lines(crates: &[Crate]) -> usize {
    let main = Path::new(BINARY_ROOT).join("main.rs");
    let cli = Path::new(BINARY_ROOT).join("cli");
    crates
        .iter()
        .flat_map(|c| &c.files)
        .filter(|(p, _)| *p == main || p.starts_with(&cli))
        .map(|(_, t)| t.lines().count())
        .sum()
}

/// `text` with the contents of comments, strings and character literals replaced by spaces
/// (newlines kept, so line numbers hold).
pub fn blank(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep(b[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&b, i) {
            // r"…", r#"…"#, br"…": up to the closing quote followed by as many hashes.
            let open = b[i..].iter().position(|&c| c == '"').unwrap_or(0) + i;
            out.extend(b[i..=open].iter());
            i = open + 1;
            while i < b.len() {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    out.push('"');
                    out.extend(std::iter::repeat_n('#', hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(keep(b[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(keep(b[i]));
                    i += 1;
                }
            }
            if i < b.len() {
                out.push('"');
                i += 1;
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{…}') or a lifetime ('a).
            let close = if next == Some('\\') {
                b[i + 3..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map(|p| p + i + 3)
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.push('\'');
                    out.extend(std::iter::repeat_n(' ', end - i - 1));
                    out.push('\'');
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev(b: &[char], i: usize) -> char {
    if i == 0 {
        ' '
    } else {
        b[i - 1]
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The number of `#`s of a raw string literal starting at `i` (`r"`, `r#"`, `br"`), if one does.
fn raw_string_start(b: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if is_ident_char(prev(b, i)) {
        return None;
    }
    if b.get(j) == Some(&'b') {
        j += 1;
    }
    if b.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while b.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some(hashes)
}

/// A function with a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// The line of its `fn` (1-based).
    pub line: usize,
    /// Lines from its `fn` to its closing brace, both included.
    pub lines: usize,
}

/// Every function with a body in `code` (already [`blank`]ed), nested ones included.
pub fn functions(code: &str) -> Vec<Function> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(p) = code[i..].find("fn ") {
        let at = i + p;
        i = at + 3;
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue;
        }
        let name: String = code[at + 3..]
            .trim_start()
            .chars()
            .take_while(|&c| is_ident_char(c))
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body opens at the first `{` outside parentheses, unless a `;` ends a declaration
        // first.
        let (mut depth, mut j, mut open) = (0i32, at, None);
        while j < b.len() {
            match b[j] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    open = Some(j);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let Some(open) = open else { continue };
        let Some(close) = matching_brace(b, open) else {
            continue;
        };
        let line = line_of(b, at);
        found.push(Function {
            name,
            line,
            lines: line_of(b, close) - line + 1,
        });
    }
    found
}

fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (k, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

fn line_of(b: &[u8], at: usize) -> usize {
    1 + b[..at].iter().filter(|&&c| c == b'\n').count()
}

/// `code` without its `#[cfg(test)]` modules (`#[cfg(test)] mod name { … }`).
fn without_test_modules(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let rest = &out[at + "#[cfg(test)]".len()..];
        let trimmed = rest.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        let open = rest.find(['{', ';']).map(|p| p + at + "#[cfg(test)]".len());
        let end = match open {
            Some(o) if is_mod && out.as_bytes()[o] == b'{' => {
                matching_brace(out.as_bytes(), o).map(|c| c + 1)
            }
            Some(o) => Some(o + 1),
            None => None,
        };
        let end = end.unwrap_or(out.len());
        out.replace_range(at..end, "");
    }
    out
}

/// The module a file under `src/` defines (`a::b` for `src/a/b.rs` or `src/a/b/mod.rs`; the
/// crate root is ``).
fn module_name(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("lib" | "main" | "mod")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The module dependency graph of a crate's files: module → modules it names.
pub fn module_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = files.iter().map(|(m, _)| m.as_str()).collect();
    let mut graph = BTreeMap::new();
    for (module, text) in files {
        let code = without_test_modules(&blank(text));
        let mut uses = BTreeSet::new();
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        for (prefix, base) in [("crate::", ""), ("super::", parent)] {
            let mut i = 0;
            while let Some(p) = code[i..].find(prefix) {
                let at = i + p;
                i = at + prefix.len();
                if at > 0 && is_ident_char(code[..at].chars().last().unwrap_or(' ')) {
                    continue;
                }
                let path: String = code[i..]
                    .chars()
                    .take_while(|&c| is_ident_char(c) || c == ':')
                    .collect();
                let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                // The longest prefix of the path that is a module of the crate.
                let target = (1..=segments.len()).rev().find_map(|k| {
                    let rel = segments[..k].join("::");
                    let full = if base.is_empty() {
                        rel
                    } else {
                        format!("{base}::{rel}")
                    };
                    modules.contains(full.as_str()).then_some(full)
                });
                if let Some(t) = target {
                    let ancestor = module.starts_with(&format!("{t}::"));
                    if t != *module && !ancestor {
                        uses.insert(t);
                    }
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
pub fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let lw = self.low[w.as_str()];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w.as_str()) {
                    let iw = self.index[w.as_str()];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

fn module_cycles(c: &Crate) -> Vec<Vec<String>> {
    let src = Path::new(&c.dir).join("src");
    // A crate with a library and binaries: each binary root is a crate of its own; module
    // names only matter within the library's tree and each `bin/` file, so `main.rs`'s
    // modules are named as the library's would be (they never share names in this workspace).
    let files: Vec<(String, String)> = c
        .files
        .iter()
        .map(|(p, t)| (module_name(&src, p), t.clone()))
        .collect();
    cycles(&module_graph(&files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanking_hides_braces_and_fns_in_comments_strings_and_chars() {
        let text = "fn a() {\n  // fn b() {\n  let s = \"fn c() { }\";\n  let r = r#\"}\"#;\n  let c = '{';\n  /* fn d() { */\n}\n";
        let f = functions(&blank(text));
        assert_eq!(
            f,
            vec![Function {
                name: "a".into(),
                line: 1,
                lines: 7
            }]
        );
    }

    #[test]
    fn a_division_is_not_a_comment_and_a_last_comment_needs_no_newline() {
        // A `/` that opens no comment leaves the rest of its line, braces included, as code.
        let text = "fn f() -> [u8; 4/2] {\n    [0; 2]\n}\nfn g(p: &u8) -> u8 { 8 / *p }\n// end";
        let f = functions(&blank(text));
        let found: Vec<(&str, usize, usize)> = f
            .iter()
            .map(|f| (f.name.as_str(), f.line, f.lines))
            .collect();
        assert_eq!(found, [("f", 1, 3), ("g", 4, 1)]);
        assert!(
            blank(text).ends_with("      "),
            "the last comment is blanked"
        );
    }

    #[test]
    fn strings_raw_strings_and_comments_are_blanked_exactly() {
        let cases = [
            // Escapes, a brace and a quote inside a string.
            ("x = \"a{\\\"}\";", "x = \"     \";"),
            // Raw strings with and without hashes, a quote inside, and a byte raw string.
            ("r\"{\" r#\"a\"{\"# br\"}\"", "r\" \" r#\"   \"# br\" \""),
            // An identifier ending in r or br before a quote is no raw string.
            ("fr\"{\"", "fr\" \""),
            // A block comment holding a `*` and a `/`, then code.
            ("/* a * b / c { */ {", "                  {"),
            // An unterminated block comment runs to the end.
            ("{ /* }", "{     "),
            // A raw string keeps its backslash (no escape), with two hashes a `"#` inside.
            ("br\"\\\" {", "br\" \" {"),
            ("r##\"a\"#{\"## {", "r##\"    \"## {"),
            // Strings left open at the end run to it.
            ("{ \"{", "{ \" "),
            ("{ \"\\", "{ \" "),
            ("{ r\"{", "{ r\" "),
            // Character literals (escaped too) and a lifetime.
            ("'{' '\\'' 'a {", "' ' '  ' 'a {"),
        ];
        for (text, blanked) in cases {
            assert_eq!(blank(text), blanked, "{text}");
        }
    }

    #[test]
    fn fn_inside_a_name_and_braces_before_the_body_are_not_functions() {
        let text = "impl Xfn for Y {\n}\nfn f(a: [u8; { 1 + 1 }]) -> u8 {\n    0\n}\nimpl X_fn for Y {}\nfn g()";
        let found: Vec<(String, usize, usize)> = functions(&blank(text))
            .into_iter()
            .map(|f| (f.name, f.line, f.lines))
            .collect();
        assert_eq!(found, [("f".to_string(), 3, 3)]);
    }

    #[test]
    fn declarations_and_lifetimes_are_not_bodies() {
        let text = "trait T { fn x(&self) -> u8; }\nfn long<'a>(s: &'a str) -> &'a str {\n  s\n}\n";
        let f = functions(&blank(text));
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].name.as_str(), f[0].line, f[0].lines), ("long", 2, 3));
    }

    #[test]
    fn a_cycle_through_crate_and_super_paths_is_found() {
        let files = vec![
            ("".to_string(), "mod a; mod b;".to_string()),
            ("a".to_string(), "use crate::b::X;".to_string()),
            ("b".to_string(), "use crate::a::c::Y;".to_string()),
            (
                "a::c".to_string(),
                "fn f() { super::super::b::g() }".to_string(),
            ),
        ];
        // a → b → a::c, and a::c → b is through `super::super`, which this lint does not
        // follow; b → a::c → (nothing of a's parent) is no cycle yet.
        assert!(cycles(&module_graph(&files)).is_empty());
        let files = vec![
            ("a".to_string(), "use crate::b::X;".to_string()),
            ("b".to_string(), "fn f() { super::a::g() }".to_string()),
        ];
        assert_eq!(cycles(&module_graph(&files)), vec![vec!["a", "b"]]);
    }

    #[test]
    fn uses_inside_test_modules_and_of_ancestors_do_not_count() {
        let files = vec![
            ("a".to_string(), "use crate::b::X;\n".to_string()),
            (
                "b".to_string(),
                "fn f() {}\n#[cfg(test)]\nmod tests { use crate::a::Y; }\n".to_string(),
            ),
            ("a::c".to_string(), "use crate::a::Z;".to_string()),
        ];
        let g = module_graph(&files);
        assert!(g["b"].is_empty());
        assert!(g["a::c"].is_empty());
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn module_names_follow_the_file_tree() {
        let src = Path::new("crates/x/src");
        assert_eq!(module_name(src, &src.join("lib.rs")), "");
        assert_eq!(module_name(src, &src.join("a/mod.rs")), "a");
        assert_eq!(module_name(src, &src.join("a/b.rs")), "a::b");
    }
}
