//! A stream's codec configurations, and the one rule for when a configuration event changes them.

use std::sync::Arc;

use crate::frame::MediaEvent;
use crate::{AacConfig, AvcConfig};

/// The codec configurations of a stream (or of a file made from it); a track is present when its
/// configuration is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracks {
    pub video: Option<Arc<AvcConfig>>,
    pub audio: Option<Arc<AacConfig>>,
}

impl Tracks {
    /// Takes in a configuration event; true when it changed its track's configuration. The same
    /// configuration again (encoders repeat theirs, and a late subscriber is handed the current
    /// ones) changes nothing. A frame changes nothing either.
    pub fn update(&mut self, event: &MediaEvent) -> bool {
        match event {
            MediaEvent::VideoConfig(config) => replace(&mut self.video, config),
            MediaEvent::AudioConfig(config) => replace(&mut self.audio, config),
            MediaEvent::Frame(_) => false,
        }
    }
}

fn replace<T: PartialEq>(current: &mut Option<Arc<T>>, config: &Arc<T>) -> bool {
    if current.as_deref() == Some(&**config) {
        return false;
    }
    *current = Some(Arc::clone(config));
    true
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{Frame, Track};

    fn audio(raw: &'static [u8]) -> MediaEvent {
        MediaEvent::AudioConfig(Arc::new(AacConfig::parse(Bytes::from_static(raw)).unwrap()))
    }

    #[test]
    fn a_configuration_changes_the_tracks_once() {
        // AAC-LC stereo at 44.1 kHz, then at 48 kHz.
        let mut tracks = Tracks::default();
        let first = audio(&[0x12, 0x10]);
        assert!(tracks.update(&first), "a track appears");
        assert!(tracks.audio.is_some() && tracks.video.is_none());
        assert!(!tracks.update(&first), "the same configuration again");
        assert!(
            !tracks.update(&audio(&[0x12, 0x10])),
            "an equal one in another allocation"
        );
        assert!(tracks.update(&audio(&[0x11, 0x90])), "another configuration");
        assert_eq!(
            tracks.audio.as_deref().map(|c| c.raw.clone()),
            Some(Bytes::from_static(&[0x11, 0x90]))
        );
    }

    #[test]
    fn frames_change_nothing() {
        let mut tracks = Tracks::default();
        let frame = Frame {
            track: Track::Video,
            dts: 0,
            pts: 0,
            keyframe: true,
            data: Bytes::new(),
        };
        assert!(!tracks.update(&MediaEvent::Frame(frame)));
        assert_eq!(tracks, Tracks::default());
    }
}
