//! The admin API over real HTTP: every endpoint under both base paths, every error status.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Auth, Server, is_hex32};

const SDK_BASE: &str = "/v2/local/video";

fn assert_stream_shape(s: &Value, server: &Server) {
    let id = s["id"].as_str().unwrap();
    assert!(is_hex32(id), "{id}");
    assert_eq!(s["input"]["type"], "rtmp");
    assert_eq!(
        s["input"]["uri"],
        format!("rtmp://127.0.0.1:{}/streams", server.rtmp_port)
    );
    let key = s["input"]["stream_key"].as_str().unwrap();
    assert_eq!(key.len(), 30);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    for field in ["created_at", "updated_at"] {
        // Epoch milliseconds: after 2020, before 2100.
        let t = s[field].as_i64().unwrap();
        assert!((1_577_836_800_000..4_102_444_800_000).contains(&t), "{field} {t}");
    }
    let outputs = s["outputs"].as_array().unwrap();
    let hls = &outputs[0];
    assert_eq!(
        (hls["name"].as_str(), hls["type"].as_str()),
        (Some("default hls"), Some("hls"))
    );
    assert_eq!(
        hls["uri"],
        format!(
            "http://127.0.0.1:{}/local/video/live/live_stream_{id}_hls.m3u8",
            server.http_port
        )
    );
    let archive = &outputs[1];
    assert_eq!(
        (archive["name"].as_str(), archive["type"].as_str()),
        (Some("default archive"), Some("archive"))
    );
    assert_eq!(archive["public_id"], format!("live_stream_{id}_archive"));
    assert!(
        archive.get("uri").is_none(),
        "optional fields are omitted: {archive}"
    );
    for o in outputs {
        assert!(is_hex32(o["id"].as_str().unwrap()));
        assert!(o["created_at"].as_i64().is_some() && o["updated_at"].as_i64().is_some());
    }
}

#[test]
fn stream_crud_under_both_base_paths() {
    let server = Server::start();
    let created =
        server.create_stream(json!({"input": {"type": "rtmp"}, "name": "Match day", "extra": [1, 2]}));
    assert_stream_shape(&created, &server);
    assert_eq!(created["name"], "Match day");
    assert_eq!(created["status"], "idle");
    assert_eq!(
        (
            created["idle_timeout_sec"].as_u64(),
            created["max_runtime_sec"].as_u64()
        ),
        (Some(120), Some(10800))
    );
    let id = created["id"].as_str().unwrap();

    let unnamed = server
        .create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 30, "max_runtime_sec": 60}));
    assert!(
        unnamed.get("name").is_none(),
        "no name: omitted, not null: {unnamed}"
    );
    assert_eq!(
        (
            unnamed["idle_timeout_sec"].as_u64(),
            unnamed["max_runtime_sec"].as_u64()
        ),
        (Some(30), Some(60))
    );
    assert_ne!(unnamed["input"]["stream_key"], created["input"]["stream_key"]);

    // Reads, under the reference base and the SDK alias alike.
    assert_eq!(server.get(&format!("/live_streams/{id}")).data(), &created);
    let via_sdk = server.send(
        Method::GET,
        &format!("{SDK_BASE}/live_streams/{id}"),
        Auth::Admin,
        None,
    );
    assert_eq!(via_sdk.data(), &created);
    let list = server.get("/live_streams");
    assert_eq!(list.data().as_array().unwrap().len(), 2);
    assert_eq!(list.data()[0], created);
    let sdk_list = server.send(
        Method::GET,
        &format!("{SDK_BASE}/live_streams"),
        Auth::Admin,
        None,
    );
    assert_eq!(sdk_list.data(), list.data());

    // Update.
    let patched = server.patch(
        &format!("/live_streams/{id}"),
        json!({"name": "Final", "idle_timeout_sec": 10}),
    );
    let patched = patched.data();
    assert_eq!(
        (patched["name"].as_str(), patched["idle_timeout_sec"].as_u64()),
        (Some("Final"), Some(10))
    );
    assert_eq!(patched["max_runtime_sec"], 10800);
    assert_eq!(patched["input"], created["input"], "the key is permanent");
    assert!(patched["updated_at"].as_i64() >= created["updated_at"].as_i64());
    assert_eq!(patched["created_at"], created["created_at"]);
    let via_sdk = server.send(
        Method::PATCH,
        &format!("{SDK_BASE}/live_streams/{id}"),
        Auth::Admin,
        Some(json!({"name": null, "max_runtime_sec": 99}).to_string()),
    );
    assert!(via_sdk.data().get("name").is_none(), "null clears the name");
    assert_eq!(via_sdk.data()["max_runtime_sec"], 99);

    // Delete: gone afterwards, from both bases.
    server.delete(&format!("/live_streams/{id}")).assert_ok_message();
    server
        .get(&format!("/live_streams/{id}"))
        .assert_error(404, "live stream not found");
    server
        .delete(&format!("/live_streams/{id}"))
        .assert_error(404, "live stream not found");
    let uid = unnamed["id"].as_str().unwrap();
    server
        .send(
            Method::DELETE,
            &format!("{SDK_BASE}/live_streams/{uid}"),
            Auth::Admin,
            None,
        )
        .assert_ok_message();
    assert_eq!(server.get("/live_streams").data(), &json!([]));
}

