//! The store conformance suite against `PostgresStore` on a real PostgreSQL server (one fresh
//! database and artifact directory per test; skipped with a notice when no server is reachable,
//! failed instead under `CI=true`).
#![allow(clippy::unwrap_used)]

mod support;

use support::TestDb;
use taskrunner_store::Store;

taskrunner_store::conformance_tests!(available: support::available, || async {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let store = db.store(dir.path()).await;
    Store::new(store).with_guard((db, dir))
});
