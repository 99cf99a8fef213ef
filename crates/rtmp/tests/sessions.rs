//! ServerSession and ClientSession: back to back, against captures of real encoders and of
//! nginx-rtmp, and against hostile input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::{chunked, simple_handshake};
use oxcast_rtmp::amf0::Value;
use oxcast_rtmp::handshake::Scheme;
use oxcast_rtmp::{
    ClientConfig, ClientEvent, ClientSession, PublishMode, PublishRejection, ServerConfig, ServerEvent,
    ServerSession, SessionError,
};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/rtmp")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()))
}

/// How a test answers requests.
#[derive(Clone, Copy)]
enum Decision {
    Accept,
    RejectConnect,
    RejectPublish,
}

/// Feeds `input` in pieces, answering requests, and collects every event.
fn serve(server: &mut ServerSession, input: &[u8], piece: usize, decision: Decision) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    for bytes in input.chunks(piece) {
        let mut batch = server.handle_input(bytes).unwrap();
        while let Some(request) = batch.last().filter(|e| is_request(e)).cloned() {
            match (&request, decision) {
                (ServerEvent::ConnectRequested { .. }, Decision::RejectConnect) => {
                    server.reject_connect("no such app").unwrap()
                }
                (ServerEvent::ConnectRequested { .. }, _) => server.accept_connect().unwrap(),
                (_, Decision::RejectPublish) => server
                    .reject_publish(PublishRejection::Unauthorized, "bad key")
                    .unwrap(),
                _ => server.accept_publish().unwrap(),
            }
            events.append(&mut batch);
            batch = server.handle_input(&[]).unwrap();
        }
        events.append(&mut batch);
    }
    events
}

fn is_request(event: &ServerEvent) -> bool {
    matches!(
        event,
        ServerEvent::ConnectRequested { .. } | ServerEvent::PublishRequested { .. }
    )
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    video: usize,
    audio: usize,
    data: usize,
    unpublished: usize,
}

fn count(events: &[ServerEvent]) -> Counts {
    let mut c = Counts::default();
    for event in events {
        match event {
            ServerEvent::Video { .. } => c.video += 1,
            ServerEvent::Audio { .. } => c.audio += 1,
            ServerEvent::Metadata { .. } | ServerEvent::Data { .. } => c.data += 1,
            ServerEvent::Unpublished { .. } => c.unpublished += 1,
            _ => {}
        }
    }
    c
}

#[test]
fn captures_of_four_encoders_replay_with_every_message() {
    for (name, data, scheme) in [
        ("ffmpeg", 1, Scheme::Digest0),
        ("gst-rtmp2sink", 16, Scheme::Simple),
        ("librtmp", 16, Scheme::Simple),
        ("node-media-server", 1, Scheme::Simple),
    ] {
        let input = fixture(&format!("{name}.c2s.bin"));
        for piece in [1, 137, 4096, input.len()] {
            let mut server = ServerSession::new(ServerConfig::default());
            let events = serve(&mut server, &input, piece, Decision::Accept);
            let want = Counts {
                video: 122,
                audio: 190,
                data,
                unpublished: 1,
            };
            assert_eq!(count(&events), want, "{name} in {piece}-byte pieces");
            let connect = events.iter().find_map(|e| match e {
                ServerEvent::ConnectRequested { app, .. } => Some(app.clone()),
                _ => None,
            });
            assert_eq!(connect.as_deref(), Some("live"), "{name}");
            let publish = events.iter().find_map(|e| match e {
                ServerEvent::PublishRequested { stream_key, mode, .. } => Some((stream_key.clone(), *mode)),
                _ => None,
            });
            assert_eq!(publish, Some((name.to_owned(), PublishMode::Live)), "{name}");
            if piece == input.len() {
                let s1_version = &server.take_outbound()[5..9];
                assert_eq!(
                    s1_version == [0; 4],
                    scheme == Scheme::Simple,
                    "{name}: answered in the client's scheme"
                );
            }
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, ServerEvent::Metadata { properties, .. }
                if properties.get("width").and_then(Value::as_number) == Some(640.0))),
                "{name}: metadata"
            );
        }
    }
}

