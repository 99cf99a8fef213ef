//! Schema migrations. `PRAGMA user_version` holds how many of [`MIGRATIONS`] have been applied;
//! each runs once, in order, inside the transaction that bumps the version.

/// Append only: never edit a migration that has shipped.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: streams and their outputs.
    "CREATE TABLE live_streams (
        id               TEXT PRIMARY KEY,
        name             TEXT,
        stream_key       TEXT NOT NULL UNIQUE,
        idle_timeout_sec INTEGER NOT NULL,
        max_runtime_sec  INTEGER NOT NULL,
        status           TEXT NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'active')),
        activated_at     INTEGER,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE outputs (
        id         TEXT PRIMARY KEY,
        stream_id  TEXT NOT NULL REFERENCES live_streams(id) ON DELETE CASCADE,
        type       TEXT NOT NULL CHECK (type IN ('hls', 'archive', 'simulcast')),
        name       TEXT,
        uri        TEXT,
        stream_key TEXT,
        vendor     TEXT,
        public_id  TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX outputs_by_stream ON outputs(stream_id);
    -- The contract allows one hls and one archive output per stream.
    CREATE UNIQUE INDEX outputs_singletons ON outputs(stream_id, type) WHERE type IN ('hls', 'archive');",
    // 2: finished recordings. Assets outlive their stream (their URLs may be in use), so no
    // foreign key; `version` is the finalize time in Unix seconds, unique per public_id.
    "CREATE TABLE archives (
        public_id    TEXT NOT NULL,
        version      INTEGER NOT NULL,
        stream_id    TEXT NOT NULL,
        path         TEXT NOT NULL,
        duration_ms  INTEGER NOT NULL,
        bytes        INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (public_id, version)
    ) STRICT;
    CREATE INDEX archives_by_stream ON archives(stream_id, created_at);",
    // 3: deleting recordings. A deletion removes the rows and lists the files here in one
    // transaction, then removes the files and their entries: a crash in between leaves files
    // to remove at the next start, never a listed recording without its file.
    "CREATE TABLE archive_deletions (
        path TEXT PRIMARY KEY
    ) STRICT;
    CREATE INDEX archives_by_version ON archives(version);",
    // 4: the webhook outbox, a row per event and receiver URL, written before anything is sent.
    // `next_attempt_at` is NULL once the row is finished: delivered, or given up.
    "CREATE TABLE webhook_deliveries (
        seq             INTEGER PRIMARY KEY,
        event_id        TEXT NOT NULL,
        event           TEXT NOT NULL,
        url             TEXT NOT NULL,
        body            TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        delivered_at    INTEGER,
        last_error      TEXT,
        UNIQUE (event_id, url)
    ) STRICT;
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(url, next_attempt_at)
        WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries(created_at);",
];
