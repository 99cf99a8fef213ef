//! The state in PostgreSQL (`store.url`): the server runs on it end to end, keeps everything it
//! acknowledged across a kill, and says so in one line when it cannot reach it.

use std::time::Duration;

use serde_json::json;

use crate::support::postgres::PostgresServer;
use crate::support::publisher::{publish_url, small_encoder, wait_child};
use crate::support::recordings::wait_archives;
use crate::support::{Options, Server, run_to_exit};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn streams_outputs_and_recordings_live_in_postgres_across_a_kill() {
    let pg = PostgresServer::start();
    pg.create_database("oxcast");
    let url = pg.url("oxcast");
    let mut server = Server::start_with(Options::env(&[("OXCAST__STORE__URL", &url)]));

    let a = server.create_stream(json!({"input": {"type": "rtmp"}, "name": "A", "idle_timeout_sec": 2}));
    let b = server.create_stream(json!({"input": {"type": "rtmp"}, "name": "B"}));
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    server
        .post(
            &format!("/live_streams/{b_id}/outputs"),
            json!({"type": "simulcast", "uri": "rtmp://dest.example/live", "stream_key": "k1"}),
        )
        .assert_status(200);
    server
        .patch(&format!("/live_streams/{b_id}"), json!({"name": "B2"}))
        .assert_status(200);
    // The same rules as on SQLite: one HLS output per stream.
    server
        .post(&format!("/live_streams/{b_id}/outputs"), json!({"type": "hls"}))
        .assert_error(409, "already has an hls output");

    let mut ffmpeg = small_encoder(&publish_url(&a), 4);
    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "{err}");
    server.wait_status(a_id, "idle", LIMIT);
    let archives = wait_archives(&server, a_id, 1);
    let before = server.get("/live_streams").data().clone();

    // The rows are in PostgreSQL, and no SQLite database was made.
    assert_eq!(
        pg.query("oxcast", "SELECT name FROM live_streams ORDER BY seq"),
        "A\nB2"
    );
    assert_eq!(
        pg.query("oxcast", "SELECT count(*) FROM outputs WHERE type = 'simulcast'"),
        "1"
    );
    assert_eq!(
        pg.query("oxcast", "SELECT public_id FROM archives"),
        archives[0]["public_id"].as_str().unwrap()
    );
    assert!(!server.dir.join("oxcast.db").exists());

    server.kill();
    let server = server.restart();
    assert_eq!(server.get("/live_streams").data(), &before);
    assert_eq!(
        server
            .get(&format!("/live_streams/{a_id}/archives"))
            .data()
            .as_array()
            .unwrap(),
        &archives
    );
    // And the restarted server still writes there.
    server
        .delete(&format!("/live_streams/{b_id}"))
        .assert_ok_message();
    assert_eq!(pg.query("oxcast", "SELECT name FROM live_streams"), "A");
}

#[test]
fn an_unreachable_or_bad_store_url_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (url, why) in [
        (
            format!("postgres://oxcast:hunter2@127.0.0.1:{port}/oxcast"),
            format!(
                "cannot connect to PostgreSQL at 127.0.0.1:{port}/oxcast: error connecting to server: Connection refused"
            ),
        ),
        (
            "postgres://oxcast:hunter2@db.example:port/oxcast".to_owned(),
            "invalid PostgreSQL URL: invalid connection string".to_owned(),
        ),
    ] {
        let (status, _, stderr) = run_to_exit(dir.path(), &[], &[("OXCAST__STORE__URL", &url)]);
        assert_eq!(status.code(), Some(1), "{url}: {stderr}");
        let line = stderr.lines().last().unwrap_or_default();
        assert!(
            line.starts_with(&format!("oxcast: store.url: {why}")),
            "{url}: {stderr}"
        );
        assert!(
            !stderr.contains("hunter2"),
            "the password is not printed: {stderr}"
        );
    }
    let (status, _, stderr) = run_to_exit(dir.path(), &[], &[("OXCAST__STORE__URL", "mysql://db/oxcast")]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("store.url: use postgres://"), "{stderr}");
}