#[test]
fn the_server_answers_ffmpeg_in_the_digest_scheme() {
    let input = fixture("ffmpeg.c2s.bin");
    let mut server = ServerSession::new(ServerConfig::default());
    server.handle_input(&input[..1537]).unwrap();
    let s0s1s2 = server.take_outbound();
    assert_eq!(s0s1s2.len(), 1 + 2 * 1536);
    // S1 carries a version, as digest-scheme servers send; the simple scheme sends zeros there.
    assert_ne!(&s0s1s2[5..9], &[0, 0, 0, 0]);
}

#[test]
fn client_session_publishes_against_nginx_rtmp_answers() {
    // nginx-rtmp's bytes from a real session; the client does not check S2, so they replay. Only
    // captures whose client numbered its transactions as ours does (createStream = 4) apply.
    for name in ["ffmpeg", "librtmp"] {
        let answers = fixture(&format!("{name}.s2c.bin"));
        let mut client = ClientSession::new(ClientConfig::new("live", "rtmp://127.0.0.1/live", name));
        let mut events = Vec::new();
        for piece in answers.chunks(100) {
            match client.handle_input(piece) {
                Ok(mut more) => events.append(&mut more),
                Err(e) => panic!("{name}: {e}"),
            }
            if client.is_publishing() {
                break;
            }
        }
        assert_eq!(events.first(), Some(&ClientEvent::Connected), "{name}");
        assert!(
            events.contains(&ClientEvent::Publishing { stream_id: 1 }),
            "{name}: {events:?}"
        );
    }
}

/// Pumps bytes both ways until neither side has anything to send.
fn pump(
    client: &mut ClientSession,
    server: &mut ServerSession,
    decision: Decision,
) -> Result<Vec<ServerEvent>, SessionError> {
    let mut events = Vec::new();
    loop {
        let to_server = client.take_outbound();
        let mut new = serve(server, &to_server, to_server.len().max(1), decision);
        events.append(&mut new);
        let to_client = server.take_outbound();
        if to_server.is_empty() && to_client.is_empty() {
            return Ok(events);
        }
        client.handle_input(&to_client)?;
    }
}

#[test]
fn client_and_server_back_to_back_exchange_a_publish_byte_exactly() {
    for scheme in [Scheme::Simple, Scheme::Digest0, Scheme::Digest1] {
        let mut config = ClientConfig::new("streams", "rtmp://127.0.0.1:1935/streams", "the-key");
        config.scheme = scheme;
        config.chunk_size = 1000;
        let mut client = ClientSession::new(config);
        let mut server = ServerSession::new(ServerConfig {
            chunk_size: 333,
            ..ServerConfig::default()
        });
        let setup = pump(&mut client, &mut server, Decision::Accept).unwrap();
        assert!(client.is_publishing());
        assert!(
            matches!(&setup[0], ServerEvent::ConnectRequested { app, tc_url: Some(url), .. }
            if app == "streams" && url == "rtmp://127.0.0.1:1935/streams")
        );
        assert!(
            matches!(&setup[1], ServerEvent::PublishRequested { stream_key, mode: PublishMode::Live, .. }
            if stream_key == "the-key")
        );

        let metadata = Value::EcmaArray(vec![
            ("width".into(), Value::Number(1280.0)),
            ("encoder".into(), Value::string("test")),
        ]);
        client.send_metadata(metadata.clone()).unwrap();
        let mut sent = vec![ServerEvent::Metadata {
            timestamp: 0,
            properties: metadata,
        }];
        let mut timestamp = 0u32;
        for i in 0..300u32 {
            let len = [5, 900, 1000, 1001, 40_000][i as usize % 5];
            let payload = Bytes::from((0..len).map(|j| (i + j as u32) as u8).collect::<Vec<_>>());
            // Cross the 24-bit boundary so extended timestamps are exercised.
            timestamp = if i == 150 { 0xFF_FF00 } else { timestamp + 21 };
            if i % 3 == 0 {
                client.send_audio(timestamp, &payload).unwrap();
                sent.push(ServerEvent::Audio { timestamp, payload });
            } else {
                client.send_video(timestamp, &payload).unwrap();
                sent.push(ServerEvent::Video { timestamp, payload });
            }
        }
        client.unpublish().unwrap();
        sent.push(ServerEvent::Unpublished {
            stream_key: "the-key".into(),
        });
        let received = pump(&mut client, &mut server, Decision::Accept).unwrap();
        assert_eq!(received, sent, "{scheme:?}");
    }
}

