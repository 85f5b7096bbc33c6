//! [`Masker`]: the secret needles, their automaton, and masking of bytes, text and JSON.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::{Map, Value};

use crate::stream::{StreamMasker, StreamScanner};
use crate::{MASK, SECRET_BYTES_MIN};

/// Masks every occurrence of a set of secret values (see the crate documentation for the
/// rule). Cheap to clone; its `Debug` never shows a value.
#[derive(Clone, Default)]
pub struct Masker {
    /// Distinct non-empty needles (whole values and long lines of multi-line values), sorted.
    needles: Vec<Vec<u8>>,
    /// Length of the longest needle (0 when there are none).
    longest: usize,
    matcher: Matcher,
}

#[derive(Clone, Default)]
enum Matcher {
    /// Nothing to mask.
    #[default]
    Empty,
    /// One automaton over every needle, searched with overlapping matches.
    Automaton(AhoCorasick),
    /// Direct comparison, used only if the automaton cannot be built (never expected for
    /// realistic secrets; it finds exactly the same occurrences, more slowly).
    Naive,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("needles", &self.needles.len())
            .field("longest_bytes", &self.longest)
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// A masker for these secret values. Empty values are ignored; a value containing a line
    /// break also masks each of its lines of at least [`SECRET_BYTES_MIN`] bytes.
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Masker {
        let mut needles = BTreeSet::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            needles.insert(secret.as_bytes().to_vec());
            if secret.contains(['\n', '\r']) {
                needles.extend(
                    secret
                        .split(['\n', '\r'])
                        .filter(|line| line.len() >= SECRET_BYTES_MIN)
                        .map(|line| line.as_bytes().to_vec()),
                );
            }
        }
        let needles: Vec<Vec<u8>> = needles.into_iter().collect();
        let matcher = if needles.is_empty() {
            Matcher::Empty
        } else {
            match AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&needles)
            {
                Ok(automaton) => Matcher::Automaton(automaton),
                Err(_) => Matcher::Naive,
            }
        };
        Masker::assemble(needles, matcher)
    }

    fn assemble(needles: Vec<Vec<u8>>, matcher: Matcher) -> Masker {
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        Masker {
            needles,
            longest,
            matcher,
        }
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Length in bytes of the longest needle (0 when there are none).
    pub fn longest_bytes(&self) -> usize {
        self.longest
    }

    /// Calls `found(start, end)` for every occurrence of every needle in `haystack`,
    /// overlapping ones included.
    fn for_each_occurrence(&self, haystack: &[u8], mut found: impl FnMut(usize, usize)) {
        match &self.matcher {
            Matcher::Empty => {}
            Matcher::Automaton(automaton) => match automaton.try_find_overlapping_iter(haystack) {
                Ok(matches) => matches.for_each(|m| found(m.start(), m.end())),
                // Overlapping search is supported by every automaton built with
                // `MatchKind::Standard`; should that ever change, compare directly.
                Err(_) => self.naive_occurrences(haystack, found),
            },
            Matcher::Naive => self.naive_occurrences(haystack, found),
        }
    }

    fn naive_occurrences(&self, haystack: &[u8], mut found: impl FnMut(usize, usize)) {
        for needle in &self.needles {
            for (start, window) in haystack.windows(needle.len()).enumerate() {
                if window == needle.as_slice() {
                    found(start, start + needle.len());
                }
            }
        }
    }

    /// The maximal runs of bytes of `haystack` covered by some occurrence of some needle, in
    /// order. Two occurrences that overlap or touch form one run.
    pub fn covered_runs(&self, haystack: &[u8]) -> Vec<Range<usize>> {
        // reach[s]: the furthest end of an occurrence starting at s (0: none starts there).
        // Allocated at the first occurrence, so text without secrets costs only the search.
        let mut reach: Vec<usize> = Vec::new();
        self.for_each_occurrence(haystack, |start, end| {
            if reach.is_empty() {
                reach = vec![0; haystack.len()];
            }
            if let Some(r) = reach.get_mut(start) {
                *r = (*r).max(end);
            }
        });
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (start, &end) in reach.iter().enumerate() {
            if end <= start {
                continue;
            }
            match runs.last_mut() {
                Some(run) if start <= run.end => run.end = run.end.max(end),
                _ => runs.push(start..end),
            }
        }
        runs
    }

    /// True when `haystack` contains an occurrence of a needle.
    pub fn contains(&self, haystack: &[u8]) -> bool {
        match &self.matcher {
            Matcher::Empty => false,
            Matcher::Automaton(automaton) => automaton.is_match(haystack),
            Matcher::Naive => {
                let mut any = false;
                self.naive_occurrences(haystack, |_, _| any = true);
                any
            }
        }
    }

    /// Masks raw bytes: each maximal covered run becomes one [`MASK`].
    pub fn mask_bytes<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let runs = self.covered_runs(input);
        if runs.is_empty() {
            return Cow::Borrowed(input);
        }
        let mut out = Vec::with_capacity(input.len());
        let mut pos = 0;
        for run in runs {
            out.extend_from_slice(input.get(pos..run.start).unwrap_or_default());
            out.extend_from_slice(MASK.as_bytes());
            pos = run.end;
        }
        out.extend_from_slice(input.get(pos..).unwrap_or_default());
        Cow::Owned(out)
    }

    /// Masks a string.
    pub fn mask_str(&self, input: &str) -> String {
        match self.mask_bytes(input.as_bytes()) {
            Cow::Borrowed(_) => input.to_owned(),
            // Needles are whole UTF-8 strings, so in valid UTF-8 text every occurrence starts
            // and ends on a character boundary and the mask is ASCII: the text stays valid and
            // the lossy conversion never replaces anything.
            Cow::Owned(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Masks every string and object key inside a JSON value.
    pub fn mask_value(&self, value: &Value) -> Value {
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.mask_str(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask_value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.mask_str(k), self.mask_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Masks every string and key of a JSON object.
    pub fn mask_map(&self, map: Map<String, Value>) -> Map<String, Value> {
        if self.is_empty() {
            return map;
        }
        map.into_iter()
            .map(|(k, v)| (self.mask_str(&k), self.mask_value(&v)))
            .collect()
    }

    /// A streaming masker for chunked output (see [`StreamMasker`]).
    pub fn stream(&self) -> StreamMasker {
        StreamMasker::new(self.clone())
    }

    /// A streaming detector: does chunked input contain a secret anywhere, chunk boundaries
    /// included (see [`StreamScanner`])?
    pub fn scanner(&self) -> StreamScanner {
        StreamScanner::new(self.clone())
    }

    #[cfg(test)]
    pub(crate) fn naive_for_tests<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Masker {
        let masker = Masker::new(secrets);
        let matcher = if masker.needles.is_empty() {
            Matcher::Empty
        } else {
            Matcher::Naive
        };
        Masker::assemble(masker.needles, matcher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_issue_example_leaks_nothing() {
        // Sequential replace masked `abcd` first and left `efg` of `bcdefg` visible.
        let m = Masker::new(["bcdefg", "abcd"]);
        assert_eq!(m.mask_str("abcdefg"), "***");
        assert_eq!(m.mask_str("xabcdefgx"), "x***x");
        let m = Masker::new(["abcd", "bcdefg"]);
        assert_eq!(
            m.mask_str("abcdefg"),
            "***",
            "the order of secrets does not matter"
        );
    }

    #[test]
    fn overlapping_nested_repeated_and_touching_occurrences_form_one_run() {
        let m = Masker::new(["abab"]);
        assert_eq!(
            m.mask_str("ababab"),
            "***",
            "overlapping occurrences of one secret"
        );
        let m = Masker::new(["secret", "ecr"]);
        assert_eq!(m.mask_str("a secret, an ecru"), "a ***, an ***u");
        let m = Masker::new(["left", "right"]);
        assert_eq!(m.mask_str("leftright left right"), "*** *** ***");
        assert_eq!(m.covered_runs(b"leftright left"), [0..9, 10..14]);
    }

    #[test]
    fn multi_line_secrets_are_masked_line_by_line() {
        let m = Masker::new(["firstLine1\nsecondLine2\r\nab"]);
        assert_eq!(m.mask_str("plain: firstLine1"), "plain: ***");
        assert_eq!(m.mask_str("secondLine2"), "***");
        assert_eq!(m.mask_str("firstLine1\nsecondLine2\r\nab"), "***");
        assert_eq!(
            m.mask_str("ab"),
            "ab",
            "lines shorter than 4 bytes are not masked"
        );
    }

    #[test]
    fn short_and_empty_values() {
        // Hosts refuse whole values shorter than 4 bytes; one that arrives anyway is masked.
        let m = Masker::new(["abc", ""]);
        assert_eq!(m.mask_str("abc abd"), "*** abd");
        let m = Masker::new([""]);
        assert!(m.is_empty());
        assert_eq!(m.mask_str("anything"), "anything");
        assert!(!m.contains(b"anything"));
        assert_eq!(m.longest_bytes(), 0);
    }

    #[test]
    fn masks_inside_json_values_and_keys() {
        let m = Masker::new(["hunter22"]);
        let v = json!({"a": ["x hunter22 y", 1, null], "hunter22": {"k": "hunter22"}});
        let want = json!({"a": ["x *** y", 1, null], "***": {"k": "***"}});
        assert_eq!(m.mask_value(&v), want);
        let Value::Object(map) = v else {
            panic!("an object")
        };
        assert_eq!(Value::Object(m.mask_map(map)), want);
    }

    #[test]
    fn utf8_text_stays_valid_around_masks() {
        let m = Masker::new(["ключ"]);
        assert_eq!(m.mask_str("é ключ é"), "é *** é");
        assert_eq!(m.mask_bytes(b"a\xffkey").as_ref(), b"a\xffkey");
    }

    #[test]
    fn debug_never_shows_a_value() {
        let m = Masker::new(["hunter22"]);
        let shown = format!("{m:?}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains("needles: 1"), "{shown}");
    }

    #[test]
    fn the_naive_fallback_finds_the_same_occurrences() {
        let secrets = ["bcdefg", "abcd", "abab", "x\nyyyy"];
        let text = b"abcdefg abababab yyyy x\nyyyy";
        let fast = Masker::new(secrets);
        let naive = Masker::naive_for_tests(secrets);
        assert_eq!(fast.covered_runs(text), naive.covered_runs(text));
        assert_eq!(fast.mask_bytes(text), naive.mask_bytes(text));
        assert!(naive.contains(b"..abcd.."));
        assert!(!naive.contains(b"..abc.."));
    }
}
