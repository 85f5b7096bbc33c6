//! "Did you mean …?" hints for misspelt field names, ids and context variables.

/// The candidate closest to `word`, if it is close enough to be a likely typo: Damerau-Levenshtein
/// distance ≤ 2 (and smaller than the word), or Jaro-Winkler similarity ≥ 0.85.
pub(crate) fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, u64, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let distance = strsim::damerau_levenshtein(&lower, &candidate.to_ascii_lowercase());
        let similarity = strsim::jaro_winkler(word, candidate);
        let close = (distance <= 2 && distance < word.chars().count()) || similarity >= 0.85;
        if !close {
            continue;
        }
        // Prefer the smallest edit distance, then the highest similarity (scaled to an integer
        // so the ordering is total), then the first candidate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let score = (distance, ((1.0 - similarity) * 1e9) as u64, candidate);
        if best.is_none_or(|b| (score.0, score.1) < (b.0, b.1)) {
            best = Some(score);
        }
    }
    best.map(|(_, _, c)| c)
}

/// ` (did you mean 'x'?)` or the empty string.
pub(crate) fn hint<'a, I>(word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates)
        .map(|c| format!(" (did you mean '{c}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        assert_eq!(closest("uses", ["uses", "with"]), None);
        assert_eq!(closest("usse", ["uses", "with"]), Some("uses"));
        assert_eq!(
            closest("input", ["inputs", "steps", "secrets", "run"]),
            Some("inputs")
        );
        assert_eq!(
            closest("timeout", ["timeoutSeconds", "retries"]),
            Some("timeoutSeconds")
        );
        assert_eq!(closest("zzz", ["uses", "with"]), None);
    }
}