#[test]
fn refusals_reach_the_client_as_typed_errors() {
    let mut client = ClientSession::new(ClientConfig::new("nope", "rtmp://h/nope", "k"));
    let mut server = ServerSession::new(ServerConfig::default());
    let err = pump(&mut client, &mut server, Decision::RejectConnect).unwrap_err();
    assert!(
        matches!(&err, SessionError::Refused { command: "connect", code, description }
        if code == "NetConnection.Connect.Rejected" && description == "no such app"),
        "{err}"
    );

    let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "wrong"));
    let mut server = ServerSession::new(ServerConfig::default());
    let err = pump(&mut client, &mut server, Decision::RejectPublish).unwrap_err();
    assert!(
        matches!(&err, SessionError::Refused { command: "publish", code, .. }
        if code == "NetStream.Publish.Unauthorized"),
        "{err}"
    );
    // A refused request cannot be accepted afterwards.
    assert!(server.accept_publish().is_err() && server.accept_connect().is_err());
    // Once refused, the server reads nothing more.
    assert_eq!(server.handle_input(&[0xFF; 64]).unwrap(), vec![]);
}

#[test]
fn publish_type_is_case_insensitive_and_unknown_types_are_refused() {
    let input = fixture("librtmp.c2s.bin");
    // librtmp sends "live"; the bytes are patched to "LIVE" and to "lxve" (same length, same framing).
    let publish = input.windows(7).position(|w| w == b"publish").unwrap();
    let at = publish
        + input[publish..]
            .windows(6)
            .position(|w| w == b"\x00\x04live")
            .unwrap();
    for (word, accepted) in [(&b"LIVE"[..], true), (&b"lxve"[..], false)] {
        let mut patched = input.clone();
        patched[at + 2..at + 6].copy_from_slice(word);
        let mut server = ServerSession::new(ServerConfig::default());
        let events = serve(&mut server, &patched, 4096, Decision::Accept);
        let requested = events.iter().any(|e| {
            matches!(
                e,
                ServerEvent::PublishRequested {
                    mode: PublishMode::Live,
                    ..
                }
            )
        });
        assert_eq!(requested, accepted);
        if !accepted {
            let answer = String::from_utf8_lossy(&server.take_outbound()).into_owned();
            assert!(answer.contains("NetStream.Publish.BadName"));
            assert_eq!(count(&events).video, 0);
        }
    }
}

