//! The simulcast output: each active stream relayed to any number of RTMP/RTMPS destinations.
//!
//! Every simulcast output of an active stream gets a relay task of its own, with its own bus
//! subscription: it connects, publishes with the output's key, and sends the stream's codec
//! configurations and frames unchanged, starting on a keyframe. A destination that fails is
//! retried with exponential backoff (1 s to 30 s, with jitter) for as long as the stream is
//! active; a slow one falls behind on its own subscription and skips to the next keyframe (counted
//! as dropped frames). Nothing a destination does reaches the ingest or the other outputs: they
//! read the bus on their own. When the stream ends, each destination gets `FCUnpublish` and
//! `deleteStream` before the connection closes, so platforms end the broadcast at once.

mod destination;
mod flv;
mod relay;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use oxcast_core::sync::lock;
use oxcast_core::{LiveStream, OutputId, OutputKind, RelayStatus, RelayStatusSource, StreamBus, StreamId};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::destination::Destination;

/// Settings from `simulcast.*`.
#[derive(Debug, Clone, Default)]
pub struct SimulcastConfig {
    /// PEM certificates trusted for `rtmps://` besides the public roots (a private CA, a test).
    pub ca_file: Option<PathBuf>,
    /// Relays may connect to loopback, private and link-local addresses (off by default: see
    /// `destination::non_public`).
    pub allow_private_destinations: bool,
}

/// Every running relay, by output.
pub struct Relays {
    tls: Arc<rustls::ClientConfig>,
    allow_private: bool,
    running: Mutex<HashMap<OutputId, Running>>,
}

struct Running {
    stream_id: StreamId,
    destination: Destination,
    stop: CancellationToken,
    status: Arc<Mutex<RelayStatus>>,
}

impl Relays {
    /// Fails when `ca_file` cannot be read or holds no certificate.
    pub fn new(config: &SimulcastConfig) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.ca_file {
            use rustls_pki_types::pem::PemObject;
            let mut added = 0;
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("simulcast.ca_file {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("simulcast.ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("simulcast.ca_file {}: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!(
                    "simulcast.ca_file {}: no certificate in it",
                    path.display()
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            allow_private: config.allow_private_destinations,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the stream's running relays match its simulcast outputs: starts the new ones (on the
    /// next keyframe), stops the deleted ones at once, reconnects the ones whose destination
    /// changed.
    pub fn sync(&self, stream: &LiveStream, bus: &Arc<StreamBus>) {
        let wanted: HashMap<&OutputId, Destination> = stream
            .outputs
            .iter()
            .filter_map(|o| match &o.kind {
                OutputKind::Simulcast(target) => match Destination::parse(target) {
                    Some(destination) => Some((&o.id, destination)),
                    None => {
                        tracing::error!(stream_id = %stream.id, output_id = %o.id, "unusable simulcast uri");
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
                stream_id: stream.id.clone(),
                output_id: id.clone(),
                destination: destination.clone(),
                status: Arc::clone(&status),
                stop: stop.clone(),
                tls: Arc::clone(&self.tls),
                allow_private: self.allow_private,
            };
            tokio::spawn(relay::run(relay, Arc::clone(bus)));
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

impl RelayStatusSource for Relays {
    fn relay_status(&self, output: &OutputId) -> Option<RelayStatus> {
        let running = lock(&self.running);
        let relay = running.get(output)?;
        Some(lock(&relay.status).clone())
    }
}
