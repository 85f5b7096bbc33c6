//! Masking and scanning of chunked input, with the same result as on the whole input.

use crate::MASK;
use crate::masker::Masker;

/// A piece of masked output: clear bytes, or one [`MASK`] standing for a run of secret bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes no secret covers, verbatim.
    Clear(&'a [u8]),
    /// One maximal run of covered bytes (written as [`MASK`]).
    Mask,
}

/// Masks a byte stream fed in chunks. The concatenation of everything it emits equals
/// [`Masker::mask_bytes`] of the concatenated input, wherever the chunk boundaries fall:
///
/// - a byte is released only once no later occurrence can cover it, so at most
///   `longest secret - 1` bytes are held back (released by [`StreamMasker::finish`]);
/// - a covered run that continues past what was released is not masked twice: its rest is
///   swallowed by the [`MASK`] already emitted.
///
/// It keeps the last `longest - 1` released bytes as context, so an occurrence that starts in
/// released text and ends in a later chunk is still found.
#[derive(Debug, Clone)]
pub struct StreamMasker {
    masker: Masker,
    /// Up to `longest - 1` bytes already released (searched again, never emitted again).
    context: Vec<u8>,
    /// Bytes received but not yet released (fewer than `longest` after each push).
    pending: Vec<u8>,
    /// The last released byte was covered: a run continuing from it needs no new mask.
    in_mask: bool,
}

impl StreamMasker {
    /// A streaming masker using `masker`'s secrets.
    pub fn new(masker: Masker) -> StreamMasker {
        StreamMasker {
            masker,
            context: Vec::new(),
            pending: Vec::new(),
            in_mask: false,
        }
    }

    /// The masker in use.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Bytes received but not yet released.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Feeds a chunk; hands every piece that is now safe to release to `emit`, in order.
    pub fn push_pieces(&mut self, chunk: &[u8], emit: impl FnMut(Piece<'_>)) {
        self.advance(chunk, false, emit);
    }

    /// Ends the stream: releases everything held, then starts afresh (an empty stream).
    pub fn finish_pieces(&mut self, emit: impl FnMut(Piece<'_>)) {
        self.advance(&[], true, emit);
        self.context.clear();
        self.pending.clear();
        self.in_mask = false;
    }

    /// Feeds a chunk; returns the masked bytes that are now safe to release.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len());
        self.push_pieces(chunk, |piece| write_piece(&mut out, piece));
        out
    }

    /// Ends the stream: returns the masked rest, then starts afresh.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.finish_pieces(|piece| write_piece(&mut out, piece));
        out
    }

    fn advance(&mut self, chunk: &[u8], last: bool, mut emit: impl FnMut(Piece<'_>)) {
        let keep = self.masker.longest_bytes().saturating_sub(1);
        if self.masker.is_empty() {
            if !chunk.is_empty() {
                emit(Piece::Clear(chunk));
            }
            return;
        }
        // window = context (released) | pending + chunk (not yet released)
        let mut window = std::mem::take(&mut self.context);
        let released = window.len();
        window.append(&mut self.pending);
        window.extend_from_slice(chunk);
        // A byte is final once every occurrence that could cover it ends inside the window:
        // an occurrence covering byte p ends at most at p + longest.
        let end = if last {
            window.len()
        } else {
            window.len().saturating_sub(keep).max(released)
        };
        let runs = self.masker.covered_runs(&window);
        let mut pos = released;
        for run in runs.iter().filter(|r| r.end > released && r.start < end) {
            let start = run.start.max(released);
            if start > pos {
                emit(Piece::Clear(window.get(pos..start).unwrap_or_default()));
            }
            // A run reaching back into released bytes, or starting right after a released
            // covered byte, continues the mask already emitted.
            if !(start == released && self.in_mask) {
                emit(Piece::Mask);
            }
            pos = run.end.min(end);
        }
        if pos < end {
            emit(Piece::Clear(window.get(pos..end).unwrap_or_default()));
        }
        if end > released {
            self.in_mask = runs.iter().any(|r| r.start < end && end <= r.end);
        }
        self.pending = window.get(end..).unwrap_or_default().to_vec();
        window.truncate(end);
        let drop = window.len().saturating_sub(keep);
        window.drain(..drop);
        self.context = window;
    }
}

fn write_piece(out: &mut Vec<u8>, piece: Piece<'_>) {
    match piece {
        Piece::Clear(bytes) => out.extend_from_slice(bytes),
        Piece::Mask => out.extend_from_slice(MASK.as_bytes()),
    }
}

/// Tells whether chunked input contains a secret anywhere, an occurrence spanning chunk
/// boundaries included. Keeps only the last `longest - 1` bytes between chunks.
#[derive(Debug, Clone)]
pub struct StreamScanner {
    masker: Masker,
    tail: Vec<u8>,
    found: bool,
}

impl StreamScanner {
    /// A scanner for `masker`'s secrets.
    pub fn new(masker: Masker) -> StreamScanner {
        StreamScanner {
            masker,
            tail: Vec::new(),
            found: false,
        }
    }

