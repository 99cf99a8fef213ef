//! The simulcast destinations (`support::destination`) themselves, with ffmpeg as the publisher:
//! what the simulcast tests rely on.

use std::io::Read as _;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use crate::support::destination::{BlackHole, Destination};
use crate::support::probe::count_frames;
use crate::support::publisher::{encoder, encoder_with_copy, wait_child};
use crate::support::tools::command;
use crate::support::wait_until;

#[test]
fn destination_fixture_records_what_ffmpeg_publishes() {
    const LIMIT: Duration = Duration::from_secs(60);
    let work = tempfile::tempdir().unwrap();
    let mut plain = Destination::start();
    let tls = Destination::start_tls();

    // Plain and TLS at once; ffmpeg does not verify the certificate.
    let copies = [work.path().join("x.flv"), work.path().join("y.flv")];
    let mut encoders = [
        encoder_with_copy(&format!("{}/x", plain.url()), 6, "640x360", 2, &copies[0]),
        encoder_with_copy(&format!("{}/y", tls.tls_url()), 6, "640x360", 2, &copies[1]),
    ];
    for ffmpeg in &mut encoders {
        let (ok, err) = wait_child(ffmpeg, LIMIT);
        assert!(ok, "{err}");
    }
    std::thread::sleep(Duration::from_millis(500));
    for ((destination, key), copy) in [(&plain, "x"), (&tls, "y")].into_iter().zip(&copies) {
        let files = destination.recordings();
        assert_eq!(
            files,
            destination.recordings_of(key),
            "one recording, named by the key: {}",
            destination.log()
        );
        assert_eq!(files.len(), 1, "{files:?}");
        let source = count_frames(copy.to_str().unwrap());
        let recorded = count_frames(files[0].to_str().unwrap());
        assert!(source.0 >= 170 && source.1 >= 270, "{source:?}");
        assert_eq!((recorded.0, recorded.1), (source.0, source.1), "{key}");
    }

    // The certificate verifies as a strict client would check it, by name and by address.
    for host in ["localhost", "127.0.0.1"] {
        let out = command("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", tls.tls_port())])
            .args(["-servername", "localhost", "-verify_return_error"])
            .arg("-CAfile")
            .arg(tls.ca_file())
            .args(if host == "localhost" {
                ["-verify_hostname", host]
            } else {
                ["-verify_ip", host]
            })
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Verify return code: 0 (ok)"),
            "{host}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A stop while a publisher is connected cuts it off (an outage), and a restart on the same
    // port records the next session in a new file.
    plain.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", plain.port())).is_err(),
        "stopped"
    );
    plain.restart();
    let mut ffmpeg = encoder(&format!("{}/x", plain.url()), 20, "320x240", 1, "va");
    wait_until("a second recording", LIMIT, Duration::from_millis(200), || {
        let files = plain.recordings();
        if files.len() >= 2 { Ok(()) } else { Err(files) }
    });
    std::thread::sleep(Duration::from_secs(3));
    plain.stop();
    // ffmpeg succeeds only if it published its whole 20 s.
    let (ok, _) = wait_child(&mut ffmpeg, LIMIT);
    assert!(!ok, "the publisher was cut off by the stop");
    let files = plain.recordings_of("x");
    assert_eq!(files.len(), 2, "{files:?}");
    let (video, _, _) = count_frames(files[1].to_str().unwrap());
    assert!(
        video >= 60,
        "the second session was recorded up to the stop: {video}"
    );

    // The black hole takes connections and says nothing.
    let hole = BlackHole::start();
    let mut conn = TcpStream::connect(("127.0.0.1", hole.port())).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    std::io::Write::write_all(&mut conn, &[3; 1537]).unwrap();
    let mut buf = [0u8; 1];
    let read = conn.read(&mut buf);
    assert!(
        read.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "no answer, connection still open: {read:?}"
    );
    assert_eq!(hole.accepted(), 1);
}
