//! The module-graph check (`.ci/module-graph.py`, issue 11) run on fabricated source trees:
//! it fails on a new import cycle and on a front importing a source, ignores test code,
//! comments and strings, follows `super`, inline modules and re-exports, and holds the known
//! list to what is there (a fixed problem must be pruned). Last, the real `src/` against the
//! checked-in list, so `cargo test` counts what CI runs.

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/module-graph.py");

/// Run the check on a tree of `(path under src/, code)` with a known list; exit success and
/// output.
fn check(tree: &[(&str, &str)], known: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for (path, code) in tree {
        let file = src.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, code).unwrap();
    }
    let known_file = dir.path().join("known.txt");
    std::fs::write(&known_file, known).unwrap();
    run(&src, &known_file)
}

fn run(src: &Path, known: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg("--src")
        .arg(src)
        .arg("--known")
        .arg(known)
        .output()
        .expect("python3 runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "the check itself failed: {text}"
    );
    (out.status.success(), text)
}

/// Fronts and sources that only reach the core: no problem at all.
const CLEAN: &[(&str, &str)] = &[
    (
        "lib.rs",
        "pub mod core;\npub mod dicomweb;\npub mod pacs;\n",
    ),
    ("core/mod.rs", "pub mod query;\npub use query::Query;\n"),
    ("core/query.rs", "pub struct Query;\n"),
    (
        "dicomweb/mod.rs",
        "pub mod qido;\nuse crate::core::Query;\n",
    ),
    (
        "dicomweb/qido.rs",
        "use super::*;\npub fn search(q: crate::core::Query) {}\n",
    ),
    ("pacs/mod.rs", "use crate::core::{self, query::Query};\n"),
];

#[test]
fn a_clean_tree_passes() {
    let (ok, out) = check(CLEAN, "");
    assert!(ok, "{out}");
    assert!(out.contains("module graph: ok"), "{out}");
}

#[test]
fn a_new_cycle_fails_and_names_it() {
    let mut tree = CLEAN.to_vec();
    // core/query.rs now reaches back into the front: core -> dicomweb -> core.
    tree.push((
        "core/query.rs",
        "pub struct Query;\nfn f() { crate::dicomweb::qido::search(Query) }\n",
    ));
    let (ok, out) = check(&tree, "");
    assert!(!ok, "{out}");
    for line in [
        "NEW cycle-module core -> dicomweb",
        "NEW cycle-module dicomweb -> core",
        "NEW cycle-file core/query.rs -> dicomweb/qido.rs",
        "NEW cycle-file dicomweb/qido.rs -> core/query.rs",
        "cycle core/query.rs -> dicomweb/qido.rs -> core/query.rs",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn a_cycle_through_super_and_an_inline_module_is_found() {
    let tree = [
        ("lib.rs", "pub mod store;\n"),
        ("store/mod.rs", "pub mod index;\n"),
        ("store/index/mod.rs", "pub mod sql;\npub mod audit;\n"),
        ("store/index/sql.rs", "use super::audit::Row;\n"),
        // `super` inside the inline module is audit.rs itself, not store/index.
        (
            "store/index/audit.rs",
            "pub struct Row;\nmod inner {\n    use super::*;\n    fn f() { super::super::sql::g() }\n}\n",
        ),
    ];
    let (ok, out) = check(&tree, "");
    assert!(!ok, "{out}");
    assert!(
        out.contains("NEW cycle-file store/index/audit.rs -> store/index/sql.rs"),
        "{out}"
    );
    assert!(
        !out.contains("cycle-module"),
        "one module, no module cycle: {out}"
    );
}

#[test]
fn a_front_importing_a_source_fails_with_the_line() {
    let mut tree = CLEAN.to_vec();
    tree.extend([
        (
            "lib.rs",
            "pub mod core;\npub mod dicomweb;\npub mod dimse;\npub mod pacs;\npub mod store;\n",
        ),
        ("pacs/gateway.rs", "pub struct Gateway;\n"),
        ("store/mod.rs", "mod index;\npub use index::Index;\n"),
        ("store/index.rs", "pub struct Index;\n"),
        (
            "dicomweb/wado.rs",
            "use crate::core::Query;\n\nuse crate::pacs::gateway::Gateway;\n",
        ),
        // Through a re-export: the file that defines `Index` is named.
        ("dimse/scp/find.rs", "fn f(i: &crate::store::Index) {}\n"),
        // An SCU is no front: the PACS client may use it.
        ("dimse/scu/mod.rs", "use crate::pacs::gateway::Gateway;\n"),
        ("dimse/mod.rs", "pub mod scp;\npub mod scu;\n"),
        ("dimse/scp/mod.rs", "pub mod find;\n"),
    ]);
    let (ok, out) = check(&tree, "");
    assert!(!ok, "{out}");
    assert!(
        out.contains("NEW front-source dicomweb/wado.rs -> pacs/gateway.rs"),
        "{out}"
    );
    assert!(
        out.contains("dicomweb/wado.rs:3: use crate::pacs::gateway::Gateway"),
        "{out}"
    );
    assert!(
        out.contains("NEW front-source dimse/scp/find.rs -> store/index.rs"),
        "{out}"
    );
    assert!(!out.contains("dimse/scu"), "{out}");
}

#[test]
fn test_code_comments_and_strings_are_not_imports() {
    let mut tree = CLEAN.to_vec();
    tree.push((
        "core/query.rs",
        r##"pub struct Query;
// crate::dicomweb::qido is named in a comment
/* and in a block comment: crate::dicomweb::qido::search /* nested */ crate::dicomweb */
const A: &str = "crate::dicomweb::qido";
const B: &str = r#"use crate::dicomweb::qido; "quoted""#;
const C: char = '"';
#[cfg(test)]
use crate::dicomweb::qido::search;
#[cfg(test)]
mod tests {
    use crate::dicomweb::qido::search;
    #[test]
    fn t() { { crate::dicomweb::qido::search(super::Query) } }
}
pub fn after<'a>(s: &'a str) -> &'a str { s }
"##,
    ));
    // A test-only module in a file of its own.
    tree.push((
        "core/mod.rs",
        "pub mod query;\npub use query::Query;\n#[cfg(test)]\nmod tests;\n",
    ));
    tree.push(("core/tests.rs", "use crate::dicomweb::qido::search;\n"));
    let (ok, out) = check(&tree, "");
    assert!(ok, "{out}");
}

#[test]
fn known_problems_pass_and_fixed_ones_must_be_pruned() {
    let tree = [
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b.rs", "use crate::a::A;\npub struct B;\n"),
    ];
    let known = "# today's\ncycle-module a -> b\ncycle-module b -> a\ncycle-file a.rs -> b.rs\ncycle-file b.rs -> a.rs\n";
    let (ok, out) = check(&tree, known);
    assert!(ok, "{out}");
    assert!(out.contains("4 known problem(s)"), "{out}");

    // The cycle is fixed: the list must lose its lines.
    let fixed = [tree[0], tree[1], ("b.rs", "pub struct B;\n")];
    let (ok, out) = check(&fixed, known);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FIXED, remove from known.txt: cycle-file a.rs -> b.rs"),
        "{out}"
    );
}

#[test]
fn the_source_tree_has_no_problem_beyond_the_known_list() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = run(&root.join("src"), &root.join(".ci/module-graph-known.txt"));
    assert!(ok, "{out}");
}
