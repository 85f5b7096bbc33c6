//! YAML text → a generic positioned tree ([`Node`]), under explicit limits.
//!
//! Owns the reading limits (input size, nesting depth, alias expansion), the YAML 1.2 core
//! schema settings of `serde-saphyr`, and the translation of its errors into diagnostics.
//! Nothing here knows the manifest schema; `crate::validate` maps the tree.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Error as YamlError, MessageFormatter, Spanned};

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::model::{ALIAS_EXPANSION_FACTOR_MAX, MANIFEST_BYTES_MAX, YAML_DEPTH_MAX};

/// 1-based line/column of a YAML node (0 = unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub(crate) line: u32,
    pub(crate) column: u32,
}

impl Pos {
    fn from_location(location: &serde_saphyr::Location) -> Pos {
        Pos {
            line: u32::try_from(location.line()).unwrap_or(u32::MAX),
            column: u32::try_from(location.column()).unwrap_or(u32::MAX),
        }
    }
}

/// A YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) pos: Pos,
}

/// One mapping entry; keys are scalars rendered as text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) key_pos: Pos,
    pub(crate) value: Node,
}

/// The YAML 1.2 core-schema value of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// Any integer YAML can spell in 64 bits (signed or unsigned); the ±2^53 range is checked
    /// where the value is used.
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

impl Value {
    /// "a mapping", "a string", … for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            pos: Pos::from_location(&spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(i128::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(i128::from(v)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element::<Node>()? {
            items.push(node);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let text = match key.value {
                Value::Str(s) => s,
                Value::Null => "null".to_owned(),
                Value::Bool(b) => b.to_string(),
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Seq(_) | Value::Map(_) => {
                    return Err(de::Error::custom(
                        "expected a scalar mapping key, found a collection",
                    ));
                }
            };
            let value = map.next_value::<Node>()?;
            entries.push(Entry {
                key: text,
                key_pos: key.pos,
                value,
            });
        }
        Ok(Value::Map(entries))
    }
}

/// Reads one YAML document into a [`Node`], enforcing every reading limit.
pub(crate) fn read(yaml: &str) -> Result<Node, Diagnostic> {
    if yaml.len() > MANIFEST_BYTES_MAX {
        return Err(Diagnostic {
            code: codes::TOO_LARGE,
            path: String::new(),
            message: format!(
                "manifest is {} bytes, expected at most {MANIFEST_BYTES_MAX} bytes",
                yaml.len()
            ),
            line: None,
            column: None,
        });
    }
    // The expanded document may be at most ALIAS_EXPANSION_FACTOR_MAX × the input. Every event
    // and node of the expanded document stands for at least one byte of YAML text, so event,
    // node, replay and scalar-byte budgets proportional to the input size bound the expansion
    // (a small floor keeps tiny documents such as `{}` valid).
    let expanded_max = yaml
        .len()
        .max(256)
        .saturating_mul(ALIAS_EXPANSION_FACTOR_MAX);
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: expanded_max,
            max_nodes: expanded_max,
            max_aliases: expanded_max,
            max_anchors: expanded_max,
            max_recorded_anchor_events: expanded_max,
            max_recorded_anchor_bytes: expanded_max,
            max_total_scalar_bytes: expanded_max,
            max_depth: YAML_DEPTH_MAX,
            max_documents: 1,
            max_merge_keys: 1_000,
            max_inclusion_depth: 0,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: expanded_max,
            max_replay_stack_depth: YAML_DEPTH_MAX,
        },
        duplicate_keys: DuplicateKeyPolicy::Error,
        strict_booleans: true,
        legacy_octal_numbers: false,
        with_snippet: false,
    };
    let node: Node = serde_saphyr::from_str_with_options(yaml, options)
        .map_err(|err| diagnostic_from_error(&err))?;
    Ok(node)
}

/// Unwraps snippet/alias wrappers to the error that says what went wrong.
fn original(mut err: &YamlError) -> &YamlError {
    while let YamlError::AliasError { error, .. } | YamlError::WithSnippet { error, .. } = err {
        err = error;
    }
    err
}

