//! The FLV file every publisher replays: its tags, and how long one pass lasts so that a loop can
//! carry the timestamps on without a jump.

use bytes::Bytes;
use oxcast_media::flv::{AudioTag, FileTag, VideoTag, file_tags, parse_audio, parse_video};

/// FLV tag types (Adobe FLV v10.1 §E.4.1).
pub(crate) const AUDIO: u8 = 8;
pub(crate) const VIDEO: u8 = 9;
pub(crate) const SCRIPT: u8 = 18;

/// What a tag is, as far as replay cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `onMetaData` and the codec configurations: sent on the first pass only, as an encoder sends
    /// them once per publish.
    Header,
    Keyframe,
    Frame,
}

#[derive(Debug, Clone)]
pub(crate) struct Tag {
    pub(crate) kind: u8,
    pub(crate) timestamp: u32,
    pub(crate) body: Bytes,
    pub(crate) role: Role,
}

/// One pass over the file.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) tags: Vec<Tag>,
    /// Milliseconds from the first tag of one pass to the first tag of the next.
    pub(crate) pass_ms: u32,
    /// Media bytes (audio + video tag bodies) of one pass, for the bit rate.
    pub(crate) media_bytes: u64,
    /// Milliseconds between the first two keyframes (the pass length if there is one).
    pub(crate) gop_ms: u32,
}

impl Source {
    pub(crate) fn read(path: &std::path::Path) -> Result<Self, String> {
        let file = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let tags = file_tags(&Bytes::from(file)).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_tags(tags).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn from_tags(file: Vec<FileTag>) -> Result<Self, String> {
        let mut tags = Vec::with_capacity(file.len());
        let mut video_ts = Vec::new();
        let mut media_bytes = 0u64;
        for tag in file {
            let role = match tag.kind {
                VIDEO => match parse_video(&tag.body) {
                    Ok(VideoTag::Frame { keyframe, .. }) => {
                        video_ts.push(tag.timestamp);
                        if keyframe { Role::Keyframe } else { Role::Frame }
                    }
                    Ok(VideoTag::SequenceStart { .. }) => Role::Header,
                    // The end-of-sequence packet would end the stream mid-loop; an encoder that
                    // keeps going never sends it.
                    _ => continue,
                },
                AUDIO => match parse_audio(&tag.body) {
                    Ok(AudioTag::AacConfig(_)) => Role::Header,
                    _ => Role::Frame,
                },
                SCRIPT => Role::Header,
                _ => continue,
            };
            if tag.kind != SCRIPT {
                media_bytes += tag.body.len() as u64;
            }
            tags.push(Tag {
                kind: tag.kind,
                timestamp: tag.timestamp,
                body: tag.body,
                role,
            });
        }
        if !tags.iter().any(|t| t.role == Role::Keyframe) {
            return Err("no H.264 keyframe in the file".to_owned());
        }
        // A pass lasts from the first video frame to one frame step past the last one, so the next
        // pass's first frame follows at the usual spacing.
        let (Some(&first), Some(&last)) = (video_ts.first(), video_ts.last()) else {
            return Err("no video frames".to_owned());
        };
        let steps = (video_ts.len() as u64).saturating_sub(1).max(1);
        let span = u64::from(last.saturating_sub(first));
        let pass_ms = (span + (span + steps / 2) / steps).max(1);
        let pass_ms = u32::try_from(pass_ms).map_err(|_| "the file is too long".to_owned())?;
        let mut keyframes = tags
            .iter()
            .filter(|t| t.role == Role::Keyframe)
            .map(|t| t.timestamp);
        let gop_ms = match (keyframes.next(), keyframes.next()) {
            (Some(a), Some(b)) => b.saturating_sub(a).max(1),
            _ => pass_ms,
        };
        Ok(Self {
            tags,
            pass_ms,
            media_bytes,
            gop_ms,
        })
    }

    /// Media bit rate of the file, bits per second.
    pub(crate) fn bitrate(&self) -> f64 {
        self.media_bytes as f64 * 8.0 * 1000.0 / f64::from(self.pass_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_loops_after_four_seconds() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/rtmp/source.flv"
        );
        let source = Source::read(std::path::Path::new(path)).unwrap();
        // 120 frames at 30 fps.
        assert_eq!(source.pass_ms, 4000);
        let keyframes = source.tags.iter().filter(|t| t.role == Role::Keyframe).count();
        assert_eq!(keyframes, 4, "a keyframe every second");
        assert_eq!(source.gop_ms, 1000);
        // onMetaData, the AVC and AAC configurations; the end of sequence is left out.
        let headers = source.tags.iter().filter(|t| t.role == Role::Header).count();
        assert_eq!(headers, 3);
        assert_eq!(source.tags.len(), 3 + 120 + 189);
    }
}
