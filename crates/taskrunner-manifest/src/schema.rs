//! Input types and inline JSON Schemas (SPEC §1.1, §8.1 rule 7).
//!
//! Owns: the structural caps on a schema (size, depth, local `$ref` only), compiling it with
//! `jsonschema` (draft 2020-12, offline, linear-time `regex` patterns), and checking a value
//! against an input's `type` and schema. No file or network access can happen here: the
//! retriever is the offline one and non-local references are rejected before compiling.

use std::borrow::Cow;

use serde_json::Value;

use crate::model::InputType;

/// Largest accepted inline schema, in bytes of compact JSON.
pub const INPUT_SCHEMA_BYTES_MAX: usize = 64 * 1024;
/// Deepest accepted inline schema nesting (objects and arrays).
pub const INPUT_SCHEMA_DEPTH_MAX: usize = 32;
/// Largest integer magnitude accepted anywhere (SPEC §8.1 rule 6): ±2^53.
pub const INTEGER_ABS_MAX: i128 = 1 << 53;
/// At most this many schema failures are reported for one value.
const SCHEMA_ERRORS_REPORTED_MAX: usize = 3;
/// Longest rendering of a user-supplied value inside a message, in characters.
pub(crate) const EXCERPT_CHARS_MAX: usize = 80;
/// Longest schema failure message, in characters (schemas can echo long lists).
const SCHEMA_MESSAGE_CHARS_MAX: usize = 400;

/// `text` cut to [`EXCERPT_CHARS_MAX`] characters, ending in `…` when cut: a value rendered in
/// a message never makes the message huge.
pub(crate) fn excerpt(text: &str) -> Cow<'_, str> {
    truncate(text, EXCERPT_CHARS_MAX)
}

fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => {
            // Keep max - 1 characters and the ellipsis.
            let keep = text[..cut].char_indices().last().map_or(0, |(i, _)| i);
            Cow::Owned(format!("{}…", &text[..keep]))
        }
    }
}

/// Checks the structural caps and compiles the schema; the error says what is wrong.
pub(crate) fn check_schema(schema: &Value) -> Result<(), String> {
    let bytes = schema.to_string().len();
    if bytes > INPUT_SCHEMA_BYTES_MAX {
        return Err(format!(
            "schema is {bytes} bytes, expected at most {INPUT_SCHEMA_BYTES_MAX} bytes"
        ));
    }
    if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
        return Err("expected a json schema object or boolean".to_owned());
    }
    check_structure(schema, 0)?;
    compile(schema).map(|_| ())
}

fn check_structure(value: &Value, depth: usize) -> Result<(), String> {
    if depth > INPUT_SCHEMA_DEPTH_MAX {
        return Err(format!(
            "schema is nested deeper than {INPUT_SCHEMA_DEPTH_MAX} levels"
        ));
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if matches!(key.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef")
                    && let Value::String(target) = child
                    && !target.starts_with('#')
                {
                    return Err(format!(
                        "{key} '{}' is not a local reference, expected a reference starting with '#'",
                        excerpt(target)
                    ));
                }
                if key == "$schema"
                    && let Value::String(uri) = child
                    && uri.trim_end_matches('#') != "https://json-schema.org/draft/2020-12/schema"
                {
                    return Err(format!(
                        "$schema '{}' is not supported, expected draft 2020-12 \
                         (https://json-schema.org/draft/2020-12/schema)",
                        excerpt(uri)
                    ));
                }
                check_structure(child, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| check_structure(item, depth + 1)),
        _ => Ok(()),
    }
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::draft202012::options()
        .offline()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| format!("invalid json schema: {}", lowercase_first(&e.to_string())))
}

/// Whether `value` has the JSON type `ty` (integer = a number without a fractional part).
pub(crate) fn type_matches(ty: InputType, value: &Value) -> bool {
    match ty {
        InputType::String => value.is_string(),
        InputType::Number => value.is_number(),
        InputType::Integer => match value {
            Value::Number(n) => {
                n.is_i64()
                    || n.is_u64()
                    || n.as_f64()
                        .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
            }
            _ => false,
        },
        InputType::Boolean => value.is_boolean(),
        InputType::Object => value.is_object(),
        InputType::Array => value.is_array(),
    }
}

/// "a string", "an integer", … describing a JSON value.
pub(crate) fn describe_json(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The first integral number in `value` outside ±2^53, if any (rendered). A float beyond
/// 2^53 is always integral, and it is what JSON readers make of an integer literal that does not
/// fit 64 bits (`12345678901234567890123` → `1.2345678901234568e22`), so it is refused too: two
/// different literals would otherwise plan to the same hash (SPEC §8.1 rule 6).
pub(crate) fn integer_out_of_range(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => {
            let big = if let Some(i) = n.as_i64() {
                i128::from(i).abs() > INTEGER_ABS_MAX
            } else if let Some(u) = n.as_u64() {
                i128::from(u) > INTEGER_ABS_MAX
            } else {
                #[allow(clippy::cast_precision_loss)] // 2^53 is exact in f64
                let max = INTEGER_ABS_MAX as f64;
                n.as_f64()
                    .is_some_and(|f| !f.is_finite() || (f.fract() == 0.0 && f.abs() > max))
            };
            big.then(|| n.to_string())
        }
        Value::Array(items) => items.iter().find_map(integer_out_of_range),
        Value::Object(map) => map.values().find_map(integer_out_of_range),
        _ => None,
    }
}

