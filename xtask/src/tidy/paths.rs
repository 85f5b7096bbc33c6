//! The repository stands alone: no file reads a path outside it.
//!
//! A fresh clone must build and test with nothing beside it, so no source, manifest or script
//! may name a path that climbs above the workspace root or points into the `shared/` reference
//! folder that sits beside the repository on the machines it was first developed on.
//!
//! The rule, per file:
//! - Rust (`*.rs`): every string literal is split into path-like tokens; a token with a `..`
//!   segment is resolved against the directory it is relative to (the package directory, i.e.
//!   `CARGO_MANIFEST_DIR` and the working directory of tests; the file's own directory for
//!   `include_str!`/`include_bytes!`/`include!`, `#[path]` and insta's `snapshot_path`) and
//!   must not climb above the workspace root. Comments are ignored.
//! - TOML, shell scripts and CI entry points: every token of every non-comment line, resolved
//!   against the file's directory.
//! - Everywhere: a token naming `/work/shared` or `../shared` is refused outright.
//!
//! Paths built from several literals (`.join("..").join("..")`) are not followed; the rule
//! catches the forms the repository actually uses (`join("../../../x")`,
//! `concat!(env!("CARGO_MANIFEST_DIR"), "/../../../x")`, `format!("{}/../../../x", …)`).
//!
//! Escape hatch: `// tidy: allow(outside-path) <reason>` (`# …` in TOML and shell) on the line
//! or on the line just above it. The reason is mandatory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::blank_comments_and_literals;

/// The name used in the escape hatch.
pub const OUTSIDE_PATH: &str = "outside-path";

/// What kind of file is being scanned, and so how its paths are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Rust source: string literals only, comments ignored.
    Rust,
    /// TOML, shell, CI scripts: whole lines, `#` comment lines ignored.
    Text,
}

/// Where a scanned file sits, as directory depths below the workspace root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depths {
    /// Depth of the directory holding the file (`crates/x/tests/a.rs` → 3).
    pub file_dir: usize,
    /// Depth of the package directory, the nearest ancestor with a `Cargo.toml`
    /// (`crates/x/tests/a.rs` → 2; the workspace root → 0).
    pub package_dir: usize,
}

/// Checks one file. `display` names it in messages.
pub fn check_file(display: &str, kind: FileKind, depths: Depths, contents: &str) -> Vec<String> {
    let raw_lines: Vec<&str> = contents.split('\n').collect();
    let mut violations = Vec::new();
    let mut report = |index: usize, token: &str, why: &str| {
        let here = raw_lines.get(index).copied().unwrap_or("");
        let above = index
            .checked_sub(1)
            .and_then(|i| raw_lines.get(i))
            .copied()
            .unwrap_or("");
        match allowance(here).or_else(|| allowance(above)) {
            Some(true) => {}
            Some(false) => violations.push(format!(
                "{display}:{}: `tidy: allow({OUTSIDE_PATH})` needs a reason after the parenthesis",
                index + 1
            )),
            None => violations.push(format!(
                "{display}:{}: {why}: {token:?} (the repository must stand alone; vendor what \
                 it needs under fixtures/)",
                index + 1
            )),
        }
    };
    let mut check = |index: usize, text: &str, base: usize| {
        for token in tokens(text) {
            if let Some(why) = outside(token, base) {
                report(index, token, why);
            }
        }
    };
    match kind {
        FileKind::Rust => {
            let code = blank_comments_and_literals(contents);
            for (line, start, literal) in string_literals(contents, &code) {
                let code_line = code.split('\n').nth(line).unwrap_or("");
                let before = code_line.get(..start).unwrap_or(code_line);
                let file_relative = ["include_str!", "include_bytes!", "include!", "#[path"]
                    .iter()
                    .any(|m| before.contains(m))
                    || before.contains("snapshot_path");
                let base = if file_relative {
                    depths.file_dir
                } else {
                    depths.package_dir
                };
                check(line, &literal, base);
            }
        }
        FileKind::Text => {
            for (index, line) in contents.split('\n').enumerate() {
                if line.trim_start().starts_with('#') {
                    continue;
                }
                check(index, line, depths.file_dir);
            }
        }
    }
    violations
}

/// `Some(true)` if `raw_line` carries `tidy: allow(outside-path) <reason>` (after `//` or `#`),
/// `Some(false)` if it carries one without a reason, `None` otherwise.
fn allowance(raw_line: &str) -> Option<bool> {
    const MARKER: &str = "tidy: allow(";
    let start = raw_line.find(MARKER)?;
    if !raw_line[..start].trim_end().ends_with(['/', '#']) {
        return None;
    }
    let rest = &raw_line[start + MARKER.len()..];
    let close = rest.find(')')?;
    if !rest[..close]
        .split(',')
        .any(|listed| listed.trim() == OUTSIDE_PATH)
    {
        return None;
    }
    Some(!rest[close + 1..].trim().is_empty())
}

