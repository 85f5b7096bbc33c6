//! Property tests: cursors round-trip, validators never panic, and random interleavings of
//! commits, stale commits and appends keep journals and log sequences gap-free.
#![allow(clippy::unwrap_used)]

use futures::executor::block_on;
use proptest::prelude::*;
use taskrunner_store::conformance::{log, new_run, next};
use taskrunner_store::{Cursor, MemoryStore, Store, StoreError, digest_of_stored_path, validate};

proptest! {
    #[test]
    fn cursor_round_trips(created in any::<i64>(), run_id in "[a-zA-Z0-9_-]{1,128}") {
        let cursor = Cursor { created_at_ms: created, run_id };
        prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn parsers_never_panic(text in "\\PC{0,200}") {
        let _ = Cursor::decode(&text);
        let _ = validate::tenant(&text);
        let _ = validate::run_id(&text);
        let _ = digest_of_stored_path(&text);
    }

    #[test]
    fn interleavings_keep_sequences_gap_free(ops in proptest::collection::vec((0u8..3, 0usize..4), 1..40)) {
        let store = Store::new(MemoryStore::new());
        block_on(async {
            store.runs.create_run(new_run("t", "r", 1)).await.unwrap();
            let mut expected_logs = 1u64;
            let mut expected_len = 1u64;
            for (op, n) in ops {
                match op {
                    0 => {
                        let t = next(&store, "t", "r", 1, n).await;
                        let seqs = store.runs.commit(t).await.unwrap();
                        prop_assert_eq!(seqs, (expected_logs + 1..=expected_logs + n as u64).collect::<Vec<_>>());
                        expected_logs += n as u64;
                        expected_len += 1;
                    }
                    1 => {
                        let mut t = next(&store, "t", "r", 1, n).await;
                        t.expected_journal_len = expected_len.saturating_sub(1);
                        t.journal = taskrunner_store::conformance::entries(t.expected_journal_len, "stale", 1);
                        let is_conflict = matches!(
                            store.runs.commit(t).await,
                            Err(StoreError::Conflict { .. })
                        );
                        prop_assert!(is_conflict);
                    }
                    _ => {
                        let lines = (0..n).map(|i| log("step.output", &i.to_string())).collect();
                        let seqs = store.logs.append_logs("t", "r", lines).await.unwrap();
                        prop_assert_eq!(seqs.len(), n);
                        expected_logs += n as u64;
                    }
                }
            }
            let logs = store.logs.logs("t", "r", 0, usize::MAX).await.unwrap();
            prop_assert_eq!(logs.len() as u64, expected_logs);
            let journal = store.runs.load_journal("t", "r", 0).await.unwrap();
            prop_assert_eq!(journal.len() as u64, expected_len);
            Ok(())
        })?;
    }
}
