//! The durable store: SQLite in WAL mode at `<storage.dir>/oxcast.db` (the default), or
//! PostgreSQL (`store.url`, see [`postgres`]). Callers see one API whichever holds the state.
//!
//! Every write is its own committed transaction (SQLite with `synchronous=FULL`, PostgreSQL with
//! `synchronous_commit=on`), so once a method returns the change survives a killed process or a
//! power cut. SQLite calls run on tokio's blocking pool so an fsync never stalls the async
//! workers that carry media.

mod outbox;
mod postgres;
mod schema;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, Row, params};

use crate::ids::{OutputId, StreamId, StreamKey};
use crate::model::{Archive, LiveStream, Output, OutputKind, SimulcastTarget, Status};
use crate::sync;

pub use self::outbox::{Attempt, Delivery, NewDelivery};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("storage directory {0} is in use by another Oxcast process")]
    InUse(PathBuf),
    #[error("database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("database schema version {found} is newer than this Oxcast understands ({known})")]
    NewerSchema { found: i64, known: usize },
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    #[error("cannot connect to PostgreSQL at {at}: {}", causes(.error))]
    Connect {
        at: String,
        error: tokio_postgres::Error,
    },
    #[error("database: {}", causes(.0))]
    Postgres(tokio_postgres::Error),
    /// A row with the same unique key is there already.
    #[error("database: already taken: {0}")]
    Conflict(String),
    #[error("database holds an invalid row: {0}")]
    Corrupt(String),
    #[error("the store is closed")]
    Closed,
}

/// An error with its causes, on one line: tokio-postgres says "error connecting to server" and
/// keeps the why ("Connection refused") in its source.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::{SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE};
        match e.sqlite_error() {
            Some(f)
                if matches!(
                    f.extended_code,
                    SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                StoreError::Conflict(e.to_string())
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict(db.message().to_owned())
            }
            _ => StoreError::Postgres(e),
        }
    }
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// SQLite's connection; `None` once closed, or always when the state is in PostgreSQL.
    db: Mutex<Option<Connection>>,
    pg: Option<postgres::Postgres>,
    dir: PathBuf,
    // Held for the store's lifetime: an advisory lock that keeps a second server off this directory.
    _lock: File,
}

impl Store {
    /// File name of the database inside the storage directory.
    pub const DB_FILE: &'static str = "oxcast.db";

    /// Opens (creating if needed) the store in `dir`, migrates the schema, and marks every stream
    /// idle: no session survives a restart.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let lock = Self::lock_dir(dir)?;
        let path = dir.join(Self::DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut db = Connection::open(&path).map_err(open_err)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        db.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        migrate(&mut db)?;
        db.execute("UPDATE live_streams SET status = 'idle', activated_at = NULL", [])?;
        Ok(Store {
            inner: Arc::new(Inner {
                db: Mutex::new(Some(db)),
                pg: None,
                dir: dir.to_owned(),
                _lock: lock,
            }),
        })
    }

