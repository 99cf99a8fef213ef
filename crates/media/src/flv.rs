//! FLV audio and video tag bodies, as RTMP audio/video messages carry them (Adobe FLV v10.1 §E.4.2,
//! §E.4.3), legacy and Enhanced RTMP (Veovera E-RTMP v1/v2: `IsExHeader` and FourCC): read into
//! [`VideoTag`]/[`AudioTag`] (`reader`), and written back from frames and configurations
//! (`writer`: legacy AVC and AAC, what every RTMP server takes).

mod reader;
mod writer;

pub use reader::{AudioCodec, AudioTag, FileTag, VideoCodec, VideoTag, file_tags, parse_audio, parse_video};
pub use writer::{TagHeader, aac_sequence_start, avc_sequence_start, frame_header};