#[test]
fn a_peer_that_floods_a_pending_request_is_cut_off() {
    let input = fixture("ffmpeg.c2s.bin");
    let mut server = ServerSession::new(ServerConfig {
        limits: oxcast_rtmp::Limits {
            max_message_size: 1 << 16,
            max_chunk_streams: 8,
            max_buffered: 1 << 16,
        },
        ..ServerConfig::default()
    });
    // Never answer the connect request: the rest of the capture must not pile up without bound.
    let mut result = Ok(Vec::new());
    for piece in input.chunks(4096) {
        result = server.handle_input(piece);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(SessionError::Flooded(_))), "{result:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// After a real handshake and connect, any bytes give events or a typed error, never a panic.
    #[test]
    fn garbage_after_a_valid_start_never_panics(garbage in prop::collection::vec(any::<u8>(), 0..4000), cut in 0usize..1600) {
        let input = fixture("gst-rtmp2sink.c2s.bin");
        let mut server = ServerSession::new(ServerConfig::default());
        let start = &input[..(3073 + cut).min(input.len())];
        let _ = serve_fallible(&mut server, start);
        let _ = serve_fallible(&mut server, &garbage);
    }

    #[test]
    fn garbage_from_the_first_byte_never_panics(garbage in prop::collection::vec(any::<u8>(), 0..5000)) {
        let mut server = ServerSession::new(ServerConfig::default());
        let _ = serve_fallible(&mut server, &garbage);
        let mut client = ClientSession::new(ClientConfig::new("a", "rtmp://h/a", "k"));
        let _ = client.handle_input(&garbage);
    }
}

fn serve_fallible(server: &mut ServerSession, input: &[u8]) -> Result<(), SessionError> {
    let mut events = server.handle_input(input)?;
    while let Some(last) = events.last() {
        match last {
            ServerEvent::ConnectRequested { .. } => server.accept_connect()?,
            ServerEvent::PublishRequested { .. } => server.accept_publish()?,
            _ => break,
        }
        events = server.handle_input(&[])?;
    }
    Ok(())
}

/// Like [`pump`], keeping every byte each side sent (handshake included) for inspection.
fn converse(client: &mut ClientSession, server: &mut ServerSession) -> (Vec<u8>, Vec<u8>) {
    let (mut to_server, mut from_server) = (Vec::new(), Vec::new());
    loop {
        let bytes = client.take_outbound();
        to_server.extend_from_slice(&bytes);
        serve(server, &bytes, bytes.len().max(1), Decision::Accept);
        let answer = server.take_outbound();
        from_server.extend_from_slice(&answer);
        if bytes.is_empty() && answer.is_empty() {
            return (to_server, from_server);
        }
        client.handle_input(&answer).unwrap();
    }
}

/// Every message in `bytes` (a peer's output after the handshake).
fn messages_in(bytes: &[u8]) -> Vec<oxcast_rtmp::Message> {
    let mut reader = oxcast_rtmp::ChunkReader::default();
    reader.feed(bytes);
    let mut out = Vec::new();
    while let Some(raw) = reader.next_message().unwrap() {
        out.push(oxcast_rtmp::Message::decode(&raw).unwrap());
    }
    out
}

#[test]
fn windows_acknowledgements_and_pings_follow_the_spec() {
    use oxcast_rtmp::Message;
    use oxcast_rtmp::message::UserControl;
    let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "k"));
    let mut server = ServerSession::new(ServerConfig {
        window_ack_size: 100_000,
        ..ServerConfig::default()
    });
    let (to_server, mut from_server) = converse(&mut client, &mut server);
    // The client answered Set Peer Bandwidth with the same window (RTMP 1.0 §5.4.5).
    assert!(messages_in(&to_server[3073..]).contains(&Message::WindowAckSize(100_000)));

    // 300 kB of media: the server acknowledges each 100 kB window with the running byte count.
    let frame = Bytes::from(vec![0x17; 10_000]);
    for i in 0..30 {
        client.send_video(i * 33, &frame).unwrap();
    }
    let media = client.take_outbound();
    serve(&mut server, &media, 4096, Decision::Accept);
    // A ping, on the control chunk stream.
    let ping = [0x02, 0, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0, 0, 6, 0, 0, 0x30, 0x39];
    serve(&mut server, &ping, ping.len(), Decision::Accept);
    from_server.extend_from_slice(&server.take_outbound());
    let answers = messages_in(&from_server[3073..]);
    let acks: Vec<u32> = answers
        .iter()
        .filter_map(|m| match m {
            Message::Acknowledgement { sequence } => Some(*sequence),
            _ => None,
        })
        .collect();
    assert!(acks.len() >= 2, "{acks:?}");
    assert!(acks.windows(2).all(|w| w[1] >= w[0] + 100_000), "{acks:?}");
    assert!(answers.contains(&Message::UserControl(UserControl::PingResponse(12345))));
}

