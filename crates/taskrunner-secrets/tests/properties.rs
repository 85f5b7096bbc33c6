//! The masker against a naive reference: mark every byte covered by any occurrence of any
//! secret, then collapse each maximal marked run into one `***`. Secrets and texts are drawn
//! from a tiny alphabet so that overlapping, nested, repeated and touching occurrences are the
//! common case; the streaming masker is fed the same text split at arbitrary points.

use proptest::prelude::*;
use taskrunner_secrets::{MASK, Masker, Piece, SECRET_BYTES_MIN};

/// The needles the rule asks for: every non-empty value, plus each line of at least 4 bytes of
/// a multi-line value.
fn needles(secrets: &[String]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out.push(s.as_bytes().to_vec());
        if s.contains(['\n', '\r']) {
            out.extend(
                s.split(['\n', '\r'])
                    .filter(|l| l.len() >= SECRET_BYTES_MIN)
                    .map(|l| l.as_bytes().to_vec()),
            );
        }
    }
    out
}

fn covered(secrets: &[String], text: &[u8]) -> Vec<bool> {
    let mut marked = vec![false; text.len()];
    for needle in needles(secrets) {
        for start in 0..text.len() {
            if text[start..].starts_with(&needle) {
                marked[start..start + needle.len()].fill(true);
            }
        }
    }
    marked
}

fn reference(secrets: &[String], text: &[u8]) -> Vec<u8> {
    let marked = covered(secrets, text);
    let mut out = Vec::new();
    for (i, &byte) in text.iter().enumerate() {
        match (marked[i], i > 0 && marked[i - 1]) {
            (false, _) => out.push(byte),
            (true, false) => out.extend_from_slice(MASK.as_bytes()),
            (true, true) => {}
        }
    }
    out
}

fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[ab]{1,6}",
        2 => "[abc]{2,8}",
        1 => "[ab\n]{4,12}",
        1 => "[abé]{1,4}",
    ]
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ab]{0,40}".prop_map(String::into_bytes),
        "[abc\n*é]{0,60}".prop_map(String::into_bytes),
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..40),
    ]
}

/// Sorted cut points inside `len`.
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn mask_equals_the_reference(
        secrets in proptest::collection::vec(secret(), 0..5),
        text in text(),
    ) {
        let masker = Masker::new(&secrets);
        prop_assert_eq!(masker.mask_bytes(&text).into_owned(), reference(&secrets, &text));
        prop_assert_eq!(masker.contains(&text), covered(&secrets, &text).contains(&true));
    }

    #[test]
    fn no_secret_survives(
        secrets in proptest::collection::vec(secret(), 1..5),
        text in text(),
    ) {
        let masker = Masker::new(&secrets);
        let out = masker.mask_bytes(&text);
        for needle in needles(&secrets) {
            // A mask may sit next to a character that also occurs in a secret, but no whole
            // secret can be formed from what is left (asterisks are not in the alphabet).
            prop_assert!(
                !out.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{:?} survives in {:?}", String::from_utf8_lossy(&needle), String::from_utf8_lossy(&out)
            );
        }
        // Every byte left in clear was covered by no occurrence.
        let marked = covered(&secrets, &text);
        let clear: Vec<u8> = text.iter().zip(&marked).filter(|(_, m)| !**m).map(|(b, _)| *b).collect();
        let kept: Vec<u8> = String::from_utf8_lossy(&out).replace(MASK, "").into_bytes();
        if !text.contains(&b'*') && std::str::from_utf8(&text).is_ok() {
            prop_assert_eq!(kept, clear);
        }
    }

    #[test]
    fn streaming_equals_whole(
        secrets in proptest::collection::vec(secret(), 0..5),
        text in text(),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let masker = Masker::new(&secrets);
        let mut stream = masker.stream();
        let mut out = Vec::new();
        let mut pieces_masks = 0usize;
        let mut start = 0;
        for cut in cuts(text.len(), &raw_cuts).into_iter().chain([text.len()]) {
            stream.push_pieces(&text[start..cut], |p| match p {
                Piece::Clear(b) => out.extend_from_slice(b),
                Piece::Mask => { pieces_masks += 1; out.extend_from_slice(MASK.as_bytes()) }
            });
            // Never more held back than the longest secret minus one byte.
            prop_assert!(stream.pending_bytes() < masker.longest_bytes().max(1));
            start = cut;
        }
        stream.finish_pieces(|p| match p {
            Piece::Clear(b) => out.extend_from_slice(b),
            Piece::Mask => { pieces_masks += 1; out.extend_from_slice(MASK.as_bytes()) }
        });
        prop_assert_eq!(&out, &reference(&secrets, &text));
        prop_assert_eq!(pieces_masks, masker.covered_runs(&text).len());
    }

    #[test]
    fn streaming_byte_by_byte_equals_whole(
        secrets in proptest::collection::vec(secret(), 0..5),
        text in text(),
    ) {
        let masker = Masker::new(&secrets);
        let mut stream = masker.stream();
        let mut out = Vec::new();
        for byte in &text {
            out.extend(stream.push(std::slice::from_ref(byte)));
        }
        out.extend(stream.finish());
        prop_assert_eq!(out, reference(&secrets, &text));
    }

    #[test]
    fn scanner_sees_what_the_masker_sees(
        secrets in proptest::collection::vec(secret(), 0..5),
        text in text(),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let masker = Masker::new(&secrets);
        let mut scanner = masker.scanner();
        let mut start = 0;
        for cut in cuts(text.len(), &raw_cuts).into_iter().chain([text.len()]) {
            scanner.push(&text[start..cut]);
            start = cut;
        }
        prop_assert_eq!(scanner.found(), covered(&secrets, &text).contains(&true));
    }
}

#[test]
fn many_secrets_on_a_long_output_stay_linear() {
    // 200 secrets, 1 MiB of output with an occurrence every 4 KiB: one automaton pass.
    let secrets: Vec<String> = (0..200).map(|i| format!("secret-value-{i:04}")).collect();
    let masker = Masker::new(&secrets);
    let mut text = Vec::new();
    let mut occurrences = 0;
    while text.len() < 1 << 20 {
        text.extend_from_slice(&[b'x'; 4096]);
        text.extend_from_slice(secrets[occurrences % 200].as_bytes());
        occurrences += 1;
    }
    let started = std::time::Instant::now();
    let out = masker.mask_bytes(&text);
    let elapsed = started.elapsed();
    assert_eq!(masker.covered_runs(&text).len(), occurrences);
    assert!(!out.windows(13).any(|w| w == b"secret-value-"));
    // Generous: a quadratic or per-secret rescan would take far longer on a loaded machine too.
    assert!(elapsed.as_secs() < 5, "masking 1 MiB took {elapsed:?}");
}
