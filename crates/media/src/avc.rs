//! H.264 in FLV: the AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1), its SPS (resolution,
//! profile, level; parsed with `h264-reader`), and length-prefixed NAL units.

use bytes::Bytes;
use h264_reader::avcc::AvcDecoderConfigurationRecord;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};

use crate::MediaError;

/// NAL unit types this crate cares about (ITU-T H.264 Table 7-1).
pub mod nal_type {
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// A parsed AVC decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// The record as received, for MP4 `avcC` and for relaying.
    pub record: Bytes,
    /// Bytes in each NAL unit's length prefix: 1, 2 or 4.
    pub nal_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    pub width: u32,
    pub height: u32,
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
}

impl AvcConfig {
    /// Parses a record; its first SPS must parse too, as players need the resolution.
    pub fn parse(record: Bytes) -> Result<Self, MediaError> {
        let invalid = |why: String| MediaError::InvalidAvcConfig(why);
        let parsed =
            AvcDecoderConfigurationRecord::try_from(&record[..]).map_err(|e| invalid(format!("{e:?}")))?;
        refuse_empty_parameter_sets(&record)?;
        let nal_length_size = parsed.length_size_minus_one() + 1;
        if nal_length_size == 3 {
            return Err(invalid("3-byte NAL length prefixes are not allowed".into()));
        }
        // The parameter sets are slices of the record: keep them as `Bytes` of it, without a copy.
        let slice_of = |part: &[u8]| record.slice_ref(part);
        let sps = parsed
            .sequence_parameter_sets()
            .map(|s| s.map(slice_of).map_err(|e| invalid(format!("SPS: {e:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let pps = parsed
            .picture_parameter_sets()
            .map(|p| p.map(slice_of).map_err(|e| invalid(format!("PPS: {e:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let first = sps.first().ok_or_else(|| invalid("no SPS".into()))?;
        let nal = RefNal::new(first, &[], true);
        let parsed_sps =
            SeqParameterSet::from_bits(nal.rbsp_bits()).map_err(|e| invalid(format!("SPS: {e:?}")))?;
        let (width, height) = parsed_sps
            .pixel_dimensions()
            .map_err(|e| invalid(format!("SPS: {e:?}")))?;
        Ok(Self {
            nal_length_size,
            width,
            height,
            profile_idc: parsed_sps.profile_idc.into(),
            constraint_flags: parsed_sps.constraint_flags.into(),
            level_idc: parsed_sps.level_idc,
            sps,
            pps,
            record,
        })
    }

    /// The RFC 6381 codec string: `avc1.` + profile, constraint flags and level in hex.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// h264-reader 0.9 reads the NAL header byte of every parameter set without checking that the set
/// has one, and `RefNal::new` expects one: a zero-length SPS or PPS panics it (found by the `media`
/// fuzz target). Checked here first, walking the two arrays as ISO 14496-15 §5.3.3.1 lays them out
/// (a count, then 16-bit lengths). A NAL unit is at least its header byte, so an empty one is no
/// parameter set.
fn refuse_empty_parameter_sets(record: &[u8]) -> Result<(), MediaError> {
    let truncated = || MediaError::Truncated("AVC decoder configuration");
    // `count` sets from `at`, each a 16-bit length and its bytes; gives where they end.
    let walk = |mut at: usize, count: u8, kind: &str| {
        for _ in 0..count {
            let Some(&[high, low]) = record.get(at..at + 2) else {
                return Err(truncated());
            };
            let len = usize::from(u16::from_be_bytes([high, low]));
            if len == 0 {
                return Err(MediaError::InvalidAvcConfig(format!("empty {kind}")));
            }
            at += 2 + len;
        }
        Ok(at)
    };
    // numOfSequenceParameterSets is the low 5 bits of byte 5, the SPS follow; then one byte counts
    // the PPS, which follow it.
    let sps_count = record.get(5).ok_or_else(truncated)? & 0x1F;
    let pps_at = walk(6, sps_count, "SPS")?;
    let pps_count = *record.get(pps_at).ok_or_else(truncated)?;
    walk(pps_at + 1, pps_count, "PPS")?;
    Ok(())
}

/// The NAL units of a length-prefixed frame, as slices of it (borrowed: no reference count is
/// touched per unit on the muxing path).
pub fn nal_units(data: &[u8], length_size: u8) -> NalUnits<'_> {
    NalUnits {
        data,
        at: 0,
        length_size: usize::from(length_size),
    }
}

/// Iterator over length-prefixed NAL units; a prefix that overruns the frame is an error.
#[derive(Debug)]
pub struct NalUnits<'a> {
    data: &'a [u8],
    at: usize,
    length_size: usize,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.data.len() {
            return None;
        }
        let Some(prefix) = self.data.get(self.at..self.at + self.length_size) else {
            self.at = self.data.len();
            return Some(Err(MediaError::Truncated("NAL length prefix")));
        };
        let len = prefix.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        let start = self.at + self.length_size;
        let end = start.saturating_add(len);
        if end > self.data.len() {
            self.at = self.data.len();
            return Some(Err(MediaError::Truncated("NAL unit")));
        }
        self.at = end;
        Some(Ok(self.data.get(start..end).unwrap_or_default()))
    }
}

/// The type of a NAL unit from its header byte.
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1F)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The record of `shared/fixtures/rtmp/source.flv` (x264, 640x360, High profile, level 3.0).
    pub(crate) const RECORD: &[u8] = &[
        0x01, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f,
        0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        0x01, 0x00, 0x04, 0x68, 0xef, 0xbc, 0xb0, 0xfd, 0xf8, 0xf8, 0x00,
    ];

    #[test]
    fn record_gives_resolution_and_codec_string() {
        let config = AvcConfig::parse(Bytes::from_static(RECORD)).unwrap();
        assert_eq!((config.width, config.height), (640, 360));
        assert_eq!(config.codec_string(), "avc1.64001e");
        assert_eq!(config.nal_length_size, 4);
        assert_eq!((config.sps.len(), config.pps.len()), (1, 1));
        assert_eq!(config.sps[0][0] & 0x1F, nal_type::SPS);
    }

    #[test]
    fn bad_records_are_errors() {
        for bad in [&[][..], &RECORD[..10], &[0x01, 0x64, 0, 0x1e, 0xff, 0xe0, 0]] {
            assert!(AvcConfig::parse(Bytes::copy_from_slice(bad)).is_err());
        }
    }

    /// The `media` fuzz target's first find (fuzz/corpus/media/regression-empty-parameter-set):
    /// an empty PPS at the end of a record made h264-reader index past it. An empty first SPS
    /// reached `RefNal::new` with nothing, which panics too.
    #[test]
    fn empty_parameter_sets_are_errors_not_panics() {
        let empty_pps = vec![0x01, 0x00, 0x30, 0x7e, 0x10, 0x00, 0x01, 0x00, 0x00];
        // The fixture's SPS, then two PPS: its own and an empty one.
        let empty_second_pps = [&RECORD[..34], &[2, 0, 4, 0x68, 0xef, 0xbc, 0xb0, 0, 0]].concat();
        // Two SPS: an empty one, then one whose length (0x6700) starts with an SPS header byte
        // and whose first byte is one too, so that h264-reader's checks pass; no PPS.
        let mut empty_sps = vec![0x01, 0x64, 0x00, 0x1e, 0xff, 0xe2, 0x00, 0x00, 0x67, 0x00, 0x67];
        empty_sps.resize(10 + 0x6700, 0);
        empty_sps.push(0);
        for record in [empty_pps, empty_second_pps, empty_sps] {
            assert!(
                matches!(
                    AvcConfig::parse(Bytes::from(record.clone())),
                    Err(MediaError::InvalidAvcConfig(why)) if why.starts_with("empty")
                ),
                "{record:02x?}"
            );
        }
    }

    #[test]
    fn nal_units_are_slices_and_overruns_are_errors() {
        let frame = Bytes::from_static(&[0, 0, 0, 2, 9, 0xF0, 0, 0, 0, 1, 0x65]);
        let units: Vec<_> = nal_units(&frame, 4).collect::<Result<_, _>>().unwrap();
        assert_eq!(units, [&[9, 0xF0][..], &[0x65][..]]);
        let bad = Bytes::from_static(&[0, 0, 0, 9, 1]);
        assert!(nal_units(&bad, 4).next().unwrap().is_err());
        let cut = Bytes::from_static(&[0, 0]);
        assert!(nal_units(&cut, 4).next().unwrap().is_err());
    }
}
