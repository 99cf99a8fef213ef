//! Recordings as Cloudinary video assets: code written with Cloudinary's SDKs lists them page by
//! page and deletes them (every version, file and URL), and `archive.retention_days` deletes the
//! old ones by itself.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::publisher::{publish_url, small_encoder, wait_child};
use crate::support::recordings::wait_archives;
use crate::support::{Options, Server, wait_until};

const LIMIT: Duration = Duration::from_secs(60);
const RESOURCES: &str = "/v1_1/local/resources/video/upload";

/// A stream whose recordings are the asset `public_id`.
fn stream_recording_as(server: &Server, public_id: &str) -> Value {
    let stream = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let id = stream["id"].as_str().unwrap();
    let archive = stream["outputs"][1]["id"].as_str().unwrap();
    server
        .patch(
            &format!("/live_streams/{id}/outputs/{archive}"),
            json!({"public_id": public_id}),
        )
        .assert_status(200);
    stream
}

/// Publishes two seconds to each stream at once, ends their sessions, and waits until each has
/// `recordings` recordings; returns each stream's list, newest first.
fn record(server: &Server, streams: &[&Value], recordings: usize) -> Vec<Vec<Value>> {
    let mut encoders: Vec<_> = streams
        .iter()
        .map(|s| small_encoder(&publish_url(s), 2))
        .collect();
    for encoder in &mut encoders {
        let (ok, err) = wait_child(encoder, LIMIT);
        assert!(ok, "{err}");
    }
    streams
        .iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap();
            server
                .post(&format!("/live_streams/{id}/idle"), json!({}))
                .assert_ok_message();
            wait_archives(server, id, recordings)
        })
        .collect()
}

/// A request to Cloudinary's Admin API paths, whose answers are Cloudinary's shapes (no envelope).
fn admin_api(
    server: &Server,
    method: reqwest::Method,
    path_and_query: &str,
) -> reqwest::blocking::RequestBuilder {
    let (key, secret) = server.credentials();
    reqwest::blocking::Client::new()
        .request(method, server.url(path_and_query))
        .basic_auth(key, Some(secret))
}

