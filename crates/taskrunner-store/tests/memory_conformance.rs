//! The conformance suite against `MemoryStore`.
#![allow(clippy::unwrap_used)]

use taskrunner_store::{MemoryStore, Store};

taskrunner_store::conformance_tests!(|| async { Store::new(MemoryStore::new()) });
