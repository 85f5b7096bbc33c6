//! Banned APIs in the pure crates: scanning one source file (comments and literals blanked,
//! inline test modules skipped, grouped imports parsed) and every file of the pure crates.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{BANNED_APIS, PURE_CRATES};

/// What scanning one source file found.
#[derive(Debug, Default)]
pub struct SourceScan {
    /// `file:line: banned API X in pure crate (why)` messages.
    pub violations: Vec<String>,
    /// Out-of-line `#[cfg(test)] mod name;` declarations: those files are test code.
    pub test_modules: Vec<String>,
}

/// Scans one Rust source file for [`BANNED_APIS`]. `display` names the file in messages.
///
/// Comments, string and char literals are blanked first, and inline `#[cfg(test)] mod … { }`
/// blocks are skipped. Grouped imports (`use std::{fs, io}`) are parsed at their top level.
pub fn scan_source(display: &str, contents: &str) -> SourceScan {
    let raw_lines: Vec<&str> = contents.split('\n').collect();
    let code = blank_comments_and_literals(contents);
    let code_lines: Vec<&str> = code.split('\n').collect();
    let test_lines = test_module_lines(&code_lines);

    let mut hits: BTreeSet<(usize, &str)> = BTreeSet::new(); // (0-based line, api)
    for (index, line) in code_lines.iter().enumerate() {
        for (api, _) in BANNED_APIS {
            if find_token(line, api).is_some() {
                hits.insert((index, api));
            }
        }
    }
    for (index, api) in grouped_std_imports(&code) {
        hits.insert((index, api));
    }

    let mut scan = SourceScan {
        test_modules: test_lines.out_of_line,
        ..SourceScan::default()
    };
    for (index, api) in hits {
        if test_lines.inline.contains(&index) {
            continue;
        }
        let raw = raw_lines.get(index).copied().unwrap_or("");
        match allowance(raw, api) {
            Allowance::Allowed => continue,
            Allowance::MissingReason => scan.violations.push(format!(
                "{display}:{}: `// tidy: allow({api})` needs a reason after the parenthesis",
                index + 1
            )),
            Allowance::None => {
                let why = BANNED_APIS
                    .iter()
                    .find(|(a, _)| *a == api)
                    .map_or("", |(_, why)| *why);
                scan.violations.push(format!(
                    "{display}:{}: banned API {api} in pure crate ({why})",
                    index + 1
                ));
            }
        }
    }
    scan
}

pub(crate) enum Allowance {
    None,
    Allowed,
    MissingReason,
}

/// Parses `// tidy: allow(api[, api…]) reason` on a raw source line.
pub(crate) fn allowance(raw_line: &str, api: &str) -> Allowance {
    const MARKER: &str = "// tidy: allow(";
    let Some(start) = raw_line.find(MARKER) else {
        return Allowance::None;
    };
    let rest = &raw_line[start + MARKER.len()..];
    let Some(close) = rest.find(')') else {
        return Allowance::None;
    };
    if !rest[..close].split(',').any(|listed| listed.trim() == api) {
        return Allowance::None;
    }
    if rest[close + 1..].trim().is_empty() {
        Allowance::MissingReason
    } else {
        Allowance::Allowed
    }
}

pub(crate) fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Finds `token` in `line` with identifier boundaries on both sides.
pub(crate) fn find_token(line: &str, token: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = line[from..].find(token) {
        let start = from + offset;
        let end = start + token.len();
        let before_ok = !line[..start].chars().next_back().is_some_and(is_ident_char);
        let after_ok = !line[end..].chars().next().is_some_and(is_ident_char);
        if before_ok && after_ok {
            return Some(start);
        }
        from = end;
    }
    None
}

