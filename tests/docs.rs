//! Docs that cannot drift: README.md, CONTRIBUTING.md and docs/*.md may name only source
//! paths that exist, `venueql` commands the binary has, environment variables the code
//! reads, and GraphQL fields and arguments the schemas have. Each check collects every
//! mention first, so a failure lists all of them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The documents held to the code.
fn documents() -> Vec<(String, String)> {
    let mut paths = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| (p.strip_prefix(root()).unwrap().display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The text between backticks (inline code), and every line of fenced code blocks.
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            spans.push(line.to_string());
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
            spans.push(inside.to_string());
        }
    }
    spans
}

/// Every text file of a tree (skipping build output and dependencies).
fn tree_text(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if ["target", "node_modules", "dist", ".git"].contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            tree_text(&path, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push_str(&text);
            out.push('\n');
        }
    }
}

fn code_text() -> String {
    let mut text = String::new();
    for dir in ["src", "migrations", "examples", "scripts", "tests"] {
        tree_text(&root().join(dir), &mut text);
    }
    text
}

fn schemas() -> String {
    let read = |name: &str| std::fs::read_to_string(root().join(name)).unwrap();
    read("schema.graphql") + &read("schema.public.graphql")
}

fn words(span: &str) -> impl Iterator<Item = &str> {
    span.split(|c: char| {
        !(c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '.' || c == '-' || c == '{' || c == '}')
    })
    .filter(|w| !w.is_empty())
}

#[test]
fn every_source_path_the_docs_name_exists() {
    let prefixes = ["src/", "tests/", "migrations/", "scripts/", "examples/", "stripe/", "docs/", ".ci/"];
    let mut missing = BTreeSet::new();
    for (doc, text) in documents() {
        for span in code_spans(&text) {
            for word in words(&span) {
                let path = word.trim_end_matches(['.', ',', ':']);
                // Built output is not in the repository; `{…}` is a placeholder.
                if !prefixes.iter().any(|p| path.starts_with(p)) || path.contains('{') || path.contains("/dist") {
                    continue;
                }
                if !root().join(path.trim_end_matches('/')).exists() {
                    missing.insert(format!("{doc}: {path}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "the docs name paths that do not exist:\n{}", Vec::from_iter(missing).join("\n"));
}

/// The subcommand words of a `venueql …` command line (up to the first option or
/// placeholder).
fn subcommands(line: &str) -> Option<Vec<String>> {
    let at = line.find("venueql ")?;
    let before = &line[..at];
    if !(before.trim().is_empty() || before.trim_end().ends_with("--") || before.trim_end().ends_with("$")) {
        return None;
    }
    let chain: Vec<String> = line[at + 8..]
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
        .map(String::from)
        .collect();
    (!chain.is_empty()).then_some(chain)
}

#[test]
fn every_venueql_command_the_docs_show_exists() {
    let mut checked = BTreeSet::new();
    let mut missing = Vec::new();
    for (doc, text) in documents() {
        for span in code_spans(&text) {
            let Some(chain) = subcommands(&span) else { continue };
            if !checked.insert(chain.clone()) {
                continue;
            }
            let output = Command::new(env!("CARGO_BIN_EXE_venueql")).args(&chain).arg("--help").output().unwrap();
            if !output.status.success() {
                missing.push(format!("{doc}: venueql {}", chain.join(" ")));
            }
        }
        if text.contains("venueql-bench") {
            let output = Command::new(env!("CARGO_BIN_EXE_venueql-bench")).arg("--help").output().unwrap();
            assert!(output.status.success(), "venueql-bench --help failed");
        }
    }
    assert!(checked.len() > 10, "the docs show commands; the check must see them: {checked:?}");
    assert!(missing.is_empty(), "the docs show commands the binary does not have:\n{}", missing.join("\n"));
}

/// Names documented as part of the configuration contract (SPEC §11) that a later
/// feature will read; each must still be unread, so implementing it forces this list
/// (and the docs) to be updated.
const NOT_YET_READ: &[&str] = &[];

#[test]
fn every_setting_the_docs_name_is_read_by_the_code() {
    let code = code_text();
    let mut unread = BTreeSet::new();
    let mut seen = 0;
    for (doc, text) in documents() {
        // The settings tables: `| \`NAME\` | default | meaning |`.
        for line in text.lines().filter(|l| l.starts_with("| `")) {
            for name in line.split('|').nth(1).unwrap_or_default().split('`').skip(1).step_by(2) {
                let name = name.trim();
                if !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    || !name.contains('_')
                {
                    continue;
                }
                seen += 1;
                let read = code.contains(&format!("\"{name}\""));
                if read == NOT_YET_READ.contains(&name) {
                    unread.insert(format!("{doc}: {name}"));
                }
            }
        }
    }
    assert!(seen > 40, "the settings table was not found ({seen} names)");
    assert!(
        unread.is_empty(),
        "settings named in the docs that the code does not read:\n{}",
        Vec::from_iter(unread).join("\n")
    );
}

/// Names in code spans that are neither GraphQL nor read by the code, on purpose.
const NOT_GRAPHQL: &[&str] = &["localStorage"];

#[test]
fn every_graphql_name_and_constant_the_docs_use_exists() {
    let schema = schemas();
    let code = code_text();
    let mut unknown = BTreeSet::new();
    for (doc, text) in documents() {
        for span in code_spans(&text) {
            for word in words(&span) {
                for part in word.split(['.', '/']) {
                    let camel = part.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && part.chars().any(|c| c.is_ascii_uppercase())
                        && part.chars().all(|c| c.is_ascii_alphanumeric());
                    let constant = part.len() > 3
                        && part.contains('_')
                        && part.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                    if !(camel || constant) || NOT_GRAPHQL.contains(&part) {
                        continue;
                    }
                    // A GraphQL field, argument, type or enum value, or a name the code uses.
                    if !schema.contains(part) && !code.contains(part) {
                        unknown.insert(format!("{doc}: {part}"));
                    }
                }
            }
        }
    }
    assert!(unknown.is_empty(), "the docs name things nothing defines:\n{}", Vec::from_iter(unknown).join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert_eq!(code_spans("a `venueql admin grant --x` b `src/x.rs`"), ["venueql admin grant --x", "src/x.rs"]);
    assert_eq!(subcommands("venueql admin create-venue --slug S"), Some(vec!["admin".into(), "create-venue".into()]));
    assert_eq!(subcommands("cargo run -q -- dev pay"), None);
    assert_eq!(subcommands("cargo run -q -- venueql dev"), Some(vec!["dev".into()]));
}
