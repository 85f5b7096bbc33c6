//! Every `fixtures/packs/err/*.yaml` fails validation with the code its first line names
//! (`# expect: TR-Mxxxx`).

use std::path::Path;

#[test]
fn err_fixtures_fail_with_expected_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/packs/err");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/packs/err exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 25,
        "expected at least 25 err fixtures, found {}",
        paths.len()
    );
    let mut failures = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("readable fixture");
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(code) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
        else {
            failures.push(format!("{name}: first line must be `# expect: TR-Mxxxx`"));
            continue;
        };
        let code = code.trim();
        if taskrunner_manifest::codes::summary(code).is_none() {
            failures.push(format!("{name}: {code} is not a known code"));
        }
        match taskrunner_manifest::parse(&text) {
            Ok(_) => failures.push(format!("{name}: parsed without errors")),
            Err(diags) => {
                if diags.is_empty() {
                    failures.push(format!("{name}: empty diagnostics"));
                } else if !diags.iter().any(|d| d.code == code) {
                    failures.push(format!("{name}: expected {code}, got:\n{diags}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
