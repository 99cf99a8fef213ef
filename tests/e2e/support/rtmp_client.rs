//! An RTMP client of the tests' own, for publishers no encoder imitates: a chosen source address
//! (127.0.0.2 is another peer on loopback), chosen timestamps and frames, raw messages before any
//! publish. Blocking sockets; `oxcast_rtmp::ClientSession` speaks the protocol.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oxcast_rtmp::{ClientConfig, ClientSession};

/// The usual peer address; 127.0.0.2 and the like are others on loopback.
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A TCP connection to the server's RTMP port from `source` (any port).
pub fn connect_from(source: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(
        &SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port).into(),
        Duration::from_secs(5),
    )?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// The simple handshake (RTMP 1.0 §5.2): C0+C1, read S0+S1+S2, C2 echoing S1.
pub fn handshake(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut c0c1 = vec![0u8; 1 + 1536];
    c0c1[0] = 3;
    stream.write_all(&c0c1)?;
    let mut s = vec![0u8; 1 + 1536 + 1536];
    stream.read_exact(&mut s)?;
    stream.write_all(&s[1..1 + 1536])
}

/// One message in chunks of `chunk_size` (type-0 header, then type-3 continuations).
pub fn message(
    csid: u32,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &[u8],
    chunk_size: u32,
) -> Vec<u8> {
    oxcast_rtmp::chunk::single_message(chunk_size, csid, timestamp, type_id, stream_id, payload)
}

/// A publishing connection.
pub struct Publisher {
    stream: TcpStream,
    session: ClientSession,
}

impl Publisher {
    /// Publishes to `stream` (an API stream object) from 127.0.0.1; panics if the server refuses.
    pub fn to_stream(server: &crate::support::Server, stream: &serde_json::Value) -> Publisher {
        let key = stream["input"]["stream_key"].as_str().expect("a stream key");
        Publisher::start(LOCALHOST, server.rtmp_port, key)
            .unwrap_or_else(|e| panic!("publishing to {}: {e}", stream["id"]))
    }

    /// Connects from `source`, publishes to `streams/<key>`, and returns once the server accepted.
    pub fn start(source: IpAddr, port: u16, key: &str) -> Result<Publisher, String> {
        let mut stream = connect_from(source, port).map_err(|e| format!("connect: {e}"))?;
        let tc_url = format!("rtmp://127.0.0.1:{port}/streams");
        let mut session = ClientSession::new(ClientConfig::new("streams", &tc_url, key));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 16 * 1024];
        while !session.is_publishing() {
            if Instant::now() > deadline {
                return Err("not publishing after 10 s".into());
            }
            stream
                .write_all(&session.take_outbound())
                .map_err(|e| format!("write: {e}"))?;
            let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            session
                .handle_input(&buf[..n])
                .map_err(|e| format!("refused: {e}"))?;
        }
        stream
            .write_all(&session.take_outbound())
            .map_err(|e| format!("write: {e}"))?;
        Ok(Publisher { stream, session })
    }

    /// An FLV video tag body at `timestamp`.
    pub fn video(&mut self, timestamp: u32, body: &Bytes) -> std::io::Result<()> {
        self.session
            .send_video(timestamp, body)
            .map_err(std::io::Error::other)?;
        self.flush()
    }

    /// An FLV audio tag body at `timestamp`.
    pub fn audio(&mut self, timestamp: u32, body: &Bytes) -> std::io::Result<()> {
        self.session
            .send_audio(timestamp, body)
            .map_err(std::io::Error::other)?;
        self.flush()
    }

    /// A data message (AMF0 bytes) at `timestamp`.
    pub fn data(&mut self, timestamp: u32, body: &Bytes) -> std::io::Result<()> {
        self.session
            .send_data(timestamp, body)
            .map_err(std::io::Error::other)?;
        self.flush()
    }

    /// The connection, to read what the server sends or see whether it is still open.
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Bytes as they are, past the session (a message cut short, say).
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Ends the publish (FCUnpublish, deleteStream), keeping the connection.
    pub fn unpublish(&mut self) -> std::io::Result<()> {
        self.session.unpublish().map_err(std::io::Error::other)?;
        self.flush()
    }

    /// After [`Publisher::unpublish`], publishes `key` again on the same connection (a second
    /// `createStream`, then `publish` on message stream 2), as some encoders do when they stop
    /// and start; returns once the server says `NetStream.Publish.Start`.
    pub fn publish_again(&mut self, key: &str) -> Result<(), String> {
        use oxcast_rtmp::Message;
        use oxcast_rtmp::amf0::Value;
        let command = |name: &str, txn: f64, args: Vec<Value>| {
            Message::Command(oxcast_rtmp::Command::new(name, txn, Value::Null, args)).encode()
        };
        let mut bytes = message(3, 20, 0, 0, &command("createStream", 8.0, vec![]), 4096);
        let publish = command("publish", 9.0, vec![Value::string(key), Value::string("live")]);
        bytes.extend(message(3, 20, 2, 0, &publish, 4096));
        self.stream.write_all(&bytes).map_err(|e| format!("write: {e}"))?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.windows(23).any(|w| w == b"NetStream.Publish.Start") {
            if Instant::now() > deadline {
                return Err("no NetStream.Publish.Start within 10 s".into());
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(())
    }

    /// Ends the publish (FCUnpublish, deleteStream) and closes the connection.
    pub fn finish(mut self) {
        let _ = self.unpublish();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while let Some(piece) = self.session.outbound().pop() {
            self.stream.write_all(&piece)?;
        }
        Ok(())
    }
}

/// The tags of an FLV file (kind 8 audio, 9 video, 18 data), bodies as the file's bytes.
pub fn flv_tags(path: &std::path::Path) -> Vec<oxcast_media::flv::FileTag> {
    let file = Bytes::from(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    oxcast_media::flv::file_tags(&file).unwrap()
}