/// `std::{ … }` groups: each top-level item whose first segment is a banned `std` module.
/// Returns (0-based line, api) pairs. `code` must already have comments blanked.
pub(crate) fn grouped_std_imports(code: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = code[from..].find("std") {
        let start = from + offset;
        from = start + 3;
        if code[..start].chars().next_back().is_some_and(is_ident_char) {
            continue;
        }
        // Accept `std::{` with optional whitespace around `::`.
        let after = code[from..].trim_start();
        let Some(after) = after.strip_prefix("::") else {
            continue;
        };
        let after = after.trim_start();
        if !after.starts_with('{') {
            continue;
        }
        let group_start = code.len() - after.len() + 1; // just past `{`
        let mut depth = 1usize;
        let mut item_start = true;
        let mut position = group_start;
        for (i, c) in code[group_start..].char_indices() {
            position = group_start + i;
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => item_start = true,
                c if depth == 1 && item_start && is_ident_char(c) => {
                    item_start = false;
                    let word: String = code[position..]
                        .chars()
                        .take_while(|c| is_ident_char(*c))
                        .collect();
                    let api = match word.as_str() {
                        "fs" => Some("std::fs"),
                        "net" => Some("std::net"),
                        "env" => Some("std::env"),
                        "process" => Some("std::process"),
                        "thread" => Some("std::thread"),
                        _ => None,
                    };
                    if let Some(api) = api {
                        found.push((code[..position].matches('\n').count(), api));
                    }
                }
                _ => {}
            }
        }
        from = position.max(from);
    }
    found
}

/// Lines that are test code in one file.
#[derive(Default)]
pub(crate) struct TestLines {
    /// 0-based lines inside inline `#[cfg(test)] mod … { }` blocks.
    inline: BTreeSet<usize>,
    /// Names from `#[cfg(test)] mod name;`.
    out_of_line: Vec<String>,
}

pub(crate) fn test_module_lines(code_lines: &[&str]) -> TestLines {
    let mut result = TestLines::default();
    let mut pending = false; // saw `#[cfg(test)]`, waiting for the item it applies to
    let mut depth = 0usize; // brace depth inside a skipped block, 0 = not skipping
    for (index, line) in code_lines.iter().enumerate() {
        if depth > 0 {
            result.inline.insert(index);
            depth = adjust_depth(depth, line);
            continue;
        }
        let mut rest = line.trim();
        if let Some(after) = strip_cfg_test(rest) {
            pending = true;
            rest = after.trim();
        }
        if !pending || rest.is_empty() {
            continue;
        }
        if rest.starts_with("#[") {
            continue; // another attribute on the same item
        }
        pending = false;
        let Some(module) = module_declaration(rest) else {
            continue;
        };
        if rest.contains('{') {
            result.inline.insert(index);
            depth = adjust_depth(0, rest);
        } else {
            result.out_of_line.push(module);
        }
    }
    result
}

pub(crate) fn strip_cfg_test(line: &str) -> Option<&str> {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.starts_with("#[cfg(test)]") {
        return None;
    }
    // Return what follows the attribute on the same line.
    line.find(']').map(|end| &line[end + 1..])
}

/// `mod name`, `pub mod name`, `pub(crate) mod name` → `name`.
pub(crate) fn module_declaration(line: &str) -> Option<String> {
    let after_vis = if let Some(rest) = line.strip_prefix("pub") {
        let rest = rest.trim_start();
        match rest.strip_prefix('(') {
            Some(inner) => inner.split_once(')')?.1.trim_start(),
            None => rest,
        }
    } else {
        line
    };
    let name_part = after_vis.strip_prefix("mod ")?.trim_start();
    let name: String = name_part
        .chars()
        .take_while(|c| is_ident_char(*c))
        .collect();
    (!name.is_empty()).then_some(name)
}

pub(crate) fn adjust_depth(depth: usize, line: &str) -> usize {
    line.chars().fold(depth, |depth, c| match c {
        '{' => depth + 1,
        '}' => depth.saturating_sub(1),
        _ => depth,
    })
}