    /// Opens the store on the PostgreSQL database at `url` (`postgres://…`), with recordings in
    /// `dir`: connects, migrates the schema, and marks every stream idle. Blocking.
    pub fn open_postgres(url: &str, dir: &Path) -> Result<Store, StoreError> {
        let lock = Self::lock_dir(dir)?;
        let pg = postgres::Postgres::connect(url)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db: Mutex::new(None),
                pg: Some(pg),
                dir: dir.to_owned(),
                _lock: lock,
            }),
        })
    }

    /// Creates `dir` and takes its advisory lock, held for the store's lifetime.
    fn lock_dir(dir: &Path) -> Result<File, StoreError> {
        let dir_err = |source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("oxcast.lock"))
            .map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::InUse(dir.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        Ok(lock)
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock();
            let db = guard.as_mut().ok_or(StoreError::Closed)?;
            f(db)
        })
        .await
        .unwrap_or_else(|join| Err(StoreError::Corrupt(format!("store task failed: {join}"))))
    }

    /// The storage directory: recordings' paths are relative to it.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Succeeds while the database answers queries.
    pub async fn check(&self) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.check().await;
        }
        self.with(|db| Ok(db.query_row("SELECT count(*) FROM live_streams", [], |_| Ok(()))?))
            .await
    }

    /// Closes the database (checkpointing the WAL). Later calls fail with [`StoreError::Closed`].
    pub fn close(&self) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            pg.close();
            return Ok(());
        }
        match self.inner.lock().take() {
            Some(db) => db.close().map_err(|(_, e)| StoreError::Sqlite(e)),
            None => Ok(()),
        }
    }

    /// Stores a new stream with its outputs.
    pub async fn insert_stream(&self, stream: LiveStream) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.insert_stream(stream).await;
        }
        self.with(move |db| {
            let tx = db.transaction()?;
            tx.execute(
                "INSERT INTO live_streams (id, name, stream_key, idle_timeout_sec, max_runtime_sec,
                                           status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    stream.id.as_str(),
                    stream.name,
                    stream.stream_key.as_str(),
                    stream.idle_timeout_sec,
                    stream.max_runtime_sec,
                    stream.status.as_str(),
                    stream.created_at,
                    stream.updated_at
                ],
            )?;
            for output in &stream.outputs {
                insert_output(&tx, &stream.id, output)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Every stream, oldest first.
    pub async fn list_streams(&self) -> Result<Vec<LiveStream>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.list_streams().await;
        }
        self.with(|db| {
            let mut streams = Vec::new();
            let mut stmt = db.prepare_cached(&format!("{SELECT_STREAM} ORDER BY created_at, rowid"))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                streams.push(stream_from_row(row)?);
            }
            drop(rows);
            let mut outputs = db.prepare_cached(&format!("{SELECT_OUTPUT} ORDER BY rowid"))?;
            let mut rows = outputs.query([])?;
            let index: std::collections::HashMap<String, usize> = streams
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str().to_owned(), i))
                .collect();
            while let Some(row) = rows.next()? {
                let stream_id: String = row.get(0)?;
                let output = output_from_row(row)?;
                if let Some(stream) = index.get(&stream_id).and_then(|i| streams.get_mut(*i)) {
                    stream.outputs.push(output);
                }
            }
            Ok(streams)
        })
        .await
    }

    /// One stream with its outputs.
    pub async fn get_stream(&self, id: &StreamId) -> Result<Option<LiveStream>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.get_stream(id).await;
        }
        let id = id.clone();
        self.with(move |db| get_stream(db, &id)).await
    }

    /// Every stream's id and key, for matching publishers' keys. Blocking: for start-up.
    pub fn load_stream_keys(&self) -> Result<Vec<(StreamId, StreamKey)>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.load_stream_keys();
        }
        let mut guard = self.inner.lock();
        let db = guard.as_mut().ok_or(StoreError::Closed)?;
        let mut stmt = db.prepare_cached("SELECT id, stream_key FROM live_streams")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut keys = Vec::new();
        for row in rows {
            let (id, key) = row?;
            keys.push((parse_id(&id, StreamId::parse)?, StreamKey::from_stored(key)));
        }
        Ok(keys)
    }

    /// Writes a stream's changeable fields (name, timeouts, updated_at).
    pub async fn update_stream(&self, stream: &LiveStream) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.update_stream(stream).await;
        }
        let (id, name, idle, max, updated) = (
            stream.id.clone(),
            stream.name.clone(),
            stream.idle_timeout_sec,
            stream.max_runtime_sec,
            stream.updated_at,
        );
        self.with(move |db| {
            db.execute(
                "UPDATE live_streams SET name = ?2, idle_timeout_sec = ?3, max_runtime_sec = ?4,
                                         updated_at = ?5
                 WHERE id = ?1",
                params![id.as_str(), name, idle, max, updated],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a lifecycle transition. `activated_at` is epoch ms, `None` when idle.
    pub async fn set_status(
        &self,
        id: &StreamId,
        status: Status,
        activated_at: Option<i64>,
    ) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.set_status(id, status, activated_at).await;
        }
        let id = id.clone();
        self.with(move |db| {
            db.execute(
                "UPDATE live_streams SET status = ?2, activated_at = ?3 WHERE id = ?1",
                params![id.as_str(), status.as_str(), activated_at],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a stream and its outputs; false when there was none.
    pub async fn delete_stream(&self, id: &StreamId) -> Result<bool, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.delete_stream(id).await;
        }
        let id = id.clone();
        self.with(move |db| Ok(db.execute("DELETE FROM live_streams WHERE id = ?1", [id.as_str()])? > 0))
            .await
    }

    /// Adds an output to a stream.
    pub async fn insert_output(&self, stream_id: &StreamId, output: Output) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.insert_output(stream_id, output).await;
        }
        let stream_id = stream_id.clone();
        self.with(move |db| insert_output(db, &stream_id, &output)).await
    }

    /// Writes an output's changeable fields.
    pub async fn update_output(&self, output: Output) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.update_output(output).await;
        }
        self.with(move |db| {
            let cols = OutputColumns::of(&output.kind);
            db.execute(
                "UPDATE outputs SET name = ?2, uri = ?3, stream_key = ?4, vendor = ?5, public_id = ?6,
                                    updated_at = ?7
                 WHERE id = ?1",
                params![
                    output.id.as_str(),
                    output.name,
                    cols.uri,
                    cols.stream_key,
                    cols.vendor,
                    cols.public_id,
                    output.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes one output of a stream; false when there was none.
    pub async fn delete_output(&self, stream_id: &StreamId, id: &OutputId) -> Result<bool, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.delete_output(stream_id, id).await;
        }
        let (stream_id, id) = (stream_id.clone(), id.clone());
        self.with(move |db| {
            Ok(db.execute(
                "DELETE FROM outputs WHERE id = ?1 AND stream_id = ?2",
                [id.as_str(), stream_id.as_str()],
            )? > 0)
        })
        .await
    }
}

/// Recordings.
impl Store {
    /// Records a finished recording. Its version is `archive.version`, or the next free one if a
    /// recording of the same public_id was finalized in the same second; returns the version used.
    pub async fn insert_archive(&self, archive: Archive) -> Result<i64, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.insert_archive(archive).await;
        }
        self.with(move |db| {
            let tx = db.transaction()?;
            let taken: Option<i64> = tx.query_row(
                "SELECT max(version) FROM archives WHERE public_id = ?1",
                [&archive.public_id],
                |r| r.get(0),
            )?;
            let version = taken.map_or(archive.version, |t| archive.version.max(t + 1));
            tx.execute(
                "INSERT INTO archives (public_id, version, stream_id, path, duration_ms, bytes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    archive.public_id,
                    version,
                    archive.stream_id.as_str(),
                    archive.path,
                    archive.duration_ms,
                    archive.bytes,
                    archive.created_at
                ],
            )?;
            tx.commit()?;
            Ok(version)
        })
        .await
    }

    /// A stream's recordings, newest first.
    pub async fn stream_archives(&self, stream_id: &StreamId) -> Result<Vec<Archive>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.stream_archives(stream_id).await;
        }
        let stream_id = stream_id.clone();
        self.with(move |db| {
            let mut stmt = db.prepare_cached(&format!(
                "{SELECT_ARCHIVE} WHERE stream_id = ?1 ORDER BY version DESC, created_at DESC"
            ))?;
            let rows = stmt.query_map([stream_id.as_str()], archive_from_row)?;
            let mut archives = Vec::new();
            for row in rows {
                archives.push(row??);
            }
            Ok(archives)
        })
        .await
    }

    /// One recording of `public_id`: the given version, or the newest.
    pub async fn archive(
        &self,
        public_id: &str,
        version: Option<i64>,
    ) -> Result<Option<Archive>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.archive(public_id, version).await;
        }
        let public_id = public_id.to_owned();
        self.with(move |db| {
            let mut stmt = db.prepare_cached(&format!(
                "{SELECT_ARCHIVE} WHERE public_id = ?1 AND (?2 IS NULL OR version = ?2)
                 ORDER BY version DESC LIMIT 1"
            ))?;
            let mut rows = stmt.query_map(params![public_id, version], archive_from_row)?;
            rows.next().transpose()?.transpose()
        })
        .await
    }
}

