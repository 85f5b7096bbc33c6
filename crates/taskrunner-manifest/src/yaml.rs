//! YAML text → a generic positioned tree ([`Node`]), under explicit limits.
//!
//! Owns the reading limits (input size, nesting depth, alias expansion), the YAML 1.2 core
//! schema settings of `serde-saphyr`, and the translation of its errors into diagnostics.
//! Nothing here knows the manifest schema; `crate::validate` maps the tree.
//!
//! Reading is two steps, both plain functions of their input: serde-saphyr reads the text into
//! a [`RawNode`] tree (values as it resolved them, with positions and byte spans), then
//! [`resolve`] re-reads plain scalars from the source text with the YAML 1.2 core schema and sets
//! repeated keys aside, producing the [`Node`] tree. The source travels as a parameter; there is
//! no per-thread state.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{
    DuplicateKeyPolicy, Error as YamlError, MergeKeyPolicy, MessageFormatter, NonFiniteFloatPolicy,
    Spanned,
};

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
    /// Later occurrences of keys this mapping already has (the first occurrence is kept in
    /// `value`); reported as `TR-M0004` by `crate::validate`. Empty for other nodes.
    pub(crate) duplicates: Vec<Entry>,
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
    /// An integer literal that fits 128 bits; the ±2^53 range is checked where the value is
    /// used.
    Int(i128),
    /// An integer literal beyond 128 bits, as written (always outside ±2^53).
    BigInt(String),
    /// A float literal; may be non-finite (`.inf`, `.nan`, `1e400`), which is reported where the
    /// value is used.
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
            Value::Int(_) | Value::BigInt(_) => "an integer",
            Value::Float(f) if !f.is_finite() => "a non-finite number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar used as a mapping key (`1` and `"1"` are the same key).
    fn key_text(&self) -> Option<String> {
        Some(match self {
            Value::Str(s) => s.clone(),
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::BigInt(s) => s.clone(),
            Value::Float(f) => float_text(*f),
            Value::Seq(_) | Value::Map(_) => return None,
        })
    }
}

/// A float as JSON writes it (`1.5`, `1.0`, `1e+300`), or `.inf`/`-.inf`/`.nan`.
pub(crate) fn float_text(f: f64) -> String {
    if f.is_nan() {
        ".nan".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.to_owned()
    } else {
        serde_json::Number::from_f64(f).map_or_else(|| f.to_string(), |n| n.to_string())
    }
}

/// A node as serde-saphyr hands it over: scalars as it resolved them, every mapping entry in
/// order (repeated keys included), its position and its byte span in the source. [`resolve`]
/// turns it into a [`Node`].
struct RawNode {
    value: RawValue,
    pos: Pos,
    /// `(byte offset, byte length)` of the node's text, where serde-saphyr knows it.
    span: Option<(u64, u64)>,
}

enum RawValue {
    /// A scalar value (never `Value::Seq` or `Value::Map`).
    Scalar(Value),
    Seq(Vec<RawNode>),
    /// `(key, value)` pairs; keys are scalars (a collection key fails the read).
    Map(Vec<(RawNode, RawNode)>),
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<RawValue>::deserialize(deserializer)?;
        let span = spanned.defined.span();
        Ok(RawNode {
            value: spanned.value,
            pos: Pos::from_location(&spanned.referenced),
            span: span.byte_offset().zip(span.byte_len()),
        })
    }
}

/// The [`Node`] tree of a [`RawNode`] tree read from `source`: plain scalars re-read from their
/// source text (YAML 1.2 core schema), mapping keys rendered as text, and for each mapping the
/// first occurrence of a key kept and the later ones set aside in `duplicates`.
///
/// Recursion depth is the document's nesting, bounded by `YAML_DEPTH_MAX`.
fn resolve(raw: RawNode, source: &str) -> Node {
    let RawNode { value, pos, span } = raw;
    let mut value = match value {
        RawValue::Scalar(mut scalar) => {
            if let (Value::Int(_) | Value::Float(_) | Value::Str(_), Some((offset, len))) =
                (&scalar, span)
            {
                resolve_core_scalar(&mut scalar, source, offset, len);
            }
            scalar
        }
        RawValue::Seq(items) => Value::Seq(
            items
                .into_iter()
                .map(|item| resolve(item, source))
                .collect(),
        ),
        RawValue::Map(pairs) => Value::Map(
            pairs
                .into_iter()
                .map(|(key, value)| {
                    let key = resolve(key, source);
                    Entry {
                        // Keys are scalars (checked while reading), so they always have a text.
                        key: key.value.key_text().unwrap_or_default(),
                        key_pos: key.pos,
                        value: resolve(value, source),
                    }
                })
                .collect(),
        ),
    };
    let duplicates = match &mut value {
        Value::Map(entries) => split_duplicates(entries),
        _ => Vec::new(),
    };
    Node {
        value,
        pos,
        duplicates,
    }
}

