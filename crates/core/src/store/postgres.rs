//! The store on PostgreSQL (`store.url = "postgres://…"`), with `tokio-postgres`: async, small,
//! and it needs no database at compile time (sqlx's checked queries want one, or an offline cache
//! kept in step, and bring macros and a pool this store does not use). Plain TCP only: TLS to the
//! database is not there yet.
//!
//! One connection behind an async mutex, so that calls run one at a time as on SQLite and a
//! transaction never interleaves with another caller's statements. The connection itself is
//! driven by a thread of its own, so the store can also be used from blocking code (start-up)
//! and from any runtime. `synchronous_commit` is forced on: an acknowledged change is on disk.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row};

use super::{Attempt, Delivery, NewDelivery, StoreError, parse_id};
use crate::ids::{OutputId, StreamId, StreamKey};
use crate::model::{Archive, LiveStream, Output, OutputKind, SimulcastTarget, Status};

pub(super) mod schema;

/// Without a `connect_timeout` in the URL: how long to wait for the server at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Postgres {
    client: Arc<Mutex<Option<Client>>>,
}

/// Runs `f` to completion from blocking code, on a thread of its own (this one may be inside a
/// runtime, where blocking on a future is not allowed).
pub(super) fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Corrupt(format!("cannot start a runtime: {e}")))
                .map(|rt| rt.block_on(f))
        })
        .join()
    })
    .unwrap_or_else(|_| Err(StoreError::Corrupt("store thread panicked".into())))
    .unwrap_or_else(|e| panic!("{e}"))
}