#[test]
fn activate_and_idle_are_idempotent() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = s["id"].as_str().unwrap();
    for _ in 0..2 {
        server.activate(id);
        assert_eq!(server.status(id), "active");
    }
    for _ in 0..2 {
        let r = server.send(
            Method::POST,
            &format!("{SDK_BASE}/live_streams/{id}/idle"),
            Auth::Admin,
            None,
        );
        r.assert_ok_message();
        assert_eq!(server.status(id), "idle");
    }
    let unknown = "0123456789abcdef0123456789abcdef";
    server
        .post(&format!("/live_streams/{unknown}/activate"), json!({}))
        .assert_error(404, "live stream not found");
    server
        .post(&format!("/live_streams/{unknown}/idle"), json!({}))
        .assert_error(404, "live stream not found");
}

#[test]
fn outputs_crud_and_rules() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = s["id"].as_str().unwrap();
    let outputs = format!("/live_streams/{id}/outputs");

    assert_eq!(server.get(&outputs).data(), &s["outputs"]);
    let hls_id = s["outputs"][0]["id"].as_str().unwrap();
    assert_eq!(
        server.get(&format!("{outputs}/{hls_id}")).data(),
        &s["outputs"][0]
    );

    let yt = server.post(
        &outputs,
        json!({"type": "simulcast", "name": "YouTube", "uri": "rtmp://a.rtmp.youtube.com/live2",
               "stream_key": "abcd-efgh", "vendor": "youtube"}),
    );
    let yt = yt.data().clone();
    assert_eq!(yt["type"], "simulcast");
    assert_eq!(
        (yt["uri"].as_str(), yt["stream_key"].as_str()),
        (Some("rtmp://a.rtmp.youtube.com/live2"), Some("abcd-efgh"))
    );
    assert_eq!(yt["vendor"], "youtube");
    assert!(yt.get("public_id").is_none());
    let yt_id = yt["id"].as_str().unwrap();
    let sdk_get = server.send(
        Method::GET,
        &format!("{SDK_BASE}{outputs}/{yt_id}"),
        Auth::Admin,
        None,
    );
    assert_eq!(sdk_get.data(), &yt);
    assert_eq!(server.get(&outputs).data().as_array().unwrap().len(), 3);

    // Key in the uri, and the uniqueness of destinations.
    let twitch = server.post(
        &outputs,
        json!({"type": "simulcast", "uri": "rtmp://live.twitch.tv/app/live_123"}),
    );
    assert!(twitch.data().get("stream_key").is_none());
    server
        .post(
            &outputs,
            json!({"type": "simulcast", "uri": "rtmp://live.twitch.tv/app", "stream_key": "live_123"}),
        )
        .assert_error(409, "simulcast");

    // Update, by the fields the type has.
    let renamed = server.patch(
        &format!("{outputs}/{yt_id}"),
        json!({"name": "YT", "stream_key": "new-key"}),
    );
    assert_eq!(
        (
            renamed.data()["name"].as_str(),
            renamed.data()["stream_key"].as_str()
        ),
        (Some("YT"), Some("new-key"))
    );
    assert_eq!(renamed.data()["created_at"], yt["created_at"]);
    server
        .patch(&format!("{outputs}/{yt_id}"), json!({"uri": "http://x/y"}))
        .assert_error(400, "uri must start with rtmp://");
    server
        .patch(&format!("{outputs}/{yt_id}"), json!({"type": "hls"}))
        .assert_error(400, "type cannot be changed");
    server
        .patch(&format!("{outputs}/{yt_id}"), json!({"vendor": "x"}))
        .assert_error(400, "vendor cannot be changed");
    server
        .patch(&format!("{outputs}/{hls_id}"), json!({"uri": "http://x/y.m3u8"}))
        .assert_error(400, "uri of an hls output");
    let archive_id = s["outputs"][1]["id"].as_str().unwrap();
    let renamed = server.patch(
        &format!("{outputs}/{archive_id}"),
        json!({"public_id": "shows/final-2026"}),
    );
    assert_eq!(renamed.data()["public_id"], "shows/final-2026");
    server
        .patch(&format!("{outputs}/{archive_id}"), json!({"public_id": "../etc"}))
        .assert_error(400, "public_id");

    // One hls and one archive per stream.
    server
        .post(&outputs, json!({"type": "hls"}))
        .assert_error(409, "already has an hls output");
    server
        .post(&outputs, json!({"type": "archive"}))
        .assert_error(409, "already has an archive output");
    server.delete(&format!("{outputs}/{hls_id}")).assert_ok_message();
    server
        .get(&format!("{outputs}/{hls_id}"))
        .assert_error(404, "live stream output not found");
    server
        .delete(&format!("{outputs}/{hls_id}"))
        .assert_error(404, "live stream output not found");
    let hls = server.post(&outputs, json!({"type": "hls"}));
    assert!(hls.data().get("name").is_none());
    assert!(
        hls.data()["uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("live_stream_{id}_hls.m3u8"))
    );

    // While active: hls/archive are frozen (409), simulcast outputs come and go.
    server.activate(id);
    server
        .delete(&format!("{outputs}/{archive_id}"))
        .assert_error(409, "live stream is active");
    server
        .patch(&format!("{outputs}/{archive_id}"), json!({"name": "x"}))
        .assert_error(409, "live stream is active");
    let fb = server.post(
        &outputs,
        json!({"type": "simulcast", "uri": "rtmps://live-api-s.facebook.com:443/rtmp/FB-1"}),
    );
    let fb_id = fb.data()["id"].as_str().unwrap().to_owned();
    server.delete(&format!("{outputs}/{fb_id}")).assert_ok_message();
    server.delete(&format!("{outputs}/{yt_id}")).assert_ok_message();

    // Output paths of unknown streams, and unknown or malformed output ids.
    let unknown = "0123456789abcdef0123456789abcdef";
    server
        .get(&format!("/live_streams/{unknown}/outputs"))
        .assert_error(404, "live stream not found");
    server
        .post(
            &format!("/live_streams/{unknown}/outputs"),
            json!({"type": "hls"}),
        )
        .assert_error(404, "live stream not found");
    server
        .get(&format!("{outputs}/{unknown}"))
        .assert_error(404, "live stream output not found");
    server
        .get(&format!("{outputs}/not-an-id"))
        .assert_error(404, "live stream output not found");
    server
        .patch(&format!("{outputs}/{unknown}"), json!({"name": "x"}))
        .assert_error(404, "live stream output not found");
}