/// Keeps the first entry of each key in `entries`; returns the later ones.
fn split_duplicates(entries: &mut Vec<Entry>) -> Vec<Entry> {
    let mut seen = BTreeSet::new();
    let mut kept = Vec::with_capacity(entries.len());
    let mut duplicates = Vec::new();
    for entry in std::mem::take(entries) {
        if seen.contains(entry.key.as_str()) {
            duplicates.push(entry);
        } else {
            seen.insert(entry.key.clone());
            kept.push(entry);
        }
    }
    *entries = kept;
    duplicates
}

/// Re-reads a plain scalar's source text with the YAML 1.2 core schema (SPEC §8.1 rule 6).
///
/// serde-saphyr resolves numbers more loosely than the core schema: an integer literal beyond
/// 64 bits becomes a float (so two different literals could plan to the same hash), `-010`
/// becomes a float, `0b11` an integer, and a hexadecimal literal beyond 64 bits a string. Here
/// an untagged plain scalar whose text is a core-schema integer is an integer (kept exactly),
/// one that is a core-schema float stays a float, and any other number is its text.
fn resolve_core_scalar(value: &mut Value, src: &str, offset: u64, len: u64) {
    let (Ok(start), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
        return;
    };
    let Some(text) = src.get(start..start.saturating_add(len)) else {
        return;
    };
    if is_tagged(src, start) {
        return;
    }
    match value {
        Value::Int(_) | Value::Float(_) => {
            if let Some(int) = core_int(text) {
                *value = int;
            } else if !is_core_float(text) {
                *value = Value::Str(text.to_owned());
            }
        }
        // A plain scalar (its text is its value; a quoted or block scalar's text differs) that
        // serde-saphyr could not read as a number: only radix literals beyond 64 bits.
        Value::Str(s)
            if s.as_str() == text && (text.starts_with("0x") || text.starts_with("0o")) =>
        {
            if let Some(int) = core_int(text) {
                *value = int;
            }
        }
        _ => {}
    }
}

/// Whether the scalar starting at `start` carries an explicit tag (`!!str 5`, `!!float &a 5`).
fn is_tagged(src: &str, start: usize) -> bool {
    let mut before = src.get(..start).unwrap_or("");
    loop {
        before = before.trim_end_matches([' ', '\t', '\r', '\n']);
        let token_start = before
            .rfind([' ', '\t', '\r', '\n', '[', '{', ','])
            .map_or(0, |i| i + 1);
        let token = before.get(token_start..).unwrap_or("");
        if token.starts_with('!') {
            return true;
        }
        if !token.starts_with('&') || token_start == 0 {
            return false;
        }
        before = before.get(..token_start).unwrap_or("");
    }
}

/// A YAML 1.2 core-schema integer: `[-+]?[0-9]+`, `0o[0-7]+` or `0x[0-9a-fA-F]+`.
pub(crate) fn core_int(text: &str) -> Option<Value> {
    let (digits, radix, negative) = if let Some(hex) = text.strip_prefix("0x") {
        (hex, 16, false)
    } else if let Some(oct) = text.strip_prefix("0o") {
        (oct, 8, false)
    } else if let Some(rest) = text.strip_prefix('-') {
        (rest, 10, true)
    } else {
        (text.strip_prefix('+').unwrap_or(text), 10, false)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(match u128::from_str_radix(digits, radix) {
        Ok(magnitude) => match i128::try_from(magnitude) {
            Ok(m) if negative => Value::Int(-m),
            Ok(m) => Value::Int(m),
            Err(_) => Value::BigInt(text.to_owned()),
        },
        Err(_) => Value::BigInt(text.to_owned()),
    })
}

/// A YAML 1.2 core-schema float:
/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, `[-+]?\.(inf|Inf|INF)`,
/// `\.(nan|NaN|NAN)`.
fn is_core_float(text: &str) -> bool {
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawValueVisitor)
    }
}

