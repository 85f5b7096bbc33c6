//! The store conformance suite against `SqliteStore` (one fresh data directory per test).
#![allow(clippy::unwrap_used)]

use taskrunner_store::Store;
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore};

taskrunner_store::conformance_tests!(|| async {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    Store::new(store).with_guard(dir)
});
