//! One store test suite, run against each backend: every test is an `async fn(&Db)`, and
//! [`both!`] makes a SQLite and a PostgreSQL test of it. PostgreSQL is one real server per test
//! process, started at the first test that needs it; each test gets a fresh database in it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::model::OutputType;

// Public items: the end-to-end tests include the same file.
#[allow(unreachable_pub)]
#[path = "tests/postgres_server.rs"]
mod postgres_server;

use postgres_server::PostgresServer;

/// An event for the outbox, at `at` epoch ms.
pub(super) fn event(id: &str, at: i64) -> NewDelivery {
    NewDelivery {
        event_id: id.into(),
        event: "live_stream.active".into(),
        body: format!("{{\"id\":\"{id}\"}}"),
        created_at: at,
    }
}

/// Where a test's store lives: a storage directory, and a PostgreSQL database or none (SQLite).
pub(super) struct Db {
    dir: tempfile::TempDir,
    url: Option<String>,
    /// The PostgreSQL database's name.
    name: String,
}

/// The test process's PostgreSQL server, started by the first test that needs it.
fn server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

impl Db {
    fn sqlite() -> Db {
        Db {
            dir: tempfile::tempdir().unwrap(),
            url: None,
            name: String::new(),
        }
    }

    /// A fresh database on the shared server.
    fn postgres() -> Db {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("store_test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        server().create_database(&name);
        Db {
            dir: tempfile::tempdir().unwrap(),
            url: Some(server().url(&name)),
            name,
        }
    }

    /// Opens the store (again: what an earlier store committed is there).
    fn open(&self) -> Store {
        match &self.url {
            None => Store::open(self.dir.path()).unwrap(),
            Some(url) => Store::open_postgres(url, self.dir.path()).unwrap(),
        }
    }
}

/// For each test function, a test on SQLite and one on PostgreSQL.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Db::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Db::postgres()).await;
                }
            )*
        }
    };
}

both!(
    streams_and_outputs_round_trip,
    unique_keys_conflict,
    reopening_keeps_everything_and_idles_streams,
    recordings_take_versions_and_list_by_public_id,
    removed_recordings_leave_their_files_to_delete,
    a_closed_store_refuses_calls,
    deliveries_are_due_in_order_and_finish_once,
);

fn stream(key: &str, created_at: i64) -> LiveStream {
    LiveStream {
        id: StreamId::generate(),
        name: Some(format!("stream {key}")),
        stream_key: StreamKey::from_stored(key.to_owned()),
        status: Status::Idle,
        idle_timeout_sec: 120,
        max_runtime_sec: 10800,
        created_at,
        updated_at: created_at,
        outputs: Vec::new(),
    }
}

fn output(kind: OutputKind, at: i64) -> Output {
    Output {
        id: OutputId::generate(),
        name: None,
        kind,
        created_at: at,
        updated_at: at,
    }
}

fn simulcast(uri: &str) -> OutputKind {
    OutputKind::Simulcast(SimulcastTarget {
        uri: uri.into(),
        stream_key: Some("k".into()),
        vendor: None,
    })
}

fn recording(public_id: &str, version: i64, stream_id: &StreamId) -> Archive {
    Archive {
        public_id: public_id.into(),
        version,
        stream_id: stream_id.clone(),
        path: format!("archives/{public_id}/{version}.mp4"),
        duration_ms: 5000,
        bytes: 12345,
        created_at: version * 1000,
    }
}

