//! RFC 8785 JSON Canonicalization Scheme (JCS) for `serde_json::Value`.
//!
//! Written here rather than relying on `serde_json`'s map order, which a dependency's
//! `preserve_order` feature flag can silently change: keys are sorted by UTF-16 code units,
//! numbers use the ECMAScript `Number.prototype.toString` form (via `ryu-js`), strings use the
//! minimal JSON escapes. [`to_pretty`] is the same data with two-space indentation, for humans.

use serde_json::{Number, Value};

/// Canonical bytes of `value` per RFC 8785.
pub fn to_canonical(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value, None, 0);
    out
}

/// Deterministic pretty form: canonical key order, canonical scalars, two-space indentation.
pub fn to_pretty(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value, Some(2), 0);
    out.push('\n');
    out
}

fn write_value(out: &mut String, value: &Value, indent: Option<usize>, level: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write_value(out, item, indent, level + 1);
            }
            if !items.is_empty() {
                newline(out, indent, level);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write_string(out, key);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write_value(out, item, indent, level + 1);
            }
            if !entries.is_empty() {
                newline(out, indent, level);
            }
            out.push('}');
        }
    }
}

fn newline(out: &mut String, indent: Option<usize>, level: usize) {
    if let Some(width) = indent {
        out.push('\n');
        for _ in 0..width * level {
            out.push(' ');
        }
    }
}

/// Largest integer magnitude hashed exactly: 2^53 (beyond it, neighbouring integers collide
/// once read as IEEE-754 doubles, as RFC 8785 does).
pub const SAFE_INTEGER_MAX: u64 = 1 << 53;

/// True when `n` can be hashed without loss (SPEC §8 rule 6): integers within ±2^53
/// and finite floats.
pub fn is_exact_number(n: &Number) -> bool {
    if let Some(i) = n.as_i64() {
        return i.unsigned_abs() <= SAFE_INTEGER_MAX;
    }
    if let Some(u) = n.as_u64() {
        return u <= SAFE_INTEGER_MAX;
    }
    n.as_f64().is_some_and(f64::is_finite)
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64()
        && i.unsigned_abs() <= SAFE_INTEGER_MAX
    {
        out.push_str(&i.to_string());
        return;
    }
    if let Some(u) = n.as_u64()
        && u <= SAFE_INTEGER_MAX
    {
        out.push_str(&u.to_string());
        return;
    }
    // Every other number is an IEEE-754 double in JCS; ECMAScript formatting.
    let f = n.as_f64().unwrap_or(0.0);
    if f == 0.0 {
        out.push('0'); // also -0
    } else if f.is_finite() {
        let mut buffer = ryu_js::Buffer::new();
        out.push_str(buffer.format_finite(f));
    } else {
        // serde_json never holds NaN/Infinity; JSON has no spelling for them.
        out.push_str("null");
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num_from_bits(bits: u64) -> String {
        let value = Value::from(f64::from_bits(bits));
        to_canonical(&value)
    }

    /// RFC 8785 Appendix B: number serialisation samples.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, expected) in cases {
            assert_eq!(num_from_bits(*bits), *expected, "bits {bits:#018x}");
        }
    }

    /// RFC 8785 §3.2.2: the worked example.
    #[test]
    fn rfc8785_worked_example() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            to_canonical(&value),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    /// RFC 8785 §3.2.3: keys sort by UTF-16 code units (the emoji's surrogate sorts before U+FB33).
    #[test]
    fn rfc8785_key_sorting() {
        let input = "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}";
        let value: Value = serde_json::from_str(input).unwrap();
        let names: Vec<String> = {
            let canonical = to_canonical(&value);
            let reparsed: Vec<(String, Value)> = canonical
                .trim_matches(|c| c == '{' || c == '}')
                .split(",\"")
                .map(|kv| {
                    let v: Value =
                        serde_json::from_str(&format!("{{\"{}}}", kv.trim_start_matches('"')))
                            .unwrap();
                    v.as_object()
                        .unwrap()
                        .iter()
                        .next()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .unwrap()
                })
                .collect();
            reparsed
                .into_iter()
                .map(|(_, v)| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names,
            [
                "Carriage Return",
                "One",
                "Control",
                "Latin Small Letter O With Diaeresis",
                "Euro Sign",
                "Emoji: Grinning Face",
                "Hebrew Letter Dalet With Dagesh"
            ]
        );
    }

    #[test]
    fn integers_and_controls() {
        assert_eq!(
            to_canonical(&json!({"b": 1, "a": -2, "c": [1.0, 0.5]})),
            r#"{"a":-2,"b":1,"c":[1,0.5]}"#
        );
        assert_eq!(
            to_canonical(&json!("\u{1f}\u{7f}\u{2028}")),
            "\"\\u001f\u{7f}\u{2028}\""
        );
        assert!(is_exact_number(&Number::from(SAFE_INTEGER_MAX)));
        assert!(!is_exact_number(&Number::from(SAFE_INTEGER_MAX + 1)));
        assert!(!is_exact_number(&Number::from(i64::MIN)));
    }

    #[test]
    fn pretty_is_canonical_order_with_indentation() {
        let v = json!({"b": [1, {"d": 2, "c": []}], "a": {}});
        assert_eq!(
            to_pretty(&v),
            "{\n  \"a\": {},\n  \"b\": [\n    1,\n    {\n      \"c\": [],\n      \"d\": 2\n    }\n  ]\n}\n"
        );
    }
}