#[test]
fn archives_list_is_empty_until_there_are_recordings() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = s["id"].as_str().unwrap();
    assert_eq!(
        server.get(&format!("/live_streams/{id}/archives")).data(),
        &json!([])
    );
    let sdk = server.send(
        Method::GET,
        &format!("{SDK_BASE}/live_streams/{id}/archives"),
        Auth::Admin,
        None,
    );
    assert_eq!(sdk.data(), &json!([]));
    server
        .get("/live_streams/0123456789abcdef0123456789abcdef/archives")
        .assert_error(404, "live stream not found");
}

#[test]
fn invalid_bodies_get_400_naming_the_field() {
    let server = Server::start();
    let raw = |method: Method, path: &str, body: &str| {
        server.send(
            method,
            &format!("/v2/video/local{path}"),
            Auth::Admin,
            Some(body.to_owned()),
        )
    };
    raw(Method::POST, "/live_streams", "{\"input\": ").assert_error(400, "not valid JSON");
    raw(Method::POST, "/live_streams", "").assert_error(400, "empty");
    raw(Method::POST, "/live_streams", "[]").assert_error(400, "must be a JSON object");
    for (body, wanted) in [
        (json!({}), "input is required"),
        (json!({"input": {"type": "srt"}}), "input.type must be \"rtmp\""),
        (
            json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 0}),
            "idle_timeout_sec must be an integer from 1 to 86400",
        ),
        (
            json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 86401}),
            "idle_timeout_sec",
        ),
        (
            json!({"input": {"type": "rtmp"}, "idle_timeout_sec": -1}),
            "idle_timeout_sec",
        ),
        (
            json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 2.5}),
            "idle_timeout_sec",
        ),
        (
            json!({"input": {"type": "rtmp"}, "idle_timeout_sec": "60"}),
            "idle_timeout_sec",
        ),
        (
            json!({"input": {"type": "rtmp"}, "max_runtime_sec": 0}),
            "max_runtime_sec must be an integer from 1 to 604800",
        ),
        (
            json!({"input": {"type": "rtmp"}, "max_runtime_sec": 604801}),
            "max_runtime_sec",
        ),
        (
            json!({"input": {"type": "rtmp"}, "name": 12}),
            "name must be a string",
        ),
        (
            json!({"input": {"type": "rtmp"}, "name": "n".repeat(257)}),
            "name must be at most 256 characters",
        ),
    ] {
        server.post("/live_streams", body).assert_error(400, wanted);
    }
    assert_eq!(
        server.get("/live_streams").data(),
        &json!([]),
        "nothing was created"
    );

    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = s["id"].as_str().unwrap();
    server
        .patch(&format!("/live_streams/{id}"), json!({"idle_timeout_sec": 0}))
        .assert_error(400, "idle_timeout_sec");
    server
        .patch(&format!("/live_streams/{id}"), json!({"input": {"type": "rtmp"}}))
        .assert_error(400, "input cannot be changed");
    raw(Method::PATCH, &format!("/live_streams/{id}"), "nope").assert_error(400, "not valid JSON");
    let outputs = format!("/live_streams/{id}/outputs");
    for (body, wanted) in [
        (json!({}), "type is required"),
        (json!({"type": "webrtc"}), "type must be one of"),
        (json!({"type": "simulcast"}), "uri is required"),
        (
            json!({"type": "simulcast", "uri": "srt://host/x/y"}),
            "uri must start with rtmp:// or rtmps://",
        ),
        (
            json!({"type": "simulcast", "uri": "rtmp://host/app"}),
            "uri must end with /<app>/<stream key>",
        ),
        (
            json!({"type": "simulcast", "uri": "rtmp://host/app/key", "vendor": 7}),
            "vendor must be a string",
        ),
        (
            json!({"type": "archive", "public_id": "a b"}),
            "public_id may contain only",
        ),
        (
            json!({"type": "hls", "uri": "http://elsewhere/x.m3u8"}),
            "uri of an hls output",
        ),
    ] {
        server.post(&outputs, body).assert_error(400, wanted);
    }
    assert_eq!(
        server.get(&outputs).data().as_array().unwrap().len(),
        2,
        "nothing was added"
    );
}