#[test]
fn an_unreadable_data_message_does_not_end_the_publish() {
    let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "k"));
    let mut server = ServerSession::new(ServerConfig::default());
    pump(&mut client, &mut server, Decision::Accept).unwrap();
    // onTextData holding an AMF0 reference (0x07), which no encoder's metadata needs.
    let odd = Bytes::from_static(b"\x02\x00\x0aonTextData\x07\x00\x01");
    client.send_data(10, &odd).unwrap();
    client
        .send_video(20, &Bytes::from_static(&[0x17, 1, 0, 0, 0]))
        .unwrap();
    let events = pump(&mut client, &mut server, Decision::Accept).unwrap();
    assert!(matches!(&events[0], ServerEvent::Data { payload, values, .. }
        if *payload == odd && values == &[Value::string("onTextData")]));
    assert!(matches!(&events[1], ServerEvent::Video { timestamp: 20, .. }));
}

#[test]
fn reading_into_the_session_buffer_gives_the_same_events_as_feeding() {
    let input = fixture("ffmpeg.c2s.bin");
    let mut fed = ServerSession::new(ServerConfig::default());
    let want = count(&serve(&mut fed, &input, 4096, Decision::Accept));
    let mut direct = ServerSession::new(ServerConfig::default());
    let mut events = Vec::new();
    let mut rest = &input[..];
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(rest.len().min(4096));
        rest = tail;
        match direct.read_buffer() {
            Some(buffer) => {
                buffer.extend_from_slice(piece);
                direct.received(piece.len()).unwrap();
            }
            None => direct.feed(piece).unwrap(),
        }
        while let Some(event) = direct.poll().unwrap() {
            match &event {
                ServerEvent::ConnectRequested { .. } => direct.accept_connect().unwrap(),
                ServerEvent::PublishRequested { .. } => direct.accept_publish().unwrap(),
                _ => {}
            }
            events.push(event);
        }
    }
    assert_eq!(count(&events), want);
    assert_eq!(want.video, 122);
}

#[test]
fn accepting_advertises_enhanced_rtmp_and_begins_the_stream() {
    use oxcast_rtmp::Message;
    use oxcast_rtmp::message::UserControl;
    let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "k"));
    let mut server = ServerSession::new(ServerConfig::default());
    let (_, from_server) = converse(&mut client, &mut server);
    let answers = messages_in(&from_server[3073..]);
    let connect = answers
        .iter()
        .find_map(|m| match m {
            Message::Command(c) if c.name == "_result" && c.transaction_id == 1.0 => Some(c.object.clone()),
            _ => None,
        })
        .expect("connect is answered");
    let fourccs = Value::StrictArray(vec![
        Value::string("hvc1"),
        Value::string("av01"),
        Value::string("vp09"),
    ]);
    assert_eq!(connect.get("fourCcList"), Some(&fourccs), "{connect:?}");
    assert_eq!(connect.get("capsEx"), Some(&Value::Number(0.0)));
    assert!(
        connect
            .get("videoFourCcInfoMap")
            .and_then(|m| m.get("hvc1"))
            .is_some()
    );
    // Stream Begin for the published stream comes before NetStream.Publish.Start.
    let begin = answers
        .iter()
        .position(|m| *m == Message::UserControl(UserControl::StreamBegin(1)));
    let start = answers.iter().position(|m| {
        matches!(m, Message::Command(c) if c.name == "onStatus"
            && c.args.first().and_then(|i| i.get("code")).and_then(Value::as_str) == Some("NetStream.Publish.Start"))
    });
    assert!(begin.is_some() && begin < start, "{answers:?}");
}