/// Path-like tokens of a piece of text: runs of characters that can appear in a path.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '"' | '\''
                    | '`'
                    | ','
                    | ';'
                    | '='
                    | '('
                    | ')'
                    | '{'
                    | '}'
                    | '['
                    | ']'
                    | '<'
                    | '>'
                    | '|'
                    | '&'
                    | '\\'
                    | '!'
                    | '?'
                    | '*'
            )
    })
    .filter(|t| !t.is_empty())
}

/// Why `token`, read relative to a directory `base` levels below the workspace root, points
/// outside the repository; `None` if it does not.
fn outside(token: &str, base: usize) -> Option<&'static str> {
    // Spelled in pieces so that this file passes its own rule.
    const SHARED_ABSOLUTE: &str = concat!("/work", "/shared");
    const SHARED_BESIDE: &str = concat!("..", "/shared");
    if token.contains(SHARED_ABSOLUTE) || token.contains(SHARED_BESIDE) {
        return Some("names the shared reference folder outside the repository");
    }
    // `concat!(env!("CARGO_MANIFEST_DIR"), "/../x")` and `format!("{}/../x")` start with `/`.
    let relative = match token.strip_prefix('/') {
        Some(rest) if rest.starts_with("..") => rest,
        Some(_) => return None, // absolute: a system path (/bin/true, /etc/passwd), not ours
        None => token,
    };
    if !relative.split('/').any(|segment| segment == "..") {
        return None;
    }
    let mut depth = base;
    for segment in relative.split('/') {
        match segment {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return Some("path climbs above the workspace root"),
            },
            _ => depth += 1,
        }
    }
    None
}

/// `(0-based line, char column of the opening quote, text)` of every string literal, found from
/// `code` (the output of [`blank_comments_and_literals`], which keeps every quote of a literal
/// and blanks everything between them, char for char).
fn string_literals(source: &str, code: &str) -> Vec<(usize, usize, String)> {
    let source: Vec<char> = source.chars().collect();
    let mut literals = Vec::new();
    let mut line = 0usize;
    let mut column = 0usize;
    let mut open: Option<(usize, usize, usize)> = None; // (line, column, index after quote)
    for (index, c) in code.chars().enumerate() {
        match (c, open) {
            ('"', None) => open = Some((line, column, index + 1)),
            ('"', Some((at_line, at_column, start))) => {
                let text: String = source.get(start..index).unwrap_or(&[]).iter().collect();
                literals.push((at_line, at_column, text));
                open = None;
            }
            _ => {}
        }
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += c.len_utf8();
        }
    }
    literals
}

/// Every file under `root` that this rule scans: `*.rs`, `*.toml`, `*.sh`, and the scripts in
/// `.ci/` and `.github/`; `target/`, `.git/` and other hidden directories are skipped.
pub fn files_to_scan(root: &Path) -> anyhow::Result<Vec<(PathBuf, FileKind)>> {
    let mut found = Vec::new();
    walk(root, root, &mut found)?;
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<(PathBuf, FileKind)>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::path);
    let in_scripts_dir = dir
        .strip_prefix(root)
        .ok()
        .and_then(|r| r.components().next())
        .is_some_and(|c| c.as_os_str() == ".ci" || c.as_os_str() == ".github");
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            let hidden = name.starts_with('.') && name != ".ci" && name != ".github";
            if !hidden && name != "target" {
                walk(root, &path, found)?;
            }
            continue;
        }
        if !file_type.is_file() {
            continue;
        }
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("rs") => Some(FileKind::Rust),
            Some("toml" | "sh") => Some(FileKind::Text),
            Some("yml" | "yaml") | None if in_scripts_dir => Some(FileKind::Text),
            _ => None,
        };
        if let Some(kind) = kind {
            found.push((path, kind));
        }
    }
    Ok(())
}

/// The depths of `file` below `root` (see [`Depths`]).
pub fn depths_of(root: &Path, file: &Path) -> Depths {
    let relative_dir = file
        .parent()
        .and_then(|d| d.strip_prefix(root).ok())
        .unwrap_or(Path::new(""));
    let file_dir = relative_dir.components().count();
    let mut package_dir = 0;
    let mut ancestor = relative_dir;
    loop {
        if root.join(ancestor).join("Cargo.toml").is_file() {
            package_dir = ancestor.components().count();
            break;
        }
        match ancestor.parent() {
            Some(up) => ancestor = up,
            None => break,
        }
    }
    Depths {
        file_dir,
        package_dir,
    }
}

