//! JSON value helpers: truthiness, template text rendering, JMESPath type names and number
//! conversions.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// JMESPath truthiness: false, null, "", [], {} are false; everything else is true.
pub fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Renders a value as template text: strings as-is, everything else as compact JSON.
pub fn render_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The JMESPath type name of a value.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A number as `f64` (always defined for serde_json numbers without arbitrary precision).
pub(crate) fn to_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(0.0)
}

/// Numeric equality: integers compare exactly, anything involving a float compares as `f64`.
pub(crate) fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    if a.is_f64() || b.is_f64() {
        return to_f64(a) == to_f64(b);
    }
    // A negative i64 against a u64 beyond the i64 range.
    false
}

/// A total order on numbers (used for sorting and `<`-style comparisons).
pub(crate) fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x.cmp(&y);
    }
    to_f64(a).total_cmp(&to_f64(b))
}

/// A float as a JSON value (`null` when not finite).
pub(crate) fn float_value(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// A float known to be integral: as an integer when it fits `i64`, else as a float.
pub(crate) fn integral_value(f: f64) -> Value {
    if f.fract() == 0.0 && (-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&f) {
        Value::from(f as i64)
    } else {
        float_value(f)
    }
}
