//! `oxcast`: the server binary. Loads the settings, opens the store, wires the registry to the
//! HTTP API, prints how to connect, and shuts down gracefully on SIGINT/SIGTERM.

mod credentials;
mod health_check;
mod listeners;
mod metrics;
mod open_files;
mod outputs;
mod retention;
mod settings;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use oxcast_api::ApiConfig;
use oxcast_archive::{ArchiveConfig, Archives};
use oxcast_core::{Notifier, Registry, Store};
use oxcast_hls::HlsOutputs;
use oxcast_ingest::IngestConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::credentials::Origin;
use crate::listeners::Bound;
use crate::settings::Settings;

/// Live-video server: RTMP in; HLS, MP4 recordings and RTMP relays out; a Live Streams admin API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML file of settings that override the built-in defaults (see config/default.toml).
    #[arg(long, value_name = "FILE", env = "OXCAST_CONFIG")]
    config: Option<PathBuf>,
    /// Once both listeners are bound, write their addresses and ports to this file as JSON
    /// (whole, by a rename): how a supervisor or a test learns the ports picked for a port of 0.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Instead of serving: ask the server running with these settings for GET /healthz (on
    /// http.listen) and exit 0 if it answers 200, 1 if not. For container health checks.
    #[arg(long)]
    health_check: bool,
}

/// How long recordings may take to finalize at shutdown (the rest are finalized at the next start).
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long playlists may take to end at shutdown (their last segment is muxed from memory).
const HLS_END_TIMEOUT: Duration = Duration::from_secs(5);

/// How long relays may take at shutdown to tell their destinations the stream ended (a destination
/// that takes nothing meanwhile sees the connection drop instead).
const UNPUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long webhooks due at shutdown (the streams' `shutdown` idle events) may take to be sent;
/// the rest are sent after the next start.
const WEBHOOKS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("oxcast: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.health_check {
        return match health_check::check(settings.http_listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxcast: unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&settings.log_filter);
    fix_mmap_threshold();
    open_files::raise_limit(
        settings.http_limits.max_connections,
        settings.rtmp_max_connections,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oxcast: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, cli.ready_file.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// HLS segments (about 1 MB each, a new one per stream every couple of seconds) must go back to
/// the system when they are dropped. glibc raises its mmap threshold to the size of the largest
/// block freed, after which such buffers come from the heap arenas, which fragment and keep
/// megabytes per stream resident. A fixed threshold keeps every large buffer in its own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn fix_mmap_threshold() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and M_MMAP_THRESHOLD with a value in range has no other effect.
    let done = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
    if done != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}

fn init_logging(filter: &str) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG wins; log.filter was checked when the settings were loaded.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(mut settings: Settings, ready_file: Option<&Path>) -> anyhow::Result<()> {
    // First, so that every figure from the start is counted.
    let metrics = match settings.metrics_enabled {
        true => Some(metrics::install(settings.metrics_token.clone())?),
        false => None,
    };
    let store = match &settings.store_url {
        None => Store::open(&settings.storage_dir)?,
        Some(url) => Store::open_postgres(url, &settings.storage_dir).context("store.url")?,
    };
    // Events queue up from here (a recovered recording is one) until the outbox starts, once the
    // public URL is known.
    let (notifier, events) = match settings.notifications {
        Some(_) => {
            let (notifier, events) = Notifier::channel();
            (notifier, Some(events))
        }
        None => (Notifier::default(), None),
    };
    let (credentials, origin) = credentials::resolve(settings.credentials.clone(), &settings.storage_dir)?;
    let hls_dir = settings.storage_dir.join("hls");
    let hls = Arc::new(
        HlsOutputs::new(settings.hls, hls_dir.clone())
            .with_context(|| format!("{}: cannot prepare the HLS directory", hls_dir.display()))?,
    );
    let archives = Arc::new(
        Archives::new(
            ArchiveConfig {
                min_free_bytes: settings.archive_min_free_bytes,
                min_recording_interval: settings.archive_min_recording_interval,
                max_fragment_bytes: settings.archive_max_fragment_bytes,
                max_fragment_wait: settings.archive_max_fragment_wait,
                ..ArchiveConfig::in_storage(&settings.storage_dir)
            },
            store.clone(),
        )
        .context("cannot prepare the archive directory")?
        .with_notifier(notifier.clone()),
    );
    // Before any stream can go live: what a killed process was recording becomes an asset.
    archives.recover().await;
    let relays = Arc::new(
        oxcast_simulcast::Relays::new(&settings.simulcast)
            .map_err(anyhow::Error::msg)?
            .with_notifier(notifier.clone()),
    );
    let outputs = outputs::Outputs {
        hls: Arc::clone(&hls),
        archives: Arc::clone(&archives),
        relays: Arc::clone(&relays),
    };
    let registry = Registry::with_notifier(store.clone(), Arc::new(outputs), settings.limits, notifier)?;

    let http = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .with_context(|| format!("http.listen {}: cannot listen", settings.http_listen))?;
    tracing::info!(addr = %http.local_addr()?, "HTTP listening");

    let rtmp = tokio::net::TcpListener::bind(settings.rtmp_listen)
        .await
        .with_context(|| format!("rtmp.listen {}: cannot listen", settings.rtmp_listen))?;
    tracing::info!(addr = %rtmp.local_addr()?, "RTMP listening");
    let bound = Bound {
        http: http.local_addr()?,
        rtmp: rtmp.local_addr()?,
    };
    settings.public_http_url = listeners::with_bound_port(&settings.public_http_url, bound.http.port());
    settings.public_rtmp_url = listeners::with_bound_port(&settings.public_rtmp_url, bound.rtmp.port());

    let api = ApiConfig {
        cloud_name: settings.cloud_name.clone(),
        public_rtmp_url: settings.public_rtmp_url.clone(),
        public_http_url: settings.public_http_url.clone(),
        credentials: credentials.clone(),
    };
    let webhooks = match (settings.notifications.clone(), events) {
        (Some(n), Some(events)) => {
            let config = oxcast_notify::WebhookConfig {
                targets: n.targets,
                secret: n.secret,
                max_retry_interval: n.max_retry_interval,
                links: oxcast_notify::Links {
                    public_http_url: settings.public_http_url.clone(),
                    cloud_name: settings.cloud_name.clone(),
                },
            };
            Some(
                oxcast_notify::Webhooks::start(config, store.clone(), events)
                    .context("webhooks: TLS setup")?,
            )
        }
        _ => None,
    };
    print_banner(&settings, &credentials, &origin, bound);
    if let Some(path) = ready_file {
        bound
            .write_ready_file(path)
            .with_context(|| format!("--ready-file {}: cannot write", path.display()))?;
    }

    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    // Server-wide background work, waited for before the store closes.
    let background = TaskTracker::new();
    background.spawn(retention::sweep(
        Arc::clone(&registry),
        settings.archive_retention,
        shutdown.clone(),
    ));
    let ingest = tokio::spawn(oxcast_ingest::serve(
        rtmp,
        Arc::clone(&registry),
        IngestConfig {
            app: oxcast_core::model::INGEST_APP.to_owned(),
            handshake_timeout: settings.rtmp_handshake_timeout,
            no_media_timeout: settings.rtmp_no_media_timeout,
            publish_timeout: settings.rtmp_publish_timeout,
            max_connections: settings.rtmp_max_connections,
            max_pending_per_ip: settings.rtmp_max_pending_per_ip,
            session: settings.rtmp_session,
            partial_messages_budget: settings.rtmp_partial_messages_budget,
        },
        shutdown.clone(),
    ));
    let server = oxcast_api::serve(
        http,
        oxcast_api::router(
            Arc::clone(&registry),
            api,
            oxcast_api::Sources {
                hls: hls.clone(),
                relays: relays.clone(),
                recordings: archives.clone(),
                metrics,
            },
        ),
        settings.http_limits.clone(),
        shutdown.clone(),
    );
    tokio::select! {
        () = server => {}
        () = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
            tracing::warn!("requests still running {DRAIN_TIMEOUT:?} after the shutdown signal; closing them");
        }
    }
    // Encoders are disconnected before the sessions end, so no publish races the shutdown.
    if let Err(e) = ingest.await {
        tracing::warn!("RTMP ingest ended abnormally: {e}");
    }
    registry.shutdown().await;
    // The streams have ended: each output writes its end (a playlist's ENDLIST, a finalized MP4,
    // a relay's unpublish), each in its own time.
    tokio::join!(
        hls.wait(HLS_END_TIMEOUT),
        archives.wait(FINALIZE_TIMEOUT),
        relays.wait(UNPUBLISH_TIMEOUT)
    );
    // Nothing makes events any more: the last ones are recorded, and sent if the receivers answer.
    if let Some(webhooks) = webhooks {
        webhooks.close(WEBHOOKS_TIMEOUT).await;
    }
    background.close();
    background.wait().await;
    store.close()?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// The first SIGINT/SIGTERM starts a graceful shutdown; a second one exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    for attempt in 0.. {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if attempt > 0 {
            tracing::warn!("second signal: exiting without finishing");
            std::process::exit(130);
        }
        tracing::info!("shutting down: no new requests; finishing the ones in flight");
        shutdown.cancel();
    }
}