/// Result of scanning the repository.
#[derive(Debug, Default)]
pub struct PathScan {
    /// Files scanned.
    pub files_scanned: usize,
    /// One message per outside path.
    pub violations: Vec<String>,
}

/// Runs [`check_file`] over [`files_to_scan`].
pub fn check_outside_paths_in(root: &Path) -> anyhow::Result<PathScan> {
    let mut scan = PathScan::default();
    for (file, kind) in files_to_scan(root)? {
        let contents = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let display = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        scan.files_scanned += 1;
        scan.violations.extend(check_file(
            &display,
            kind,
            depths_of(root, &file),
            &contents,
        ));
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    //! The violations fed to the rule are assembled at run time (`up(3)`, [`SHARED`]) so that
    //! this file itself stays clean under the rule it tests.

    use super::*;

    /// `crates/x/tests/a.rs`.
    const TEST_FILE: Depths = Depths {
        file_dir: 3,
        package_dir: 2,
    };
    /// The root `Cargo.toml` or a script at the root.
    const ROOT_FILE: Depths = Depths {
        file_dir: 0,
        package_dir: 0,
    };
    /// `.ci/run`.
    const CI_FILE: Depths = Depths {
        file_dir: 1,
        package_dir: 0,
    };
    /// The shared reference folder.
    const SHARED: &str = concat!("/work", "/shared");

    /// `n` parent steps: `../../../` for 3.
    fn up(n: usize) -> String {
        "../".repeat(n)
    }

    fn rust(source: &str) -> Vec<String> {
        check_file("a.rs", FileKind::Rust, TEST_FILE, source)
    }

    fn one(violations: &[String], needles: &[&str]) {
        assert_eq!(
            violations.len(),
            1,
            "expected one violation: {violations:#?}"
        );
        for needle in needles {
            assert!(
                violations[0].contains(needle),
                "{:?} lacks {needle:?}",
                violations[0]
            );
        }
    }

    #[test]
    fn climbing_above_the_root_from_the_manifest_dir_fails() {
        let up3 = up(3);
        one(
            &rust(&format!(
                "let d = Path::new(env!(\"CARGO_MANIFEST_DIR\")).join(\"{up3}elsewhere\");\n"
            )),
            &["a.rs:1:", "climbs above the workspace root", "elsewhere"],
        );
        one(
            &rust(&format!(
                "\n\nlet p = concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/{up3}x.yaml\");\n"
            )),
            &["a.rs:3:", "climbs above"],
        );
        one(
            &rust(&format!(
                "let p = format!(\"{{}}/{up3}x\", env!(\"CARGO_MANIFEST_DIR\"));\n"
            )),
            &["climbs above"],
        );
        one(
            &rust(&format!("let p = \"fixtures/{}x\";\n", up(4))),
            &["climbs above"],
        );
        // The same text two levels up stays inside.
        assert_eq!(
            rust(&format!("let p = \"fixtures/{}x\";\n", up(3))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_shared_folder_is_refused_at_any_depth() {
        one(
            &rust(&format!("let d = x.join(\"{}shared/y\");\n", up(3))),
            &["a.rs:1:", "shared reference folder"],
        );
        one(
            &rust(&format!("let p = \"{SHARED}/SPEC.md\";\n")),
            &["shared reference folder"],
        );
        one(
            &rust(&format!("let p = \"{}shared/a.yaml\";\n", up(1))),
            &["shared reference folder"],
        );
        one(
            &check_file(
                "run",
                FileKind::Text,
                ROOT_FILE,
                &format!("cp {SHARED}/x .\n"),
            ),
            &["run:1:", "shared reference folder"],
        );
    }

    #[test]
    fn paths_inside_the_repository_pass() {
        let source = r##"
let a = Path::new(env!("CARGO_MANIFEST_DIR")).join("UP2/fixtures/packs");
let b = format!("{}/UP2/fixtures/packs/ok/{file}", env!("CARGO_MANIFEST_DIR"));
let c = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("UP2");
let d = "artifacts/sha256/UP2/etc/passwd";
let e = "/etc/passwd"; let f = "/bin/true";
let g = "script: echo bad > ../escape\n  up: \"UP2/x\"";
let h = r#"a/UP2/b"#;
let i = '"'; let j = "a \" UP2/b";
"##
        .replace("UP2", up(2).trim_end_matches('/'));
        assert!(source.contains(&format!("join(\"{}fixtures", up(2))));
        assert_eq!(rust(&source), Vec::<String>::new());
        // Comments are not paths.
        let comments = format!(
            "// {0}x and {1}\n/* \"{0}\" */\nfn f() {{}}\n",
            up(5),
            SHARED
        );
        assert_eq!(rust(&comments), Vec::<String>::new());
    }

    #[test]
    fn includes_and_module_paths_are_relative_to_the_file() {
        // crates/x/tests → three levels up is the root: fine for #[path] and includes…
        let up3 = up(3);
        assert_eq!(
            rust(&format!(
                "#[path = \"{up3}crates/y/tests/support/mod.rs\"]\nmod support;\n"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            rust(&format!(
                "const T: &str = include_str!(\"{up3}fixtures/a.yaml\");\n"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            rust(&format!(
                "insta::with_settings!({{snapshot_path => \"{up3}fixtures/s\"}}, {{}});\n"
            )),
            Vec::<String>::new()
        );
        // …but not four, and not for an ordinary literal.
        one(
            &rust(&format!(
                "const T: &[u8] = include_bytes!(\"{}secret\");\n",
                up(4)
            )),
            &["climbs above"],
        );
        one(
            &rust(&format!("let t = read(\"{up3}fixtures/a.yaml\");\n")),
            &["climbs above"],
        );
    }

    #[test]
    fn toml_and_scripts_resolve_from_their_directory() {
        let fuzz = Depths {
            file_dir: 1,
            package_dir: 1,
        };
        assert_eq!(
            check_file(
                "fuzz/Cargo.toml",
                FileKind::Text,
                fuzz,
                "[dependencies]\nx = { path = \"../crates/x\" }\n"
            ),
            Vec::<String>::new()
        );
        one(
            &check_file(
                "Cargo.toml",
                FileKind::Text,
                ROOT_FILE,
                "[dependencies]\nx = { path = \"../vendor/x\" }\n",
            ),
            &["Cargo.toml:2:", "climbs above"],
        );
        assert_eq!(
            check_file(
                ".ci/run",
                FileKind::Text,
                CI_FILE,
                &format!("cd \"$(dirname \"$0\")/..\"\n# {}x\n", up(4))
            ),
            Vec::<String>::new()
        );
        one(
            &check_file(
                ".ci/run",
                FileKind::Text,
                CI_FILE,
                &format!("ls \"$(dirname \"$0\")/{}\"\n", up(2)),
            ),
            &[".ci/run:1:", "climbs above"],
        );
    }

    #[test]
    fn escape_hatch_needs_a_reason() {
        let bad = format!("const P: &str = \"{}x\";", up(3));
        assert_eq!(
            rust(&format!(
                "// tidy: allow(outside-path) optional comparison, skipped when absent\n{bad}\n"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            rust(&format!("{bad} // tidy: allow(outside-path) test data\n")),
            Vec::<String>::new()
        );
        one(
            &rust(&format!("{bad} // tidy: allow(outside-path)\n")),
            &["needs a reason"],
        );
        // Another rule's allowance does not cover this one.
        one(
            &rust(&format!("{bad} // tidy: allow(HashMap) no\n")),
            &["climbs above"],
        );
        // Two lines above is too far.
        one(
            &rust(&format!("// tidy: allow(outside-path) too far\n\n{bad}\n")),
            &["a.rs:3:"],
        );
        // In TOML and scripts the marker follows `#`.
        assert_eq!(
            check_file(
                "run",
                FileKind::Text,
                ROOT_FILE,
                "ls ../x # tidy: allow(outside-path) the parent on purpose\n"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn depths_and_file_selection_follow_the_tree() {
        let root = std::env::temp_dir().join(format!("tidy-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["crates/x/tests", ".ci", ".git", "target/debug", "docs"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "Cargo.toml",
            "crates/x/Cargo.toml",
            "crates/x/tests/a.rs",
            ".ci/run",
            ".git/config.toml",
            "target/debug/b.rs",
            "docs/c.md",
        ] {
            std::fs::write(root.join(file), "").unwrap();
        }
        let found: Vec<String> = files_to_scan(&root)
            .unwrap()
            .iter()
            .map(|(p, _)| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            found,
            [
                ".ci/run",
                "Cargo.toml",
                "crates/x/Cargo.toml",
                "crates/x/tests/a.rs"
            ]
        );
        assert_eq!(
            depths_of(&root, &root.join("crates/x/tests/a.rs")),
            TEST_FILE
        );
        assert_eq!(depths_of(&root, &root.join("Cargo.toml")), ROOT_FILE);
        assert_eq!(depths_of(&root, &root.join(".ci/run")), CI_FILE);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
