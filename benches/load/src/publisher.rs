//! One publisher: a TCP connection driven by `oxcast_rtmp::ClientSession`, replaying the source
//! file's tags at their timestamps (real time), looping it with the timestamps carried on.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oxcast_rtmp::{ClientConfig, ClientSession, amf0};

use crate::source::{AUDIO, Role, SCRIPT, Source, VIDEO};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// A write the server does not take within this long is a stall: an error.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one publisher goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `host:port`.
    pub(crate) host: String,
    pub(crate) app: String,
    pub(crate) key: String,
}

/// A keyframe as the server got it: when its first byte went to the socket and when its last did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyframeSent {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct PublisherReport {
    pub(crate) published: bool,
    pub(crate) error: Option<String>,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    /// The furthest a message went out behind its due time (the server not reading fast enough,
    /// or this machine too busy to keep time).
    pub(crate) max_lag: Duration,
    pub(crate) keyframes: Vec<KeyframeSent>,
    /// When the publisher stopped sending media.
    pub(crate) stopped: Option<Instant>,
}

/// Publishes from `start` until `end`, then unpublishes.
pub(crate) fn run(target: &Target, source: &Source, start: Instant, end: Instant) -> PublisherReport {
    let mut report = PublisherReport::default();
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    if let Err(e) = publish(target, source, start, end, &mut report) {
        report.error = Some(format!("{}: {e}", target.key));
    }
    report.stopped.get_or_insert_with(Instant::now);
    report
}

fn publish(
    target: &Target,
    source: &Source,
    start: Instant,
    end: Instant,
    report: &mut PublisherReport,
) -> Result<(), String> {
    let addr = target
        .host
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", target.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", target.host))?;
    let mut socket =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    socket
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let reader = socket.try_clone().map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reading = std::thread::spawn(move || read_socket(reader, &tx));

    let result = stream(target, source, start, end, &mut socket, &rx, report);
    report.stopped.get_or_insert_with(Instant::now);
    // The reader thread ends when the connection does.
    let _ = socket.shutdown(Shutdown::Both);
    let _ = reading.join();
    result
}

fn read_socket(mut socket: TcpStream, tx: &mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 || tx.send(buf.get(..n).unwrap_or_default().to_vec()).is_err() {
            break;
        }
    }
}

/// Feeds whatever the server sent so far; a closed connection is an error.
fn take_input(session: &mut ClientSession, rx: &mpsc::Receiver<Vec<u8>>) -> Result<(), String> {
    loop {
        match rx.try_recv() {
            Ok(bytes) => {
                session
                    .handle_input(&bytes)
                    .map_err(|e| format!("server said: {e}"))?;
            }
            Err(mpsc::TryRecvError::Empty) => return Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err("the server closed the connection".to_owned());
            }
        }
    }
}

fn flush(session: &mut ClientSession, socket: &mut TcpStream) -> Result<usize, String> {
    if session.outbound().is_empty() {
        return Ok(0);
    }
    let bytes = session.take_outbound();
    socket.write_all(&bytes).map_err(|e| format!("send: {e}"))?;
    Ok(bytes.len())
}

fn stream(
    target: &Target,
    source: &Source,
    start: Instant,
    end: Instant,
    socket: &mut TcpStream,
    rx: &mpsc::Receiver<Vec<u8>>,
    report: &mut PublisherReport,
) -> Result<(), String> {
    let tc_url = format!("rtmp://{}/{}", target.host, target.app);
    let mut session = ClientSession::new(ClientConfig::new(&target.app, &tc_url, &target.key));
    let deadline = Instant::now() + PUBLISH_TIMEOUT;
    while !session.is_publishing() {
        flush(&mut session, socket)?;
        let wait = deadline.saturating_duration_since(Instant::now());
        let bytes = match rx.recv_timeout(wait) {
            Ok(bytes) => bytes,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err("no NetStream.Publish.Start within 10 s".into());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the server closed the connection before publishing started".into());
            }
        };
        session
            .handle_input(&bytes)
            .map_err(|e| format!("publish refused: {e}"))?;
    }
    report.published = true;
    // Media timestamps start at 0 when publishing starts, as an encoder's do.
    let media_start = Instant::now().max(start);
    let mut last_due = media_start;
    'passes: for pass in 0u64.. {
        let offset = pass * u64::from(source.pass_ms);
        for tag in &source.tags {
            if pass > 0 && tag.role == Role::Header {
                continue;
            }
            let ts = offset + u64::from(tag.timestamp);
            // Files interleave audio and video only roughly in time: a tag a few milliseconds
            // older than the one before it is due at once, not late.
            let due = (media_start + Duration::from_millis(ts)).max(last_due);
            last_due = due;
            if due >= end {
                break 'passes;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            take_input(&mut session, rx)?;
            // RTMP timestamps are 32 bits and wrap (§5.3.1.3); a run never gets near that.
            let ts = ts as u32;
            let sent = match tag.kind {
                AUDIO => session.send_audio(ts, &tag.body),
                VIDEO => session.send_video(ts, &tag.body),
                SCRIPT => match amf0::read_all(&tag.body) {
                    // The file holds `onMetaData` and its properties; a publisher sends them under
                    // `@setDataFrame` so the server keeps them for players.
                    Ok(values) => match values.get(1) {
                        Some(properties) => session.send_metadata(properties.clone()),
                        None => continue,
                    },
                    Err(_) => continue,
                },
                _ => continue,
            };
            sent.map_err(|e| format!("send: {e}"))?;
            let began = Instant::now();
            report.bytes += flush(&mut session, socket)? as u64;
            report.messages += 1;
            let done = Instant::now();
            report.max_lag = report.max_lag.max(done.saturating_duration_since(due));
            if tag.role == Role::Keyframe {
                report.keyframes.push(KeyframeSent {
                    start: began,
                    end: done,
                });
            }
        }
    }
    report.stopped = Some(Instant::now());
    take_input(&mut session, rx)?;
    session.unpublish().map_err(|e| format!("unpublish: {e}"))?;
    flush(&mut session, socket)?;
    // Let the server take the unpublish before the connection goes.
    let _ = rx.recv_timeout(Duration::from_millis(200));
    Ok(())
}
