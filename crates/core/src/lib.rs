//! The heart of Oxcast: live streams, their outputs and their lifecycle.
//!
//! This crate owns the domain model ([`LiveStream`], [`Output`]), the rules a field must obey
//! ([`rules`]), the durable SQLite [`Store`], and the [`Registry`] that applies every change to the
//! store before acknowledging it and drives each stream's idle/active state machine (manual
//! activation, publish hooks for the RTMP ingest, idle timeout, max runtime).
//!
//! It is not an HTTP layer (that is `oxcast-api`) and does no media work: outputs are started and
//! stopped through the [`OutputRunner`] trait, which the server implements with the output crates.

pub mod bus;
pub mod clock;
pub mod connections;
pub mod delivery;
pub mod durable;
pub mod ids;
pub mod live;
pub mod model;
pub mod notify;
pub mod registry;
pub mod relay;
pub mod rules;
pub mod store;
pub mod sync;

pub use bus::{BusEvent, BusLimits, StreamBus, Subscriber};
pub use connections::{Acceptor, CapExceeded, ConnectionCaps, ConnectionSlot, PeerAddress, ReportThrottle};
pub use delivery::{HlsSource, SegmentBody};
pub use ids::{OutputId, StreamId, StreamKey};
pub use live::{HlsStats, InputBoard, InputMeter, LiveInput, RecordingSource, RecordingStats};
pub use model::{
    Archive, IdleReason, LiveStream, NewOutput, NewStream, Output, OutputKind, OutputPatch, SimulcastTarget,
    Status, StreamPatch,
};
pub use notify::{Event, Notifier};
pub use registry::{OutputRunner, PublishRefused, Publisher, Registry, RegistryError, RegistryLimits};
pub use relay::{RelayState, RelayStatus, RelayStatusSource};
pub use store::{Store, StoreError};
