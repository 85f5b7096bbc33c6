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
mod validate;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use inputs::{coerce_cli_input, resolve_inputs};
pub use model::*;
pub use schema::{INPUT_SCHEMA_BYTES_MAX, INPUT_SCHEMA_DEPTH_MAX, INTEGER_ABS_MAX};

/// Parses and validates a manifest. Collects all problems.
pub fn parse(yaml: &str) -> Result<Manifest, Diagnostics> {
    let tree = yaml::read(yaml).map_err(|d| Diagnostics(vec![d]))?;
    validate::validate(&tree)
}