impl Postgres {
    /// Connects to `url`, migrates the schema and marks every stream idle. Blocking.
    pub(super) fn connect(url: &str) -> Result<Postgres, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Url(super::causes(&e)))?;
        // Where, for messages: never the URL itself, which may hold a password.
        let at = where_(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let (sent, connected) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("oxcast-store".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = sent.send(Err(StoreError::Corrupt(format!("cannot start a runtime: {e}"))));
                        return;
                    }
                };
                rt.block_on(async move {
                    match config.connect(NoTls).await {
                        Ok((client, connection)) => {
                            let _ = sent.send(Ok(client));
                            // Ends when the client is dropped (close) or the server goes away.
                            if let Err(e) = connection.await {
                                tracing::error!(error = %e, "database connection lost");
                            }
                        }
                        Err(e) => {
                            let _ = sent.send(Err(StoreError::Connect { at, error: e }));
                        }
                    }
                });
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the store thread: {e}")))?;
        let client = connected
            .recv()
            .map_err(|_| StoreError::Corrupt("store thread ended".into()))??;
        let pg = Postgres {
            client: Arc::new(Mutex::new(Some(client))),
        };
        block_on(async {
            let mut guard = pg.client.lock().await;
            let db = guard.as_mut().ok_or(StoreError::Closed)?;
            db.batch_execute("SET synchronous_commit = on").await?;
            schema::migrate(db).await?;
            db.execute(
                "UPDATE live_streams SET status = 'idle', activated_at = NULL",
                &[],
            )
            .await?;
            Ok::<_, StoreError>(())
        })?;
        Ok(pg)
    }

    /// The connection, alone.
    async fn db(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Client>, StoreError> {
        tokio::sync::MutexGuard::try_map(self.client.lock().await, Option::as_mut)
            .map_err(|_| StoreError::Closed)
    }

    pub(super) fn close(&self) {
        // Dropping the client ends the connection (and its thread).
        block_on(async { self.client.lock().await.take() });
    }

    pub(super) async fn check(&self) -> Result<(), StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.query_one("SELECT count(*) FROM live_streams", &[]).await?;
            Ok(())
        }
    }

    pub(super) async fn insert_stream(&self, stream: LiveStream) -> Result<(), StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let tx = db.transaction().await?;
            tx.execute(
                "INSERT INTO live_streams (id, name, stream_key, idle_timeout_sec, max_runtime_sec,
                                           status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &stream.id.as_str(),
                    &stream.name,
                    &stream.stream_key.as_str(),
                    &i64::from(stream.idle_timeout_sec),
                    &i64::from(stream.max_runtime_sec),
                    &stream.status.as_str(),
                    &stream.created_at,
                    &stream.updated_at,
                ],
            )
            .await?;
            for output in &stream.outputs {
                insert_output(&tx, &stream.id, output).await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }

    pub(super) async fn list_streams(&self) -> Result<Vec<LiveStream>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let rows = db
                .query(&format!("{SELECT_STREAM} ORDER BY created_at, seq"), &[])
                .await?;
            let mut streams = rows.iter().map(stream_from_row).collect::<Result<Vec<_>, _>>()?;
            let index: std::collections::HashMap<String, usize> = streams
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str().to_owned(), i))
                .collect();
            for row in db.query(&format!("{SELECT_OUTPUT} ORDER BY seq"), &[]).await? {
                let stream_id: String = row.try_get(0)?;
                let output = output_from_row(&row)?;
                if let Some(stream) = index.get(&stream_id).and_then(|i| streams.get_mut(*i)) {
                    stream.outputs.push(output);
                }
            }
            Ok(streams)
        }
    }

    pub(super) async fn get_stream(&self, id: &StreamId) -> Result<Option<LiveStream>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let Some(row) = db
                .query_opt(&format!("{SELECT_STREAM} WHERE id = $1"), &[&id.as_str()])
                .await?
            else {
                return Ok(None);
            };
            let mut stream = stream_from_row(&row)?;
            for row in db
                .query(
                    &format!("{SELECT_OUTPUT} WHERE stream_id = $1 ORDER BY seq"),
                    &[&id.as_str()],
                )
                .await?
            {
                stream.outputs.push(output_from_row(&row)?);
            }
            Ok(Some(stream))
        }
    }

    pub(super) fn load_stream_keys(&self) -> Result<Vec<(StreamId, StreamKey)>, StoreError> {
        block_on(async {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let mut keys = Vec::new();
            for row in db.query("SELECT id, stream_key FROM live_streams", &[]).await? {
                let id: String = row.try_get(0)?;
                keys.push((
                    parse_id(&id, StreamId::parse)?,
                    StreamKey::from_stored(row.try_get(1)?),
                ));
            }
            Ok(keys)
        })
    }

    pub(super) async fn update_stream(&self, stream: &LiveStream) -> Result<(), StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.execute(
                "UPDATE live_streams SET name = $2, idle_timeout_sec = $3, max_runtime_sec = $4,
                                         updated_at = $5
                 WHERE id = $1",
                &[
                    &stream.id.as_str(),
                    &stream.name,
                    &i64::from(stream.idle_timeout_sec),
                    &i64::from(stream.max_runtime_sec),
                    &stream.updated_at,
                ],
            )
            .await?;
            Ok(())
        }
    }

    pub(super) async fn set_status(
        &self,
        id: &StreamId,
        status: Status,
        activated_at: Option<i64>,
    ) -> Result<(), StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.execute(
                "UPDATE live_streams SET status = $2, activated_at = $3 WHERE id = $1",
                &[&id.as_str(), &status.as_str(), &activated_at],
            )
            .await?;
            Ok(())
        }
    }

    pub(super) async fn delete_stream(&self, id: &StreamId) -> Result<bool, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            Ok(db
                .execute("DELETE FROM live_streams WHERE id = $1", &[&id.as_str()])
                .await?
                > 0)
        }
    }

    pub(super) async fn insert_output(&self, stream_id: &StreamId, output: Output) -> Result<(), StoreError> {
        insert_output(&*self.db().await?, stream_id, &output).await
    }

    pub(super) async fn update_output(&self, output: Output) -> Result<(), StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let cols = super::OutputColumns::of(&output.kind);
            db.execute(
                "UPDATE outputs SET name = $2, uri = $3, stream_key = $4, vendor = $5, public_id = $6,
                                    updated_at = $7
                 WHERE id = $1",
                &[
                    &output.id.as_str(),
                    &output.name,
                    &cols.uri,
                    &cols.stream_key,
                    &cols.vendor,
                    &cols.public_id,
                    &output.updated_at,
                ],
            )
            .await?;
            Ok(())
        }
    }

    pub(super) async fn delete_output(
        &self,
        stream_id: &StreamId,
        id: &OutputId,
    ) -> Result<bool, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            Ok(db
                .execute(
                    "DELETE FROM outputs WHERE id = $1 AND stream_id = $2",
                    &[&id.as_str(), &stream_id.as_str()],
                )
                .await?
                > 0)
        }
    }

    pub(super) async fn insert_archive(&self, archive: Archive) -> Result<i64, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let tx = db.transaction().await?;
            // Two nodes finalizing the same public_id in the same second take turns.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&archive.public_id],
            )
            .await?;
            let taken: Option<i64> = tx
                .query_one(
                    "SELECT max(version) FROM archives WHERE public_id = $1",
                    &[&archive.public_id],
                )
                .await?
                .try_get(0)?;
            let version = taken.map_or(archive.version, |t| archive.version.max(t + 1));
            tx.execute(
                "INSERT INTO archives (public_id, version, stream_id, path, duration_ms, bytes, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &archive.public_id,
                    &version,
                    &archive.stream_id.as_str(),
                    &archive.path,
                    &archive.duration_ms,
                    &archive.bytes,
                    &archive.created_at,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(version)
        }
    }

    pub(super) async fn stream_archives(&self, stream_id: &StreamId) -> Result<Vec<Archive>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.query(
                &format!("{SELECT_ARCHIVE} WHERE stream_id = $1 ORDER BY version DESC, created_at DESC"),
                &[&stream_id.as_str()],
            )
            .await?
            .iter()
            .map(archive_from_row)
            .collect()
        }
    }

    pub(super) async fn archive(
        &self,
        public_id: &str,
        version: Option<i64>,
    ) -> Result<Option<Archive>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.query_opt(
                &format!(
                    "{SELECT_ARCHIVE} WHERE public_id = $1 AND ($2::BIGINT IS NULL OR version = $2)
                     ORDER BY version DESC LIMIT 1"
                ),
                &[&public_id, &version],
            )
            .await?
            .as_ref()
            .map(archive_from_row)
            .transpose()
        }
    }

    pub(super) async fn newest_archives(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Archive>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.query(
                "SELECT DISTINCT ON (public_id)
                        public_id, version, stream_id, path, duration_ms, bytes, created_at
                 FROM archives
                 WHERE public_id > $1 AND public_id >= $2 AND starts_with(public_id, $2)
                 ORDER BY public_id, version DESC LIMIT $3",
                &[&after, &prefix, &limit],
            )
            .await?
            .iter()
            .map(archive_from_row)
            .collect()
        }
    }

    pub(super) async fn remove_archives(&self, public_ids: Vec<String>) -> Result<Vec<Archive>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let tx = db.transaction().await?;
            let mut removed = Vec::new();
            for public_id in &public_ids {
                removed.extend(remove_where(&tx, "public_id = $1", public_id).await?);
            }
            tx.commit().await?;
            Ok(removed)
        }
    }

    pub(super) async fn remove_archives_before(&self, version: i64) -> Result<Vec<Archive>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let tx = db.transaction().await?;
            let removed = remove_where(&tx, "version < $1", &version).await?;
            tx.commit().await?;
            Ok(removed)
        }
    }

    pub(super) async fn pending_deletions(&self) -> Result<Vec<String>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.execute(
                "DELETE FROM archive_deletions WHERE path IN (SELECT path FROM archives)",
                &[],
            )
            .await?;
            let rows = db
                .query("SELECT path FROM archive_deletions ORDER BY path", &[])
                .await?;
            Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
        }
    }

    pub(super) async fn deletions_done(&self, paths: Vec<String>) -> Result<(), StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let tx = db.transaction().await?;
            for path in &paths {
                tx.execute("DELETE FROM archive_deletions WHERE path = $1", &[path])
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }
}

