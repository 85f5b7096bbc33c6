//! [`Secrets`]: secret values supplied by the host for one `apply` call, and masking.
//!
//! Secret values are never stored in the run state, the journal, logs or outputs: every string
//! that enters one of them is masked first (verbatim occurrences of a value of at least
//! [`SECRET_BYTES_MIN`] bytes become `***`). Shorter values are never masked — hosts refuse
//! them (SPEC §8 rule 19).

use std::collections::BTreeMap;

use serde_json::Value;

/// Values shorter than this are not masked (and are refused by hosts).
pub const SECRET_BYTES_MIN: usize = 4;
/// What a masked occurrence becomes.
pub const MASK: &str = "***";

/// Secret name → value, supplied at run time. Deliberately not `Serialize`, and its `Debug`
/// shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds (or replaces) a secret.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// Builder form of [`Secrets::insert`].
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Secrets {
        self.insert(name, value);
        self
    }

    /// The value of a secret.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The `secrets` member of the expression context.
    pub(crate) fn to_json(&self) -> Value {
        Value::Object(
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    /// Masks every verbatim occurrence of a secret value (longest values first).
    pub fn mask(&self, text: &str) -> String {
        // A multi-line secret (a PEM key) is also masked line by line: output is logged per
        // line, so its lines never appear together.
        let mut values: Vec<&str> = self
            .values
            .values()
            .flat_map(|v| {
                let lines = v.contains(['\n', '\r']).then(|| v.split(['\n', '\r']));
                std::iter::once(v.as_str()).chain(lines.into_iter().flatten())
            })
            .filter(|v| v.len() >= SECRET_BYTES_MIN)
            .collect();
        values.dedup();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        let mut out = text.to_owned();
        for v in values {
            if out.contains(v) {
                out = out.replace(v, MASK);
            }
        }
        out
    }

    /// Masks every string (and object key) inside a JSON value.
    pub fn mask_value(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask_value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.mask(k), self.mask_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_line_secrets_are_masked_line_by_line() {
        let s = Secrets::new().with("key", "-----BEGIN KEY-----\nAbCdEfGh\n-----END KEY-----");
        assert_eq!(s.mask("line: AbCdEfGh"), "line: ***");
        assert_eq!(
            s.mask("-----BEGIN KEY-----\nAbCdEfGh\n-----END KEY-----"),
            "***"
        );
        assert_eq!(s.mask("ab\ncd"), "ab\ncd", "short fragments are not masked");
    }

    #[test]
    fn masks_long_values_only() {
        let s = Secrets::new().with("t", "hunter22").with("short", "abc");
        assert_eq!(s.mask("pw=hunter22 abc"), "pw=*** abc");
        assert_eq!(
            s.mask_value(&json!({"a": ["xhunter22x", 1], "hunter22": true})),
            json!({"a": ["x***x", 1], "***": true})
        );
        assert!(!format!("{s:?}").contains("hunter22"));
    }

    #[test]
    fn longest_first() {
        let s = Secrets::new().with("a", "abcd").with("b", "abcdefgh");
        assert_eq!(s.mask("abcdefgh abcd"), "*** ***");
    }
}
