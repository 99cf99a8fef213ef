//! Signed webhooks: a receiver of the test's own (a plain HTTP server on loopback) gets every
//! event once, signed with `notifications.secret`; a receiver that is down gets the events once
//! it is back, even across a restart of the server in between.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::destination::Destination;
use crate::support::publisher::{publish_url, small_encoder, wait_child};
use crate::support::{Options, Server, free_port, wait_until};

const SECRET: &str = "whsec_test_5f0c";
const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hook {
    headers: HashMap<String, String>,
    body: String,
}

impl Hook {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body {:?}: {e}", self.body))
    }

    /// The signature is `sha256=` + hex HMAC-SHA256 of `timestamp.body`, as the README says.
    fn assert_signed(&self) {
        let timestamp = &self.headers["x-oxcast-timestamp"];
        assert!(timestamp.parse::<u64>().is_ok(), "timestamp {timestamp:?}");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.{}", self.body).as_bytes());
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            self.headers.get("x-oxcast-signature"),
            Some(&format!("sha256={expected}")),
            "signature of {}",
            self.body
        );
        assert_eq!(self.headers["content-type"], "application/json");
        assert_eq!(self.headers["x-oxcast-event"], self.json()["event"]);
    }
}

/// A webhook receiver on a loopback port: records each request, answers 200.
struct Receiver {
    port: u16,
    hooks: Arc<Mutex<Vec<Hook>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        Self::start_on(0, Arc::default())
    }

    /// Listens on `port` (0: a free one), adding to `hooks`.
    fn start_on(port: u16, hooks: Arc<Mutex<Vec<Hook>>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (Arc::clone(&hooks), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if let Some(hook) = read_request(conn) {
                    sink.lock().unwrap().push(hook);
                }
            }
        });
        Receiver {
            port,
            hooks,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/oxcast", self.port)
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// Closes the port: connections are refused from now on.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one HTTP/1.1 request with a Content-Length body and answers 200.
fn read_request(mut conn: TcpStream) -> Option<Hook> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST /hooks/oxcast HTTP/1.1") {
        // The receiver's own wake-up connection, or a request we did not expect.
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    let _ = conn.shutdown(Shutdown::Both);
    Some(Hook {
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn webhook_env(receiver_url: &str, extra: &[(&str, &str)]) -> Options {
    let mut env = vec![
        ("OXCAST__NOTIFICATIONS__URL".to_owned(), receiver_url.to_owned()),
        ("OXCAST__NOTIFICATIONS__SECRET".to_owned(), SECRET.to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Options {
        env,
        args: Vec::new(),
    }
}

/// `(event, stream_id, reason or "")` of each hook, in arrival order.
fn summary(hooks: &[Hook]) -> Vec<(String, String, String)> {
    hooks
        .iter()
        .map(|h| {
            let body = h.json();
            (
                body["event"].as_str().unwrap().to_owned(),
                body["data"]["stream_id"].as_str().unwrap().to_owned(),
                body["data"]["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Waits until the receiver got a hook matching `(event, stream id, reason)`, and returns it.
fn wait_hook(receiver: &Receiver, event: &str, stream_id: &str, reason: &str) -> Hook {
    wait_until(
        &format!("webhook {event} {stream_id} {reason}"),
        LIMIT,
        POLL,
        || {
            let hooks = receiver.hooks();
            let i = summary(&hooks)
                .iter()
                .position(|(e, s, r)| e == event && s == stream_id && r == reason);
            match i {
                Some(i) => Ok(hooks[i].clone()),
                None => Err(summary(&hooks)),
            }
        },
    )
}

/// Every hook signed, every event id once, and exactly `expected` as `(event, stream, reason)`.
fn assert_exactly(hooks: &[Hook], expected: &[(&str, &str, &str)]) {
    for hook in hooks {
        hook.assert_signed();
    }
    let mut ids: Vec<String> = hooks
        .iter()
        .map(|h| h.json()["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        hooks.len(),
        "each event delivered once: {:#?}",
        summary(hooks)
    );
    let mut got = summary(hooks);
    got.sort();
    let mut want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(e, s, r)| ((*e).to_owned(), (*s).to_owned(), (*r).to_owned()))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn every_event_reaches_the_receiver_once_and_signed() {
    let receiver = Receiver::start();
    // The relay's destination starts down: the relay fails, then recovers when it comes up.
    let mut destination = Destination::start();
    destination.stop();
    let mut server = Server::start_with(webhook_env(
        &receiver.url(),
        &[("OXCAST__SIMULCAST__ALLOW_PRIVATE_DESTINATIONS", "true")],
    ));

    // Published, relayed and recorded; goes idle 2 s after the publisher leaves.
    let a = server.create_stream(json!({"name": "Show A", "input": {"type": "rtmp"}, "idle_timeout_sec": 2}));
    let a_id = a["id"].as_str().unwrap();
    let relay = server.post(
        &format!("/live_streams/{a_id}/outputs"),
        json!({"type": "simulcast", "uri": destination.url(), "stream_key": "a"}),
    );
    relay.assert_status(200);
    let relay_id = relay.data()["id"].as_str().unwrap().to_owned();
    let mut ffmpeg = small_encoder(&publish_url(&a), 24);
    let failed = wait_hook(&receiver, "simulcast.failed", a_id, "");
    // A few more failed attempts (1 s, then 2 s apart): one failure streak, one event.
    std::thread::sleep(Duration::from_secs(4));
    destination.restart();
    let recovered = wait_hook(&receiver, "simulcast.recovered", a_id, "");

    // Activated by hand, nobody publishes: idle_timeout.
    let b = server.create_stream(json!({"input": {"type": "rtmp"}, "idle_timeout_sec": 1}));
    let b_id = b["id"].as_str().unwrap();
    server.activate(b_id);
    // Idled by hand: manual.
    let c = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let c_id = c["id"].as_str().unwrap();
    server.activate(c_id);
    server
        .post(&format!("/live_streams/{c_id}/idle"), json!({}))
        .assert_ok_message();
    // Past its max runtime: max_runtime.
    let d = server.create_stream(json!({"input": {"type": "rtmp"}, "max_runtime_sec": 1}));
    let d_id = d["id"].as_str().unwrap();
    server.activate(d_id);
    // Deleted while active: deleted.
    let e = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let e_id = e["id"].as_str().unwrap();
    server.activate(e_id);
    server
        .delete(&format!("/live_streams/{e_id}"))
        .assert_ok_message();

    let (ok, err) = wait_child(&mut ffmpeg, LIMIT);
    assert!(ok, "ffmpeg failed: {err}");
    let idle = wait_hook(&receiver, "live_stream.idle", a_id, "publisher_left");
    let ready = wait_hook(&receiver, "archive.ready", a_id, "");
    wait_hook(&receiver, "live_stream.idle", b_id, "idle_timeout");
    wait_hook(&receiver, "live_stream.idle", d_id, "max_runtime");

    // archive.ready names the recording as the archives list does.
    let archives = server.get(&format!("/live_streams/{a_id}/archives"));
    let archive = archives.data()[0].clone();

    // Active when the server stops: shutdown, sent as the server stops.
    let f = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let f_id = f["id"].as_str().unwrap();
    server.activate(f_id);
    // The API lists each delivery, delivered at the first attempt (the receiver is up).
    let listed = wait_until("14 deliveries, delivered", LIMIT, POLL, || {
        let listed = server.get("/notifications?limit=1000").data().clone();
        let rows = listed.as_array().unwrap();
        if rows.len() == 14 && rows.iter().all(|d| d.get("delivered_at").is_some()) {
            Ok(rows.clone())
        } else {
            Err(listed)
        }
    });
    let status = server.signal_and_wait("TERM");
    assert!(status.success(), "{status}");
    destination.stop();

    let hooks = receiver.hooks();
    assert_exactly(
        &hooks,
        &[
            ("live_stream.active", a_id, ""),
            ("simulcast.failed", a_id, ""),
            ("simulcast.recovered", a_id, ""),
            ("live_stream.idle", a_id, "publisher_left"),
            ("archive.ready", a_id, ""),
            ("live_stream.active", b_id, ""),
            ("live_stream.idle", b_id, "idle_timeout"),
            ("live_stream.active", c_id, ""),
            ("live_stream.idle", c_id, "manual"),
            ("live_stream.active", d_id, ""),
            ("live_stream.idle", d_id, "max_runtime"),
            ("live_stream.active", e_id, ""),
            ("live_stream.idle", e_id, "deleted"),
            ("live_stream.active", f_id, ""),
            ("live_stream.idle", f_id, "shutdown"),
        ],
    );

    // What each event says.
    let body = idle.json();
    assert_eq!(
        body["data"],
        json!({"stream_id": a_id, "name": "Show A", "reason": "publisher_left"})
    );
    assert!(body["id"].as_str().unwrap().len() == 32 && body["created_at"].as_i64().unwrap() > 0);
    let failed = failed.json();
    assert_eq!(failed["data"]["output_id"], relay_id.as_str());
    assert_eq!(failed["data"]["destination"], destination.url().as_str());
    assert!(
        failed["data"]["last_error"].as_str().unwrap().contains("connect"),
        "{failed}"
    );
    assert_eq!(recovered.json()["data"]["output_id"], relay_id.as_str());
    let ready = ready.json();
    for (field, listed_as) in [
        ("public_id", "public_id"),
        ("version", "version"),
        ("uri", "uri"),
        ("duration", "duration_sec"),
    ] {
        assert_eq!(
            ready["data"][field], archive[listed_as],
            "{field}: {ready} vs {archive}"
        );
    }

    for d in &listed {
        assert_eq!(d["url"], receiver.url().as_str(), "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert!(d.get("last_error").is_none(), "{d}");
    }
    let created: Vec<i64> = listed.iter().map(|d| d["created_at"].as_i64().unwrap()).collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
}

#[test]
fn a_receiver_that_is_down_gets_the_events_once_back_even_across_a_restart() {
    // The receiver's port, closed until it comes back.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/oxcast");
    // A second receiver, up throughout: the one that is down must not hold it up.
    let up = Receiver::start();
    let urls = format!("{url}, {}", up.url());
    let options = webhook_env(&urls, &[("OXCAST__NOTIFICATIONS__MAX_RETRY_INTERVAL_SEC", "2")]);
    let mut server = Server::start_with(options);
    let down_since = Instant::now();

    let a = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let a_id = a["id"].as_str().unwrap().to_owned();
    server.activate(&a_id);
    server
        .post(&format!("/live_streams/{a_id}/idle"), json!({}))
        .assert_ok_message();
    let b = server.create_stream(json!({"input": {"type": "rtmp"}}));
    let b_id = b["id"].as_str().unwrap().to_owned();
    server.activate(&b_id);
    // Tried and failed at least once before the restart.
    wait_until("a failed attempt", LIMIT, POLL, || {
        let listed = server.get("/notifications").data().clone();
        let failed = listed
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["attempts"].as_u64() > Some(0) && d.get("last_error").is_some());
        if failed { Ok(()) } else { Err(listed) }
    });
    let status = server.signal_and_wait("TERM");
    assert!(status.success(), "{status}");
    let server = server.restart();
    let expected = [
        ("live_stream.active", a_id.as_str(), ""),
        ("live_stream.idle", a_id.as_str(), "manual"),
        ("live_stream.active", b_id.as_str(), ""),
        ("live_stream.idle", b_id.as_str(), "shutdown"),
    ];
    // The receiver that is up has every event while the other is still down (it starts below).
    wait_until("the four events at the receiver that is up", LIMIT, POLL, || {
        let hooks = up.hooks();
        if hooks.len() >= expected.len() {
            Ok(())
        } else {
            Err(summary(&hooks))
        }
    });

    // Down for 30 s in all, then back on the same port.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed()));
    let receiver = Receiver::start_on(port, Arc::default());
    wait_until("the four events", LIMIT, POLL, || {
        let hooks = receiver.hooks();
        if hooks.len() >= expected.len() {
            Ok(())
        } else {
            Err(summary(&hooks))
        }
    });
    let listed = wait_until("the four deliveries recorded as delivered", LIMIT, POLL, || {
        let listed = server.get("/notifications").data().clone();
        let rows: Vec<Value> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["url"] == url.as_str())
            .cloned()
            .collect();
        if rows.len() == expected.len() && rows.iter().all(|d| d.get("delivered_at").is_some()) {
            Ok(rows)
        } else {
            Err(listed)
        }
    });
    // Nothing more comes: the server is stopped before the count.
    let mut server = server;
    let status = server.signal_and_wait("TERM");
    assert!(status.success(), "{status}");
    assert_exactly(&receiver.hooks(), &expected);
    assert_exactly(&up.hooks(), &expected);
    let ids = |hooks: Vec<Hook>| {
        let mut ids: Vec<Value> = hooks.iter().map(|h| h.json()["id"].clone()).collect();
        ids.sort_by_key(|id| id.to_string());
        ids
    };
    assert_eq!(
        ids(receiver.hooks()),
        ids(up.hooks()),
        "one id per event, the same for each receiver"
    );

    for d in &listed {
        assert!(d["attempts"].as_u64().unwrap() > 1, "retried: {d}");
        assert!(d["delivered_at"].as_i64().is_some(), "delivered: {d}");
        assert!(
            d["last_error"]
                .as_str()
                .unwrap()
                .contains(&format!("127.0.0.1:{port}")),
            "the last failure says where: {d}"
        );
    }
}