/// Listing and removing recordings across streams.
impl Store {
    /// The newest recording of each public_id that starts with `prefix` and sorts after `after`,
    /// in public_id order, at most `limit`. Keyed by public_id alone, so a listing continued from
    /// the last public_id of a page neither repeats nor skips one that was there all along.
    pub async fn newest_archives(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Archive>, StoreError> {
        let (prefix, after) = (prefix.to_owned(), after.unwrap_or_default().to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if let Some(pg) = &self.inner.pg {
            return pg.newest_archives(&prefix, &after, limit).await;
        }
        self.with(move |db| {
            // With one max() in the query, SQLite takes the other columns from that row.
            let mut stmt = db.prepare_cached(
                "SELECT public_id, max(version), stream_id, path, duration_ms, bytes, created_at
                 FROM archives
                 WHERE public_id > ?1 AND public_id >= ?2 AND substr(public_id, 1, length(?2)) = ?2
                 GROUP BY public_id ORDER BY public_id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![after, prefix, limit], archive_from_row)?;
            let mut archives = Vec::new();
            for row in rows {
                archives.push(row??);
            }
            Ok(archives)
        })
        .await
    }

    /// Removes every recording of each of `public_ids` and returns them. Their files are listed
    /// for removal in the same transaction ([`Store::pending_deletions`]).
    pub async fn remove_archives(&self, public_ids: Vec<String>) -> Result<Vec<Archive>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.remove_archives(public_ids).await;
        }
        self.with(move |db| {
            let tx = db.transaction()?;
            let mut removed = Vec::new();
            for public_id in &public_ids {
                removed.extend(remove_where(&tx, "public_id = ?1", public_id)?);
            }
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    /// Removes the recordings whose version (finalize time, Unix seconds) is below `version` and
    /// returns them, their files listed for removal as by [`Store::remove_archives`].
    pub async fn remove_archives_before(&self, version: i64) -> Result<Vec<Archive>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.remove_archives_before(version).await;
        }
        self.with(move |db| {
            let tx = db.transaction()?;
            let removed = remove_where(&tx, "version < ?1", version)?;
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    /// Files of removed recordings (relative to the storage directory) still to be removed. A
    /// path a recording uses again is dropped from the list, not returned.
    pub async fn pending_deletions(&self) -> Result<Vec<String>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.pending_deletions().await;
        }
        self.with(|db| {
            db.execute(
                "DELETE FROM archive_deletions WHERE path IN (SELECT path FROM archives)",
                [],
            )?;
            let mut stmt = db.prepare_cached("SELECT path FROM archive_deletions ORDER BY path")?;
            let paths = stmt.query_map([], |r| r.get(0))?;
            Ok(paths.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Takes removed files off the list of pending deletions.
    pub async fn deletions_done(&self, paths: Vec<String>) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.deletions_done(paths).await;
        }
        self.with(move |db| {
            let tx = db.transaction()?;
            for path in &paths {
                tx.execute("DELETE FROM archive_deletions WHERE path = ?1", [path])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// Deletes the recordings matching `condition` (on `?1`), listing their files for removal.
fn remove_where(
    tx: &rusqlite::Transaction<'_>,
    condition: &str,
    value: impl rusqlite::ToSql,
) -> Result<Vec<Archive>, StoreError> {
    let mut stmt = tx.prepare_cached(&format!("{SELECT_ARCHIVE} WHERE {condition}"))?;
    let rows = stmt.query_map([&value], archive_from_row)?;
    let mut removed = Vec::new();
    for row in rows {
        removed.push(row??);
    }
    for archive in &removed {
        tx.execute(
            "INSERT OR IGNORE INTO archive_deletions (path) VALUES (?1)",
            [&archive.path],
        )?;
    }
    tx.execute(&format!("DELETE FROM archives WHERE {condition}"), [&value])?;
    Ok(removed)
}

const SELECT_ARCHIVE: &str =
    "SELECT public_id, version, stream_id, path, duration_ms, bytes, created_at FROM archives";

fn archive_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Archive, StoreError>> {
    let stream_id: String = row.get(2)?;
    Ok(Ok(Archive {
        public_id: row.get(0)?,
        version: row.get(1)?,
        stream_id: match parse_id(&stream_id, StreamId::parse) {
            Ok(id) => id,
            Err(e) => return Ok(Err(e)),
        },
        path: row.get(3)?,
        duration_ms: row.get(4)?,
        bytes: row.get(5)?,
        created_at: row.get(6)?,
    }))
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll back),
        // so a poisoned lock is still safe to use.
        sync::lock(&self.db)
    }
}

fn migrate(db: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = schema::MIGRATIONS.len();
    let start =
        usize::try_from(applied).map_err(|_| StoreError::Corrupt(format!("user_version {applied}")))?;
    if start > known {
        return Err(StoreError::NewerSchema {
            found: applied,
            known,
        });
    }
    for (version, sql) in (1_i64..).zip(schema::MIGRATIONS).skip(start) {
        let tx = db.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}

const SELECT_STREAM: &str = "SELECT id, name, stream_key, status, idle_timeout_sec, max_runtime_sec,
                                    created_at, updated_at
                             FROM live_streams";
const SELECT_OUTPUT: &str = "SELECT stream_id, id, type, name, uri, stream_key, vendor, public_id,
                                    created_at, updated_at
                             FROM outputs";

fn get_stream(db: &Connection, id: &StreamId) -> Result<Option<LiveStream>, StoreError> {
    let mut stmt = db.prepare_cached(&format!("{SELECT_STREAM} WHERE id = ?1"))?;
    let mut rows = stmt.query([id.as_str()])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    let mut stream = stream_from_row(row)?;
    drop(rows);
    let mut stmt = db.prepare_cached(&format!("{SELECT_OUTPUT} WHERE stream_id = ?1 ORDER BY rowid"))?;
    let mut rows = stmt.query([id.as_str()])?;
    while let Some(row) = rows.next()? {
        stream.outputs.push(output_from_row(row)?);
    }
    Ok(Some(stream))
}

fn stream_from_row(row: &Row<'_>) -> Result<LiveStream, StoreError> {
    let id: String = row.get(0)?;
    Ok(LiveStream {
        id: parse_id(&id, StreamId::parse)?,
        name: row.get(1)?,
        stream_key: StreamKey::from_stored(row.get(2)?),
        status: match row.get::<_, String>(3)?.as_str() {
            "active" => Status::Active,
            _ => Status::Idle,
        },
        idle_timeout_sec: row.get(4)?,
        max_runtime_sec: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        outputs: Vec::new(),
    })
}

fn output_from_row(row: &Row<'_>) -> Result<Output, StoreError> {
    let id: String = row.get(1)?;
    let kind = match row.get::<_, String>(2)?.as_str() {
        "hls" => OutputKind::Hls,
        "archive" => OutputKind::Archive {
            public_id: row
                .get::<_, Option<String>>(7)?
                .ok_or_else(|| StoreError::Corrupt(format!("archive output {id} has no public_id")))?,
        },
        "simulcast" => OutputKind::Simulcast(SimulcastTarget {
            uri: row
                .get::<_, Option<String>>(4)?
                .ok_or_else(|| StoreError::Corrupt(format!("simulcast output {id} has no uri")))?,
            stream_key: row.get(5)?,
            vendor: row.get(6)?,
        }),
        other => {
            return Err(StoreError::Corrupt(format!(
                "output {id} has unknown type {other:?}"
            )));
        }
    };
    Ok(Output {
        id: parse_id(&id, OutputId::parse)?,
        name: row.get(3)?,
        kind,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

fn parse_id<T>(s: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(s).ok_or_else(|| StoreError::Corrupt(format!("invalid id {s:?}")))
}

/// The type-specific columns of an output row.
struct OutputColumns<'a> {
    uri: Option<&'a str>,
    stream_key: Option<&'a str>,
    vendor: Option<&'a str>,
    public_id: Option<&'a str>,
}

impl<'a> OutputColumns<'a> {
    fn of(kind: &'a OutputKind) -> Self {
        let none = OutputColumns {
            uri: None,
            stream_key: None,
            vendor: None,
            public_id: None,
        };
        match kind {
            OutputKind::Hls => none,
            OutputKind::Archive { public_id } => OutputColumns {
                public_id: Some(public_id),
                ..none
            },
            OutputKind::Simulcast(t) => OutputColumns {
                uri: Some(&t.uri),
                stream_key: t.stream_key.as_deref(),
                vendor: t.vendor.as_deref(),
                ..none
            },
        }
    }
}

fn insert_output(db: &Connection, stream_id: &StreamId, output: &Output) -> Result<(), StoreError> {
    let cols = OutputColumns::of(&output.kind);
    db.execute(
        "INSERT INTO outputs (id, stream_id, type, name, uri, stream_key, vendor, public_id,
                              created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            output.id.as_str(),
            stream_id.as_str(),
            output.kind.output_type().as_str(),
            output.name,
            cols.uri,
            cols.stream_key,
            cols.vendor,
            cols.public_id,
            output.created_at,
            output.updated_at
        ],
    )?;
    Ok(())
}
