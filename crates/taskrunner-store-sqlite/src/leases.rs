//! Leases in SQL: reading a run's lease, checking a fence, claiming, renewing and releasing.

use rusqlite::{Connection, OptionalExtension, params};
use taskrunner_store::{Lease, LeaseState, Release, StoreError, StoreResult, status};

use crate::rows::{db_error, to_u64};
use crate::writer::LeaseOp;

fn lease_state(conn: &Connection, tenant: &str, run_id: &str) -> StoreResult<LeaseState> {
    let row = conn
        .prepare_cached(
            "SELECT lease_owner, lease_token, lease_expires_at_ms, lease_parked FROM runs \
             WHERE tenant = ?1 AND run_id = ?2",
        )
        .map_err(db_error)?
        .query_row(params![tenant, run_id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .optional()
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
    Ok(LeaseState {
        owner: row.0,
        token: to_u64(row.1, "lease_token")?,
        expires_at_ms: row.2,
        parked: row.3,
    })
}

/// `StaleFencingToken` unless `lease` is the run's current lease.
pub(crate) fn check_fence(conn: &Connection, lease: &Lease) -> StoreResult<()> {
    lease_state(conn, &lease.tenant, &lease.run_id)?.fence(lease)
}

/// Takes the run for `owner` with the next token.
fn take(
    conn: &Connection,
    tenant: &str,
    run_id: &str,
    owner: &str,
    expires_at_ms: i64,
) -> StoreResult<Lease> {
    let token: i64 = conn
        .prepare_cached(
            "UPDATE runs SET lease_owner = ?3, lease_token = lease_token + 1, \
             lease_expires_at_ms = ?4, lease_parked = 0 WHERE tenant = ?1 AND run_id = ?2 \
             RETURNING lease_token",
        )
        .map_err(db_error)?
        .query_row(params![tenant, run_id, owner, expires_at_ms], |r| r.get(0))
        .map_err(db_error)?;
    Ok(Lease {
        tenant: tenant.to_owned(),
        run_id: run_id.to_owned(),
        owner: owner.to_owned(),
        fencing_token: to_u64(token, "lease_token")?,
        expires_at_ms,
    })
}

pub(crate) fn lease_op(conn: &Connection, op: LeaseOp) -> StoreResult<Vec<Lease>> {
    match op {
        LeaseOp::Claim {
            owner,
            limit,
            ttl_ms,
            now_ms,
        } => {
            let candidates: Vec<(String, String)> = {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT tenant, run_id FROM runs WHERE status IN (?1, ?2, ?3) AND ( \
                         (lease_owner IS NULL AND (lease_parked = 0 OR next_wake_at_ms <= ?4)) \
                         OR (lease_owner IS NOT NULL \
                             AND (lease_expires_at_ms IS NULL OR lease_expires_at_ms <= ?4))) \
                         ORDER BY COALESCE(next_wake_at_ms, -9223372036854775808), tenant, run_id \
                         LIMIT ?5",
                    )
                    .map_err(db_error)?;
                let rows = stmt
                    .query_map(
                        params![
                            status::PENDING,
                            status::RUNNING,
                            status::AWAITING_APPROVAL,
                            now_ms,
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)?
            };
            let expires = now_ms.saturating_add(ttl_ms);
            candidates
                .iter()
                .map(|(t, r)| take(conn, t, r, &owner, expires))
                .collect()
        }
        LeaseOp::ClaimRun {
            owner,
            tenant,
            run_id,
            ttl_ms,
            now_ms,
        } => {
            let state = lease_state(conn, &tenant, &run_id)?;
            let run_status: String = conn
                .prepare_cached("SELECT status FROM runs WHERE tenant = ?1 AND run_id = ?2")
                .map_err(db_error)?
                .query_row(params![tenant, run_id], |r| r.get(0))
                .map_err(db_error)?;
            if !status::is_active(&run_status) || state.held_by_other(&owner, now_ms) {
                return Ok(Vec::new());
            }
            let expires = now_ms.saturating_add(ttl_ms);
            if state.held_by(&owner, now_ms) {
                conn.prepare_cached(
                    "UPDATE runs SET lease_expires_at_ms = ?3 WHERE tenant = ?1 AND run_id = ?2",
                )
                .map_err(db_error)?
                .execute(params![tenant, run_id, expires])
                .map_err(db_error)?;
                return Ok(vec![Lease {
                    tenant,
                    run_id,
                    owner,
                    fencing_token: state.token,
                    expires_at_ms: expires,
                }]);
            }
            Ok(vec![take(conn, &tenant, &run_id, &owner, expires)?])
        }
        LeaseOp::Renew {
            owner,
            ttl_ms,
            now_ms,
        } => {
            let expires = now_ms.saturating_add(ttl_ms);
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE runs SET lease_expires_at_ms = ?2 WHERE lease_owner = ?1 \
                     AND lease_expires_at_ms > ?3 RETURNING tenant, run_id, lease_token",
                )
                .map_err(db_error)?;
            // An expired lease is not renewed (see `LeaseStore::renew`).
            let rows = stmt
                .query_map(params![owner, expires, now_ms], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db_error)?;
            let mut out = Vec::new();
            for row in rows {
                let (tenant, run_id, token) = row.map_err(db_error)?;
                out.push(Lease {
                    tenant,
                    run_id,
                    owner: owner.clone(),
                    fencing_token: to_u64(token, "lease_token")?,
                    expires_at_ms: expires,
                });
            }
            out.sort_by(|a, b| (&a.tenant, &a.run_id).cmp(&(&b.tenant, &b.run_id)));
            Ok(out)
        }
        LeaseOp::Release(lease, mode) => {
            check_fence(conn, &lease)?;
            conn.prepare_cached(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at_ms = NULL, \
                 lease_parked = ?3 WHERE tenant = ?1 AND run_id = ?2",
            )
            .map_err(db_error)?
            .execute(params![lease.tenant, lease.run_id, mode == Release::Park])
            .map_err(db_error)?;
            Ok(Vec::new())
        }
    }
}