struct RawValueVisitor;

impl<'de> Visitor<'de> for RawValueVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Int(i128::from(v))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Int(i128::from(v))))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(match i128::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(v.to_string()),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Str(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Scalar(Value::Str(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element::<RawNode>()? {
            items.push(node);
        }
        Ok(RawValue::Seq(items))
    }
    /// Every entry, repeated keys included (the duplicate-key policy forwards them);
    /// [`resolve`] keeps the first occurrence of each key and sets the others aside.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<RawNode>()? {
            if !matches!(key.value, RawValue::Scalar(_)) {
                return Err(de::Error::custom(
                    "expected a scalar mapping key, found a collection",
                ));
            }
            let value = map.next_value::<RawNode>()?;
            pairs.push((key, value));
        }
        Ok(RawValue::Map(pairs))
    }
}

/// Reads one YAML document into a [`Node`], enforcing every reading limit. `what` names the
/// document in the size message ("manifest", "document").
pub(crate) fn read(yaml: &str) -> Result<Node, Diagnostic> {
    read_document(yaml, "manifest")
}

pub(crate) fn read_document(yaml: &str, what: &str) -> Result<Node, Diagnostic> {
    if yaml.len() > MANIFEST_BYTES_MAX {
        return Err(Diagnostic {
            code: codes::TOO_LARGE,
            path: String::new(),
            message: format!(
                "{what} is {} bytes, expected at most {MANIFEST_BYTES_MAX} bytes",
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
        // Repeated keys reach the visitor; `Node` keeps the first and `validate` reports the
        // others at their paths, so one duplicate does not hide every other problem.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // YAML 1.2 has no merge keys: `<<` is an ordinary key (and so an unknown field).
        merge_keys: MergeKeyPolicy::AsOrdinary,
        // `.inf`, `.nan` and `1e400` reach the tree and are reported at their paths.
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
        // YAML 1.2 core: `1_000` is a string; `010` is the decimal 10.
        underscored_numbers_as_strings: true,
        strict_booleans: true,
        legacy_octal_numbers: false,
        with_snippet: false,
    };
    let raw: RawNode = serde_saphyr::from_str_with_options(yaml, options)
        .map_err(|err| diagnostic_from_error(&err))?;
    Ok(resolve(raw, yaml))
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
    fn duplicate_keys_are_forwarded_first_kept() {
        let node = read("a: 1\nb: 2\na: 3\n1: x\n\"1\": y\n").expect("tree");
        let Value::Map(entries) = &node.value else {
            panic!("map")
        };
        let keys: Vec<_> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "1"]);
        assert_eq!(entries[0].value.value, Value::Int(1));
        assert_eq!(entries[2].value.value, Value::Str("x".into()));
        let dups: Vec<_> = node
            .duplicates
            .iter()
            .map(|e| (e.key.as_str(), e.key_pos.line))
            .collect();
        assert_eq!(dups, [("a", 3), ("1", 5)]);
    }

    fn scalar(text: &str) -> Value {
        let node = read(&format!("v: {text}\n")).expect("tree");
        let Value::Map(mut entries) = node.value else {
            panic!("map")
        };
        entries.remove(0).value.value
    }

    #[test]
    fn integers_follow_the_core_schema_exactly() {
        assert_eq!(
            scalar("12345678901234567890123"),
            Value::Int(12_345_678_901_234_567_890_123)
        );
        assert_eq!(
            scalar("-12345678901234567890124"),
            Value::Int(-12_345_678_901_234_567_890_124)
        );
        let huge = "9".repeat(60);
        assert_eq!(scalar(&huge), Value::BigInt(huge.clone()));
        assert_eq!(scalar(&"9".repeat(400)), Value::BigInt("9".repeat(400)));
        assert_eq!(scalar("-010"), Value::Int(-10));
        assert_eq!(scalar("010"), Value::Int(10));
        assert_eq!(scalar("+5"), Value::Int(5));
        assert_eq!(scalar("0o17"), Value::Int(15));
        assert_eq!(scalar("0x1F"), Value::Int(31));
        assert_eq!(
            scalar("0xFFFFFFFFFFFFFFFFFFFF"),
            Value::Int(0xFFFF_FFFF_FFFF_FFFF_FFFF)
        );
        // Not core-schema integers: strings.
        for text in ["1_000", "0b11", "-0x10", "0X1F", "+0o7"] {
            assert_eq!(scalar(text), Value::Str(text.into()), "{text}");
        }
        // Quoting and explicit tags are respected.
        assert_eq!(
            scalar("\"12345678901234567890123\""),
            Value::Str("12345678901234567890123".into())
        );
        assert_eq!(scalar("'0x1F'"), Value::Str("0x1F".into()));
        assert_eq!(scalar("!!float 7"), Value::Float(7.0));
        assert_eq!(
            scalar("!!str 0xFFFFFFFFFFFFFFFFFFFF"),
            Value::Str("0xFFFFFFFFFFFFFFFFFFFF".into())
        );
        // Aliases read the anchored scalar's text.
        let node = read("a: &x 12345678901234567890123\nb: *x\n").expect("tree");
        let Value::Map(entries) = node.value else {
            panic!("map")
        };
        assert_eq!(
            entries[1].value.value,
            Value::Int(12_345_678_901_234_567_890_123)
        );
    }

    #[test]
    fn floats_follow_the_core_schema() {
        assert_eq!(scalar("1.5"), Value::Float(1.5));
        assert_eq!(scalar("1e3"), Value::Float(1000.0));
        assert_eq!(scalar(".5"), Value::Float(0.5));
        assert!(matches!(scalar(".inf"), Value::Float(f) if f == f64::INFINITY));
        assert!(matches!(scalar("-.Inf"), Value::Float(f) if f == f64::NEG_INFINITY));
        assert!(matches!(scalar(".nan"), Value::Float(f) if f.is_nan()));
        assert!(matches!(scalar("1e400"), Value::Float(f) if f == f64::INFINITY));
        for text in ["inf", "nan", "Infinity"] {
            assert_eq!(scalar(text), Value::Str(text.into()), "{text}");
        }
    }

    #[test]
    fn merge_keys_are_ordinary_keys() {
        let node = read("a: &x {k: 1}\nb:\n  <<: *x\n").expect("tree");
        let Value::Map(entries) = node.value else {
            panic!("map")
        };
        let Value::Map(b) = &entries[1].value.value else {
            panic!("map")
        };
        assert_eq!(b[0].key, "<<");
    }

    #[test]
    fn nesting_up_to_the_limit_fits_a_small_stack() {
        let depth = YAML_DEPTH_MAX - 1;
        let text = format!("{}1{}", "[{a: ".repeat(depth / 2), "}]".repeat(depth / 2));
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || read(&text).is_ok())
            .expect("thread");
        assert!(handle.join().expect("no stack overflow"));
    }

    #[test]
    fn collection_keys_are_refused() {
        for text in ["? [a, b]\n: 1\n", "x:\n  ? {k: v}\n  : 1\n"] {
            let err = read(text).expect_err("collection key");
            assert_eq!(err.code, codes::YAML_SYNTAX, "{err:?}");
            assert!(
                err.message
                    .contains("expected a scalar mapping key, found a collection"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn reads_are_independent() {
        // The source text is a parameter of each read: a read nested in another's lifetime, or
        // one after a failed read, sees only its own text.
        let big = "12345678901234567890123";
        assert!(read("a: [1, 2\n").is_err());
        assert_eq!(scalar(big), Value::Int(12_345_678_901_234_567_890_123));
        let outer = read(&format!("a: {big}\n")).expect("tree");
        let inner = read("b: 0x1F\n").expect("tree");
        let (Value::Map(outer), Value::Map(inner)) = (outer.value, inner.value) else {
            panic!("maps")
        };
        assert_eq!(
            outer[0].value.value,
            Value::Int(12_345_678_901_234_567_890_123)
        );
        assert_eq!(inner[0].value.value, Value::Int(31));
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