/// Feeds `input` in `piece`-byte pieces until an error; returns it and the bytes fed until then.
fn first_error(server: &mut ServerSession, input: &[u8], piece: usize) -> (Option<SessionError>, usize) {
    let mut fed = 0;
    for bytes in input.chunks(piece) {
        fed += bytes.len();
        if let Err(e) = server.handle_input(bytes) {
            return (Some(e), fed);
        }
    }
    (None, fed)
}

fn too_large(error: &Option<SessionError>, want_size: u32, want_limit: u32) -> bool {
    matches!(error, Some(SessionError::Chunk(oxcast_rtmp::chunk::ChunkError::MessageTooLarge { size, limit }))
        if *size == want_size && *limit == want_limit)
}

/// A client and a server up to the server's `PublishRequested`, which is left unanswered.
fn up_to_publish_request(config: ServerConfig) -> (ClientSession, ServerSession) {
    let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "k"));
    let mut server = ServerSession::new(config);
    for _ in 0..10 {
        let events = serve(&mut server, &[], 1, Decision::Accept);
        assert!(events.is_empty());
        let mut batch = server.handle_input(&client.take_outbound()).unwrap();
        while let Some(ServerEvent::ConnectRequested { .. }) = batch.last() {
            server.accept_connect().unwrap();
            batch = server.handle_input(&[]).unwrap();
        }
        if let Some(ServerEvent::PublishRequested { .. }) = batch.last() {
            return (client, server);
        }
        client.handle_input(&server.take_outbound()).unwrap();
    }
    panic!("no publish request");
}

/// The hardening issue's bomb, whole: a 16 MiB data message right after the handshake. The
/// pre-publish limits refuse it from its header, before its body is buffered.
#[test]
fn a_16_mib_data_message_before_publish_is_refused_at_its_header() {
    let mut payload = vec![0x0A];
    payload.extend(((16 << 20) - 6u32).to_be_bytes());
    payload.resize((16 << 20) - 1, 0x05);
    let mut input = simple_handshake();
    input.extend(chunked(128, 3, 18, 0, &payload));
    for piece in [4096, 1 << 20] {
        let mut server = ServerSession::new(ServerConfig::default());
        let (error, fed) = first_error(&mut server, &input, piece);
        assert!(too_large(&error, (16 << 20) - 1, 65536), "{error:?}");
        // The piece holding the header (the handshake is 3073 bytes) was the last one read.
        assert!(fed <= 3073 + piece, "{fed} bytes fed");
        assert!(
            server.read_buffer().unwrap().len() <= piece,
            "nothing near 16 MiB is buffered"
        );
    }
}

/// A command of 1 MiB, right after the handshake and after an accepted `connect`.
#[test]
fn a_1_mib_command_before_publish_is_refused_at_its_header() {
    let mut command = oxcast_rtmp::amf0::encode(&[Value::string("connect"), Value::Number(1.0)]);
    command.resize(1 << 20, 0x05);
    let mut input = simple_handshake();
    input.extend(chunked(128, 3, 20, 0, &command));
    let mut server = ServerSession::new(ServerConfig::default());
    let (error, fed) = first_error(&mut server, &input, 4096);
    assert!(too_large(&error, 1 << 20, 65536), "{error:?}");
    assert!(fed <= 3073 + 4096);

    // Connected, stream created, not yet publishing: still the pre-publish limits.
    let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "k"));
    let mut server = ServerSession::new(ServerConfig::default());
    server.handle_input(&client.take_outbound()).unwrap();
    client.handle_input(&server.take_outbound()).unwrap();
    let events = server.handle_input(&client.take_outbound()).unwrap();
    assert!(matches!(
        events.last(),
        Some(ServerEvent::ConnectRequested { .. })
    ));
    server.accept_connect().unwrap();
    // The client announced 4096-byte chunks.
    let (error, _) = first_error(&mut server, &chunked(4096, 3, 20, 0, &command), 4096);
    assert!(too_large(&error, 1 << 20, 65536), "{error:?}");
}