/// The webhook outbox.
impl Postgres {
    pub(super) async fn insert_deliveries(
        &self,
        event: NewDelivery,
        urls: Vec<String>,
    ) -> Result<(), StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let tx = db.transaction().await?;
            for url in &urls {
                tx.execute(
                    "INSERT INTO webhook_deliveries
                         (event_id, event, url, body, created_at, next_attempt_at)
                     VALUES ($1, $2, $3, $4, $5, $5)
                     ON CONFLICT (event_id, url) DO NOTHING",
                    &[&event.event_id, &event.event, url, &event.body, &event.created_at],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }

    pub(super) async fn next_delivery(&self, url: &str) -> Result<Option<Delivery>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.query_opt(
                &format!(
                    "{SELECT_DELIVERY} WHERE url = $1 AND next_attempt_at IS NOT NULL
                     ORDER BY next_attempt_at, seq LIMIT 1"
                ),
                &[&url],
            )
            .await?
            .as_ref()
            .map(delivery_from_row)
            .transpose()
        }
    }

    pub(super) async fn delivery_attempted(
        &self,
        seq: i64,
        at: i64,
        attempt: Attempt,
    ) -> Result<(), StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            match attempt {
                Attempt::Delivered => {
                    db.execute(
                        "UPDATE webhook_deliveries
                         SET attempts = attempts + 1, delivered_at = $2, next_attempt_at = NULL
                         WHERE seq = $1",
                        &[&seq, &at],
                    )
                    .await?
                }
                Attempt::Failed { error, retry_at } => {
                    db.execute(
                        "UPDATE webhook_deliveries
                         SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
                         WHERE seq = $1",
                        &[&seq, &error, &retry_at],
                    )
                    .await?
                }
            };
            Ok(())
        }
    }

    pub(super) async fn abandon_deliveries(
        &self,
        urls: Vec<String>,
        reason: String,
    ) -> Result<usize, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let abandoned = db
                .execute(
                    "UPDATE webhook_deliveries SET next_attempt_at = NULL, last_error = $2
                     WHERE next_attempt_at IS NOT NULL AND NOT (url = ANY($1))",
                    &[&urls, &reason],
                )
                .await?;
            Ok(usize::try_from(abandoned).unwrap_or(usize::MAX))
        }
    }

    pub(super) async fn deliveries(&self, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            db.query(
                &format!("{SELECT_DELIVERY} ORDER BY created_at DESC, seq DESC LIMIT $1"),
                &[&limit],
            )
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
        }
    }

    pub(super) async fn prune_deliveries(&self, before: i64, keep: i64) -> Result<usize, StoreError> {
        {
            let mut guard = self.db().await?;
            let db = &mut *guard;
            let old = db
                .execute(
                    "DELETE FROM webhook_deliveries WHERE next_attempt_at IS NULL AND created_at < $1",
                    &[&before],
                )
                .await?;
            let extra = db
                .execute(
                    "DELETE FROM webhook_deliveries WHERE next_attempt_at IS NULL AND seq NOT IN
                         (SELECT seq FROM webhook_deliveries WHERE next_attempt_at IS NULL
                          ORDER BY created_at DESC, seq DESC LIMIT $1)",
                    &[&keep],
                )
                .await?;
            Ok(usize::try_from(old + extra).unwrap_or(usize::MAX))
        }
    }
}

