#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/corpus/ from the RTMP captures in shared/fixtures/rtmp/.

Run from anywhere: python3 fuzz/seed-corpus.py [FIXTURES_DIR]. The output is deterministic; rerunning
replaces the seed files but keeps the `regression-*` inputs, which are minimized fuzzer finds (the
fuzzer's other finds live in fuzz/corpus-work/, which is not committed).

Each target reads a few control bytes before its data (see the target's header comment):
  handshake       [scheme, plan x4] + peer bytes
  chunk_reader    [flags, plan x4] + chunk stream bytes (after the 3073-byte handshake)
  amf0            AMF0 bytes: the payload of one command or data message
  server_session  [mode, decisions, plan x4] + encoder bytes (mode 1: the target adds the handshake)
  client_session  [mode, plan x4] + server bytes (mode 1: the target adds S0+S1+S2; 2: small limits)
  media           [mode] + data (0: an FLV file; 1: [kind, timestamp x4, length x2, body] tags;
                  2: an AVCDecoderConfigurationRecord; 3: an AudioSpecificConfig)
A plan byte 0 delivers the rest in one piece; see fuzz/src/lib.rs.
"""

import pathlib
import struct
import sys

HANDSHAKE = 1 + 2 * 1536
HERE = pathlib.Path(__file__).resolve().parent
CLIENTS = ["ffmpeg", "gst-rtmp2sink", "librtmp", "node-media-server"]
# Message types whose payload is AMF0 (AMF3 variants carry one format byte first).
AMF0_TYPES = {18: 0, 20: 0, 15: 1, 17: 1}


def chunks(stream, timestamps=None):
    """Reads a chunk stream: yields (csid, type_id, stream id, payload if the chunk ends a message).
    Stops at the first incomplete chunk. If `timestamps` is a list, each complete message's timestamp
    is appended to it (as the crate's reader computes it: type 0 absolute, types 1-2 a delta, a type 3
    that starts a message repeats the last field)."""
    chunk_size, streams, pos = 128, {}, 0
    while pos < len(stream):
        start, first = pos, stream[pos]
        fmt, csid, pos = first >> 6, first & 0x3F, pos + 1
        if csid == 0:
            csid, pos = 64 + stream[pos], pos + 1
        elif csid == 1:
            csid, pos = 64 + stream[pos] + 256 * stream[pos + 1], pos + 2
        s = streams.setdefault(
            csid, {"len": 0, "type": 0, "sid": 0, "ext": False, "buf": b"", "left": 0, "ts": 0, "field": 0}
        )
        field = s["field"]
        if fmt <= 2:
            field = int.from_bytes(stream[pos : pos + 3], "big")
            s["ext"] = field == 0xFFFFFF
        if fmt <= 1:
            s["len"] = int.from_bytes(stream[pos + 3 : pos + 6], "big")
            s["type"] = stream[pos + 6]
        if fmt == 0:
            s["sid"] = int.from_bytes(stream[pos + 7 : pos + 11], "little")
        pos += [11, 7, 3, 0][fmt]
        if s["ext"]:
            field = int.from_bytes(stream[pos : pos + 4], "big")
            pos += 4
        if s["left"] == 0:
            s["left"], s["buf"] = s["len"], b""
            s["ts"] = field if fmt == 0 else (s["ts"] + field) & 0xFFFFFFFF
            s["field"] = field
        take = min(s["left"], chunk_size)
        if pos + take > len(stream):
            return
        s["buf"] += stream[pos : pos + take]
        s["left"] -= take
        pos += take
        done = s["left"] == 0
        if done and s["type"] == 1:
            chunk_size = struct.unpack(">I", s["buf"][:4])[0] & 0x7FFFFFFF
        if done and timestamps is not None:
            timestamps.append(s["ts"])
        yield csid, s["type"], s["sid"], s["buf"] if done else None


def messages(stream):
    """(type_id, payload) of every complete message."""
    for _, type_id, _, payload in chunks(stream):
        if payload is not None:
            yield type_id, payload


def media_messages(stream):
    """(type_id, timestamp, payload) of every complete audio (8) and video (9) message."""
    timestamps = []
    for _, type_id, _, payload in chunks(stream, timestamps):
        if payload is not None and type_id in (8, 9):
            yield type_id, timestamps[-1], payload


def tag_records(media):
    """The `media` target's mode-1 input: [kind, timestamp x4, length x2, body] per message."""
    out = bytearray()
    for type_id, timestamp, payload in media:
        assert len(payload) <= 0xFFFF
        out += bytes([type_id]) + timestamp.to_bytes(4, "big") + len(payload).to_bytes(2, "big") + payload
    return bytes(out)


def without_media(stream):
    """Every message but audio and video, chunked anew (type-0 headers, timestamp 0, the chunk size
    in force): the whole command conversation, from connect to deleteStream, in a few KiB."""
    out, chunk_size = bytearray(), 128
    for csid, type_id, stream_id, payload in chunks(stream):
        if payload is None or type_id in (8, 9):
            continue
        assert 2 <= csid <= 63
        out += bytes([csid]) + bytes(3) + len(payload).to_bytes(3, "big") + bytes([type_id])
        out += stream_id.to_bytes(4, "little")
        for at in range(0, max(len(payload), 1), chunk_size):
            if at:
                out.append(0xC0 | csid)
            out += payload[at : at + chunk_size]
        if type_id == 1:
            chunk_size = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
    return bytes(out)


def write(target, name, data):
    path = HERE / "corpus" / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def main():
    fixtures = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "shared/fixtures/rtmp"
    for target in ["handshake", "chunk_reader", "amf0", "server_session", "client_session", "media"]:
        for old in (HERE / "corpus" / target).glob("*"):
            if not old.name.startswith("regression-"):
                old.unlink()
    amf0_seen = set()
    media_seen = set()
    # Media: the start of the file every capture published (FLV header, metadata, configurations,
    # the first frames), and a cut one.
    flv = (fixtures / "source.flv").read_bytes()
    write("media", "source-flv-32k", [0] + list(flv[:32768]))
    write("media", "source-flv-cut", [0] + list(flv[:5000]))
    for client in CLIENTS:
        c2s = (fixtures / f"{client}.c2s.bin").read_bytes()
        s2c = (fixtures / f"{client}.s2c.bin").read_bytes()
        scheme = 1 if client == "ffmpeg" else 0  # ffmpeg signs C1 (digest scheme 0); the rest are simple
        # Handshake: C0+C1+C2 and the first commands in one piece and in odd pieces; nginx's S0+S1+S2.
        write("handshake", f"{client}-c2s-4k", [scheme, 0, 0, 0, 0] + list(c2s[:4096]))
        write("handshake", f"{client}-c2s-4k-pieces", [scheme, 7, 200, 1, 0] + list(c2s[:4096]))
        write("handshake", f"{client}-s2c", [scheme, 0, 0, 0, 0] + list(s2c))
        write("handshake", f"{client}-s2c-pieces", [scheme, 131, 1, 255, 0] + list(s2c))
        # Chunk reader: the chunk stream after the handshake, both directions.
        post = c2s[HANDSHAKE : HANDSHAKE + 16384]
        write("chunk_reader", f"{client}-c2s-16k", [0, 0, 0, 0, 0] + list(post))
        write("chunk_reader", f"{client}-c2s-16k-pieces", [1, 100, 200, 3, 0] + list(post))
        write("chunk_reader", f"{client}-s2c", [0, 0, 0, 0, 0] + list(s2c[HANDSHAKE:]))
        # Server session: the real session from C0 on; the same after the target's own handshake,
        # with requests accepted and in pieces; and with every request rejected.
        write("server_session", f"{client}-c2s-16k", [0, 0, 0, 0, 0, 0] + list(c2s[:16384]))
        write("server_session", f"{client}-post-16k-pieces", [1, 0, 9, 255, 60, 0] + list(post))
        write("server_session", f"{client}-post-4k-reject", [1, 0xFF, 0, 0, 0, 0] + list(post[:4096]))
        commands = without_media(c2s[HANDSHAKE:])
        write("server_session", f"{client}-commands", [1, 0, 0, 0, 0, 0] + list(commands))
        write("chunk_reader", f"{client}-commands", [0, 0, 0, 0, 0] + list(commands))
        # AMF0: every distinct command and data payload of both directions.
        for direction, stream in [("c2s", c2s[HANDSHAKE:]), ("s2c", s2c[HANDSHAKE:])]:
            for n, (type_id, payload) in enumerate(messages(stream)):
                if type_id not in AMF0_TYPES:
                    continue
                body = payload[AMF0_TYPES[type_id] :]
                if body in amf0_seen:
                    continue
                amf0_seen.add(body)
                write("amf0", f"{client}-{direction}-{n:03}-type{type_id}", body)
        # Client session: nginx-rtmp's answers, from S0 on and after the target's own S0+S1+S2, in
        # pieces, and with small limits.
        write("client_session", f"{client}-s2c", [0, 0, 0, 0, 0] + list(s2c))
        write("client_session", f"{client}-s2c-pieces", [4, 1, 130, 7, 0] + list(s2c))
        write("client_session", f"{client}-post-pieces", [1, 9, 200, 3, 0] + list(s2c[HANDSHAKE:]))
        write("client_session", f"{client}-post-small", [3, 0, 0, 0, 0] + list(s2c[HANDSHAKE:]))
        # Media: the captures' audio and video messages as the demuxer gets them. Every capture
        # carries the same file, so identical payload runs are written once.
        media = list(media_messages(c2s[HANDSHAKE:]))
        keyframes = [i for i, (t, _, p) in enumerate(media) if t == 9 and p[:2] == b"\x17\x01"]
        second = keyframes[1]
        for name, part in [("start", media[:12]), ("second-keyframe", media[second - 3 : second + 9])]:
            records = tag_records(part)
            if records not in media_seen:
                media_seen.add(records)
                write("media", f"{client}-tags-{name}", [1] + list(records))
        for type_id, _, payload in media:
            config = None
            if type_id == 9 and payload[:2] == b"\x17\x00":
                config = [2] + list(payload[5:])
            elif type_id == 8 and payload[0] >> 4 == 10 and payload[1] == 0:
                config = [3] + list(payload[2:])
            if config and bytes(config) not in media_seen:
                media_seen.add(bytes(config))
                write("media", f"{client}-config-type{type_id}", config)


if __name__ == "__main__":
    main()
