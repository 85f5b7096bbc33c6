//! The run journal (SPEC §6.2, rule 22): hash-chained records of [`Event`]s, verification and
//! replay.
//!
//! `hash = "sha256:" + hex(SHA-256(prev_hash + "\n" + JCS({seq, at, event})))`; the chain's
//! root (the `prev_hash` of record 1) is the plan hash. Verification detects an altered record
//! (hash mismatch), a dropped or reordered record (sequence gap or broken link) and, given the
//! known head, a truncated or replaced tail.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use taskrunner_plan::Plan;

use crate::error::Error;
use crate::event::{Event, RunInfo};
use crate::run::Run;
use crate::secrets::Secrets;
use crate::time::Timestamp;

/// One journaled event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalRecord {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    pub at: Timestamp,
    pub event: Event,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of a record's content given the previous hash.
pub fn record_hash(prev_hash: &str, seq: u64, at: Timestamp, event: &Event) -> String {
    let body = serde_json::json!({
        "seq": seq,
        "at": at.0,
        "event": serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
    });
    let canonical = taskrunner_plan::jcs::to_canonical(&body);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Appends records to one run's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    head: String,
    next_seq: u64,
}

impl Journal {
    /// An empty journal rooted at the plan hash.
    pub fn new(plan_hash: &str) -> Journal {
        Journal {
            head: plan_hash.to_owned(),
            next_seq: 1,
        }
    }

    /// Continues a verified journal.
    pub fn resume(plan_hash: &str, records: &[JournalRecord]) -> Result<Journal, Error> {
        verify(plan_hash, records, None)?;
        Ok(match records.last() {
            Some(last) => Journal {
                head: last.hash.clone(),
                next_seq: last.seq + 1,
            },
            None => Journal::new(plan_hash),
        })
    }

    /// Builds the next record (the caller stores it).
    pub fn append(&mut self, at: Timestamp, event: Event) -> JournalRecord {
        let seq = self.next_seq;
        let hash = record_hash(&self.head, seq, at, &event);
        let record = JournalRecord {
            seq,
            at,
            event,
            prev_hash: std::mem::replace(&mut self.head, hash.clone()),
            hash,
        };
        self.next_seq += 1;
        record
    }

    /// The hash of the last record (the plan hash when empty).
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// Checks the chain from the plan hash; with `expected_head`, also that nothing was cut off.
pub fn verify(
    plan_hash: &str,
    records: &[JournalRecord],
    expected_head: Option<&str>,
) -> Result<(), Error> {
    let mut prev = plan_hash.to_owned();
    for (i, r) in records.iter().enumerate() {
        let expected = i as u64 + 1;
        if r.seq != expected {
            return Err(Error::JournalSequence {
                expected,
                found: r.seq,
            });
        }
        if r.prev_hash != prev {
            return Err(Error::JournalBrokenLink { seq: r.seq });
        }
        if record_hash(&r.prev_hash, r.seq, r.at, &r.event) != r.hash {
            return Err(Error::JournalHashMismatch { seq: r.seq });
        }
        prev.clone_from(&r.hash);
    }
    if let Some(head) = expected_head
        && head != prev
    {
        return Err(Error::JournalHeadMismatch {
            expected: head.to_owned(),
            found: prev,
        });
    }
    Ok(())
}

/// Verifies the journal, then folds it into a [`Run`] (commands are discarded).
pub fn replay(
    plan: Arc<Plan>,
    info: RunInfo,
    created_at: Timestamp,
    records: &[JournalRecord],
    secrets: &Secrets,
) -> Result<Run, Error> {
    verify(plan.hash(), records, None)?;
    let mut run = Run::new(plan, info, created_at);
    for r in records {
        let _ = run.apply(r.at, &r.event, secrets);
    }
    Ok(run)
}