fn answer(req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let res = req.send().unwrap();
    let status = res.status().as_u16();
    let text = res.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

fn list(server: &Server, query: &str) -> Value {
    let (status, body) = answer(admin_api(
        server,
        reqwest::Method::GET,
        &format!("{RESOURCES}?{query}"),
    ));
    assert_eq!(status, 200, "{body}");
    body
}

fn public_ids(listing: &Value) -> Vec<String> {
    listing["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["public_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The MP4 files of `public_id` in the data directory.
fn files_of(data: &Path, public_id: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data.join("archive").join(public_id)) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect()
}

fn http_status(url: &str) -> u16 {
    reqwest::blocking::get(url).unwrap().status().as_u16()
}

#[test]
fn recordings_are_listed_page_by_page_and_deleted_as_cloudinary_assets() {
    let server = Server::start();
    let a = stream_recording_as(&server, "shows/a");
    let b = stream_recording_as(&server, "shows/b");
    let c = stream_recording_as(&server, "other/c");
    record(&server, &[&a, &b, &c], 1);
    // A second session of the first stream: a second version of shows/a.
    let a_versions = record(&server, &[&a], 2).remove(0);
    assert_eq!(files_of(&server.dir, "shows/a").len(), 2);

    // max_results=1, following next_cursor: every asset once, in public_id order.
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("max_results=1&next_cursor={c}"),
            None => "max_results=1".to_owned(),
        };
        let page = list(&server, &query);
        pages.push(public_ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages.len() <= 3, "more pages than assets: {pages:?}");
    }
    assert_eq!(pages, [["other/c"], ["shows/a"], ["shows/b"]]);

    // An asset is its newest recording, with Cloudinary's fields.
    let listed = list(&server, "prefix=shows/");
    assert_eq!(public_ids(&listed), ["shows/a", "shows/b"]);
    assert!(listed.get("next_cursor").is_none(), "{listed}");
    let newest = &a_versions[0];
    let resource = &listed["resources"][0];
    assert_eq!(resource["version"], newest["version"]);
    assert_eq!(resource["url"], newest["uri"]);
    assert_eq!(resource["secure_url"], newest["uri"]);
    assert_eq!(resource["bytes"], newest["bytes"]);
    assert_eq!(resource["duration"], newest["duration_sec"]);
    assert_eq!(
        (&resource["format"], &resource["resource_type"], &resource["type"]),
        (&json!("mp4"), &json!("video"), &json!("upload"))
    );
    let created_at = resource["created_at"].as_str().unwrap();
    assert!(
        created_at.len() == 20 && created_at.starts_with("20") && created_at.ends_with('Z'),
        "{created_at}"
    );
    // The SDKs' default path, without the delivery type, lists the same.
    let (status, all) = answer(admin_api(
        &server,
        reqwest::Method::GET,
        "/v1_1/local/resources/video",
    ));
    assert_eq!(status, 200);
    assert_eq!(public_ids(&all), ["other/c", "shows/a", "shows/b"]);

    // A player mid-download when the asset is deleted finishes its download.
    let newest_url = newest["uri"].as_str().unwrap();
    let mut reader = reqwest::blocking::get(newest_url).unwrap();
    assert_eq!(reader.status(), 200);
    let length: usize = reader.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut started = vec![0u8; 1024];
    reader.read_exact(&mut started).unwrap();

    // The Node SDK's delete: a form body of public_ids[].
    let (status, deleted) = answer(
        admin_api(&server, reqwest::Method::DELETE, RESOURCES)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("public_ids%5B%5D=shows%2Fa&public_ids%5B%5D=no%2Fsuch"),
    );
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted["deleted"],
        json!({"shows/a": "deleted", "no/such": "not_found"})
    );
    assert_eq!(deleted["deleted_counts"]["shows/a"]["original"], 2);
    assert_eq!(deleted["partial"], false);

    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert_eq!(
        started.len() + rest.len(),
        length,
        "the download under way finished"
    );

    assert_eq!(
        files_of(&server.dir, "shows/a"),
        Vec::<PathBuf>::new(),
        "both versions' files are gone"
    );
    for version in &a_versions {
        assert_eq!(http_status(version["uri"].as_str().unwrap()), 404);
    }
    assert_eq!(http_status(&server.url("/local/video/upload/shows/a.mp4")), 404);
    assert_eq!(public_ids(&list(&server, "")), ["other/c", "shows/b"]);
    let a_id = a["id"].as_str().unwrap();
    assert_eq!(
        server.get(&format!("/live_streams/{a_id}/archives")).data(),
        &json!([])
    );

    // The newer Python SDK's JSON body, and the older one's query string.
    let (status, deleted) = answer(
        admin_api(&server, reqwest::Method::DELETE, RESOURCES).json(&json!({"public_ids": ["other/c"]})),
    );
    assert_eq!(
        (status, &deleted["deleted"]),
        (200, &json!({"other/c": "deleted"}))
    );
    let (status, deleted) = answer(admin_api(
        &server,
        reqwest::Method::DELETE,
        &format!("{RESOURCES}?public_ids[]=shows/b&public_ids[]=other/c"),
    ));
    assert_eq!(
        (status, &deleted["deleted"]),
        (200, &json!({"shows/b": "deleted", "other/c": "not_found"}))
    );
    assert_eq!(list(&server, ""), json!({"resources": []}));
    for public_id in ["shows/b", "other/c"] {
        assert_eq!(files_of(&server.dir, public_id), Vec::<PathBuf>::new());
    }

    // Errors are Cloudinary's `error.message`, with the admin API's status codes.
    let (status, body) = answer(admin_api(
        &server,
        reqwest::Method::GET,
        &format!("{RESOURCES}?next_cursor=x"),
    ));
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("next_cursor"),
        "{body}"
    );
    let (status, body) = answer(reqwest::blocking::Client::new().get(server.url(RESOURCES)));
    assert_eq!(status, 401);
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[test]
fn the_retention_sweep_deletes_recordings_older_than_the_setting() {
    // 30 s, checked every 3 s.
    let retention_days = format!("{}", 30.0 / 86_400.0);
    let server = Server::start_with(Options::env(&[(
        "OXCAST__ARCHIVE__RETENTION_DAYS",
        &retention_days,
    )]));
    let old = stream_recording_as(&server, "old");
    let old_recording = record(&server, &[&old], 1).remove(0).remove(0);
    // Well apart, so that the sweep that takes the old one leaves the new one for a while.
    std::thread::sleep(Duration::from_secs(8));
    let new = stream_recording_as(&server, "new");
    let new_recording = record(&server, &[&new], 1).remove(0).remove(0);
    assert_eq!(public_ids(&list(&server, "")), ["new", "old"]);

    wait_until(
        "the old recording to expire",
        LIMIT,
        Duration::from_millis(200),
        || {
            let ids = public_ids(&list(&server, ""));
            if ids == ["new"] { Ok(()) } else { Err(ids) }
        },
    );
    assert_eq!(files_of(&server.dir, "old"), Vec::<PathBuf>::new());
    assert_eq!(files_of(&server.dir, "new").len(), 1);
    assert_eq!(http_status(old_recording["uri"].as_str().unwrap()), 404);
    assert_eq!(http_status(new_recording["uri"].as_str().unwrap()), 200);
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("recording expired and deleted") && l.contains("public_id=old")),
        "{log}"
    );
    assert!(log.contains("retention sweep deleted old recordings"), "{log}");
}
