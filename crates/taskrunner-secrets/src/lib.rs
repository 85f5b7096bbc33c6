//! The one masker: how secret values are hidden everywhere taskrunner logs, stores or publishes
//! text (SPEC §1.2, rule 19).
//!
//! Every place that masks (the journal, logs, run state, step outputs, failure messages,
//! artifact listings, streamed output lines) goes through [`Masker`], so the rule lives here
//! once:
//!
//! - **What is a secret.** Each non-empty secret value, verbatim. A multi-line value (a PEM
//!   key) is also masked line by line — output is logged per line, so its lines never appear
//!   together — for each of its lines of at least [`SECRET_BYTES_MIN`] bytes (shorter lines
//!   would mask common fragments and say little). A whole value shorter than
//!   [`SECRET_BYTES_MIN`] is still masked: hosts refuse such secrets (rule 19), and if one
//!   arrives anyway masking it is merely noisy, never a leak.
//! - **What is masked.** The union of every occurrence of every secret: every byte covered by
//!   any occurrence (overlapping, nested and repeated occurrences included) is marked, and each
//!   maximal run of marked bytes becomes one [`MASK`]. No byte of any occurrence survives,
//!   whatever the order or overlap of the secrets.
//! - **Streams.** [`StreamMasker`] masks chunked output with the same result as masking the
//!   whole: it holds back at most `longest secret - 1` bytes that a secret spanning the next
//!   chunk boundary could still cover, and releases them on [`StreamMasker::finish`].
//!
//! Matching uses one Aho–Corasick automaton (overlapping search), so masking is linear in the
//! text plus the number of occurrences, however many secrets there are.
//!
//! The crate is pure: no I/O, clock, threads or randomness; it never panics on any input.

mod masker;
mod stream;

pub use masker::Masker;
pub use stream::{Piece, StreamMasker, StreamScanner};

/// What a masked run of secret bytes becomes.
pub const MASK: &str = "***";

/// Hosts refuse secrets shorter than this (rule 19); lines of a multi-line secret shorter than
/// this are not masked on their own.
pub const SECRET_BYTES_MIN: usize = 4;
