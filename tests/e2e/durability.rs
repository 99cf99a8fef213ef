//! Nothing acknowledged is lost when the process is killed.

use serde_json::json;

use crate::support::Server;

#[test]
fn streams_keys_and_outputs_survive_sigkill() {
    let mut server = Server::start();
    let credentials = server.credentials();
    let a = server.create_stream(json!({"input": {"type": "rtmp"}, "name": "A", "idle_timeout_sec": 60}));
    let b = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let a_id = a["id"].as_str().unwrap();
    let b_id = b["id"].as_str().unwrap();
    server.post(
        &format!("/live_streams/{a_id}/outputs"),
        json!({"type": "simulcast", "uri": "rtmp://dest.example/live", "stream_key": "k1", "vendor": "custom"}),
    ).data();
    server
        .patch(
            &format!("/live_streams/{a_id}"),
            json!({"name": "A2", "max_runtime_sec": 600}),
        )
        .data();
    let archive = b["outputs"][1]["id"].as_str().unwrap();
    server
        .delete(&format!("/live_streams/{b_id}/outputs/{archive}"))
        .assert_ok_message();
    server
        .post(&format!("/live_streams/{a_id}/activate"), json!({}))
        .assert_ok_message();
    let c = server.create_stream(json!({"input": {"type": "rtmp"}}));
    server
        .delete(&format!("/live_streams/{}", c["id"].as_str().unwrap()))
        .assert_ok_message();
    // The last acknowledged change, then the kill straight after.
    let last = server.create_stream(json!({"input": {"type": "rtmp"}, "name": "last"}));
    let before = server.get("/live_streams").data().clone();
    server.kill();

    let server = server.restart();
    assert_eq!(
        server.credentials(),
        credentials,
        "the generated credentials are kept"
    );
    let after = server.get("/live_streams").data().clone();
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 3);
    for (was, now) in before.as_array().unwrap().iter().zip(after) {
        let mut was = was.clone();
        was["status"] = json!("idle"); // no session survives a restart
        // Nor do its live figures, nor a relay's state: a simulcast output of the stream that was
        // live reads idle.
        was.as_object_mut().unwrap().remove("live");
        for output in was["outputs"].as_array_mut().unwrap() {
            let output = output.as_object_mut().unwrap();
            for live_figure in [
                "segments",
                "last_segment_at",
                "viewers",
                "recording_bytes",
                "recording_duration_sec",
            ] {
                output.remove(live_figure);
            }
            if output["type"] == "simulcast" {
                output.insert("status".into(), json!("idle"));
                output.insert("bytes_sent".into(), json!(0));
                output.insert("dropped_frames".into(), json!(0));
                output.insert("bitrate_kbps".into(), json!(0.0));
                output.remove("last_error");
                output.remove("connected_at");
            }
        }
        assert_eq!(now, &was);
    }
    assert_eq!(after[0]["name"], "A2");
    assert_eq!(after[0]["outputs"].as_array().unwrap().len(), 3);
    assert_eq!(after[1]["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(after[2]["id"], last["id"]);
    assert_eq!(after[2]["input"]["stream_key"], last["input"]["stream_key"]);
}

#[test]
fn every_acknowledged_create_survives_a_kill_at_any_moment() {
    // Kill while requests are in flight: whatever was answered 200 must be there afterwards.
    let mut server = Server::start();
    let (key, secret) = server.credentials();
    let url = server.url("/v2/video/local/live_streams");
    let writer = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        let mut acknowledged = Vec::new();
        loop {
            let res = client
                .post(&url)
                .basic_auth(&key, Some(&secret))
                .json(&json!({"input": {"type": "rtmp"}}))
                .send();
            let Ok(res) = res else { return acknowledged };
            let Ok(body) = res.json::<serde_json::Value>() else {
                return acknowledged;
            };
            acknowledged.push(body["data"]["id"].as_str().unwrap().to_owned());
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    server.kill();
    let acknowledged = writer.join().unwrap();
    assert!(!acknowledged.is_empty());
    let server = server.restart();
    let stored: Vec<String> = server
        .get("/live_streams")
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged stream {id} lost ({} acknowledged)",
            acknowledged.len()
        );
    }
}
