//! A minimal RTMP ingest built on `ServerSession` over std TCP, for interoperability tests and for
//! trying an encoder by hand: it accepts every publish and, when the publisher stops, prints what
//! it received.
//!
//! ```text
//! cargo run -p oxcast-rtmp --example count_server -- 127.0.0.1:1935
//! ffmpeg -re -i input.flv -c copy -f flv rtmp://127.0.0.1:1935/streams/key
//! ```
//!
//! Output, one line each: `listening on ADDR`, then per publish
//! `published app=APP key=KEY video_messages=N audio_messages=N data_messages=N video_frames=N audio_frames=N`.
//! Frames exclude the codec configuration and end-of-sequence messages, so they compare with the
//! packet counts ffprobe reports for the source.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use oxcast_rtmp::{ServerConfig, ServerEvent, ServerSession, SessionError};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1935".to_owned());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            if let Err(e) = serve(stream) {
                eprintln!("{peer}: {e}");
            }
        });
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    app: String,
    key: String,
    video_messages: usize,
    audio_messages: usize,
    data_messages: usize,
    video_frames: usize,
    audio_frames: usize,
}

impl Counts {
    fn report(&self) {
        println!(
            "published app={} key={} video_messages={} audio_messages={} data_messages={} video_frames={} audio_frames={}",
            self.app,
            self.key,
            self.video_messages,
            self.audio_messages,
            self.data_messages,
            self.video_frames,
            self.audio_frames
        );
        let _ = std::io::stdout().flush();
    }
}

/// Legacy FLV video tag: codec id in the low nibble of byte 0 (7 = AVC); for AVC, byte 1 is the
/// packet type (0 configuration, 1 frame, 2 end of sequence). Enhanced RTMP sets bit 7 of byte 0 and
/// puts the packet type in its low nibble (0 sequence start, 1/3 coded frames, 2 sequence end).
fn is_video_frame(payload: &[u8]) -> bool {
    match payload {
        [b0, ..] if b0 & 0x80 != 0 => matches!(b0 & 0x0F, 1 | 3),
        [b0, b1, ..] if b0 & 0x0F == 7 => *b1 == 1,
        [_, ..] => true,
        [] => false,
    }
}

/// FLV audio tag: sound format in the high nibble (10 = AAC); for AAC byte 1 is 0 for the
/// AudioSpecificConfig and 1 for a frame.
fn is_audio_frame(payload: &[u8]) -> bool {
    match payload {
        [b0, b1, ..] if b0 >> 4 == 10 => *b1 == 1,
        [_, ..] => true,
        [] => false,
    }
}

fn serve(mut stream: TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    // A client that says nothing for this long is gone.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut session = ServerSession::new(ServerConfig::default());
    let mut counts = Counts::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            if !counts.key.is_empty() {
                counts.report();
            }
            return Ok(());
        }
        let mut events = session.handle_input(buf.get(..n).unwrap_or_default())?;
        while !events.is_empty() {
            let mut decided = false;
            for event in events.drain(..) {
                decided |= on_event(&mut session, &mut counts, event)?;
            }
            flush(&mut session, &mut stream)?;
            if decided {
                events = session.handle_input(&[])?;
            }
        }
        flush(&mut session, &mut stream)?;
    }
}

/// Handles one event; true when it was a request that was just answered.
fn on_event(
    session: &mut ServerSession,
    counts: &mut Counts,
    event: ServerEvent,
) -> Result<bool, SessionError> {
    match event {
        ServerEvent::ConnectRequested { app, .. } => {
            counts.app = app;
            session.accept_connect()?;
            return Ok(true);
        }
        ServerEvent::PublishRequested { stream_key, .. } => {
            counts.key = stream_key;
            session.accept_publish()?;
            return Ok(true);
        }
        ServerEvent::Video { payload, .. } => {
            counts.video_messages += 1;
            counts.video_frames += usize::from(is_video_frame(&payload));
        }
        ServerEvent::Audio { payload, .. } => {
            counts.audio_messages += 1;
            counts.audio_frames += usize::from(is_audio_frame(&payload));
        }
        ServerEvent::Metadata { .. } | ServerEvent::Data { .. } => counts.data_messages += 1,
        ServerEvent::Unpublished { .. } => {
            counts.report();
            *counts = Counts {
                app: std::mem::take(&mut counts.app),
                ..Counts::default()
            };
        }
    }
    Ok(false)
}

fn flush(session: &mut ServerSession, stream: &mut TcpStream) -> std::io::Result<()> {
    while let Some(bytes) = session.outbound().pop() {
        stream.write_all(&bytes)?;
    }
    Ok(())
}
