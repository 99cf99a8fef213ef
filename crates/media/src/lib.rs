//! Oxcast's media model, without I/O: FLV audio/video tags as RTMP carries them (legacy and
//! Enhanced RTMP), H.264 and AAC decoder configurations, codec strings, and the [`Frame`] every
//! output consumes. Payloads stay `bytes::Bytes` slices of what the publisher sent.
//!
//! The rules every output applies to that media live here too, once: a stream's codec
//! configurations and when they change ([`Tracks`]), sane timestamps ([`TimestampGuard`]), and a
//! timeline that goes on across publishers ([`Rebaser`]).

pub mod aac;
pub mod avc;
pub mod flv;
pub mod frame;
pub mod timeline;
pub mod tracks;

pub use aac::AacConfig;
pub use avc::AvcConfig;
pub use frame::{Demuxer, Frame, MediaEvent, TimestampUnwrapper, Track};
pub use timeline::{Jump, Rebaser, TimestampGuard};
pub use tracks::Tracks;

use thiserror::Error;

/// Why a tag or configuration could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MediaError {
    #[error("{0} is truncated")]
    Truncated(&'static str),
    #[error("invalid AVC decoder configuration: {0}")]
    InvalidAvcConfig(String),
    #[error("invalid AAC AudioSpecificConfig: {0}")]
    InvalidAacConfig(String),
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        /// What a publisher sends is untrusted: every parser answers, none panics.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let bytes = Bytes::from(bytes);
            let _ = crate::flv::parse_video(&bytes);
            let _ = crate::flv::parse_audio(&bytes);
            let _ = crate::AvcConfig::parse(bytes.clone());
            let _ = crate::AacConfig::parse(bytes.clone());
            for unit in crate::avc::nal_units(&bytes, 4) {
                let _ = unit;
            }
            let mut demuxer = crate::Demuxer::new();
            let _ = demuxer.video(0, &bytes);
            let _ = demuxer.audio(0, &bytes);
        }

        /// Records with a valid header and random parameter sets: h264-reader must not panic either.
        #[test]
        fn random_parameter_sets_fail_cleanly(sps in prop::collection::vec(any::<u8>(), 1..60)) {
            let mut record = vec![1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, sps.len() as u8, 0x67];
            record.extend_from_slice(&sps);
            record.extend_from_slice(&[1, 0, 2, 0x68, 0xee]);
            let _ = crate::AvcConfig::parse(Bytes::from(record));
        }
    }
}
