//! Task-pack manifests (SPEC §1): YAML text → validated [`Manifest`], or every problem found.
//!
//! Owns: the YAML reading limits (size, depth, alias expansion), the generic positioned tree,
//! validation of every SPEC §1 rule with stable `TR-M…` codes, and input resolution (type +
//! JSON Schema). Pure: no I/O, no clock.
//!
//! Pipeline: `yaml::read` (text → positioned tree) → `validate::validate` (tree → `Manifest`,
//! collecting all diagnostics; expressions parsed, references checked by `refs`).

pub mod codes;
mod diagnostic;
mod inputs;
mod model;
mod refs;
mod schema;
mod suggest;
mod uses;
mod validate;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use inputs::{coerce_cli_input, resolve_inputs};
pub use model::*;
pub use schema::{INPUT_SCHEMA_BYTES_MAX, INPUT_SCHEMA_DEPTH_MAX, INTEGER_ABS_MAX};
pub use uses::{InvalidUses, USES_BYTES_MAX, Uses, parse_uses};

/// Parses and validates a manifest. Collects all problems.
pub fn parse(yaml: &str) -> Result<Manifest, Diagnostics> {
    let tree = yaml::read(yaml).map_err(|d| Diagnostics(vec![d]))?;
    validate::validate(&tree)
}

/// Reads one YAML document (JSON is YAML) into a plain JSON value with exactly the manifest
/// reader: the same size, depth and alias-expansion budgets, the YAML 1.2 core schema (`yes`,
/// `on`, `Off` are strings; `010` is the integer 10, `0o10` is 8, `0x1F` is 31, `1_000` is a
/// string), duplicate mapping keys rejected (`TR-M0004`; `1` and `"1"` are the same key),
/// integers outside ±2^53 and non-finite numbers (`.inf`, `.nan`, `1e400`) rejected
/// (`TR-M0016`). Meant for `--inputs` files. Diagnostic paths start at the document root
/// (`target`, `regions[1]`).
pub fn parse_value(text: &str) -> Result<serde_json::Value, Diagnostics> {
    let tree = yaml::read_document(text, "document").map_err(|d| Diagnostics(vec![d]))?;
    validate::to_json(&tree)
}
