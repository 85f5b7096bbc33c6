-- 0002: run leases for work distribution (SPEC rule 29). One process owns a SQLite store, so
-- leases here mainly keep one runtime API for every adapter; the semantics are the same as on
-- PostgreSQL (see taskrunner_store::lease).

ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_expires_at_ms INTEGER;
ALTER TABLE runs ADD COLUMN lease_parked INTEGER NOT NULL DEFAULT 0;
