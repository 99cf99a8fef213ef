//! Lifecycle over the API with small timeouts. Transitions are awaited with generous limits; no
//! timing is asserted beyond "it happens, and not before the stream was seen active".

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn idle_timeout_ends_a_session_without_input() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let id = s["id"].as_str().unwrap();
    server.activate(id);
    assert_eq!(server.status(id), "active");
    server.wait_status(id, "idle", LIMIT);
    assert!(
        server.log().contains("idle timeout"),
        "the reason is logged:\n{}",
        server.log()
    );
}

#[test]
fn max_runtime_ends_a_session() {
    let server = Server::start();
    let s = server
        .create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 3600, "max_runtime_sec": 2}));
    let id = s["id"].as_str().unwrap();
    server.activate(id);
    assert_eq!(server.status(id), "active");
    server.wait_status(id, "idle", LIMIT);
    assert!(server.log().contains("max runtime reached"), "{}", server.log());
}

#[test]
fn shortening_the_timeout_of_an_active_stream_applies_at_once() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 3600}));
    let id = s["id"].as_str().unwrap();
    server.activate(id);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.status(id), "active");
    server
        .patch(&format!("/live_streams/{id}"), json!({"idle_timeout_sec": 1}))
        .data();
    server.wait_status(id, "idle", LIMIT);
}

#[test]
fn deleting_an_active_stream_stops_it() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = s["id"].as_str().unwrap();
    server.activate(id);
    server.delete(&format!("/live_streams/{id}")).assert_ok_message();
    server
        .get(&format!("/live_streams/{id}"))
        .assert_error(404, "live stream not found");
    assert!(server.log().contains("stream deleted"), "{}", server.log());
}
