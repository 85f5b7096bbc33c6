//! [`Masker`]: replaces verbatim occurrences of secret values with [`MASK`] (rule 19).

use std::borrow::Cow;

use serde_json::{Map, Value};

/// What a masked secret looks like.
pub const MASK: &str = "***";

/// Replaces verbatim occurrences of a set of secret values.
///
/// Matching is leftmost; at one position the longest secret wins, so a secret that contains
/// another is masked whole. Empty secrets are ignored (refusing short secrets is the secret
/// provider's job, rule 19; masking a short one here is merely noisy, never unsafe).
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Distinct non-empty secrets, longest first.
    secrets: Vec<Vec<u8>>,
}

impl Masker {
    /// A masker for these secret values.
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Masker {
        // Output is masked line by line, so a multi-line secret (a PEM key) is also masked by
        // each of its lines of at least 4 bytes.
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .flat_map(|s| {
                let s = s.as_ref();
                let mut needles = vec![s.as_bytes().to_vec()];
                if s.contains(['\n', '\r']) {
                    needles.extend(
                        s.split(['\n', '\r'])
                            .filter(|l| l.len() >= 4)
                            .map(|l| l.as_bytes().to_vec()),
                    );
                }
                needles
            })
            .filter(|s| !s.is_empty())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker { secrets }
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Length in bytes of the longest secret (0 when there are none).
    pub fn longest_bytes(&self) -> usize {
        self.secrets.first().map_or(0, Vec::len)
    }

    /// Masks raw bytes.
    pub fn mask_bytes<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        if self.secrets.is_empty() {
            return Cow::Borrowed(input);
        }
        let mut out: Option<Vec<u8>> = None;
        let mut i = 0;
        while i < input.len() {
            match self.match_at(&input[i..]) {
                Some(len) => {
                    let buf = out.get_or_insert_with(|| input[..i].to_vec());
                    buf.extend_from_slice(MASK.as_bytes());
                    i += len;
                }
                None => {
                    if let Some(buf) = out.as_mut() {
                        buf.push(input[i]);
                    }
                    i += 1;
                }
            }
        }
        match out {
            Some(buf) => Cow::Owned(buf),
            None => Cow::Borrowed(input),
        }
    }

    /// The length of the secret `at` starts with (the longest one), if any.
    pub(crate) fn match_at(&self, at: &[u8]) -> Option<usize> {
        self.secrets
            .iter()
            .find(|s| at.starts_with(s))
            .map(Vec::len)
    }

    /// Masks a string.
    pub fn mask_str(&self, input: &str) -> String {
        match self.mask_bytes(input.as_bytes()) {
            Cow::Borrowed(_) => input.to_owned(),
            // Secrets are whole UTF-8 strings and the mask is ASCII, so replacing one keeps
            // the text valid; the lossy conversion never actually replaces anything here.
            Cow::Owned(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Masks every string (and object key) inside a JSON value.
    pub fn mask_value(&self, value: Value) -> Value {
        if self.secrets.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.mask_str(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.mask_value(v)).collect())
            }
            Value::Object(map) => Value::Object(self.mask_map(map)),
            other => other,
        }
    }

    /// Masks every string (and key) of a JSON object.
    pub fn mask_map(&self, map: Map<String, Value>) -> Map<String, Value> {
        if self.secrets.is_empty() {
            return map;
        }
        map.into_iter()
            .map(|(k, v)| (self.mask_str(&k), self.mask_value(v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_secrets_are_masked_line_by_line() {
        let m = Masker::new(["firstLine1\nsecondLine2\nab"]);
        assert_eq!(m.mask_str("plain: firstLine1"), "plain: ***");
        assert_eq!(m.mask_str("secondLine2"), "***");
        assert_eq!(
            m.mask_str("ab"),
            "ab",
            "fragments shorter than 4 bytes are not masked"
        );
    }

    #[test]
    fn masks_every_occurrence_longest_first() {
        let m = Masker::new(["secret", "secret-long", ""]);
        assert_eq!(m.mask_str("a secret-long secret"), "a *** ***");
        assert_eq!(m.mask_str("nothing"), "nothing");
        assert_eq!(m.longest_bytes(), 11);
    }

    #[test]
    fn masks_inside_json_values() {
        let m = Masker::new(["hunter2"]);
        let v = serde_json::json!({"a": ["x hunter2 y", 1], "hunter2": true});
        assert_eq!(
            m.mask_value(v),
            serde_json::json!({"a": ["x *** y", 1], "***": true})
        );
    }
}
