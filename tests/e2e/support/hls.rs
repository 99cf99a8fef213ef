//! HLS as a player sees it: the playlist of a stream's `default hls` output, fetched, parsed and
//! checked against RFC 8216, and its segments read with an independent TS reader (`mpeg2ts`).

use std::time::Duration;

use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};
use serde_json::Value;

use super::wait_until;

/// The `default hls` output's URL.
pub fn hls_url(stream: &Value) -> String {
    let outputs = stream["outputs"].as_array().unwrap();
    let hls = outputs.iter().find(|o| o["type"] == "hls").unwrap();
    hls["uri"].as_str().unwrap().to_owned()
}

/// A media playlist as fetched; its `Debug` is its text, as a failure shows it.
pub struct Listing {
    pub text: String,
    pub target: u64,
    pub sequence: u64,
    /// (duration, URI relative to the playlist, preceded by EXT-X-DISCONTINUITY)
    pub segments: Vec<(f64, String, bool)>,
    pub ended: bool,
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Fetches and parses a media playlist, checking the headers players rely on.
pub fn fetch_playlist(url: &str) -> Option<Listing> {
    let res = reqwest::blocking::get(url).unwrap();
    if res.status() == 404 {
        return None;
    }
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers["cache-control"].to_str().unwrap().contains("max-age=1"));
    let text = res.text().unwrap();
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    let mut listing = Listing {
        text: text.clone(),
        target: 0,
        sequence: 0,
        segments: Vec::new(),
        ended: false,
    };
    let mut duration = None;
    let mut discontinuity = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            listing.target = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            listing.sequence = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            listing.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            listing.segments.push((
                duration.take().expect("EXTINF before each URI"),
                line.to_owned(),
                discontinuity,
            ));
            discontinuity = false;
        }
    }
    Some(listing)
}

/// How often a playlist is fetched while waiting for it.
const POLL: Duration = Duration::from_millis(200);

/// Waits until the playlist at `url` is served and `ready` says it is what was awaited (`what`);
/// after `limit`, fails showing the last version seen.
pub fn wait_playlist(url: &str, what: &str, limit: Duration, ready: impl Fn(&Listing) -> bool) -> Listing {
    wait_until(
        &format!("playlist {url}: {what}"),
        limit,
        POLL,
        || match fetch_playlist(url) {
            Some(listing) if ready(&listing) => Ok(listing),
            seen => Err(seen),
        },
    )
}

/// Waits until the playlist lists at least `count` segments.
pub fn wait_segments(url: &str, count: usize, limit: Duration) -> Listing {
    wait_playlist(url, &format!("at least {count} segments"), limit, |l| {
        l.segments.len() >= count
    })
}

/// Waits until the playlist is ended (`#EXT-X-ENDLIST`).
pub fn wait_ended(url: &str, limit: Duration) -> Listing {
    wait_playlist(url, "ended", limit, |l| l.ended)
}

/// RFC 8216 rules on one version of the playlist, and every segment fetched and read: PAT and
/// PMT first, then a PES that opens with a keyframe.
pub fn check_playlist_and_segments(url: &str, listing: &Listing) {
    let base = url.rsplit_once('/').unwrap().0;
    for (i, (duration, uri, _)) in listing.segments.iter().enumerate() {
        assert!(
            duration.round() as u64 <= listing.target,
            "EXTINF {duration} over target {}",
            listing.target
        );
        let expected = format!(
            "{}{}.ts",
            uri.rsplit_once('/').unwrap().0.to_owned() + "/",
            listing.sequence + i as u64
        );
        assert_eq!(uri, &expected, "segment URIs follow the media sequence");
        let res = reqwest::blocking::get(format!("{base}/{uri}")).unwrap();
        assert_eq!(res.status(), 200, "listed segment {uri} is fetchable");
        assert_eq!(res.headers()["content-type"], "video/mp2t");
        let data = res.bytes().unwrap();
        check_segment(&data);
    }
}

/// Reads a segment with an independent TS reader.
pub fn check_segment(data: &[u8]) {
    assert_eq!(data.len() % 188, 0);
    let mut reader = TsPacketReader::new(data);
    let first = reader.read_ts_packet().unwrap().unwrap();
    assert!(
        matches!(first.payload, Some(TsPayload::Pat(_))),
        "segment starts with PAT"
    );
    let second = reader.read_ts_packet().unwrap().unwrap();
    let Some(TsPayload::Pmt(pmt)) = second.payload else {
        panic!("then PMT")
    };
    // H.264 in the program: the segment's first PES must be a video keyframe, whatever else it holds.
    let has_video = pmt
        .es_info
        .iter()
        .any(|es| es.stream_type == mpeg2ts::es::StreamType::H264);
    let first_pes = std::iter::from_fn(|| reader.read_ts_packet().unwrap())
        .find(|p| matches!(p.payload, Some(TsPayload::PesStart(_))))
        .expect("a segment holds media");
    let Some(TsPayload::PesStart(pes)) = &first_pes.payload else {
        unreachable!()
    };
    if has_video {
        assert_eq!(pes.header.stream_id.as_u8(), 0xE0, "the first PES is video");
        let random_access = first_pes
            .adaptation_field
            .as_ref()
            .is_some_and(|a| a.random_access_indicator);
        assert!(random_access, "the first video PES is a keyframe");
    }
}
