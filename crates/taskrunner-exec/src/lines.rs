//! The line splitter: turns a byte stream into complete, masked [`OutputLine`]s (rule 19).
//!
//! Each line's bytes go through a [`StreamMasker`] (the one masker, streaming) as they arrive,
//! so a secret printed in several writes is masked exactly as if the line had come at once.
//! Masked text waits until its newline, the end of the stream, or the line cap; a forced cut
//! at the cap prefers a UTF-8 character boundary and never splits a `***`. Raw bytes that a
//! secret could still cover (at most the longest secret minus one) stay in the stream masker,
//! so a cut never exposes part of a secret either.

use taskrunner_secrets::{MASK, Piece, StreamMasker};

use crate::Masker;
use crate::request::{OutputLine, OutputStream};

/// The longest line emitted as one [`OutputLine`]; longer lines are split (SPEC §5.8).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Splits one stream into lines.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    stream: OutputStream,
    /// Masks the current line (finished, and so restarted, at each newline).
    masker: StreamMasker,
    line_bytes_max: usize,
    /// Masked bytes of the current line not yet emitted.
    masked: Vec<u8>,
    /// Where each mask in `masked` starts.
    masks: Vec<usize>,
}

impl LineSplitter {
    pub(crate) fn new(stream: OutputStream, masker: Masker) -> LineSplitter {
        LineSplitter::with_cap(stream, masker, LINE_BYTES_MAX)
    }

    pub(crate) fn with_cap(
        stream: OutputStream,
        masker: Masker,
        line_bytes_max: usize,
    ) -> LineSplitter {
        LineSplitter {
            stream,
            masker: masker.stream(),
            // A cap below 4 bytes could not hold one UTF-8 character (nor one mask).
            line_bytes_max: line_bytes_max.max(4),
            masked: Vec::new(),
            masks: Vec::new(),
        }
    }

    /// Feeds bytes; returns the lines they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<OutputLine> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.feed(&rest[..newline], &mut lines);
            self.end_line(&mut lines);
            rest = &rest[newline + 1..];
        }
        self.feed(rest, &mut lines);
        lines
    }

    /// Ends the stream: returns the held partial line, if any.
    pub(crate) fn finish(&mut self) -> Vec<OutputLine> {
        let mut lines = Vec::new();
        if !self.masked.is_empty() || self.masker.pending_bytes() > 0 {
            self.end_line(&mut lines);
        }
        lines
    }

    /// Masks bytes of the current line; emits cap-sized pieces once there are enough.
    fn feed(&mut self, bytes: &[u8], lines: &mut Vec<OutputLine>) {
        let (masked, masks) = (&mut self.masked, &mut self.masks);
        self.masker
            .push_pieces(bytes, |piece| append(masked, masks, piece));
        while self.masked.len() >= self.line_bytes_max {
            self.emit_cut(lines);
        }
    }

    /// The current line is complete: emits what is left of it.
    fn end_line(&mut self, lines: &mut Vec<OutputLine>) {
        let (masked, masks) = (&mut self.masked, &mut self.masks);
        self.masker
            .finish_pieces(|piece| append(masked, masks, piece));
        while self.masked.len() > self.line_bytes_max {
            self.emit_cut(lines);
        }
        let rest = std::mem::take(&mut self.masked);
        self.masks.clear();
        self.emit(&rest, lines);
    }

    /// Emits the masked bytes before a forced cut.
    fn emit_cut(&mut self, lines: &mut Vec<OutputLine>) {
        let cut = self.forced_cut();
        let head: Vec<u8> = self.masked.drain(..cut).collect();
        self.masks.retain(|&m| m >= cut);
        self.masks.iter_mut().for_each(|m| *m -= cut);
        self.emit(&head, lines);
    }

    /// Where to cut the masked bytes (at least `line_bytes_max` of them) of a long line.
    fn forced_cut(&self) -> usize {
        let held = &self.masked;
        let mut cut = self.line_bytes_max.min(held.len());
        // Prefer a UTF-8 character boundary (at most 3 bytes back).
        let is_boundary = |i: usize| held.get(i).is_none_or(|&b| !is_continuation(b));
        let mut boundary = cut;
        while boundary > 0 && cut - boundary < 3 && !is_boundary(boundary) {
            boundary -= 1;
        }
        if boundary > 0 && is_boundary(boundary) {
            cut = boundary;
        }
        // Never split a mask: cut before it (or, at the very start, after it).
        if let Some(&m) = self
            .masks
            .iter()
            .find(|&&m| m < cut && cut < m + MASK.len())
        {
            cut = if m > 0 { m } else { m + MASK.len() };
        }
        cut
    }

    /// Converts masked bytes lossily and emits them, split at the cap.
    fn emit(&self, masked: &[u8], lines: &mut Vec<OutputLine>) {
        let text = String::from_utf8_lossy(masked);
        let mut rest: &str = &text;
        loop {
            if rest.len() <= self.line_bytes_max {
                lines.push(OutputLine::new(self.stream, rest));
                return;
            }
            let mut cut = self.line_bytes_max;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            lines.push(OutputLine::new(self.stream, &rest[..cut]));
            rest = &rest[cut..];
        }
    }
}