/// Replaces comments and the contents of string/char literals with spaces, keeping newlines
/// (so line numbers stay right) and quotes.
pub(crate) fn blank_comments_and_literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let mut block_depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if block_depth > 0 {
            if c == '/' && next == Some('*') {
                block_depth += 1;
                out.push_str("  ");
                i += 2;
            } else if c == '*' && next == Some('/') {
                block_depth -= 1;
                out.push_str("  ");
                i += 2;
            } else {
                out.push(blank(c));
                i += 1;
            }
            continue;
        }
        let previous_is_ident = i > 0 && is_ident_char(chars[i - 1]);
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(' ');
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                block_depth = 1;
                out.push_str("  ");
                i += 2;
            }
            'r' if !previous_is_ident
                || (i > 0 && chars[i - 1] == 'b' && !(i > 1 && is_ident_char(chars[i - 2]))) =>
            {
                // Raw string r"…", r#"…"#, br"…": count the hashes, then find the closing quote.
                let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
                if chars.get(i + 1 + hashes) != Some(&'"') {
                    out.push(c);
                    i += 1;
                    continue;
                }
                out.push('r');
                out.extend(std::iter::repeat_n('#', hashes));
                out.push('"');
                i += hashes + 2;
                while i < chars.len() {
                    if chars[i] == '"'
                        && chars[i + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|c| **c == '#')
                            .count()
                            == hashes
                    {
                        out.push('"');
                        out.extend(std::iter::repeat_n('#', hashes));
                        i += hashes + 1;
                        break;
                    }
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            '"' => {
                out.push('"');
                i += 1;
                while i < chars.len() {
                    match chars[i] {
                        '\\' => {
                            out.push(' ');
                            if let Some(&escaped) = chars.get(i + 1) {
                                out.push(blank(escaped));
                            }
                            i += 2;
                        }
                        '"' => {
                            out.push('"');
                            i += 1;
                            break;
                        }
                        other => {
                            out.push(blank(other));
                            i += 1;
                        }
                    }
                }
            }
            '\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a) — blank only literals.
                let end = if next == Some('\\') {
                    chars[i + 2..]
                        .iter()
                        .position(|c| *c == '\'')
                        .map(|p| i + 2 + p)
                } else if chars.get(i + 2) == Some(&'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match end {
                    Some(end) => {
                        out.push('\'');
                        out.extend(chars[i + 1..end].iter().map(|c| blank(*c)));
                        out.push('\'');
                        i = end + 1;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Result of scanning a set of crates.
#[derive(Debug, Default)]
pub struct ApiScan {
    /// Source files scanned (test modules excluded).
    pub files_scanned: usize,
    /// One message per hit.
    pub violations: Vec<String>,
}

/// Scans `crates/<pure crate>/src/**/*.rs` under `root` for banned APIs; absent crates are
/// skipped. `tests/` and `benches/` are not scanned, nor `#[cfg(test)]` modules.
pub fn check_banned_apis_in(root: &Path) -> anyhow::Result<ApiScan> {
    let mut result = ApiScan::default();
    for krate in PURE_CRATES {
        let src = root.join("crates").join(krate).join("src");
        if !src.is_dir() {
            continue;
        }
        let mut scans = Vec::new();
        for file in rs_files(&src)? {
            let contents = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let display = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let scan = scan_source(&display, &contents);
            scans.push((file, scan));
        }
        // Files declared as `#[cfg(test)] mod name;` (and their children) are test code.
        let mut test_paths: Vec<PathBuf> = Vec::new();
        for (file, scan) in &scans {
            let base = module_dir(file);
            for module in &scan.test_modules {
                test_paths.push(base.join(format!("{module}.rs")));
                test_paths.push(base.join(module));
            }
        }
        for (file, scan) in scans {
            if test_paths.iter().any(|test| file.starts_with(test)) {
                continue;
            }
            result.files_scanned += 1;
            result.violations.extend(scan.violations);
        }
    }
    Ok(result)
}

/// The directory holding the child modules of `file`.
pub(crate) fn module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new(""));
    match file.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs" | "main.rs" | "mod.rs") => parent.to_path_buf(),
        _ => parent.join(file.file_stem().unwrap_or_default()),
    }
}

pub(crate) fn rs_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rs_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}
