//! Input resolution (SPEC §1.1, §8.1 rule 7): provided values → the resolved input map.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{InputType, Manifest};
use crate::schema::{self, ValueProblem};
use crate::suggest;

/// Resolves provided input values against the manifest's input definitions (SPEC §1.1):
/// type + schema checks, defaults, required, undeclared names. Errors point at `inputs.<name>`.
/// An optional input without default that is not provided is omitted from the result.
pub fn resolve_inputs(
    manifest: &Manifest,
    provided: &Map<String, Value>,
) -> Result<BTreeMap<String, Value>, Diagnostics> {
    let mut resolved = BTreeMap::new();
    let mut diags = Vec::new();
    let mut error = |code: &'static str, name: &str, message: String| {
        diags.push(Diagnostic {
            code,
            path: format!("inputs.{name}"),
            message,
            line: None,
            column: None,
        });
    };
    for name in provided.keys() {
        if !manifest.inputs().iter().any(|i| &i.name == name) {
            let hint = suggest::hint(name, manifest.inputs().iter().map(|i| i.name.as_str()));
            error(
                codes::INPUT_UNDECLARED,
                name,
                format!(
                    "input '{}' is not declared by the pack{hint}",
                    schema::excerpt(name)
                ),
            );
        }
    }
    for def in manifest.inputs() {
        match provided.get(&def.name) {
            Some(value) => match schema::check_value(def.ty, def.schema.as_ref(), value) {
                Ok(()) => {
                    resolved.insert(def.name.clone(), schema::normalize(def.ty, value.clone()));
                }
                Err(ValueProblem::Type(m)) => error(codes::INPUT_TYPE_MISMATCH, &def.name, m),
                Err(ValueProblem::Schema(m)) => error(codes::INPUT_SCHEMA_MISMATCH, &def.name, m),
            },
            None => match &def.default {
                Some(default) => {
                    resolved.insert(def.name.clone(), default.clone());
                }
                None if def.required => error(
                    codes::INPUT_REQUIRED,
                    &def.name,
                    format!(
                        "required input '{}' ({}) was not provided and has no default",
                        def.name,
                        def.ty.as_str()
                    ),
                ),
                None => {}
            },
        }
    }
    if diags.is_empty() {
        Ok(resolved)
    } else {
        Err(Diagnostics(diags))
    }
}

/// Coerces a command-line `--input NAME=VALUE` to the declared input's type (SPEC §8.1 rule 7):
/// a `string` input keeps the raw text (`123` stays `"123"`); other declared types parse the
/// text as JSON and fall back to the string when it does not parse; an undeclared name is JSON
/// when it parses, else a string (`resolve_inputs` then reports it).
pub fn coerce_cli_input(manifest: &Manifest, name: &str, raw: &str) -> Value {
    let declared = manifest
        .inputs()
        .iter()
        .find(|i| i.name == name)
        .map(|i| i.ty);
    match declared {
        Some(InputType::String) => Value::String(raw.to_owned()),
        _ => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned())),
    }
}
