//! MPEG-2 transport stream muxing (ISO/IEC 13818-1) of H.264 and AAC, as HLS needs it (RFC 8216
//! §3.2): PAT and PMT, PES packets with PTS/DTS, PCR on the video PID, continuity counters.
//!
//! Each payload byte is copied once, from the frame's `Bytes` straight into a 188-byte packet of the
//! segment buffer. H.264 goes out as Annex B (start codes instead of length prefixes) with an access
//! unit delimiter first and the SPS/PPS before every IDR; AAC frames get an ADTS header each, and
//! several share one PES packet.

use std::sync::Arc;

use oxcast_media::avc::{nal_type, nal_unit_type, nal_units};
use oxcast_media::{AacConfig, AvcConfig, Frame, MediaError};

pub const PACKET_LEN: usize = 188;
const PAYLOAD_LEN: usize = PACKET_LEN - 4;
const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
/// 90 kHz clock; timestamps are shifted so a negative composition offset never goes below zero.
const TS_OFFSET: u64 = 126_000;
/// The PCR runs this far behind the DTS of the packet that carries it, so decoders have the
/// frame before it is due.
const PCR_DELAY: u64 = 27_000;
const TS_MASK: u64 = (1 << 33) - 1;
const START_CODE: [u8; 4] = [0, 0, 0, 1];
const AUD: [u8; 6] = [0, 0, 0, 1, nal_type::AUD, 0xF0];

/// Milliseconds to the 33-bit 90 kHz clock of PES and PCR.
fn clock90(ms: i64) -> u64 {
    (ms.wrapping_mul(90) as u64).wrapping_add(TS_OFFSET) & TS_MASK
}

/// The tracks of one program and their continuity counters.
#[derive(Debug)]
pub struct TsMuxer {
    video: Option<Arc<AvcConfig>>,
    audio: Option<Arc<AacConfig>>,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
}

impl TsMuxer {
    pub fn new(video: Option<Arc<AvcConfig>>, audio: Option<Arc<AacConfig>>) -> Self {
        Self {
            video,
            audio,
            cc_pat: 0,
            cc_pmt: 0,
            cc_video: 0,
            cc_audio: 0,
        }
    }

    /// PAT and PMT: every segment starts with them, so each can be decoded on its own.
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        // PAT: one program, number 1, whose PMT is on PMT_PID.
        let [pmt_hi, pmt_lo] = (0xE000 | PMT_PID).to_be_bytes();
        let pat = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, pmt_hi, pmt_lo,
        ];
        write_section(out, 0, &mut self.cc_pat, &pat);

        let pcr_pid = if self.video.is_some() {
            VIDEO_PID
        } else {
            AUDIO_PID
        };
        let mut pmt = Vec::with_capacity(32);
        pmt.extend_from_slice(&[0x02, 0xB0, 0x00, 0x00, 0x01, 0xC1, 0x00, 0x00]);
        pmt.extend_from_slice(&(0xE000 | pcr_pid).to_be_bytes());
        pmt.extend_from_slice(&[0xF0, 0x00]);
        for (present, stream_type, pid) in [
            (self.video.is_some(), STREAM_TYPE_H264, VIDEO_PID),
            (self.audio.is_some(), STREAM_TYPE_AAC_ADTS, AUDIO_PID),
        ] {
            if present {
                pmt.push(stream_type);
                pmt.extend_from_slice(&(0xE000 | pid).to_be_bytes());
                pmt.extend_from_slice(&[0xF0, 0x00]);
            }
        }
        // Section length: what follows the length field, CRC included.
        let section_len = (pmt.len() - 3 + 4) as u16;
        if let Some(len) = pmt.get_mut(1..3) {
            len.copy_from_slice(&(0xB000 | section_len).to_be_bytes());
        }
        write_section(out, PMT_PID, &mut self.cc_pmt, &pmt);
    }

    /// One video frame as a PES packet.
    pub fn write_video(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), MediaError> {
        let Some(config) = &self.video else { return Ok(()) };
        let units = || nal_units(&frame.data, config.nal_length_size);
        // A first pass refuses a malformed frame before any byte of it is written.
        let mut has_sps = false;
        for unit in units() {
            has_sps |= nal_unit_type(unit?) == Some(nal_type::SPS);
        }
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(16);
        pieces.push(&AUD);
        if frame.keyframe && !has_sps {
            for set in config.sps.iter().chain(&config.pps) {
                pieces.push(&START_CODE);
                pieces.push(set);
            }
        }
        for unit in units().flatten() {
            // Our own delimiter is already first; a second one would start an empty access unit.
            if nal_unit_type(unit) == Some(nal_type::AUD) {
                continue;
            }
            pieces.push(&START_CODE);
            pieces.push(unit);
        }
        let dts = clock90(frame.dts);
        let pts = clock90(frame.pts);
        let pcr = dts.wrapping_sub(PCR_DELAY) & TS_MASK;
        let pes = PesHeader {
            stream_id: 0xE0,
            pts,
            dts: (pts != dts).then_some(dts),
            sized: false,
        };
        write_pes(
            out,
            VIDEO_PID,
            &mut self.cc_video,
            &pes,
            Some(pcr),
            frame.keyframe,
            &pieces,
        );
        Ok(())
    }

    /// Several AAC frames, each with its ADTS header, as one PES packet timed by the first.
    pub fn write_audio(&mut self, frames: &[Frame], out: &mut Vec<u8>) {
        let (Some(config), Some(first)) = (&self.audio, frames.first()) else {
            return;
        };
        let headers: Vec<[u8; 7]> = frames.iter().map(|f| config.adts_header(f.data.len())).collect();
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(frames.len() * 2);
        for (header, frame) in headers.iter().zip(frames) {
            pieces.push(header);
            pieces.push(&frame.data);
        }
        let pts = clock90(first.pts);
        // Audio-only programs carry the PCR on the audio PID.
        let pcr = (self.video.is_none()).then(|| pts.wrapping_sub(PCR_DELAY) & TS_MASK);
        let pes = PesHeader {
            stream_id: 0xC0,
            pts,
            dts: None,
            sized: true,
        };
        write_pes(
            out,
            AUDIO_PID,
            &mut self.cc_audio,
            &pes,
            pcr,
            pcr.is_some(),
            &pieces,
        );
    }
}

