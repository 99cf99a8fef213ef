use std::sync::Mutex as StdMutex;

use super::*;
use crate::model::SimulcastTarget;

/// Records what the registry asked the outputs to do.
#[derive(Default)]
struct Recorder(StdMutex<Vec<String>>);

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl OutputRunner for Recorder {
    fn stream_active(&self, stream: &LiveStream, _: &Arc<crate::StreamBus>) {
        self.0.lock().unwrap().push(format!("active {}", stream.id));
    }
    fn stream_idle(&self, stream_id: &StreamId, reason: IdleReason) {
        self.0.lock().unwrap().push(format!("idle {stream_id} {reason}"));
    }
}

struct Fixture {
    registry: Arc<Registry>,
    recorder: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let registry = Registry::new(Store::open(dir.path()).unwrap(), recorder.clone()).unwrap();
    Fixture {
        registry,
        recorder,
        _dir: dir,
    }
}

fn timeouts(idle: u32, max: u32) -> NewStream {
    NewStream {
        name: None,
        idle_timeout_sec: Some(idle),
        max_runtime_sec: Some(max),
    }
}

async fn status(registry: &Registry, id: &StreamId) -> Status {
    registry.get_stream(id).await.unwrap().status
}

/// Lets paused time pass in steps, so deadline watchers and blocking store calls get to run.
async fn advance(d: Duration) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        let s = step.min(left);
        tokio::time::sleep(s).await;
        left -= s;
    }
}

#[tokio::test]
async fn create_applies_defaults_and_default_outputs() {
    let f = fixture();
    let s = f
        .registry
        .create_stream(NewStream {
            name: Some("Show".into()),
            ..NewStream::default()
        })
        .await
        .unwrap();
    assert_eq!(s.name.as_deref(), Some("Show"));
    assert_eq!((s.idle_timeout_sec, s.max_runtime_sec), (120, 10_800));
    assert_eq!(s.status, Status::Idle);
    assert_eq!(s.stream_key.as_str().len(), 30);
    let names: Vec<_> = s.outputs.iter().map(|o| o.name.clone().unwrap()).collect();
    assert_eq!(names, ["default hls", "default archive"]);
    assert_eq!(
        s.outputs[1].kind,
        OutputKind::Archive {
            public_id: format!("live_stream_{}_archive", s.id)
        }
    );
    assert_eq!(f.registry.get_stream(&s.id).await.unwrap(), s);
    assert_eq!(f.registry.list_streams().await.unwrap(), vec![s]);
}

#[tokio::test]
async fn streams_survive_reopening_the_store_and_come_back_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, output) = {
        let registry =
            Registry::new(Store::open(dir.path()).unwrap(), Arc::new(Recorder::default())).unwrap();
        let stream = registry.create_stream(timeouts(5, 50)).await.unwrap();
        let output = registry
            .create_output(
                &stream.id,
                NewOutput {
                    name: Some("yt".into()),
                    kind: NewOutputKind::Simulcast(SimulcastTarget {
                        uri: "rtmp://a.rtmp.youtube.com/live2".into(),
                        stream_key: Some("abc".into()),
                        vendor: Some("youtube".into()),
                    }),
                },
            )
            .await
            .unwrap();
        registry.activate(&stream.id).await.unwrap();
        registry.store().close().unwrap();
        (stream, output)
    };
    let registry = Registry::new(Store::open(dir.path()).unwrap(), Arc::new(Recorder::default())).unwrap();
    let reloaded = registry.get_stream(&stream.id).await.unwrap();
    assert_eq!(reloaded.status, Status::Idle);
    assert_eq!(reloaded.stream_key, stream.stream_key);
    assert_eq!(reloaded.outputs.len(), 3);
    assert_eq!(reloaded.outputs[2], output);
}

#[tokio::test]
async fn a_second_server_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    assert!(matches!(Store::open(dir.path()), Err(StoreError::InUse(_))));
}

#[tokio::test(start_paused = true)]
async fn manual_activation_goes_idle_after_idle_timeout_without_input() {
    let f = fixture();
    let s = f.registry.create_stream(timeouts(1, 100)).await.unwrap();
    f.registry.activate(&s.id).await.unwrap();
    f.registry.activate(&s.id).await.unwrap(); // idempotent
    assert_eq!(status(&f.registry, &s.id).await, Status::Active);
    advance(Duration::from_millis(900)).await;
    assert_eq!(status(&f.registry, &s.id).await, Status::Active);
    advance(Duration::from_millis(200)).await;
    assert_eq!(status(&f.registry, &s.id).await, Status::Idle);
    assert_eq!(
        f.recorder.events(),
        [format!("active {}", s.id), format!("idle {} idle timeout", s.id)]
    );
}

