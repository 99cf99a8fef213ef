//! The webhook outbox: a row per event and receiver URL, committed before anything is sent, so
//! deliveries survive a restart; each row keeps its attempts, its next attempt and how it ended.

use rusqlite::{Row, params};

use super::{Store, StoreError};

/// An event to be delivered to some receivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// The event's id (the body's `id`): one per event, shared by its receivers' rows.
    pub event_id: String,
    /// `live_stream.active`, …
    pub event: String,
    /// The JSON body, exactly as it is sent (and signed) at every attempt.
    pub body: String,
    /// Unix epoch milliseconds: when the event happened.
    pub created_at: i64,
}

/// One event's delivery to one receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The row's number: order of recording.
    pub seq: i64,
    pub event_id: String,
    pub event: String,
    pub url: String,
    pub body: String,
    /// Unix epoch milliseconds, as every time here.
    pub created_at: i64,
    pub attempts: u32,
    /// `None` once finished: delivered or given up.
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

/// How an attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not: try again at `retry_at`, or never (`None`: given up).
    Failed { error: String, retry_at: Option<i64> },
}

pub(super) const SELECT_DELIVERY: &str = "SELECT seq, event_id, event, url, body, created_at, attempts,
                                      next_attempt_at, delivered_at, last_error
                               FROM webhook_deliveries";

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        seq: row.get(0)?,
        event_id: row.get(1)?,
        event: row.get(2)?,
        url: row.get(3)?,
        body: row.get(4)?,
        created_at: row.get(5)?,
        attempts: row.get(6)?,
        next_attempt_at: row.get(7)?,
        delivered_at: row.get(8)?,
        last_error: row.get(9)?,
    })
}

impl Store {
    /// Records `event` for each of `urls`, due at once; all rows in one transaction. Recording
    /// an event twice (same id and url) keeps the first row.
    pub async fn insert_deliveries(&self, event: NewDelivery, urls: Vec<String>) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.insert_deliveries(event, urls).await;
        }
        self.with(move |db| {
            let tx = db.transaction()?;
            for url in &urls {
                tx.execute(
                    "INSERT OR IGNORE INTO webhook_deliveries
                         (event_id, event, url, body, created_at, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![event.event_id, event.event, url, event.body, event.created_at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The unfinished delivery to `url` that is due first (in recording order among equals).
    pub async fn next_delivery(&self, url: &str) -> Result<Option<Delivery>, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.next_delivery(url).await;
        }
        let url = url.to_owned();
        self.with(move |db| {
            let mut stmt = db.prepare_cached(&format!(
                "{SELECT_DELIVERY} WHERE url = ?1 AND next_attempt_at IS NOT NULL
                 ORDER BY next_attempt_at, seq LIMIT 1"
            ))?;
            let mut rows = stmt.query_map([url], delivery_from_row)?;
            Ok(rows.next().transpose()?)
        })
        .await
    }

    /// Records an attempt made at `at` (epoch ms) and how it went.
    pub async fn delivery_attempted(&self, seq: i64, at: i64, attempt: Attempt) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.delivery_attempted(seq, at, attempt).await;
        }
        self.with(move |db| {
            match attempt {
                Attempt::Delivered => db.execute(
                    "UPDATE webhook_deliveries
                     SET attempts = attempts + 1, delivered_at = ?2, next_attempt_at = NULL
                     WHERE seq = ?1",
                    params![seq, at],
                )?,
                Attempt::Failed { error, retry_at } => db.execute(
                    "UPDATE webhook_deliveries
                     SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
                     WHERE seq = ?1",
                    params![seq, error, retry_at],
                )?,
            };
            Ok(())
        })
        .await
    }

    /// Gives up the unfinished deliveries to any URL not in `urls` (receivers no longer
    /// configured), with `reason` as their last error; returns how many.
    pub async fn abandon_deliveries(&self, urls: Vec<String>, reason: String) -> Result<usize, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.abandon_deliveries(urls, reason).await;
        }
        self.with(move |db| {
            let tx = db.transaction()?;
            let pending: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT DISTINCT url FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL",
                )?;
                stmt.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let mut abandoned = 0;
            for url in pending.iter().filter(|u| !urls.contains(u)) {
                abandoned += tx.execute(
                    "UPDATE webhook_deliveries SET next_attempt_at = NULL, last_error = ?2
                     WHERE url = ?1 AND next_attempt_at IS NOT NULL",
                    params![url, reason],
                )?;
            }
            tx.commit()?;
            Ok(abandoned)
        })
        .await
    }

    /// The newest `limit` deliveries, newest first.
    pub async fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if let Some(pg) = &self.inner.pg {
            return pg.deliveries(limit).await;
        }
        self.with(move |db| {
            let mut stmt = db.prepare_cached(&format!(
                "{SELECT_DELIVERY} ORDER BY created_at DESC, seq DESC LIMIT ?1"
            ))?;
            let rows = stmt.query_map([limit], delivery_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Deletes finished deliveries of events before `before` (epoch ms), and any finished ones
    /// beyond the newest `keep`; returns how many went. Unfinished rows are never deleted.
    pub async fn prune_deliveries(&self, before: i64, keep: usize) -> Result<usize, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        if let Some(pg) = &self.inner.pg {
            return pg.prune_deliveries(before, keep).await;
        }
        self.with(move |db| {
            let old = db.execute(
                "DELETE FROM webhook_deliveries WHERE next_attempt_at IS NULL AND created_at < ?1",
                [before],
            )?;
            let extra = db.execute(
                "DELETE FROM webhook_deliveries WHERE next_attempt_at IS NULL AND seq NOT IN
                     (SELECT seq FROM webhook_deliveries WHERE next_attempt_at IS NULL
                      ORDER BY created_at DESC, seq DESC LIMIT ?1)",
                [keep],
            )?;
            Ok(old + extra)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::event;

    /// A database made before the outbox existed gains it, and keeps what it held.
    #[tokio::test]
    async fn an_existing_database_gains_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = super::super::schema::MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE webhook_deliveries"))
            .unwrap();
        {
            let mut db = rusqlite::Connection::open(dir.path().join(Store::DB_FILE)).unwrap();
            let tx = db.transaction().unwrap();
            for sql in &super::super::schema::MIGRATIONS[..outbox] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", outbox as i64).unwrap();
            tx.execute(
                "INSERT INTO live_streams (id, stream_key, idle_timeout_sec, max_runtime_sec,
                                           created_at, updated_at)
                 VALUES ('0bd7f11c043da975e2a8ad9ebae0b6ec', 'k', 120, 10800, 1, 1)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.list_streams().await.unwrap().len(), 1);
        store
            .insert_deliveries(event("e1", 10), vec!["http://a/".into()])
            .await
            .unwrap();
        assert_eq!(store.deliveries(10).await.unwrap().len(), 1);
    }
}
