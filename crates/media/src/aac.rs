//! AAC in FLV: the AudioSpecificConfig (ISO 14496-3 §1.6.2.1) and the ADTS header that MPEG-TS
//! needs in front of each raw frame (ISO 14496-3 §1.A.2.2).

use bytes::Bytes;

use crate::MediaError;

/// Sampling frequencies by index (ISO 14496-3 Table 1.18).
const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// A parsed AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The config as received, for MP4 `esds` and for relaying.
    pub raw: Bytes,
    /// Audio object type: 2 = AAC-LC, 5 = HE-AAC (SBR), 29 = HE-AACv2.
    pub object_type: u8,
    pub sample_rate_index: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

impl AacConfig {
    pub fn parse(raw: Bytes) -> Result<Self, MediaError> {
        let [b0, b1, ..] = raw[..] else {
            return Err(MediaError::Truncated("AudioSpecificConfig"));
        };
        let object_type = b0 >> 3;
        let sample_rate_index = ((b0 & 0x07) << 1) | (b1 >> 7);
        let channels = (b1 >> 3) & 0x0F;
        // Escape values (object type 31, explicit frequency 15) are not used by encoders that send
        // AAC over RTMP; refuse them rather than guess.
        if object_type == 0 || object_type == 31 {
            return Err(MediaError::InvalidAacConfig(format!(
                "audio object type {object_type}"
            )));
        }
        let sample_rate = *SAMPLE_RATES.get(usize::from(sample_rate_index)).ok_or_else(|| {
            MediaError::InvalidAacConfig(format!("sampling frequency index {sample_rate_index}"))
        })?;
        if channels == 0 || channels > 7 {
            return Err(MediaError::InvalidAacConfig(format!(
                "channel configuration {channels}"
            )));
        }
        Ok(Self {
            raw,
            object_type,
            sample_rate_index,
            sample_rate,
            channels,
        })
    }

    /// The RFC 6381 codec string, e.g. `mp4a.40.2` for AAC-LC.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The 7-byte ADTS header (no CRC) for a raw frame of `frame_len` bytes.
    pub fn adts_header(&self, frame_len: usize) -> [u8; 7] {
        let len = frame_len + 7;
        // ADTS carries the profile as object type - 1 in two bits; HE-AAC is signalled as LC with SBR.
        let profile = self.object_type.saturating_sub(1).min(3);
        [
            0xFF,
            0xF1, // MPEG-4, layer 0, no CRC
            (profile << 6) | (self.sample_rate_index << 2) | ((self.channels >> 2) & 0x01),
            ((self.channels & 0x03) << 6) | ((len >> 11) & 0x03) as u8,
            ((len >> 3) & 0xFF) as u8,
            (((len & 0x07) << 5) as u8) | 0x1F,
            0xFC, // buffer fullness 0x7FF (VBR), one raw data block
        ]
    }

    /// Samples per AAC frame: 1024 for AAC-LC.
    pub fn frame_samples(&self) -> u32 {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_48k_stereo() {
        let config = AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap();
        assert_eq!(
            (config.object_type, config.sample_rate, config.channels),
            (2, 48000, 2)
        );
        assert_eq!(config.codec_string(), "mp4a.40.2");
        // ADTS for a 100-byte frame: length 107 across bytes 3-5.
        assert_eq!(
            config.adts_header(100),
            [0xFF, 0xF1, 0x4C, 0x80, 0x0D, 0x7F, 0xFC]
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        for bad in [&[][..], &[0x11], &[0xF8, 0x00], &[0x17, 0x90], &[0x11, 0x80]] {
            assert!(AacConfig::parse(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