/// The largest AAC batch a sized PES packet can hold.
pub const MAX_AUDIO_PES_PAYLOAD: usize = 65_535 - 13;

struct PesHeader {
    stream_id: u8,
    pts: u64,
    dts: Option<u64>,
    /// Audio PES packets carry their length; video ones leave it 0 (allowed for video in TS).
    sized: bool,
}

fn timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 29) & 0x0E) as u8) | 1,
        (ts >> 22) as u8,
        (((ts >> 14) & 0xFE) as u8) | 1,
        (ts >> 7) as u8,
        (((ts << 1) & 0xFE) as u8) | 1,
    ]
}

/// Copies the PES header, then a sequence of byte slices, into packets, continuing where the last
/// copy stopped.
struct Pieces<'a> {
    head: &'a [u8],
    parts: &'a [&'a [u8]],
    index: usize,
    offset: usize,
}

impl Pieces<'_> {
    fn copy_into(&mut self, out: &mut Vec<u8>, mut n: usize) {
        let head = self.head.len().min(n);
        out.extend_from_slice(self.head.get(..head).unwrap_or_default());
        self.head = self.head.get(head..).unwrap_or_default();
        n -= head;
        while n > 0 {
            let Some(part) = self.parts.get(self.index) else {
                return;
            };
            let rest = part.get(self.offset..).unwrap_or_default();
            let take = rest.len().min(n);
            out.extend_from_slice(rest.get(..take).unwrap_or_default());
            n -= take;
            self.offset += take;
            if self.offset >= part.len() {
                self.index += 1;
                self.offset = 0;
            }
        }
    }
}

