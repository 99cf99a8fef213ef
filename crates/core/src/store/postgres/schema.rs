//! The PostgreSQL schema: the same tables as SQLite's, migration for migration, with the same
//! numbering, so that both stay in step (a migration added to one is added to the other).
//! `oxcast_schema.version` holds how many have been applied.
//!
//! Differences from SQLite, on purpose: integers are BIGINT (SQLite's INTEGER is 64-bit); rows
//! whose order matters carry a `seq` identity (SQLite's rowid); the text keys that are sorted or
//! compared as ranges use the "C" collation (SQLite compares bytes, whatever the database's locale).

use tokio_postgres::Client;

use super::super::StoreError;

/// Append only: never edit a migration that has shipped.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: streams and their outputs.
    "CREATE TABLE live_streams (
        seq              BIGINT GENERATED ALWAYS AS IDENTITY,
        id               TEXT PRIMARY KEY,
        name             TEXT,
        stream_key       TEXT NOT NULL UNIQUE,
        idle_timeout_sec BIGINT NOT NULL,
        max_runtime_sec  BIGINT NOT NULL,
        status           TEXT NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'active')),
        activated_at     BIGINT,
        created_at       BIGINT NOT NULL,
        updated_at       BIGINT NOT NULL
    );
    CREATE TABLE outputs (
        seq        BIGINT GENERATED ALWAYS AS IDENTITY,
        id         TEXT PRIMARY KEY,
        stream_id  TEXT NOT NULL REFERENCES live_streams(id) ON DELETE CASCADE,
        type       TEXT NOT NULL CHECK (type IN ('hls', 'archive', 'simulcast')),
        name       TEXT,
        uri        TEXT,
        stream_key TEXT,
        vendor     TEXT,
        public_id  TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX outputs_by_stream ON outputs(stream_id);
    -- The contract allows one hls and one archive output per stream.
    CREATE UNIQUE INDEX outputs_singletons ON outputs(stream_id, type) WHERE type IN ('hls', 'archive');",
    // 2: finished recordings (see the SQLite schema for why there is no foreign key).
    "CREATE TABLE archives (
        public_id    TEXT COLLATE \"C\" NOT NULL,
        version      BIGINT NOT NULL,
        stream_id    TEXT NOT NULL,
        path         TEXT NOT NULL,
        duration_ms  BIGINT NOT NULL,
        bytes        BIGINT NOT NULL,
        created_at   BIGINT NOT NULL,
        PRIMARY KEY (public_id, version)
    );
    CREATE INDEX archives_by_stream ON archives(stream_id, created_at);",
    // 3: deleting recordings.
    "CREATE TABLE archive_deletions (
        path TEXT COLLATE \"C\" PRIMARY KEY
    );
    CREATE INDEX archives_by_version ON archives(version);",
    // 4: the webhook outbox.
    "CREATE TABLE webhook_deliveries (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id        TEXT NOT NULL,
        event           TEXT NOT NULL,
        url             TEXT NOT NULL,
        body            TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        delivered_at    BIGINT,
        last_error      TEXT,
        UNIQUE (event_id, url)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(url, next_attempt_at)
        WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries(created_at);",
];

/// Any constant, the same for every Oxcast: nodes starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x0C_CA57;

/// Applies the migrations not yet applied, all in one transaction (PostgreSQL's DDL is
/// transactional: a failed migration leaves the schema as it was).
pub(super) async fn migrate(db: &mut Client) -> Result<(), StoreError> {
    migrate_to(db, MIGRATIONS.len()).await
}

/// Applies migrations up to `target` (tests build older databases with it).
pub(in super::super) async fn migrate_to(db: &mut Client, target: usize) -> Result<(), StoreError> {
    let tx = db.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS oxcast_schema (version BIGINT NOT NULL)")
        .await?;
    let applied: i64 = match tx.query_opt("SELECT version FROM oxcast_schema", &[]).await? {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO oxcast_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    let known = MIGRATIONS.len();
    let start =
        usize::try_from(applied).map_err(|_| StoreError::Corrupt(format!("schema version {applied}")))?;
    if start > known {
        return Err(StoreError::NewerSchema {
            found: applied,
            known,
        });
    }
    for (version, sql) in (1_i64..)
        .zip(MIGRATIONS)
        .skip(start)
        .take(target.saturating_sub(start))
    {
        tx.batch_execute(sql).await?;
        tx.execute("UPDATE oxcast_schema SET version = $1", &[&version])
            .await?;
        tracing::info!(version, "database schema migrated");
    }
    tx.commit().await?;
    Ok(())
}
