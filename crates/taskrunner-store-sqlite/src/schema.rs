//! Versioned migrations (`migrations/NNNN_*.sql`), applied in order, each in its own
//! transaction, with `PRAGMA user_version` as the schema version.

use rusqlite::{Connection, TransactionBehavior};
use taskrunner_store::StoreError;

use crate::rows::db_error;

/// Migrations in order; migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    ("0002_leases", include_str!("../migrations/0002_leases.sql")),
    ("0003_meta", include_str!("../migrations/0003_meta.sql")),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`SCHEMA_VERSION`]; refuses a database newer than this build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = refuse_newer(conn)?;
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let target = index as u32 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let now = user_version(&tx)?;
        if now >= target {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Backend(format!("migration {name} failed: {e}")))?;
        tx.pragma_update(None, "user_version", target)
            .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        tracing::info!(
            migration = name,
            version = target,
            "applied store migration"
        );
    }
    Ok(())
}

/// The database's schema version; refuses one newer than this build (there are no downgrades:
/// an older binary must not write a store a newer one migrated).
pub(crate) fn refuse_newer(conn: &Connection) -> Result<u32, StoreError> {
    let current = user_version(conn)?;
    if current > SCHEMA_VERSION {
        let writer = conn
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'written_by'",
                [],
                |row| row.get::<_, String>(0),
            )
            .map_or_else(
                |_| String::new(),
                |v| format!(", last written by taskrunner {v},"),
            );
        return Err(StoreError::Backend(format!(
            "database schema version {current}{writer} is newer than this build (taskrunner {TASKRUNNER_VERSION}) supports ({SCHEMA_VERSION}); run the newer taskrunner or restore a backup taken before the upgrade"
        )));
    }
    Ok(current)
}

/// The version of taskrunner this store adapter belongs to (the workspace's version).
const TASKRUNNER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Records the taskrunner version opening the store for writing (`written_by`), and the one
/// that created it (`created_by`, kept from the first open after migration 0003).
pub(crate) fn record_writer(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES ('created_by', ?1) ON CONFLICT (key) DO NOTHING",
        [TASKRUNNER_VERSION],
    )
    .map_err(db_error)?;
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES ('written_by', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [TASKRUNNER_VERSION],
    )
    .map_err(db_error)?;
    Ok(())
}

pub(crate) fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_error)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v} is out of range")))
}