fn write_pes(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    pes: &PesHeader,
    pcr: Option<u64>,
    random_access: bool,
    payload: &[&[u8]],
) {
    let payload_len: usize = payload.iter().map(|p| p.len()).sum();
    let mut header = [0u8; 19];
    let header_len = match pes.dts {
        Some(dts) => {
            header[6..9].copy_from_slice(&[0x84, 0xC0, 10]);
            header[9..14].copy_from_slice(&timestamp(3, pes.pts));
            header[14..19].copy_from_slice(&timestamp(1, dts));
            19
        }
        None => {
            header[6..9].copy_from_slice(&[0x84, 0x80, 5]);
            header[9..14].copy_from_slice(&timestamp(2, pes.pts));
            14
        }
    };
    header[..4].copy_from_slice(&[0, 0, 1, pes.stream_id]);
    let pes_len = if pes.sized {
        (header_len - 6 + payload_len).min(0xFFFF) as u16
    } else {
        0
    };
    header[4..6].copy_from_slice(&pes_len.to_be_bytes());

    let mut source = Pieces {
        head: header.get(..header_len).unwrap_or_default(),
        parts: payload,
        index: 0,
        offset: 0,
    };
    let mut remaining = header_len + payload_len;
    let mut first = true;
    out.reserve((remaining / PAYLOAD_LEN + 2) * PACKET_LEN);
    while remaining > 0 {
        // Adaptation field: PCR and random-access flag on the first packet, stuffing on the last.
        let pcr_here = if first { pcr } else { None };
        let flags = if first && random_access { 0x40 } else { 0 } | if pcr_here.is_some() { 0x10 } else { 0 };
        let mut af_len = if flags != 0 {
            1 + if pcr_here.is_some() { 6 } else { 0 }
        } else {
            0
        };
        let af_total = |af_len: usize, present: bool| if present { 1 + af_len } else { 0 };
        let mut af_present = flags != 0;
        let room = PAYLOAD_LEN - af_total(af_len, af_present);
        let take = remaining.min(room);
        let stuffing = room - take;
        if stuffing > 0 {
            if af_present {
                af_len += stuffing;
            } else if stuffing == 1 {
                af_present = true; // a lone length byte of 0
            } else {
                af_present = true;
                af_len = stuffing - 1; // flags byte plus stuffing
            }
        }
        let pusi = if first { 0x40 } else { 0 };
        let afc = if af_present { 0x30 } else { 0x10 };
        out.extend_from_slice(&[
            0x47,
            pusi | ((pid >> 8) as u8 & 0x1F),
            pid as u8,
            afc | (*cc & 0x0F),
        ]);
        *cc = (*cc + 1) & 0x0F;
        if af_present {
            out.push(af_len as u8);
            if af_len > 0 {
                out.push(flags);
                let mut written = 1;
                if let Some(base) = pcr_here {
                    out.extend_from_slice(&[
                        (base >> 25) as u8,
                        (base >> 17) as u8,
                        (base >> 9) as u8,
                        (base >> 1) as u8,
                        (((base & 1) << 7) as u8) | 0x7E,
                        0,
                    ]);
                    written += 6;
                }
                out.resize(out.len() + (af_len - written), 0xFF);
            }
        }
        source.copy_into(out, take);
        remaining -= take;
        first = false;
    }
}

/// A PSI section (PAT or PMT) with its CRC, alone in one packet.
fn write_section(out: &mut Vec<u8>, pid: u16, cc: &mut u8, section: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[
        0x47,
        0x40 | ((pid >> 8) as u8 & 0x1F),
        pid as u8,
        0x10 | (*cc & 0x0F),
        0x00,
    ]);
    *cc = (*cc + 1) & 0x0F;
    out.extend_from_slice(section);
    out.extend_from_slice(&crc32_mpeg(section).to_be_bytes());
    out.resize(start + PACKET_LEN, 0xFF);
}

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial 0xFFFFFFFF, no reflection, no final XOR.
fn crc32_mpeg(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc ^= u32::from(*byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_mpeg2_check_value() {
        assert_eq!(crc32_mpeg(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn packets_are_188_bytes_with_sync_bytes_and_rising_counters() {
        let mut muxer = TsMuxer::new(None, None);
        let mut out = Vec::new();
        muxer.write_tables(&mut out);
        for size in [0usize, 1, 150, 170, 171, 172, 183, 184, 185, 1000, 5000] {
            let payload = vec![0xAB; size];
            let pes = PesHeader {
                stream_id: 0xE0,
                pts: 1000,
                dts: Some(900),
                sized: false,
            };
            write_pes(
                &mut out,
                VIDEO_PID,
                &mut muxer.cc_video,
                &pes,
                Some(500),
                true,
                &[&payload],
            );
        }
        assert_eq!(out.len() % PACKET_LEN, 0);
        let mut last_cc = None;
        for packet in out.chunks(PACKET_LEN) {
            assert_eq!(packet[0], 0x47);
            let pid = u16::from_be_bytes([packet[1] & 0x1F, packet[2]]);
            if pid == VIDEO_PID {
                let cc = packet[3] & 0x0F;
                if let Some(last) = last_cc {
                    assert_eq!(cc, (last + 1) & 0x0F);
                }
                last_cc = Some(cc);
            }
        }
    }
}
