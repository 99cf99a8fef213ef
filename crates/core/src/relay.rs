//! What the API shows of each simulcast relay, which the simulcast crate keeps up to date.

use crate::ids::OutputId;

/// Where a relay stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayState {
    /// Not running: the stream is idle.
    Idle,
    /// Connecting, or handshaking and publishing.
    Connecting,
    /// Publishing to the destination.
    Live,
    /// The last attempt failed; the next one comes after a pause.
    Retrying,
}

impl RelayState {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [RelayState; 4] = [
        RelayState::Idle,
        RelayState::Connecting,
        RelayState::Live,
        RelayState::Retrying,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RelayState::Idle => "idle",
            RelayState::Connecting => "connecting",
            RelayState::Live => "live",
            RelayState::Retrying => "retrying",
        }
    }
}

/// One relay's state and counters.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayStatus {
    pub state: RelayState,
    /// Why the last attempt failed, until one succeeds.
    pub last_error: Option<String>,
    /// Unix epoch milliseconds of the current connection's publish start.
    pub connected_at: Option<i64>,
    /// Bytes written to the destination, over every connection of this session.
    pub bytes_sent: u64,
    /// Frames not sent because the destination was too slow (skipped to the next keyframe).
    pub dropped_frames: u64,
    /// Over about the last five seconds.
    pub bitrate_kbps: f64,
}

impl RelayStatus {
    pub const IDLE: RelayStatus = RelayStatus {
        state: RelayState::Idle,
        last_error: None,
        connected_at: None,
        bytes_sent: 0,
        dropped_frames: 0,
        bitrate_kbps: 0.0,
    };
}

/// Reads the relays' status, so `api` depends on `core` alone.
pub trait RelayStatusSource: Send + Sync + 'static {
    /// A simulcast output's relay; `None` when it is not running.
    fn relay_status(&self, output: &OutputId) -> Option<RelayStatus>;
}
