//! What the container image relies on: `oxcast --health-check` (its HEALTHCHECK) says whether the
//! server on `http.listen` answers `/healthz`.

use crate::support::{Server, run_to_exit};

#[test]
fn the_health_check_flag_passes_while_the_server_answers_and_fails_after() {
    let mut server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let listen = format!("0.0.0.0:{}", server.http_port);
    let check = || {
        run_to_exit(
            work.path(),
            &["--health-check"],
            &[("OXCAST__HTTP__LISTEN", &listen)],
        )
    };

    let (status, out, err) = check();
    assert!(status.success(), "{status}: {out}{err}");
    assert!(out.is_empty(), "a check prints nothing when healthy: {out}");

    server.signal_and_wait("TERM");
    let (status, _, err) = check();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("unhealthy") && err.contains("/healthz"), "{err}");
}