fn print_banner(settings: &Settings, credentials: &oxcast_api::Credentials, origin: &Origin, bound: Bound) {
    let api_base = format!("{}/v2/video/{}", settings.public_http_url, settings.cloud_name);
    let (secret, user) = match origin {
        Origin::Generated(path) => (
            format!(
                "{}   (generated now, shown once; kept in {})",
                credentials.secret,
                path.display()
            ),
            format!("\"$(cat {})\"", path.display()),
        ),
        Origin::Stored(path) => (
            format!("in {}", path.display()),
            format!("\"$(cat {})\"", path.display()),
        ),
        Origin::Configured => (
            "as configured (api.secret)".to_owned(),
            format!("{}:API_SECRET", credentials.key),
        ),
    };
    println!(
        "Oxcast {version} is running.\n\
         \n  Admin API    {api_base}   (HTTP Basic auth)\
         \n  API key      {key}\
         \n  API secret   {secret}\
         \n  RTMP ingest  {rtmp}   (in OBS: Server = a stream's input.uri, Stream Key = its stream_key)\
         \n  HLS          {http}/{cloud}/video/live/live_stream_<id>_hls.m3u8   (a stream's default hls output uri)\
         \n  Dashboard    {http}/   (sign in with the API key and secret)\
         \n  Listening    HTTP {http_addr}, RTMP {rtmp_addr}\
         \n\nCreate a stream:\
         \n  curl -u {user} -H 'Content-Type: application/json' -d '{{\"input\":{{\"type\":\"rtmp\"}}}}' {api_base}/live_streams\n",
        version = env!("CARGO_PKG_VERSION"),
        key = credentials.key,
        rtmp = oxcast_core::model::ingest_uri(&settings.public_rtmp_url),
        http = settings.public_http_url,
        cloud = settings.cloud_name,
        http_addr = bound.http,
        rtmp_addr = bound.rtmp,
    );
}