async fn streams_and_outputs_round_trip(db: &Db) {
    let store = db.open();
    let mut first = stream("key-1", 10);
    first.outputs = vec![
        output(OutputKind::Hls, 10),
        output(
            OutputKind::Archive {
                public_id: "live/first".into(),
            },
            11,
        ),
        output(simulcast("rtmp://a.example/app/x"), 12),
    ];
    let second = stream("key-2", 20);
    store.insert_stream(first.clone()).await.unwrap();
    store.insert_stream(second.clone()).await.unwrap();
    assert_eq!(
        store.list_streams().await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(store.get_stream(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_stream(&StreamId::generate()).await.unwrap(), None);
    let mut keys = store.load_stream_keys().unwrap();
    keys.sort_by(|a, b| a.1.as_str().cmp(b.1.as_str()));
    assert_eq!(
        keys,
        vec![
            (first.id.clone(), first.stream_key.clone()),
            (second.id.clone(), second.stream_key.clone())
        ]
    );

    // Changes.
    first.name = None;
    first.idle_timeout_sec = 30;
    first.max_runtime_sec = u32::MAX;
    first.updated_at = 50;
    store.update_stream(&first).await.unwrap();
    let mut relay = first.outputs[2].clone();
    relay.name = Some("youtube".into());
    relay.kind = simulcast("rtmps://b.example/live/y");
    relay.updated_at = 51;
    store.update_output(relay.clone()).await.unwrap();
    first.outputs[2] = relay;
    let added = output(simulcast("rtmp://c.example/app/z"), 52);
    store.insert_output(&first.id, added.clone()).await.unwrap();
    first.outputs.push(added);
    assert!(
        store
            .delete_output(&first.id, &first.outputs[0].id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_output(&second.id, &first.outputs[1].id)
            .await
            .unwrap(),
        "another stream's output"
    );
    first.outputs.remove(0);
    store
        .set_status(&first.id, Status::Active, Some(60))
        .await
        .unwrap();
    first.status = Status::Active;
    assert_eq!(store.get_stream(&first.id).await.unwrap(), Some(first.clone()));
    store.check().await.unwrap();

    // Deleting a stream deletes its outputs.
    assert!(store.delete_stream(&first.id).await.unwrap());
    assert!(!store.delete_stream(&first.id).await.unwrap());
    assert_eq!(store.list_streams().await.unwrap(), vec![second]);
    let again = output(OutputKind::Hls, 70);
    assert!(
        store.insert_output(&first.id, again).await.is_err(),
        "no stream to add to"
    );
}

async fn unique_keys_conflict(db: &Db) {
    let store = db.open();
    let mut first = stream("same-key", 10);
    first.outputs = vec![output(OutputKind::Hls, 10)];
    store.insert_stream(first.clone()).await.unwrap();
    let taken = store.insert_stream(stream("same-key", 20)).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let mut same_id = stream("other-key", 20);
    same_id.id = first.id.clone();
    let taken = store.insert_stream(same_id).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    // One hls output per stream; simulcasts are many.
    assert_eq!(first.outputs[0].kind.output_type(), OutputType::Hls);
    let second_hls = store.insert_output(&first.id, output(OutputKind::Hls, 30)).await;
    assert!(
        matches!(second_hls, Err(StoreError::Conflict(_))),
        "{second_hls:?}"
    );
    store
        .insert_output(&first.id, output(simulcast("rtmp://a/b/c"), 31))
        .await
        .unwrap();
    store
        .insert_output(&first.id, output(simulcast("rtmp://a/b/c"), 32))
        .await
        .unwrap();
    // A failed insert leaves nothing behind, not even a part of its transaction.
    let mut half = stream("third-key", 40);
    half.outputs = vec![output(OutputKind::Hls, 40), output(OutputKind::Hls, 41)];
    let taken = store.insert_stream(half.clone()).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(store.get_stream(&half.id).await.unwrap(), None);
    assert_eq!(store.list_streams().await.unwrap().len(), 1);
    assert_eq!(
        store.get_stream(&first.id).await.unwrap().unwrap().outputs.len(),
        3
    );
}

async fn reopening_keeps_everything_and_idles_streams(db: &Db) {
    let store = db.open();
    let mut live = stream("key", 10);
    live.outputs = vec![output(
        OutputKind::Archive {
            public_id: "a".into(),
        },
        10,
    )];
    store.insert_stream(live.clone()).await.unwrap();
    store
        .set_status(&live.id, Status::Active, Some(11))
        .await
        .unwrap();
    store.insert_archive(recording("a", 100, &live.id)).await.unwrap();
    store
        .insert_deliveries(event("e1", 10), vec!["http://a/".into()])
        .await
        .unwrap();
    store.close().unwrap();
    drop(store);

    // No session survives a restart.
    let store = db.open();
    assert_eq!(store.list_streams().await.unwrap(), vec![live.clone()]);
    assert_eq!(
        store.get_stream(&live.id).await.unwrap().unwrap().status,
        Status::Idle
    );
    assert_eq!(
        store.stream_archives(&live.id).await.unwrap(),
        vec![recording("a", 100, &live.id)]
    );
    assert_eq!(
        store.next_delivery("http://a/").await.unwrap().unwrap().event_id,
        "e1"
    );
}

async fn recordings_take_versions_and_list_by_public_id(db: &Db) {
    let store = db.open();
    let (s1, s2) = (StreamId::generate(), StreamId::generate());
    assert_eq!(
        store.insert_archive(recording("live/x", 100, &s1)).await.unwrap(),
        100
    );
    // Finalized in the same second: the next free version.
    assert_eq!(
        store.insert_archive(recording("live/x", 100, &s1)).await.unwrap(),
        101
    );
    assert_eq!(
        store.insert_archive(recording("live/x", 90, &s1)).await.unwrap(),
        102
    );
    assert_eq!(
        store.insert_archive(recording("live/x", 200, &s1)).await.unwrap(),
        200
    );
    for id in ["live/B", "live/a", "live_b", "other"] {
        store.insert_archive(recording(id, 100, &s2)).await.unwrap();
    }

    let versions = |list: Vec<Archive>| {
        list.into_iter()
            .map(|a| (a.public_id, a.version))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        versions(store.stream_archives(&s1).await.unwrap()),
        [
            ("live/x".into(), 200),
            ("live/x".into(), 102),
            ("live/x".into(), 101),
            ("live/x".into(), 100)
        ]
    );
    assert_eq!(store.archive("live/x", None).await.unwrap().unwrap().version, 200);
    let exact = store.archive("live/x", Some(101)).await.unwrap().unwrap();
    assert_eq!(
        exact,
        Archive {
            version: 101,
            ..recording("live/x", 100, &s1)
        }
    );
    assert_eq!(store.archive("live/x", Some(103)).await.unwrap(), None);
    assert_eq!(store.archive("nothing", None).await.unwrap(), None);

    // The newest of each public_id, in byte order (upper case first, whatever the locale),
    // continued after the last one of a page.
    let page = store.newest_archives("live", None, 3).await.unwrap();
    assert_eq!(
        versions(page),
        [
            ("live/B".into(), 100),
            ("live/a".into(), 100),
            ("live/x".into(), 200)
        ]
    );
    let next = store.newest_archives("live", Some("live/x"), 3).await.unwrap();
    assert_eq!(versions(next), [("live_b".into(), 100)]);
    assert_eq!(
        store
            .newest_archives("live/", Some("live/a"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.newest_archives("", None, 100).await.unwrap().len(), 5);
    assert_eq!(
        store.newest_archives("%", None, 100).await.unwrap(),
        vec![],
        "no pattern syntax"
    );
}

async fn removed_recordings_leave_their_files_to_delete(db: &Db) {
    let store = db.open();
    let s = StreamId::generate();
    for (id, version) in [("a", 100), ("a", 200), ("b", 150), ("c", 300)] {
        store.insert_archive(recording(id, version, &s)).await.unwrap();
    }
    let removed = store
        .remove_archives(vec!["a".into(), "none".into()])
        .await
        .unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(store.archive("a", None).await.unwrap(), None);
    let before = store.remove_archives_before(200).await.unwrap();
    assert_eq!(before, vec![recording("b", 150, &s)]);
    assert_eq!(
        store.pending_deletions().await.unwrap(),
        ["archives/a/100.mp4", "archives/a/200.mp4", "archives/b/150.mp4"]
    );
    // A path a recording uses again is not to be deleted.
    store.insert_archive(recording("b", 150, &s)).await.unwrap();
    assert_eq!(
        store.pending_deletions().await.unwrap(),
        ["archives/a/100.mp4", "archives/a/200.mp4"]
    );
    store
        .deletions_done(vec!["archives/a/100.mp4".into()])
        .await
        .unwrap();
    assert_eq!(store.pending_deletions().await.unwrap(), ["archives/a/200.mp4"]);
    assert_eq!(store.archive("c", None).await.unwrap().unwrap().version, 300);
}

async fn a_closed_store_refuses_calls(db: &Db) {
    let store = db.open();
    store.close().unwrap();
    assert!(matches!(store.list_streams().await, Err(StoreError::Closed)));
    assert!(matches!(store.check().await, Err(StoreError::Closed)));
    assert!(matches!(store.load_stream_keys(), Err(StoreError::Closed)));
    store.close().unwrap();
}

/// A PostgreSQL database made before the outbox existed gains it, and keeps what it held.
#[tokio::test]
async fn an_existing_postgres_database_gains_the_outbox() {
    let db = Db::postgres();
    let url = db.url.clone().unwrap();
    {
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        super::postgres::schema::migrate_to(&mut client, 3).await.unwrap();
        client
            .execute(
                "INSERT INTO live_streams (id, stream_key, idle_timeout_sec, max_runtime_sec,
                                           created_at, updated_at)
                 VALUES ('0bd7f11c043da975e2a8ad9ebae0b6ec', 'k', 120, 10800, 1, 1)",
                &[],
            )
            .await
            .unwrap();
        let version = client
            .query_one("SELECT version FROM oxcast_schema", &[])
            .await
            .unwrap();
        assert_eq!(version.get::<_, i64>(0), 3);
        drop(client);
        driver.await.unwrap().unwrap();
    }
    let store = db.open();
    assert_eq!(store.list_streams().await.unwrap().len(), 1);
    store
        .insert_deliveries(event("e1", 10), vec!["http://a/".into()])
        .await
        .unwrap();
    assert_eq!(store.deliveries(10).await.unwrap().len(), 1);
}

/// A database from a newer Oxcast is left alone, with an error that says so.
#[tokio::test]
async fn a_newer_postgres_schema_is_refused() {
    let db = Db::postgres();
    db.open().close().unwrap();
    server().query(&db.name, "UPDATE oxcast_schema SET version = 99");
    let refused = Store::open_postgres(db.url.as_deref().unwrap(), db.dir.path());
    assert!(
        matches!(refused, Err(StoreError::NewerSchema { found: 99, .. })),
        "{:?}",
        refused.err()
    );
}

#[test]
fn an_unreachable_server_is_an_error_not_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = Store::open_postgres(&format!("postgres://oxcast@127.0.0.1:{port}/oxcast"), dir.path());
    let refused = refused.err().unwrap();
    assert!(matches!(refused, StoreError::Connect { .. }), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/oxcast: \
             error connecting to server: Connection refused (os error 111)"
        )
    );
    let bad = Store::open_postgres("postgres://[nonsense", dir.path());
    assert!(matches!(bad, Err(StoreError::Url(_))), "{:?}", bad.err());
}

async fn deliveries_are_due_in_order_and_finish_once(db: &Db) {
    let store = db.open();
    let urls = vec!["http://a/".to_owned(), "http://b/".to_owned()];
    store
        .insert_deliveries(event("e1", 10), urls.clone())
        .await
        .unwrap();
    store
        .insert_deliveries(event("e2", 20), urls.clone())
        .await
        .unwrap();
    // Recorded twice: still one row per receiver.
    store
        .insert_deliveries(event("e1", 10), urls.clone())
        .await
        .unwrap();
    assert_eq!(store.deliveries(100).await.unwrap().len(), 4);

    let first = store.next_delivery("http://a/").await.unwrap().unwrap();
    assert_eq!((first.event_id.as_str(), first.next_attempt_at), ("e1", Some(10)));
    let failed = Attempt::Failed {
        error: "connection refused".into(),
        retry_at: Some(1000),
    };
    store.delivery_attempted(first.seq, 11, failed).await.unwrap();
    // e2 is now due first at a; b is untouched.
    let next = store.next_delivery("http://a/").await.unwrap().unwrap();
    assert_eq!(next.event_id, "e2");
    store
        .delivery_attempted(next.seq, 21, Attempt::Delivered)
        .await
        .unwrap();
    let again = store.next_delivery("http://a/").await.unwrap().unwrap();
    assert_eq!((again.event_id.as_str(), again.attempts), ("e1", 1));
    assert_eq!(again.last_error.as_deref(), Some("connection refused"));
    store
        .delivery_attempted(again.seq, 1000, Attempt::Delivered)
        .await
        .unwrap();
    assert_eq!(store.next_delivery("http://a/").await.unwrap(), None);
    assert_eq!(
        store.next_delivery("http://b/").await.unwrap().unwrap().event_id,
        "e1"
    );

    let listed = store.deliveries(100).await.unwrap();
    let a_e1 = listed
        .iter()
        .find(|d| d.event_id == "e1" && d.url == "http://a/")
        .unwrap();
    assert_eq!((a_e1.attempts, a_e1.delivered_at), (2, Some(1000)));
    assert_eq!(listed.first().unwrap().event_id, "e2", "newest first");

    // A receiver no longer configured: its rows are given up, the others stay.
    assert_eq!(
        store
            .abandon_deliveries(vec!["http://a/".into()], "gone".into())
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.next_delivery("http://b/").await.unwrap(), None);

    // Pruning keeps what is recent, up to `keep` rows.
    assert_eq!(store.prune_deliveries(15, 100).await.unwrap(), 2);
    assert_eq!(store.prune_deliveries(0, 1).await.unwrap(), 1);
    assert_eq!(store.deliveries(100).await.unwrap().len(), 1);
}