fn diagnostic_from_error(err: &YamlError) -> Diagnostic {
    let inner = original(err);
    let text = serde_saphyr::DefaultMessageFormatter
        .format_message(inner)
        .into_owned();
    let text = lowercase_first(text.trim().trim_end_matches('.'));
    let (code, message) = match inner {
        YamlError::Budget { breach, .. } => {
            use serde_saphyr::budget::BudgetBreach as B;
            let detail = match breach {
                B::Depth { .. } => {
                    return located(
                        err,
                        codes::BUDGET,
                        format!("yaml nesting is deeper than {YAML_DEPTH_MAX} levels"),
                    );
                }
                B::Documents { .. } => {
                    return located(
                        err,
                        codes::MULTIPLE_DOCUMENTS,
                        "expected exactly one yaml document, found several".to_owned(),
                    );
                }
                B::Events { events } => format!("{events} yaml events"),
                B::Nodes { nodes } => format!("{nodes} yaml nodes"),
                B::Aliases { aliases } => format!("{aliases} aliases"),
                B::Anchors { anchors } => format!("{anchors} anchors"),
                B::ScalarBytes { total_scalar_bytes } => {
                    format!("{total_scalar_bytes} bytes of scalars")
                }
                other => format!("{other:?}").to_lowercase(),
            };
            (
                codes::BUDGET,
                format!(
                    "yaml alias expansion/budget limit exceeded: the expanded document may be at \
                     most {ALIAS_EXPANSION_FACTOR_MAX} times the input size, reached {detail}"
                ),
            )
        }
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. } => (
            codes::BUDGET,
            format!(
                "yaml alias expansion limit exceeded: the expanded document may be at most \
                 {ALIAS_EXPANSION_FACTOR_MAX} times the input size ({text})"
            ),
        ),
        YamlError::DuplicateMappingKey { key, .. } => (
            codes::DUPLICATE_KEY,
            match key {
                Some(k) => format!("duplicate mapping key '{k}'"),
                None => "duplicate mapping key".to_owned(),
            },
        ),
        YamlError::MultipleDocuments { .. } => (
            codes::MULTIPLE_DOCUMENTS,
            "expected exactly one yaml document, found several".to_owned(),
        ),
        _ => (codes::YAML_SYNTAX, format!("invalid yaml: {text}")),
    };
    located(err, code, message)
}

fn located(err: &YamlError, code: &'static str, message: String) -> Diagnostic {
    let pos = err
        .location()
        .map(|l| Pos::from_location(&l))
        .filter(|p| p.line > 0);
    Diagnostic {
        code,
        path: String::new(),
        message,
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_core_schema_scalars() {
        let node = read("a: yes\nb: 1\nc: \"1\"\nd: 1.5\ne: true\nf: ~\ng: off\n").expect("ok");
        let Value::Map(entries) = node.value else {
            panic!("map")
        };
        let values: Vec<_> = entries.iter().map(|e| e.value.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                Value::Str("yes".into()),
                Value::Int(1),
                Value::Str("1".into()),
                Value::Float(1.5),
                Value::Bool(true),
                Value::Null,
                Value::Str("off".into()),
            ]
        );
        assert_eq!(entries[1].key_pos, Pos { line: 2, column: 1 });
        assert_eq!(entries[1].value.pos, Pos { line: 2, column: 4 });
    }

    #[test]
    fn duplicate_key_has_position() {
        let err = read("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.code, codes::DUPLICATE_KEY);
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("'a'"), "{}", err.message);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = read("a: [1, 2\nb: 3\n").expect_err("syntax");
        assert_eq!(err.code, codes::YAML_SYNTAX);
        assert!(err.line.is_some() && err.column.is_some(), "{err:?}");
    }

    #[test]
    fn multiple_documents_are_rejected() {
        let err = read("a: 1\n---\nb: 2\n").expect_err("two docs");
        assert!(
            err.code == codes::MULTIPLE_DOCUMENTS || err.code == codes::BUDGET,
            "{err:?}"
        );
    }

    #[test]
    fn depth_is_limited() {
        let deep = format!("{}1{}", "[".repeat(70), "]".repeat(70));
        let err = read(&deep).expect_err("deep");
        assert_eq!(err.code, codes::BUDGET, "{err:?}");
        assert!(err.message.contains("deeper"), "{}", err.message);
    }
}