#[tokio::test(start_paused = true)]
async fn max_runtime_ends_a_session_even_while_publishing() {
    let f = fixture();
    let s = f.registry.create_stream(timeouts(100, 2)).await.unwrap();
    let publisher = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    assert_eq!(status(&f.registry, &s.id).await, Status::Active);
    advance(Duration::from_millis(1900)).await;
    assert!(!publisher.is_stopped());
    advance(Duration::from_millis(200)).await;
    assert_eq!(status(&f.registry, &s.id).await, Status::Idle);
    assert!(publisher.is_stopped(), "the publisher is told to disconnect");
    assert_eq!(
        f.recorder.events().last().unwrap(),
        &format!("idle {} max runtime reached", s.id)
    );
}

#[tokio::test(start_paused = true)]
async fn publisher_keeps_stream_active_and_its_end_starts_the_idle_countdown() {
    let f = fixture();
    let s = f.registry.create_stream(timeouts(1, 100)).await.unwrap();
    let publisher = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    assert_eq!(publisher.stream_id(), &s.id);
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        status(&f.registry, &s.id).await,
        Status::Active,
        "input connected: no idle timeout"
    );
    publisher.end().await;
    advance(Duration::from_millis(500)).await;
    // A reconnect inside the timeout continues the same session.
    let again = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    advance(Duration::from_secs(3)).await;
    assert_eq!(status(&f.registry, &s.id).await, Status::Active);
    assert_eq!(
        f.recorder.events(),
        [format!("active {}", s.id)],
        "one session, never interrupted"
    );
    drop(again); // a dropped publisher ends like one that ended explicitly
    advance(Duration::from_millis(1100)).await;
    assert_eq!(status(&f.registry, &s.id).await, Status::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_second_publisher_takes_over() {
    let f = fixture();
    let s = f.registry.create_stream(timeouts(1, 100)).await.unwrap();
    let first = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    let second = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    assert!(first.is_stopped());
    assert!(!second.is_stopped());
    first.end().await; // the old connection closing must not start the countdown
    advance(Duration::from_secs(3)).await;
    assert_eq!(status(&f.registry, &s.id).await, Status::Active);
    f.registry.idle(&s.id).await.unwrap();
    assert!(second.is_stopped());
    f.registry.idle(&s.id).await.unwrap(); // idempotent
    assert_eq!(
        f.recorder.events(),
        [
            format!("active {}", s.id),
            format!("idle {} idle requested", s.id)
        ]
    );
}

#[tokio::test]
async fn unknown_keys_are_refused() {
    let f = fixture();
    let s = f.registry.create_stream(NewStream::default()).await.unwrap();
    for key in [
        "",
        "nope",
        &s.stream_key.as_str()[..29],
        &format!("{}x", s.stream_key.as_str()),
    ] {
        assert!(
            matches!(
                f.registry.publish_started(key).await,
                Err(PublishRefused::UnknownKey)
            ),
            "{key}"
        );
    }
    assert_eq!(status(&f.registry, &s.id).await, Status::Idle);
}

/// Anyone can try keys: an unknown one is refused without a trip to the store (here closed, so a
/// lookup there would fail with a store error instead).
#[tokio::test]
async fn an_unknown_key_is_refused_without_touching_the_store() {
    let f = fixture();
    let s = f.registry.create_stream(NewStream::default()).await.unwrap();
    let deleted = f.registry.create_stream(NewStream::default()).await.unwrap();
    f.registry.delete_stream(&deleted.id).await.unwrap();
    f.registry.store().close().unwrap();
    for key in ["nope", &s.stream_key.as_str()[..29], deleted.stream_key.as_str()] {
        assert!(
            matches!(
                f.registry.publish_started(key).await,
                Err(PublishRefused::UnknownKey)
            ),
            "{key}"
        );
    }
    // The right key gets as far as the store.
    assert!(matches!(
        f.registry.publish_started(s.stream_key.as_str()).await,
        Err(PublishRefused::Store(_))
    ));
}

/// A stream created after start-up publishes at once, and keys survive a restart of the registry.
#[tokio::test]
async fn keys_of_new_and_reloaded_streams_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(Store::open(dir.path()).unwrap(), Arc::new(Recorder::default())).unwrap();
    let s = registry.create_stream(NewStream::default()).await.unwrap();
    registry
        .publish_started(s.stream_key.as_str())
        .await
        .unwrap()
        .end()
        .await;
    registry.store().close().unwrap();
    drop(registry);
    let registry = Registry::new(Store::open(dir.path()).unwrap(), Arc::new(Recorder::default())).unwrap();
    let publisher = registry.publish_started(s.stream_key.as_str()).await.unwrap();
    assert_eq!(publisher.stream_id(), &s.id);
}