fn append(masked: &mut Vec<u8>, masks: &mut Vec<usize>, piece: Piece<'_>) {
    match piece {
        Piece::Clear(bytes) => masked.extend_from_slice(bytes),
        Piece::Mask => {
            masks.push(masked.len());
            masked.extend_from_slice(MASK.as_bytes());
        }
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: Vec<OutputLine>) -> Vec<String> {
        lines.into_iter().map(|l| l.line).collect()
    }

    #[test]
    fn holds_partial_lines_until_newline_or_finish() {
        let mut s = LineSplitter::new(OutputStream::Stdout, Masker::default());
        assert!(s.push(b"ab").is_empty());
        assert_eq!(texts(s.push(b"c\nd\n\ne")), ["abc", "d", ""]);
        assert_eq!(texts(s.finish()), ["e"]);
        assert!(s.finish().is_empty());
    }

    #[test]
    fn splits_at_the_cap_on_char_boundaries() {
        let mut s = LineSplitter::with_cap(OutputStream::Stdout, Masker::default(), 4);
        // A cut after 4 bytes of "aaaé" would halve the é, so the cut moves back.
        assert_eq!(texts(s.push("aaaébbc".as_bytes())), ["aaa", "ébb"]);
        assert_eq!(texts(s.finish()), ["c"]);
    }

    #[test]
    fn a_secret_is_never_cut_in_two() {
        for offset in 0..12 {
            let masker = Masker::new(["SECRET"]);
            let mut s = LineSplitter::with_cap(OutputStream::Stdout, masker, 8);
            let input = format!("{}SECRET{}\n", "x".repeat(offset), "y".repeat(9));
            let mut lines = Vec::new();
            for b in input.bytes() {
                lines.extend(texts(s.push(&[b])));
            }
            lines.extend(texts(s.finish()));
            let joined = lines.concat();
            assert_eq!(
                joined,
                format!("{}***{}", "x".repeat(offset), "y".repeat(9))
            );
            assert!(lines.iter().all(|l| l.len() <= 8), "{lines:?}");
        }
    }

    #[test]
    fn overlapping_secrets_in_separate_writes_leave_nothing() {
        let masker = Masker::new(["bcdefg", "abcd"]);
        let mut s = LineSplitter::new(OutputStream::Stdout, masker);
        assert!(s.push(b"x ab").is_empty());
        assert!(s.push(b"cde").is_empty());
        assert_eq!(texts(s.push(b"fg y\nabcd")), ["x *** y"]);
        assert_eq!(texts(s.finish()), ["***"]);
    }

    #[test]
    fn a_long_run_of_secrets_is_one_mask_across_cuts() {
        // Covered bytes run on past the cap: each cut emits what is final, the run stays one
        // mask and no `*` of it lands in a second line.
        let masker = Masker::new(["abab"]);
        let mut s = LineSplitter::with_cap(OutputStream::Stdout, masker, 8);
        let mut lines = texts(s.push(b"0123456ab"));
        for _ in 0..50 {
            lines.extend(texts(s.push(b"ab")));
        }
        lines.extend(texts(s.push(b"!\n")));
        assert_eq!(lines, ["0123456", "***!"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_lossily() {
        let mut s = LineSplitter::new(OutputStream::Stderr, Masker::default());
        let lines = s.push(b"a\xffb\n");
        assert_eq!(lines[0].line, "a\u{FFFD}b");
        assert_eq!(lines[0].stream, OutputStream::Stderr);
    }
}