/// Media-sized messages need an accepted publish: a 100 KiB video message from a connection that
/// is only connected is refused; the same from a publisher is delivered.
#[test]
fn the_media_limits_apply_once_a_publish_is_accepted() {
    let frame = vec![0x17; 100 << 10];
    let (_, mut server) = up_to_publish_request(ServerConfig::default());
    server
        .reject_publish(PublishRejection::Unauthorized, "no")
        .unwrap();
    let mut refused = ServerSession::new(ServerConfig::default());
    let mut input = simple_handshake();
    input.extend(chunked(4096, 6, 9, 1, &frame));
    let (error, _) = first_error(&mut refused, &input, 4096);
    assert!(too_large(&error, 100 << 10, 65536), "{error:?}");

    let (mut client, mut server) = up_to_publish_request(ServerConfig::default());
    server.accept_publish().unwrap();
    client.handle_input(&server.take_outbound()).unwrap();
    assert!(client.is_publishing());
    client.send_video(0, &Bytes::from(frame.clone())).unwrap();
    let events = serve(&mut server, &client.take_outbound(), 4096, Decision::Accept);
    assert!(matches!(&events[..], [ServerEvent::Video { payload, .. }] if payload[..] == frame[..]));
}

/// An encoder that sends its first keyframe right after `publish`, before the answer: the bytes
/// wait for the decision under the limits that follow it, and are read with them once it is taken.
#[test]
fn a_keyframe_sent_before_the_publish_decision_is_delivered_after_it() {
    // 4 MiB: over the pre-publish message limit (64 KiB) and their flood bound (192 KiB).
    let keyframe: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let metadata = oxcast_rtmp::amf0::encode(&[
        Value::string("@setDataFrame"),
        Value::string("onMetaData"),
        Value::EcmaArray(vec![("width".into(), Value::Number(1920.0))]),
    ]);
    for piece in [4096, 1 << 20, usize::MAX] {
        let (_, mut server) = up_to_publish_request(ServerConfig::default());
        // The client announced 4096-byte chunks; its publish went on message stream 1.
        let mut early = chunked(4096, 5, 18, 1, &metadata);
        early.extend(chunked(4096, 6, 9, 1, &keyframe));
        for bytes in early.chunks(piece.min(early.len())) {
            assert_eq!(
                server.handle_input(bytes).unwrap(),
                vec![],
                "nothing is read while pending"
            );
        }
        server.accept_publish().unwrap();
        let events = server.handle_input(&[]).unwrap();
        assert!(
            matches!(&events[0], ServerEvent::Metadata { properties, .. }
                if properties.get("width").and_then(Value::as_number) == Some(1920.0)),
            "{events:?}"
        );
        assert!(
            matches!(&events[1..], [ServerEvent::Video { payload, .. }] if payload[..] == keyframe[..]),
            "piece {piece}"
        );
    }
}

/// While a publish is decided the bound is the media limits', not none: a peer that keeps
/// sending past them is still cut off.
#[test]
fn a_peer_that_floods_a_pending_publish_is_cut_off() {
    let limits = oxcast_rtmp::Limits {
        max_message_size: 1 << 20,
        max_chunk_streams: 16,
        max_buffered: 1 << 20,
    };
    let (_, mut server) = up_to_publish_request(ServerConfig {
        limits,
        ..ServerConfig::default()
    });
    let flood = chunked(4096, 6, 9, 1, &vec![0x17; 1 << 20]).repeat(4);
    let (error, fed) = first_error(&mut server, &flood, 4096);
    assert!(matches!(error, Some(SessionError::Flooded(_))), "{error:?}");
    assert!(fed > 2 << 20 && fed <= (2 << 20) + 2 * 4096, "{fed}");
}