#[tokio::test]
async fn streams_and_outputs_are_capped_by_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RegistryLimits {
        max_streams: 2,
        max_outputs_per_stream: 3,
        ..RegistryLimits::default()
    };
    let registry = Registry::with_limits(
        Store::open(dir.path()).unwrap(),
        Arc::new(Recorder::default()),
        limits,
    )
    .unwrap();
    let first = registry.create_stream(NewStream::default()).await.unwrap();
    registry.create_stream(NewStream::default()).await.unwrap();
    let e = registry.create_stream(NewStream::default()).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::Limit(m) if m.contains("limits.max_streams")),
        "{e}"
    );
    assert_eq!(registry.list_streams().await.unwrap().len(), 2);
    // Deleting one makes room again.
    registry.delete_stream(&first.id).await.unwrap();
    let third = registry.create_stream(NewStream::default()).await.unwrap();
    registry
        .create_output(&third.id, simulcast("rtmp://a.example/live", Some("1")))
        .await
        .unwrap();
    let e = registry
        .create_output(&third.id, simulcast("rtmp://a.example/live", Some("2")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::Limit(m) if m.contains("limits.max_outputs_per_stream")),
        "{e}"
    );
    assert_eq!(registry.list_outputs(&third.id).await.unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn changing_timeouts_applies_to_the_running_session() {
    let f = fixture();
    let s = f.registry.create_stream(timeouts(100, 100)).await.unwrap();
    f.registry.activate(&s.id).await.unwrap();
    advance(Duration::from_secs(2)).await;
    let patched = f
        .registry
        .update_stream(
            &s.id,
            StreamPatch {
                idle_timeout_sec: Some(3),
                ..StreamPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.idle_timeout_sec, 3);
    assert!(patched.updated_at >= s.updated_at);
    advance(Duration::from_millis(1100)).await;
    assert_eq!(
        status(&f.registry, &s.id).await,
        Status::Idle,
        "3 s since activation"
    );
}

#[tokio::test]
async fn deleting_an_active_stream_stops_it_first() {
    let f = fixture();
    let s = f.registry.create_stream(NewStream::default()).await.unwrap();
    let publisher = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    f.registry.delete_stream(&s.id).await.unwrap();
    assert!(publisher.is_stopped());
    assert!(matches!(
        f.registry.get_stream(&s.id).await,
        Err(RegistryError::StreamNotFound)
    ));
    assert!(matches!(
        f.registry.delete_stream(&s.id).await,
        Err(RegistryError::StreamNotFound)
    ));
    assert_eq!(
        f.recorder.events().last().unwrap(),
        &format!("idle {} stream deleted", s.id)
    );
    assert!(matches!(
        f.registry.publish_started(s.stream_key.as_str()).await,
        Err(PublishRefused::UnknownKey)
    ));
}

fn simulcast(uri: &str, key: Option<&str>) -> NewOutput {
    NewOutput {
        name: None,
        kind: NewOutputKind::Simulcast(SimulcastTarget {
            uri: uri.into(),
            stream_key: key.map(Into::into),
            vendor: None,
        }),
    }
}

#[tokio::test]
async fn output_rules() {
    let f = fixture();
    let r = &f.registry;
    let s = r.create_stream(NewStream::default()).await.unwrap();
    let hls = NewOutput {
        name: None,
        kind: NewOutputKind::Hls,
    };
    assert!(
        matches!(r.create_output(&s.id, hls.clone()).await, Err(RegistryError::Conflict(m)) if m.contains("hls"))
    );

    // Destinations are unique per stream, whether the key is in the uri or beside it.
    r.create_output(&s.id, simulcast("rtmp://h/live/k", None))
        .await
        .unwrap();
    let dup = r
        .create_output(&s.id, simulcast("rtmp://h/live", Some("k")))
        .await;
    assert!(matches!(dup, Err(RegistryError::Conflict(_))), "{dup:?}");

    // hls/archive change only while idle; simulcast any time.
    r.activate(&s.id).await.unwrap();
    let archive = s.outputs[1].id.clone();
    assert!(matches!(
        r.delete_output(&s.id, &archive).await,
        Err(RegistryError::StreamActive)
    ));
    let patch = OutputPatch {
        public_id: Some("x".into()),
        ..OutputPatch::default()
    };
    assert!(matches!(
        r.update_output(&s.id, &archive, patch.clone()).await,
        Err(RegistryError::StreamActive)
    ));
    let live_added = r
        .create_output(&s.id, simulcast("rtmp://other/live/k", None))
        .await
        .unwrap();
    r.delete_output(&s.id, &live_added.id).await.unwrap();
    r.idle(&s.id).await.unwrap();

    let updated = r.update_output(&s.id, &archive, patch).await.unwrap();
    assert_eq!(
        updated.kind,
        OutputKind::Archive {
            public_id: "x".into()
        }
    );
    let wrong = OutputPatch {
        uri: Some("rtmp://h/live/z".into()),
        ..OutputPatch::default()
    };
    assert!(
        matches!(r.update_output(&s.id, &archive, wrong).await, Err(RegistryError::Invalid(e)) if e.field == "uri")
    );

    r.delete_output(&s.id, &archive).await.unwrap();
    assert!(matches!(
        r.get_output(&s.id, &archive).await,
        Err(RegistryError::OutputNotFound)
    ));
    let again = r.create_output(
        &s.id,
        NewOutput {
            name: None,
            kind: NewOutputKind::Archive { public_id: None },
        },
    );
    assert_eq!(
        again.await.unwrap().kind,
        OutputKind::Archive {
            public_id: format!("live_stream_{}_archive", s.id)
        }
    );
    assert_eq!(r.list_outputs(&s.id).await.unwrap().len(), 3);
}

#[tokio::test]
async fn simulcast_key_can_move_between_uri_and_stream_key() {
    let f = fixture();
    let s = f.registry.create_stream(NewStream::default()).await.unwrap();
    let out = f
        .registry
        .create_output(&s.id, simulcast("rtmp://h/live", Some("k")))
        .await
        .unwrap();
    let clear_key = OutputPatch {
        stream_key: Some(None),
        ..OutputPatch::default()
    };
    let e = f
        .registry
        .update_output(&s.id, &out.id, clear_key)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::Invalid(fe) if fe.field == "uri"),
        "{e}"
    );
    let both = OutputPatch {
        uri: Some("rtmp://h/live/k2".into()),
        stream_key: Some(None),
        ..OutputPatch::default()
    };
    let out = f.registry.update_output(&s.id, &out.id, both).await.unwrap();
    let OutputKind::Simulcast(t) = out.kind else {
        panic!()
    };
    assert_eq!((t.uri.as_str(), t.stream_key), ("rtmp://h/live/k2", None));
}