    /// Feeds a chunk; returns true once any secret has been seen so far.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.found || self.masker.is_empty() {
            return self.found;
        }
        let keep = self.masker.longest_bytes().saturating_sub(1);
        self.tail.extend_from_slice(chunk);
        self.found = self.masker.contains(&self.tail);
        let drop = self.tail.len().saturating_sub(keep);
        self.tail.drain(..drop);
        self.found
    }

    /// True once any secret has been seen.
    pub fn found(&self) -> bool {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_in_pieces(masker: &Masker, chunks: &[&[u8]]) -> Vec<u8> {
        let mut stream = masker.stream();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(stream.push(chunk));
            assert!(stream.pending_bytes() < masker.longest_bytes().max(1));
        }
        out.extend(stream.finish());
        out
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked_once() {
        let m = Masker::new(["SECRET"]);
        assert_eq!(masked_in_pieces(&m, &[b"a SEC", b"RET b"]), b"a *** b");
        assert_eq!(
            masked_in_pieces(&m, &[b"a S", b"E", b"CRET", b""]),
            b"a ***"
        );
        let m = Masker::new(["bcdefg", "abcd"]);
        assert_eq!(masked_in_pieces(&m, &[b"ab", b"cde", b"fg!"]), b"***!");
    }

    #[test]
    fn a_long_covered_run_is_released_without_being_held_whole() {
        let m = Masker::new(["aaaa"]);
        let mut stream = m.stream();
        let mut out = Vec::new();
        for _ in 0..1000 {
            out.extend(stream.push(b"aaaaaaaa"));
            assert!(stream.pending_bytes() < 4);
        }
        out.extend(stream.push(b"b"));
        out.extend(stream.finish());
        assert_eq!(out, b"***b");
    }

    #[test]
    fn released_bytes_are_safe_before_the_end() {
        let m = Masker::new(["SECRET"]);
        let mut stream = m.stream();
        assert_eq!(stream.push(b"hello SECR"), b"hello");
        assert_eq!(stream.push(b"ET"), b" ***");
        assert_eq!(
            stream.push(b" SECRE"),
            b" ",
            "the space can no longer be covered"
        );
        assert_eq!(
            stream.finish(),
            b"SECRE",
            "an incomplete secret is not a secret"
        );
        assert_eq!(stream.push(b"SECRET"), b"***", "finish starts afresh");
    }

    #[test]
    fn without_secrets_everything_passes_at_once() {
        let mut stream = Masker::default().stream();
        assert_eq!(stream.push(b"abc"), b"abc");
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn pieces_mark_masks_apart_from_clear_text() {
        let m = Masker::new(["SECRET"]);
        let mut stream = m.stream();
        let mut pieces = Vec::new();
        stream.push_pieces(b"*** SECRET x", |p| pieces.push(format!("{p:?}")));
        stream.finish_pieces(|p| pieces.push(format!("{p:?}")));
        assert_eq!(
            pieces.concat(),
            format!(
                "{:?}{:?}{:?}",
                Piece::Clear(b"*** "),
                Piece::Mask,
                Piece::Clear(b" x")
            )
        );
    }

    #[test]
    fn the_scanner_sees_secrets_across_chunks() {
        let m = Masker::new(["SECRET", "other-one"]);
        let mut scanner = m.scanner();
        assert!(!scanner.push(b"xxSEC"));
        assert!(!scanner.push(b"R"));
        assert!(scanner.push(b"ETxx"));
        assert!(scanner.push(b"anything"), "stays found");
        assert!(scanner.found());
        let mut scanner = m.scanner();
        for chunk in [b"SE".as_slice(), b"CRE", b"t other-on", b"e"] {
            assert!(!scanner.found());
            scanner.push(chunk);
        }
        assert!(scanner.found(), "the second secret, split across chunks");
        let mut scanner = m.scanner();
        assert!(!scanner.push(b"SECRE") && !scanner.push(b"t"));
        assert!(!Masker::default().scanner().push(b"SECRET"));
    }
}
