//! The line splitter: turns a byte stream into complete, masked [`OutputLine`]s (rule 19).
//!
//! A partial line is held until its newline, the end of the stream, or the line cap. Masking
//! is applied to the held bytes before any split, and a forced split never cuts through a
//! secret: the splitter holds `LINE_BYTES_MAX + longest secret - 1` bytes before cutting, so
//! every secret that starts before the cut is entirely visible when the cut is chosen.

use crate::mask::Masker;
use crate::request::{OutputLine, OutputStream};

/// The longest line emitted as one [`OutputLine`]; longer lines are split (SPEC §5.8).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Splits one stream into lines.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    stream: OutputStream,
    masker: Masker,
    line_bytes_max: usize,
    /// Bytes held before a forced cut: `line_bytes_max + longest secret - 1`.
    hold_bytes_max: usize,
    buffer: Vec<u8>,
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
        // A cap below 4 bytes could not hold one UTF-8 character.
        let line_bytes_max = line_bytes_max.max(4);
        let hold_bytes_max = line_bytes_max + masker.longest_bytes().saturating_sub(1);
        LineSplitter {
            stream,
            masker,
            line_bytes_max,
            hold_bytes_max,
            buffer: Vec::new(),
        }
    }

    /// Feeds bytes; returns the lines they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<OutputLine> {
        self.buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        let mut start = 0;
        loop {
            let held = &self.buffer[start..];
            match held.iter().position(|&b| b == b'\n') {
                Some(newline) if newline < self.hold_bytes_max => {
                    self.emit_complete(&held[..newline], &mut lines);
                    start += newline + 1;
                }
                _ if held.len() >= self.hold_bytes_max => {
                    let cut = self.forced_cut(held);
                    self.emit_complete(&held[..cut], &mut lines);
                    start += cut;
                }
                _ => break,
            }
        }
        self.buffer.drain(..start);
        lines
    }

    /// Ends the stream: returns the held partial line, if any.
    pub(crate) fn finish(&mut self) -> Vec<OutputLine> {
        let mut lines = Vec::new();
        if !self.buffer.is_empty() {
            let held = std::mem::take(&mut self.buffer);
            self.emit_complete(&held, &mut lines);
        }
        lines
    }

    /// Where to cut a held run of at least `hold_bytes_max` bytes without a newline.
    fn forced_cut(&self, held: &[u8]) -> usize {
        let mut cut = self.line_bytes_max;
        // Never cut through a secret: move the cut before (or, at the very start, after) it.
        // Every secret starting before `cut` ends within `held` (see the module doc).
        if !self.masker.is_empty() {
            let mut i = 0;
            while i < cut {
                match self.masker.match_at(&held[i..]) {
                    Some(len) if i + len > cut => {
                        cut = if i == 0 { len } else { i };
                        break;
                    }
                    Some(len) => i += len,
                    None => i += 1,
                }
            }
        }
        // Prefer a UTF-8 character boundary (at most 3 bytes back).
        let is_boundary = |i: usize| i >= held.len() || !is_continuation(held[i]);
        let mut boundary = cut;
        while boundary > 0 && cut - boundary < 3 && !is_boundary(boundary) {
            boundary -= 1;
        }
        if boundary > 0 && is_boundary(boundary) {
            boundary
        } else {
            cut
        }
    }

    /// Masks a complete line, converts it lossily, and splits it at the cap.
    fn emit_complete(&self, raw: &[u8], lines: &mut Vec<OutputLine>) {
        let masked = self.masker.mask_bytes(raw);
        let text = String::from_utf8_lossy(&masked);
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
    fn invalid_utf8_is_replaced_lossily() {
        let mut s = LineSplitter::new(OutputStream::Stderr, Masker::default());
        let lines = s.push(b"a\xffb\n");
        assert_eq!(lines[0].line, "a\u{FFFD}b");
        assert_eq!(lines[0].stream, OutputStream::Stderr);
    }
}
