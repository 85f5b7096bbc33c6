//! Every run-creation code (`TR-R…`) has a page `docs/errors/<code>.md` listed in
//! `docs/errors/README.md`, like the manifest and plan codes.

use std::path::Path;

#[test]
fn every_code_has_a_docs_page() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/errors");
    let index = std::fs::read_to_string(dir.join("README.md")).expect("docs/errors/README.md");
    let mut missing = Vec::new();
    for (code, _) in taskrunner_runtime::codes::ALL {
        assert!(code.starts_with("TR-R"), "{code}");
        match std::fs::read_to_string(dir.join(format!("{code}.md"))) {
            Ok(text) if text.starts_with(&format!("# {code}:")) => {}
            Ok(_) => missing.push(format!("{code}.md must start with `# {code}:`")),
            Err(_) => missing.push(format!("{code}.md is missing")),
        }
        if !index.contains(&format!("({code}.md)")) {
            missing.push(format!("README.md does not link {code}.md"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
