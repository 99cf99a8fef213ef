//! Starting and stopping: what is printed, configuration errors, graceful shutdown.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::{Auth, Options, Server, run_to_exit};

#[test]
fn first_start_prints_how_to_connect_and_the_generated_credentials_once() {
    let server = Server::start();
    let out = server.stdout();
    let (key, secret) = server.credentials();
    assert!(
        out.contains(&format!("http://127.0.0.1:{}/v2/video/local", server.http_port)),
        "{out}"
    );
    assert!(
        out.contains(&format!("rtmp://127.0.0.1:{}/streams", server.rtmp_port)),
        "{out}"
    );
    assert!(out.contains(&key) && out.contains(&secret), "{out}");
    // The server was told port 0 for both listeners (and in both public URLs): it names the ports
    // it got, which are the ones that answered.
    assert!(
        out.contains(&format!(
            "Listening    HTTP 127.0.0.1:{}, RTMP 127.0.0.1:{}",
            server.http_port, server.rtmp_port
        )),
        "{out}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.dir.join("api-credentials"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let mut server = server;
    server.kill();
    let server = server.restart();
    let out = server.stdout();
    assert!(out.contains(&key), "{out}");
    assert!(!out.contains(&secret), "the secret is printed once only: {out}");
    assert_eq!(server.credentials(), (key, secret));
}

#[test]
fn configured_credentials_are_used_and_not_stored() {
    let options = Options::env(&[
        ("OXCAST__API__KEY", "my-key"),
        ("OXCAST__API__SECRET", "my-secret"),
        ("OXCAST__API__CLOUD_NAME", "demo"),
    ]);
    let server = Server::start_with(options);
    assert!(!server.dir.join("api-credentials").exists());
    let r = server.send(
        Method::GET,
        "/v2/video/demo/live_streams",
        Auth::Basic("my-key", "my-secret"),
        None,
    );
    assert_eq!(r.data(), &json!([]));
    let r = server.send(
        Method::POST,
        "/v2/demo/video/live_streams",
        Auth::Basic("my-key", "my-secret"),
        Some(json!({"input": {"type": "rtmp"}}).to_string()),
    );
    let uri = r.data()["outputs"][0]["uri"].as_str().unwrap().to_owned();
    assert!(uri.contains("/demo/video/live/"), "{uri}");
    server
        .send(
            Method::GET,
            "/v2/video/local/live_streams",
            Auth::Basic("my-key", "my-secret"),
            None,
        )
        .assert_error(404, "unknown cloud name");
    assert!(server.stdout().contains("http://127.0.0.1:") && server.stdout().contains("/v2/video/demo"));
}

fn assert_config_error(args: &[&str], env: &[(&str, &str)], wanted: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run_to_exit(dir.path(), args, env);
    assert_eq!(status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(wanted), "{lines:?} lacks {wanted:?}");
}

#[test]
fn bad_configuration_stops_start_up_with_one_line_and_exit_code_2() {
    assert_config_error(
        &[],
        &[("OXCAST__RTMP__LISTEN", "localhost")],
        "rtmp.listen \"localhost\": not an address",
    );
    assert_config_error(&[], &[("OXCAST__HTTP__LISTEN", "0.0.0.0:99999")], "http.listen");
    assert_config_error(&[], &[("OXCAST__HTTP__LISTN", "x")], "unknown setting http.listn");
    assert_config_error(
        &[],
        &[("OXCAST__LOG__FILTER", "info,oxcast=loudly")],
        "log.filter",
    );
    assert_config_error(
        &["--config", "/nonexistent/oxcast.toml"],
        &[],
        "config file /nonexistent/oxcast.toml: not found",
    );
    assert_config_error(
        &[],
        &[("OXCAST_CONFIG", "/nonexistent/env.toml")],
        "config file /nonexistent/env.toml: not found",
    );

    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[http]\nlisten = \"127.0.0.1:0\"\nport = 80\n").unwrap();
    assert_config_error(
        &["--config", unknown.to_str().unwrap()],
        &[],
        "unknown setting http.port in config file",
    );
    let bad_addr = dir.path().join("addr.toml");
    std::fs::write(&bad_addr, "[rtmp]\nlisten = \"nowhere:port\"\n").unwrap();
    assert_config_error(
        &[],
        &[("OXCAST_CONFIG", bad_addr.to_str().unwrap())],
        "rtmp.listen \"nowhere:port\"",
    );
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[rtmp\nlisten = 1\n").unwrap();
    assert_config_error(&["--config", broken.to_str().unwrap()], &[], "config file");
}

#[test]
fn a_config_file_and_then_the_environment_override_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oxcast.toml");
    let settings = "[api]\ncloud_name = \"from-file\"\nkey = \"file-key\"\nsecret = \"file-secret\"\n";
    std::fs::write(&file, settings).unwrap();
    let options = Options {
        env: vec![("OXCAST__API__CLOUD_NAME".into(), "from-env".into())],
        args: vec!["--config".into(), file.display().to_string()],
    };
    let server = Server::start_with(options);
    // The file's credentials replace the generated ones; the environment's cloud name the file's.
    assert!(!server.dir.join("api-credentials").exists());
    let creds = Auth::Basic("file-key", "file-secret");
    assert_eq!(
        server
            .send(Method::GET, "/v2/video/from-env/live_streams", creds, None)
            .data(),
        &json!([])
    );
    let creds = Auth::Basic("file-key", "file-secret");
    server
        .send(Method::GET, "/v2/video/from-file/live_streams", creds, None)
        .assert_status(404);
}

#[test]
fn start_up_problems_are_named() {
    // The HTTP port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run_to_exit(
        dir.path(),
        &[],
        &[("OXCAST__HTTP__LISTEN", &format!("127.0.0.1:{port}"))],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("http.listen 127.0.0.1:{port}: cannot listen")),
        "{stderr}"
    );

    // Another server already uses the data directory.
    let server = Server::start();
    let (status, _, stderr) = run_to_exit(server.dir.parent().unwrap(), &[], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another Oxcast process"), "{stderr}");
    assert_eq!(
        server.get("/live_streams").data(),
        &json!([]),
        "the first server is unaffected"
    );

    let (status, stdout, _) = run_to_exit(dir.path(), &["--help"], &[]);
    assert!(status.success());
    assert!(stdout.contains("--config"), "{stdout}");
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start();
        server.create_stream(json!({"input": {"type": "rtmp"}}));
        let status = server.signal_and_wait(signal);
        assert_eq!(status.code(), Some(0), "SIG{signal}: {}", server.log());
        assert!(server.log().contains("shutdown complete"), "{}", server.log());
        let server = server.restart();
        assert_eq!(server.get("/live_streams").data().as_array().unwrap().len(), 1);
    }
}

#[test]
fn a_request_in_flight_at_shutdown_is_finished() {
    use base64::Engine as _;
    let mut server = Server::start();
    let (key, secret) = server.credentials();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
    let body = json!({"input": {"type": "rtmp"}, "name": "in flight"}).to_string();
    let (first, rest) = body.split_at(10);
    let mut conn = TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        conn,
        "POST /v2/video/local/live_streams HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    conn.write_all(rest.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("in flight"), "{reply}");
    assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let server = server.restart();
    assert_eq!(server.get("/live_streams").data()[0]["name"], "in flight");
}