#[test]
fn auth_failures_get_401_with_a_challenge() {
    let server = Server::start();
    let (key, secret) = server.credentials();
    let wrong_secret = format!("{secret}x");
    for auth in [
        Auth::None,
        Auth::Basic(&key, "wrong"),
        Auth::Basic("wrong", &secret),
        Auth::Basic(&key, &wrong_secret),
        Auth::Basic("", ""),
        Auth::Header("Bearer abc"),
        Auth::Header("Basic not-base64!"),
    ] {
        for path in ["/v2/video/local/live_streams", "/v2/local/video/live_streams"] {
            let r = server.send(Method::GET, path, auth, None);
            r.assert_status(401);
            assert_eq!(
                r.headers.get("www-authenticate").unwrap(),
                "Basic realm=\"oxcast\""
            );
        }
        let r = server.send(
            Method::POST,
            "/v2/video/local/live_streams",
            auth,
            Some(json!({"input": {"type": "rtmp"}}).to_string()),
        );
        r.assert_status(401);
    }
    assert_eq!(
        server.get("/live_streams").data(),
        &json!([]),
        "no unauthenticated request created anything"
    );
    // Health needs no credentials.
    assert_eq!(
        server.send(Method::GET, "/healthz", Auth::None, None).data()["status"],
        "ok"
    );
}

