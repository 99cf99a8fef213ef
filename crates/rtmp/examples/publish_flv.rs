//! Publishes an FLV file to an RTMP server with `ClientSession` over std TCP: the relay's and the
//! load generator's client, runnable by hand.
//!
//! ```text
//! cargo run -p oxcast-rtmp --example publish_flv -- input.flv rtmp://127.0.0.1:1935/live/key [--realtime]
//! ```
//!
//! Prints `published video=N audio=N data=N` (messages sent) once the server has the whole file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oxcast_media::flv::file_tags;
use oxcast_rtmp::amf0;
use oxcast_rtmp::{ClientConfig, ClientSession};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(url)) = (args.first(), args.get(1)) else {
        return Err("usage: publish_flv FILE.flv rtmp://host[:port]/app/key [--realtime]".into());
    };
    let realtime = args.iter().any(|a| a == "--realtime");
    let tags = file_tags(&Bytes::from(std::fs::read(path)?))?;
    let (host, app, key) = split_url(url)?;

    let mut socket = TcpStream::connect(&host)?;
    socket.set_nodelay(true)?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut reader = socket.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf.get(..n).unwrap_or_default().to_vec()).is_err() {
                break;
            }
        }
    });

    let mut session = ClientSession::new(ClientConfig::new(&app, &format!("rtmp://{host}/{app}"), &key));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !session.is_publishing() {
        flush(&mut session, &mut socket)?;
        let bytes = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        session.handle_input(&bytes)?;
    }

    let start = Instant::now();
    let (mut video, mut audio, mut data) = (0, 0, 0);
    for tag in tags {
        if realtime {
            let due = Duration::from_millis(u64::from(tag.timestamp));
            std::thread::sleep(due.saturating_sub(start.elapsed()));
        }
        while let Ok(bytes) = rx.try_recv() {
            session.handle_input(&bytes)?;
        }
        match tag.kind {
            8 => {
                session.send_audio(tag.timestamp, &tag.body)?;
                audio += 1;
            }
            9 => {
                session.send_video(tag.timestamp, &tag.body)?;
                video += 1;
            }
            18 => {
                // The file holds `onMetaData` and its properties; a publisher sends them under
                // `@setDataFrame` so the server stores them for players.
                let values = amf0::read_all(&tag.body)?;
                if let Some(properties) = values.get(1) {
                    session.send_metadata(properties.clone())?;
                    data += 1;
                }
            }
            _ => {}
        }
        flush(&mut session, &mut socket)?;
    }
    session.unpublish()?;
    flush(&mut session, &mut socket)?;
    // Give the server a moment to take the unpublish before the connection goes.
    while rx.recv_timeout(Duration::from_millis(500)).is_ok() {}
    println!("published video={video} audio={audio} data={data}");
    Ok(())
}

fn flush(session: &mut ClientSession, socket: &mut TcpStream) -> std::io::Result<()> {
    while let Some(bytes) = session.outbound().pop() {
        socket.write_all(&bytes)?;
    }
    Ok(())
}

/// `rtmp://host[:port]/app/key` into `host:port`, app, key.
fn split_url(url: &str) -> Result<(String, String, String), Error> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or("the URL must start with rtmp://")?;
    let (authority, path) = rest.split_once('/').ok_or("the URL has no application")?;
    let (app, key) = path.rsplit_once('/').ok_or("the URL has no stream key")?;
    let host = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:1935")
    };
    Ok((host, app.to_owned(), key.to_owned()))
}
