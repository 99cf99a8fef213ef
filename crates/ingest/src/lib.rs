//! The RTMP ingest: encoders publish to `rtmp://HOST/streams` (`oxcast_core::model::INGEST_APP`)
//! with a stream key; each connection is a task driving `oxcast_rtmp::ServerSession`, checking the
//! key against the registry, and putting the demuxed media on the stream's bus. It is not the RTMP
//! protocol (that is `oxcast-rtmp`) nor the streams' lifecycle (that is `oxcast-core`).
//!
//! A connection that does not finish the handshake in time, is not publishing within its
//! deadline, or sends no media for a while, is closed; so is one whose key is unknown (after
//! telling the encoder why). One address may hold only so many connections that are not
//! publishing yet, so nobody takes every slot. Nothing one connection does reaches another: a bad
//! key, a parse error or a slow socket costs only that connection.
//!
//! `listener` accepts and bounds connections, `connection` serves one over any byte stream,
//! and `low_water` spares a TCP publisher's connection most of its wake-ups.

mod connection;
mod listener;
mod low_water;
mod pending;

pub use listener::{IngestConfig, serve};

/// Counts a refused or closed-by-rule connection for `/metrics`, by the rule (a setting's name,
/// or what the encoder got wrong).
pub(crate) fn refused(reason: &'static str) {
    metrics::counter!("oxcast_refused_connections_total", "listener" => "rtmp", "reason" => reason)
        .increment(1);
}