/// A relay destination is another server: it sends control messages and short commands. A huge
/// message, or several large ones at once, is refused by the client's small default limits.
#[test]
fn a_destination_that_sends_a_huge_message_is_refused() {
    use oxcast_rtmp::chunk::ChunkError;
    let answers = fixture("ffmpeg.s2c.bin");
    let s0s1s2 = &answers[..3073];
    for (input, want) in [
        (
            // The largest length a header can declare (24 bits).
            chunked(128, 3, 20, 0, &vec![0x05; (16 << 20) - 1]),
            ChunkError::MessageTooLarge {
                size: (16 << 20) - 1,
                limit: 256 << 10,
            },
        ),
        (
            // Three 200 KiB messages started together: 600 KiB in progress.
            [3u32, 4, 5]
                .iter()
                .flat_map(|csid| chunked(128, *csid, 20, 0, &vec![0x05; 200 << 10])[..140].to_vec())
                .collect(),
            ChunkError::BufferLimit(512 << 10),
        ),
    ] {
        let mut client = ClientSession::new(ClientConfig::new("live", "rtmp://h/live", "k"));
        client.handle_input(s0s1s2).unwrap();
        let error = input
            .chunks(4096)
            .find_map(|piece| client.handle_input(piece).err());
        assert_eq!(error, Some(SessionError::Chunk(want)));
    }
}

/// Sessions given one `SharedBudget` draw their messages in progress from it, are refused with a
/// typed error when it is spent, and give back what they held when they end.
#[test]
fn sessions_share_one_budget_and_give_it_back() {
    use oxcast_rtmp::SharedBudget;
    use oxcast_rtmp::chunk::ChunkError;
    let budget = SharedBudget::new(1 << 20);
    let publisher = |budget: &SharedBudget| {
        let mut client = ClientSession::new(ClientConfig::new("streams", "rtmp://h/streams", "k"));
        let mut server = ServerSession::with_budget(ServerConfig::default(), budget.clone());
        pump(&mut client, &mut server, Decision::Accept).unwrap();
        assert!(client.is_publishing());
        (client, server)
    };
    let (mut first, mut first_server) = publisher(&budget);
    let (mut second, mut second_server) = publisher(&budget);
    assert_eq!(budget.in_use(), 0);

    // The first publisher's 800 KiB keyframe is half there: all of it is reserved.
    first.send_video(0, &Bytes::from(vec![0x17; 800 << 10])).unwrap();
    let keyframe = first.take_outbound();
    assert_eq!(first_server.handle_input(&keyframe[..400 << 10]).unwrap(), vec![]);
    assert_eq!(budget.in_use(), 800 << 10);

    // The second one's 300 KiB frame does not fit beside it.
    second.send_video(0, &Bytes::from(vec![0x27; 300 << 10])).unwrap();
    let frame = second.take_outbound();
    let error = second_server.handle_input(&frame).unwrap_err();
    assert_eq!(
        error,
        SessionError::Chunk(ChunkError::SharedBudgetFull {
            size: 300 << 10,
            max_bytes: 1 << 20
        })
    );
    assert!(error.to_string().contains("server-wide budget"), "{error}");
    assert_eq!(budget.in_use(), 800 << 10);

    // The keyframe completes: given back. A third publisher's frame fits.
    let events = first_server.handle_input(&keyframe[400 << 10..]).unwrap();
    assert!(matches!(&events[..], [ServerEvent::Video { payload, .. }] if payload.len() == 800 << 10));
    assert_eq!(budget.in_use(), 0);
    let (mut third, mut third_server) = publisher(&budget);
    third.send_video(0, &Bytes::from(vec![0x27; 300 << 10])).unwrap();
    let frame = third.take_outbound();
    // Its first 4096-byte chunk (the client's chunk size) is reserved as soon as it is read.
    third_server.handle_input(&frame[..5000]).unwrap();
    assert_eq!(budget.in_use(), 300 << 10);
    // A session dropped mid-message gives its share back.
    drop(third_server);
    assert_eq!(budget.in_use(), 0);
}