#[test]
fn not_found_method_not_allowed_and_too_large() {
    let server = Server::start();
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = s["id"].as_str().unwrap();

    // Another cloud's name, under both bases.
    for path in ["/v2/video/other/live_streams", "/v2/other/video/live_streams"] {
        server
            .send(Method::GET, path, Auth::Admin, None)
            .assert_error(404, "unknown cloud name \"other\"");
    }
    server
        .get("/live_streams/0123456789abcdef0123456789abcdef")
        .assert_error(404, "live stream not found");
    server
        .get("/live_streams/..%2F..%2Fetc%2Fpasswd")
        .assert_error(404, "live stream not found");
    server
        .get("/live_streams/ZZZ")
        .assert_error(404, "live stream not found");
    server.get("/nothing/here").assert_error(404, "no endpoint");
    server
        .send(Method::GET, "/nothing", Auth::None, None)
        .assert_error(404, "no endpoint");

    // Wrong method: 405 with Allow.
    for (method, path) in [
        (Method::PUT, format!("/live_streams/{id}")),
        (Method::DELETE, "/live_streams".to_owned()),
        (Method::GET, format!("/live_streams/{id}/activate")),
        (Method::PATCH, format!("/live_streams/{id}/archives")),
    ] {
        let r = server.admin(method.clone(), &path, None);
        r.assert_error(405, &format!("method {method} is not allowed"));
        assert!(r.headers.contains_key("allow"), "{method} {path}");
    }
    server
        .send(Method::POST, "/healthz", Auth::None, None)
        .assert_status(405);

    // Over 64 KiB: 413, whether announced by Content-Length or not.
    let big = json!({"input": {"type": "rtmp"}, "name": "x".repeat(70 * 1024)}).to_string();
    server
        .send(
            Method::POST,
            "/v2/video/local/live_streams",
            Auth::Admin,
            Some(big.clone()),
        )
        .assert_error(413, "larger than 64 KiB");
    let (key, secret) = server.credentials();
    let chunked = chunked_post(
        &server,
        "/v2/video/local/live_streams",
        &key,
        &secret,
        big.as_bytes(),
    );
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert!(chunked.contains("larger than 64 KiB"), "{chunked}");
    let refused = server.patch(
        &format!("/live_streams/{id}"),
        json!({"name": "y".repeat(70 * 1024)}),
    );
    refused.assert_status(413);
    // The unread rest of the body makes the connection unusable: the answer says it closes.
    assert_eq!(refused.headers["connection"], "close");

    // After all that, everything still works.
    assert_eq!(server.get("/live_streams").data().as_array().unwrap().len(), 1);
    assert_eq!(
        server.send(Method::GET, "/healthz", Auth::None, None).data()["status"],
        "ok"
    );
}

/// A POST with a chunked body (no Content-Length), over a raw socket.
fn chunked_post(server: &Server, path: &str, key: &str, secret: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut conn = TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b64(format!("{key}:{secret}").as_bytes())
    );
    conn.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(8192) {
        if conn
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || conn.write_all(chunk).is_err()
            || conn.write_all(b"\r\n").is_err()
        {
            break; // the server may answer and close before the whole body is sent
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn silent_and_garbage_clients_do_not_disturb_others() {
    let server = Server::start();
    // Clients that connect and say nothing.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(("127.0.0.1", server.http_port)).unwrap())
        .collect();
    // A client that sends garbage instead of HTTP gets a 400 from the HTTP layer.
    let mut garbage = TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http at all\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = garbage.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // Everyone else is served as usual.
    let s = server.create_stream(json!({"input": {"type": "rtmp"}}));
    assert_eq!(
        server
            .get(&format!("/live_streams/{}", s["id"].as_str().unwrap()))
            .data(),
        &s
    );
    drop(idle);
}

#[test]
fn every_answer_gets_a_fresh_request_id() {
    let server = Server::start();
    let ids: std::collections::HashSet<String> = (0..5)
        .flat_map(|_| [server.get("/live_streams"), server.get("/live_streams/ZZZ")])
        .map(|r| r.body["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
}

#[test]
fn head_requests_carry_the_envelope_headers() {
    let server = Server::start();
    let r = server.send(Method::HEAD, "/v2/video/local/live_streams", Auth::Admin, None);
    assert_eq!(r.status, 200);
    let r = server.send(Method::HEAD, "/healthz", Auth::None, None);
    assert_eq!(r.status, 200);
}
