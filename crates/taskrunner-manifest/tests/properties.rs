//! `parse` never panics: on arbitrary text and on randomly mutated valid manifests.

mod common;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = taskrunner_manifest::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_mutated_manifests(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut bytes = common::VALID.as_bytes().to_vec();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = taskrunner_manifest::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_yaml_punctuation(
        text in prop::collection::vec(
            prop::sample::select(vec!["{", "}", "[", "]", ":", "- ", "\n", "  ", "&a ", "*a", "'", "\"", "{{", "}}", "`", "steps", "id: x", "#", "---", "? ", "!!str ", "<<: "]),
            0..60,
        )
    ) {
        let text: String = text.concat();
        let _ = taskrunner_manifest::parse(&text);
    }
}
