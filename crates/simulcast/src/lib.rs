//! The simulcast output: each active stream relayed to any number of RTMP/RTMPS destinations.
//!
//! Every simulcast output of an active stream gets a relay task of its own, with its own bus
//! subscription: it connects, publishes with the output's key, and sends the stream's codec
//! configurations and frames unchanged, starting on a keyframe. A destination that fails is
//! retried with exponential backoff (1 s to 30 s, with jitter) for as long as the stream is
//! active; a slow one falls behind on its own subscription and skips to the next keyframe (counted
//! as dropped frames). Nothing a destination does reaches the ingest or the other outputs: they
//! read the bus on their own. When the stream ends, each destination gets `FCUnpublish` and
//! `deleteStream` before the connection closes, so platforms end the broadcast at once; at
//! shutdown [`Relays::wait`] lets them do so.

mod destination;
mod relay;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxcast_core::rules::RtmpUrl;
use oxcast_core::sync::lock;
use oxcast_core::{
    LiveStream, Notifier, OutputId, OutputKind, RelayStatus, RelayStatusSource, StreamBus, StreamId,
};
use thiserror::Error;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Settings from `simulcast.*`.
#[derive(Debug, Clone, Default)]
pub struct SimulcastConfig {
    /// PEM certificates trusted for `rtmps://` besides the public roots (a private CA, a test).
    pub ca_file: Option<PathBuf>,
    /// Relays may connect to loopback, private and link-local addresses (off by default: see
    /// `destination::non_public`).
    pub allow_private_destinations: bool,
}

/// Why the relays cannot be set up.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("simulcast.ca_file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("simulcast.ca_file {}: {source}", path.display())]
    Certificate { path: PathBuf, source: rustls::Error },
    #[error("simulcast.ca_file {}: no certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("TLS: {0}")]
    Tls(rustls::Error),
}

/// Every running relay, by output.
pub struct Relays {
    tls: Arc<rustls::ClientConfig>,
    allow_private: bool,
    /// Told when a relay fails and when it recovers.
    notifier: Notifier,
    running: Mutex<HashMap<OutputId, Running>>,
    /// Every relay task, including those of streams that ended and are still unpublishing.
    tasks: TaskTracker,
}

struct Running {
    stream_id: StreamId,
    destination: RtmpUrl,
    stop: CancellationToken,
    status: Arc<Mutex<RelayStatus>>,
}

impl Relays {
    /// Fails when `ca_file` cannot be read or holds no certificate.
    pub fn new(config: &SimulcastConfig) -> Result<Self, SetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.ca_file {
            use rustls_pki_types::pem::PemObject;
            let pem = |source| SetupError::CaFile {
                path: path.clone(),
                source,
            };
            let mut added = 0;
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(pem)? {
                roots
                    .add(cert.map_err(pem)?)
                    .map_err(|source| SetupError::Certificate {
                        path: path.clone(),
                        source,
                    })?;
                added += 1;
            }
            if added == 0 {
                return Err(SetupError::NoCertificate { path: path.clone() });
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(SetupError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            allow_private: config.allow_private_destinations,
            notifier: Notifier::default(),
            running: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        })
    }

    /// Tells `notifier` when a relay fails (`simulcast.failed`) and when it is live again after
    /// failing (`simulcast.recovered`).
    pub fn with_notifier(self, notifier: Notifier) -> Self {
        Self { notifier, ..self }
    }

    /// Makes the stream's running relays match its simulcast outputs: starts the new ones (on the
    /// next keyframe), stops the deleted ones at once, reconnects the ones whose destination
    /// changed. Each relay runs in a `relay{output_id}` span inside the caller's.
    pub fn sync(&self, stream: &LiveStream, bus: &Arc<StreamBus>) {
        let wanted: HashMap<&OutputId, RtmpUrl> = stream
            .outputs
            .iter()
            .filter_map(|o| match &o.kind {
                OutputKind::Simulcast(target) => match RtmpUrl::of(target) {
                    Ok(destination) => Some((&o.id, destination)),
                    // Not said why: the refusal may quote the uri, key and all.
                    Err(_) => {
                        tracing::error!(output_id = %o.id, "unusable simulcast uri");
                        None
                    }
                },
                _ => None,
            })
            .collect();
        let mut running = lock(&self.running);
        running.retain(|id, relay| {
            let keep = relay.stream_id != stream.id || wanted.get(id) == Some(&relay.destination);
            if !keep {
                relay.stop.cancel();
            }
            keep
        });
        for (id, destination) in wanted {
            if running.contains_key(id) {
                continue;
            }
            let status = Arc::new(Mutex::new(RelayStatus::IDLE));
            let stop = CancellationToken::new();
            let relay = relay::Relay {
                destination: destination.clone(),
                status: Arc::clone(&status),
                stop: stop.clone(),
                tls: Arc::clone(&self.tls),
                allow_private: self.allow_private,
                metrics: relay::RelayMetrics::new(&stream.id, id),
                health: relay::Health::new(self.notifier.clone(), stream.id.clone(), id.clone()),
            };
            self.tasks.spawn(
                relay::run(relay, Arc::clone(bus)).instrument(tracing::info_span!("relay", output_id = %id)),
            );
            running.insert(
                id.clone(),
                Running {
                    stream_id: stream.id.clone(),
                    destination,
                    stop,
                    status,
                },
            );
        }
    }

    /// The stream went idle: its relays unpublish and close on their own (the bus has ended);
    /// their outputs read `idle` from now on.
    pub fn stream_idle(&self, stream_id: &StreamId) {
        lock(&self.running).retain(|_, relay| relay.stream_id != *stream_id);
    }

    /// The stream was deleted: its relays stop at once.
    pub fn stream_deleted(&self, stream_id: &StreamId) {
        lock(&self.running).retain(|_, relay| {
            let keep = relay.stream_id != *stream_id;
            if !keep {
                relay.stop.cancel();
            }
            keep
        });
    }
}

impl Relays {
    /// Waits (at most `limit`) for every relay to finish: at shutdown, after the streams ended, so
    /// each destination is told the stream ended (`FCUnpublish`, `deleteStream`) rather than
    /// seeing the connection drop.
    pub async fn wait(&self, limit: Duration) {
        self.tasks.close();
        if self.tasks.is_empty() {
            return;
        }
        tracing::info!(relays = self.tasks.len(), "waiting for the relays to unpublish");
        if tokio::time::timeout(limit, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                relays = self.tasks.len(),
                "relays still unpublishing after {limit:?}; their connections are dropped"
            );
        }
    }
}

impl RelayStatusSource for Relays {
    fn relay_status(&self, output: &OutputId) -> Option<RelayStatus> {
        let running = lock(&self.running);
        let relay = running.get(output)?;
        Some(lock(&relay.status).clone())
    }
}