/// Deletes the recordings matching `condition` (on `$1`), listing their files for removal.
async fn remove_where(
    tx: &tokio_postgres::Transaction<'_>,
    condition: &str,
    value: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<Vec<Archive>, StoreError> {
    let removed = tx
        .query(&format!("{SELECT_ARCHIVE} WHERE {condition}"), &[value])
        .await?
        .iter()
        .map(archive_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    for archive in &removed {
        tx.execute(
            "INSERT INTO archive_deletions (path) VALUES ($1) ON CONFLICT (path) DO NOTHING",
            &[&archive.path],
        )
        .await?;
    }
    tx.execute(&format!("DELETE FROM archives WHERE {condition}"), &[value])
        .await?;
    Ok(removed)
}

async fn insert_output(
    db: &impl tokio_postgres::GenericClient,
    stream_id: &StreamId,
    output: &Output,
) -> Result<(), StoreError> {
    let cols = super::OutputColumns::of(&output.kind);
    db.execute(
        "INSERT INTO outputs (id, stream_id, type, name, uri, stream_key, vendor, public_id,
                              created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &output.id.as_str(),
            &stream_id.as_str(),
            &output.kind.output_type().as_str(),
            &output.name,
            &cols.uri,
            &cols.stream_key,
            &cols.vendor,
            &cols.public_id,
            &output.created_at,
            &output.updated_at,
        ],
    )
    .await?;
    Ok(())
}

/// `host:port/database` of a connection's settings.
fn where_(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(the user's)"))
}

const SELECT_STREAM: &str = super::SELECT_STREAM;
const SELECT_OUTPUT: &str = super::SELECT_OUTPUT;
const SELECT_ARCHIVE: &str = super::SELECT_ARCHIVE;
const SELECT_DELIVERY: &str = super::outbox::SELECT_DELIVERY;

fn seconds(row: &Row, i: usize) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(i)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} seconds is out of range")))
}

