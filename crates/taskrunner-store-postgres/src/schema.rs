//! Versioned migrations (`migrations/NNNN_*.sql`), applied in order at start, each in its own
//! transaction, recorded in `taskrunner_schema_migrations`. Replicas starting at once serialise
//! on a session advisory lock ([`MIGRATION_LOCK_KEY`]) held on a dedicated connection, and each
//! re-reads the version under the lock, so every migration runs exactly once.

use taskrunner_store::{StoreError, StoreResult};
use tokio_postgres::Client;

use crate::rows::db_error;

/// Migrations in order; migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    ("0002_meta", include_str!("../migrations/0002_meta.sql")),
];

/// The version of taskrunner this store adapter belongs to (the workspace's version).
const TASKRUNNER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Key of the `pg_advisory_lock` taken while migrating (`"taskrunr"` as an integer).
pub const MIGRATION_LOCK_KEY: i64 = 0x7461_736b_7275_6e72;

/// Brings the database up to [`SCHEMA_VERSION`]; refuses a database newer than this build.
/// `client` must be a connection of its own: the advisory lock is released when it closes.
pub(crate) async fn migrate(client: &mut Client) -> StoreResult<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db_error)?;
    let result = migrate_locked(client).await;
    // On error the connection is dropped by the caller, which releases the lock too.
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db_error)?;
    result
}

async fn migrate_locked(client: &mut Client) -> StoreResult<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS taskrunner_schema_migrations ( \
                 version    INTEGER PRIMARY KEY, \
                 name       TEXT NOT NULL, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db_error)?;
    let current = schema_version(client).await?;
    if current > SCHEMA_VERSION {
        let writer = client
            .query_opt(
                "SELECT value FROM taskrunner_meta WHERE key = 'written_by'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .and_then(|row| row.try_get::<_, String>(0).ok())
            .map_or_else(String::new, |v| {
                format!(", last written by taskrunner {v},")
            });
        return Err(StoreError::Backend(format!(
            "database schema version {current}{writer} is newer than this build (taskrunner {TASKRUNNER_VERSION}) supports ({SCHEMA_VERSION}); run the newer taskrunner or restore a backup taken before the upgrade"
        )));
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let target = index as u32 + 1;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Backend(format!("migration {name} failed: {e}")))?;
        tx.execute(
            "INSERT INTO taskrunner_schema_migrations (version, name) VALUES ($1, $2)",
            &[&i32::try_from(target).unwrap_or(i32::MAX), name],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::info!(
            migration = name,
            version = target,
            "applied store migration"
        );
    }
    // Which versions created the store and last opened it for writing.
    client
        .execute(
            "INSERT INTO taskrunner_meta (key, value) VALUES ('created_by', $1) \
             ON CONFLICT (key) DO NOTHING",
            &[&TASKRUNNER_VERSION],
        )
        .await
        .map_err(db_error)?;
    client
        .execute(
            "INSERT INTO taskrunner_meta (key, value) VALUES ('written_by', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&TASKRUNNER_VERSION],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The recorded schema version (0 for an empty database).
pub(crate) async fn schema_version(client: &Client) -> StoreResult<u32> {
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM taskrunner_schema_migrations",
            &[],
        )
        .await
        .map_err(db_error)?;
    let v: i32 = crate::rows::get(&row, 0)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v} is out of range")))
}
