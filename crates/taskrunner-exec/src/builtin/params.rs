//! Checks shared by the built-ins' `with` parsing: object shape, known keys, env maps,
//! argv strings.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::ExecError;

/// Most variables `with.env` may set.
pub(crate) const ENV_VARS_MAX: usize = 1024;
/// Most argv elements of a command.
pub(crate) const ARGS_MAX: usize = 4096;

/// `with` as an object (`null` counts as empty); unknown keys are refused so that a typo
/// (`scirpt`, `evn`) never silently changes what runs.
pub(crate) fn object<'a>(
    executor: &str,
    with: &'a Value,
    known: &[&str],
) -> Result<Option<&'a Map<String, Value>>, ExecError> {
    let map = match with {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        _ => {
            return Err(ExecError::invalid(format!(
                "{executor}: `with` must be an object"
            )));
        }
    };
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(ExecError::invalid(format!(
            "{executor}: unknown parameter(s) {} (expected {})",
            unknown.join(", "),
            known.join(", ")
        )));
    }
    Ok(Some(map))
}

/// `with.env`: an object of string values with valid variable names.
pub(crate) fn env(value: Option<&Value>) -> Result<BTreeMap<String, String>, ExecError> {
    let mut env = BTreeMap::new();
    let Some(value) = value else {
        return Ok(env);
    };
    let Value::Object(map) = value else {
        return Err(ExecError::invalid(
            "`with.env` must be an object of strings",
        ));
    };
    if map.len() > ENV_VARS_MAX {
        return Err(ExecError::invalid(format!(
            "`with.env` has more than {ENV_VARS_MAX} variables"
        )));
    }
    for (name, value) in map {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(ExecError::invalid(format!(
                "`with.env` has an invalid variable name {name:?}"
            )));
        }
        let Value::String(value) = value else {
            return Err(ExecError::invalid(format!(
                "`with.env.{name}` must be a string"
            )));
        };
        if value.contains('\0') {
            return Err(ExecError::invalid(format!(
                "`with.env.{name}` contains a NUL byte"
            )));
        }
        env.insert(name.clone(), value.clone());
    }
    Ok(env)
}

/// An argv element: no NUL bytes (they cannot cross `execve`).
pub(crate) fn arg(index: usize, value: String) -> Result<String, ExecError> {
    if value.contains('\0') {
        return Err(ExecError::invalid(format!(
            "argument {index} contains a NUL byte"
        )));
    }
    Ok(value)
}
