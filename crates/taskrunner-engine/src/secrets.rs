//! [`Secrets`]: secret values supplied by the host for one `apply` call, and masking.
//!
//! Secret values are never stored in the run state, the journal, logs or outputs: every string
//! that enters one of them is masked first. Masking is `taskrunner-secrets`' [`Masker`] (the
//! one masker: the union of every occurrence of every secret becomes `***`); this type only
//! keeps the names and builds the masker once per change.

use std::collections::BTreeMap;

use serde_json::Value;
pub use taskrunner_secrets::{MASK, Masker, SECRET_BYTES_MIN};

/// Secret name → value, supplied at run time. Deliberately not `Serialize`, and its `Debug`
/// shows names only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    /// Built from `values` on every change.
    masker: Masker,
}

impl PartialEq for Secrets {
    fn eq(&self, other: &Secrets) -> bool {
        self.values == other.values
    }
}

impl Eq for Secrets {}

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
        self.masker = Masker::new(self.values.values());
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

    /// The masker for these values (for drivers that mask streams or files).
    pub fn masker(&self) -> &Masker {
        &self.masker
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

    /// Masks every occurrence of every secret value (see [`Masker`]).
    pub fn mask(&self, text: &str) -> String {
        self.masker.mask_str(text)
    }

    /// Masks every string (and object key) inside a JSON value.
    pub fn mask_value(&self, value: &Value) -> Value {
        self.masker.mask_value(value)
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
    fn masks_values_and_keys() {
        // Hosts refuse values shorter than 4 bytes (rule 19); one that reaches the engine
        // anyway is masked like any other (the one masker's rule, `taskrunner-secrets`).
        let s = Secrets::new().with("t", "hunter22").with("short", "abc");
        assert_eq!(s.mask("pw=hunter22 abc"), "pw=*** ***");
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

    #[test]
    fn overlapping_values_leak_nothing() {
        // Issue 10: a sequential replace turned this into `***efg`.
        let s = Secrets::new().with("a", "bcdefg").with("b", "abcd");
        assert_eq!(s.mask("abcdefg"), "***");
        assert_eq!(s.clone().with("b", "abcd"), s, "equality is by values");
        assert_ne!(s.clone().with("c", "other"), s);
    }
}
