//! Lease operations on PostgreSQL (SPEC rule 29), each one statement on a pooled connection,
//! timed by the database server's clock so replicas' clocks need not agree.
//!
//! Claims pick claimable runs with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait
//! for each other and never get the same run; each claim increments the run's fencing token.

use taskrunner_store::{Lease, Release, StoreError, StoreResult, WAKEUP_CHANNEL, Wakeup};
use tokio_postgres::{GenericClient, Row};

use crate::rows::{ACTIVE, NOW_MS, db_error, get, to_i64, to_u64};

fn lease_from_row(row: &Row, owner: &str) -> StoreResult<Lease> {
    Ok(Lease {
        tenant: get(row, 0)?,
        run_id: get(row, 1)?,
        owner: owner.to_owned(),
        fencing_token: to_u64(get(row, 2)?, "lease_token")?,
        expires_at_ms: get::<Option<i64>>(row, 3)?.unwrap_or(0),
    })
}

pub(crate) async fn claim<C: GenericClient>(
    c: &C,
    owner: &str,
    limit: usize,
    ttl_ms: i64,
) -> StoreResult<Vec<Lease>> {
    let limit = to_i64(limit as u64, "claim limit")?;
    let sql = format!(
        "WITH now AS (SELECT {NOW_MS} AS ms), \
         picked AS ( \
             SELECT r.tenant, r.run_id FROM runs r, now \
             WHERE r.status IN {ACTIVE} AND ( \
                 (r.lease_owner IS NULL AND (NOT r.lease_parked OR r.next_wake_at_ms <= now.ms)) \
                 OR (r.lease_owner IS NOT NULL \
                     AND (r.lease_expires_at_ms IS NULL OR r.lease_expires_at_ms <= now.ms))) \
             ORDER BY r.next_wake_at_ms ASC NULLS FIRST, r.tenant, r.run_id \
             LIMIT $2 \
             FOR UPDATE OF r SKIP LOCKED) \
         UPDATE runs SET lease_owner = $1, lease_token = runs.lease_token + 1, \
             lease_expires_at_ms = (SELECT ms FROM now) + $3, lease_parked = FALSE \
         FROM picked WHERE runs.tenant = picked.tenant AND runs.run_id = picked.run_id \
         RETURNING runs.tenant, runs.run_id, runs.lease_token, runs.lease_expires_at_ms"
    );
    let rows = c
        .query(&sql, &[&owner, &limit, &ttl_ms])
        .await
        .map_err(db_error)?;
    let mut out: Vec<Lease> = rows
        .iter()
        .map(|r| lease_from_row(r, owner))
        .collect::<StoreResult<_>>()?;
    out.sort_by(|a, b| (&a.tenant, &a.run_id).cmp(&(&b.tenant, &b.run_id)));
    Ok(out)
}

pub(crate) async fn claim_run<C: GenericClient>(
    c: &C,
    owner: &str,
    tenant: &str,
    run_id: &str,
    ttl_ms: i64,
) -> StoreResult<Option<Lease>> {
    // Re-claiming one's own live lease renews it and keeps the token; an expired one gets a
    // new token (never revived, see `LeaseStore::renew`).
    let sql = format!(
        "WITH now AS (SELECT {NOW_MS} AS ms) \
         UPDATE runs SET lease_owner = $3, \
             lease_token = CASE WHEN runs.lease_owner = $3 \
                                     AND runs.lease_expires_at_ms > now.ms \
                                THEN runs.lease_token ELSE runs.lease_token + 1 END, \
             lease_expires_at_ms = (SELECT ms FROM now) + $4, lease_parked = FALSE \
         FROM now \
         WHERE runs.tenant = $1 AND runs.run_id = $2 AND runs.status IN {ACTIVE} \
         AND (runs.lease_owner IS NULL OR runs.lease_owner = $3 \
              OR runs.lease_expires_at_ms IS NULL OR runs.lease_expires_at_ms <= now.ms) \
         RETURNING runs.tenant, runs.run_id, runs.lease_token, runs.lease_expires_at_ms"
    );
    let row = c
        .query_opt(&sql, &[&tenant, &run_id, &owner, &ttl_ms])
        .await
        .map_err(db_error)?;
    match row {
        Some(row) => Ok(Some(lease_from_row(&row, owner)?)),
        None => {
            crate::read::run_exists(c, tenant, run_id).await?;
            Ok(None)
        }
    }
}

/// Extends the owner's live leases; an expired one is not renewed (see `LeaseStore::renew`).
pub(crate) async fn renew<C: GenericClient>(
    c: &C,
    owner: &str,
    ttl_ms: i64,
) -> StoreResult<Vec<Lease>> {
    let sql = format!(
        "WITH now AS (SELECT {NOW_MS} AS ms) \
         UPDATE runs SET lease_expires_at_ms = now.ms + $2 FROM now \
         WHERE lease_owner = $1 AND lease_expires_at_ms > now.ms \
         RETURNING tenant, run_id, lease_token, lease_expires_at_ms"
    );
    let rows = c.query(&sql, &[&owner, &ttl_ms]).await.map_err(db_error)?;
    let mut out: Vec<Lease> = rows
        .iter()
        .map(|r| lease_from_row(r, owner))
        .collect::<StoreResult<_>>()?;
    out.sort_by(|a, b| (&a.tenant, &a.run_id).cmp(&(&b.tenant, &b.run_id)));
    Ok(out)
}

pub(crate) async fn release<C: GenericClient>(
    c: &C,
    lease: &Lease,
    mode: Release,
) -> StoreResult<()> {
    let token = taskrunner_store::to_i64_token(lease.fencing_token)?;
    let parked = mode == Release::Park;
    let payload = Wakeup {
        tenant: lease.tenant.clone(),
        run_id: lease.run_id.clone(),
    }
    .payload();
    let released = c
        .execute(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at_ms = NULL, lease_parked = $5 \
             WHERE tenant = $1 AND run_id = $2 AND lease_owner = $3 AND lease_token = $4",
            &[&lease.tenant, &lease.run_id, &lease.owner, &token, &parked],
        )
        .await
        .map_err(db_error)?;
    if released > 0 {
        if !parked {
            c.execute("SELECT pg_notify($1, $2)", &[&WAKEUP_CHANNEL, &payload])
                .await
                .map_err(db_error)?;
        }
        return Ok(());
    }
    let row = c
        .query_opt(
            "SELECT lease_token FROM runs WHERE tenant = $1 AND run_id = $2",
            &[&lease.tenant, &lease.run_id],
        )
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
    Err(StoreError::StaleFencingToken {
        presented: lease.fencing_token,
        current: to_u64(get(&row, 0)?, "lease_token")?,
    })
}