#[tokio::test]
async fn shutdown_ends_every_session() {
    let f = fixture();
    let a = f.registry.create_stream(NewStream::default()).await.unwrap();
    let b = f.registry.create_stream(NewStream::default()).await.unwrap();
    f.registry.activate(&a.id).await.unwrap();
    let publisher = f.registry.publish_started(b.stream_key.as_str()).await.unwrap();
    f.registry.shutdown().await;
    assert!(publisher.is_stopped());
    for s in f.registry.list_streams().await.unwrap() {
        assert_eq!(s.status, Status::Idle);
    }
}

#[tokio::test(start_paused = true)]
async fn publishers_of_one_session_share_its_bus_and_a_new_one_marks_a_discontinuity() {
    let f = fixture();
    let s = f.registry.create_stream(timeouts(5, 100)).await.unwrap();
    let first = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    let mut output = first.bus().subscribe();
    let second = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    assert!(
        Arc::ptr_eq(first.bus(), second.bus()),
        "a takeover continues the same session"
    );
    assert_eq!(output.recv().await, Some(crate::BusEvent::Discontinuity));
    f.registry.idle(&s.id).await.unwrap();
    assert_eq!(output.recv().await, None, "the stream's end reaches its outputs");
    // The next session has a bus of its own.
    let third = f.registry.publish_started(s.stream_key.as_str()).await.unwrap();
    assert!(!Arc::ptr_eq(first.bus(), third.bus()));
}