fn stream_from_row(row: &Row) -> Result<LiveStream, StoreError> {
    let id: String = row.try_get(0)?;
    Ok(LiveStream {
        id: parse_id(&id, StreamId::parse)?,
        name: row.try_get(1)?,
        stream_key: StreamKey::from_stored(row.try_get(2)?),
        status: match row.try_get::<_, &str>(3)? {
            "active" => Status::Active,
            _ => Status::Idle,
        },
        idle_timeout_sec: seconds(row, 4)?,
        max_runtime_sec: seconds(row, 5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
        outputs: Vec::new(),
    })
}

fn output_from_row(row: &Row) -> Result<Output, StoreError> {
    let id: String = row.try_get(1)?;
    let kind = match row.try_get::<_, &str>(2)? {
        "hls" => OutputKind::Hls,
        "archive" => OutputKind::Archive {
            public_id: row
                .try_get::<_, Option<String>>(7)?
                .ok_or_else(|| StoreError::Corrupt(format!("archive output {id} has no public_id")))?,
        },
        "simulcast" => OutputKind::Simulcast(SimulcastTarget {
            uri: row
                .try_get::<_, Option<String>>(4)?
                .ok_or_else(|| StoreError::Corrupt(format!("simulcast output {id} has no uri")))?,
            stream_key: row.try_get(5)?,
            vendor: row.try_get(6)?,
        }),
        other => {
            return Err(StoreError::Corrupt(format!(
                "output {id} has unknown type {other:?}"
            )));
        }
    };
    Ok(Output {
        id: parse_id(&id, OutputId::parse)?,
        name: row.try_get(3)?,
        kind,
        created_at: row.try_get(8)?,
        updated_at: row.try_get(9)?,
    })
}

fn archive_from_row(row: &Row) -> Result<Archive, StoreError> {
    let stream_id: String = row.try_get(2)?;
    Ok(Archive {
        public_id: row.try_get(0)?,
        version: row.try_get(1)?,
        stream_id: parse_id(&stream_id, StreamId::parse)?,
        path: row.try_get(3)?,
        duration_ms: row.try_get(4)?,
        bytes: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

fn delivery_from_row(row: &Row) -> Result<Delivery, StoreError> {
    let attempts: i64 = row.try_get(6)?;
    Ok(Delivery {
        seq: row.try_get(0)?,
        event_id: row.try_get(1)?,
        event: row.try_get(2)?,
        url: row.try_get(3)?,
        body: row.try_get(4)?,
        created_at: row.try_get(5)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("{attempts} delivery attempts")))?,
        next_attempt_at: row.try_get(7)?,
        delivered_at: row.try_get(8)?,
        last_error: row.try_get(9)?,
    })
}