/// Integer-typed values written as `2.0` become `2`, so plans hash the same either way.
pub(crate) fn normalize(ty: InputType, value: Value) -> Value {
    if ty == InputType::Integer
        && let Value::Number(n) = &value
        && !n.is_i64()
        && !n.is_u64()
        && let Some(f) = n.as_f64()
        && f.fract() == 0.0
        && f.abs() <= 9_007_199_254_740_992.0
    {
        // Exact: |f| ≤ 2^53 and integral, so the cast loses nothing.
        #[allow(clippy::cast_possible_truncation)]
        return Value::from(f as i64);
    }
    value
}

/// Checks `value` against `type` and the (already checked) schema. Returns messages that
/// start with "value …" or "expected …".
pub(crate) fn check_value(
    ty: InputType,
    schema: Option<&Value>,
    value: &Value,
) -> Result<(), ValueProblem> {
    if !type_matches(ty, value) {
        return Err(ValueProblem::Type(format!(
            "expected {}, found {}",
            article(ty),
            describe_json(value)
        )));
    }
    if let Some(n) = integer_out_of_range(value) {
        let what = if n.contains(['.', 'e', 'E']) {
            "number"
        } else {
            "integer"
        };
        return Err(ValueProblem::Type(format!(
            "{what} {} is outside the range ±2^53 (9007199254740992)",
            excerpt(&n)
        )));
    }
    if let Some(schema) = schema {
        let validator = compile(schema).map_err(ValueProblem::Schema)?;
        let messages: Vec<String> = validator
            .iter_errors(value)
            .take(SCHEMA_ERRORS_REPORTED_MAX)
            .map(|e| {
                let at = excerpt(&e.instance_path().to_string()).into_owned();
                // The library renders the offending value in full: shorten it.
                let rendered = e.instance().to_string();
                let mut what = e.to_string();
                if rendered.chars().count() > EXCERPT_CHARS_MAX {
                    what = what.replace(&rendered, &excerpt(&rendered));
                }
                let what = truncate(&what, SCHEMA_MESSAGE_CHARS_MAX).into_owned();
                if at.is_empty() {
                    format!("value {what}")
                } else {
                    format!("value at {at}: {what}")
                }
            })
            .collect();
        if !messages.is_empty() {
            return Err(ValueProblem::Schema(messages.join("; ")));
        }
    }
    Ok(())
}

/// Why a value was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValueProblem {
    Type(String),
    Schema(String),
}

fn article(ty: InputType) -> &'static str {
    match ty {
        InputType::String => "a string",
        InputType::Number => "a number",
        InputType::Integer => "an integer",
        InputType::Boolean => "a boolean",
        InputType::Object => "an object",
        InputType::Array => "an array",
    }
}

pub(crate) fn lowercase_first(s: &str) -> String {
    let s = s.trim().trim_end_matches('.');
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_refs_are_rejected() {
        let err = check_schema(&json!({"$ref": "https://example.com/s.json"})).expect_err("remote");
        assert!(err.contains("not a local reference"), "{err}");
        let err = check_schema(&json!({"items": {"$ref": "other.json#/x"}})).expect_err("file");
        assert!(err.contains("not a local reference"), "{err}");
        check_schema(&json!({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a"}))
            .expect("local");
    }

    #[test]
    fn schema_depth_is_capped() {
        let mut schema = json!({"type": "string"});
        for _ in 0..40 {
            schema = json!({ "items": schema });
        }
        assert!(check_schema(&schema).expect_err("deep").contains("deeper"));
    }

    #[test]
    fn invalid_schema_is_reported() {
        assert!(check_schema(&json!({"minimum": "one"})).is_err());
    }

    #[test]
    fn minimum_message_is_readable() {
        let schema = json!({"minimum": 1});
        let err = check_value(InputType::Integer, Some(&schema), &json!(0)).expect_err("min");
        assert_eq!(
            err,
            ValueProblem::Schema("value 0 is less than the minimum of 1".into())
        );
    }

    #[test]
    fn integer_accepts_integral_floats() {
        assert!(type_matches(InputType::Integer, &json!(2.0)));
        assert!(!type_matches(InputType::Integer, &json!(2.5)));
        assert_eq!(normalize(InputType::Integer, json!(2.0)), json!(2));
    }
}
