//! Settings: the compiled-in `config/default.toml`, then the file from `--config`/`OXCAST_CONFIG`,
//! then `OXCAST__SECTION__KEY` environment variables. Every problem is reported as one line naming
//! the key, and start-up stops with exit code 2.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Map, Source, Value, ValueKind};
use serde::Deserialize;

/// The defaults, which also define the set of valid keys.
pub(crate) const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Validated settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) rtmp_listen: SocketAddr,
    pub(crate) rtmp_handshake_timeout: Duration,
    pub(crate) rtmp_no_media_timeout: Duration,
    pub(crate) rtmp_publish_timeout: Duration,
    pub(crate) rtmp_max_connections: usize,
    pub(crate) rtmp_max_pending_per_ip: usize,
    pub(crate) rtmp_session: oxcast_rtmp::ServerConfig,
    pub(crate) rtmp_partial_messages_budget: usize,
    pub(crate) hls: oxcast_hls::HlsConfig,
    pub(crate) http_listen: SocketAddr,
    pub(crate) http_limits: oxcast_api::HttpLimits,
    pub(crate) public_rtmp_url: String,
    pub(crate) public_http_url: String,
    pub(crate) cloud_name: String,
    /// `None`: use (or generate) the stored pair.
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) storage_dir: PathBuf,
    /// `store.url`: the PostgreSQL database that holds the state; `None`: SQLite in `storage_dir`.
    pub(crate) store_url: Option<String>,
    /// Below this much free space on the storage disk, recorders stop.
    pub(crate) archive_min_free_bytes: u64,
    /// At most one recording per stream started by codec configuration changes in this interval.
    pub(crate) archive_min_recording_interval: Duration,
    /// A recording's fragments are written at this size, or this long after their first frame.
    pub(crate) archive_max_fragment_bytes: u64,
    pub(crate) archive_max_fragment_wait: Duration,
    /// Recordings finalized longer ago than this are deleted; `None`: kept forever.
    pub(crate) archive_retention: Option<Duration>,
    pub(crate) simulcast: oxcast_simulcast::SimulcastConfig,
    pub(crate) limits: oxcast_core::RegistryLimits,
    pub(crate) log_filter: String,
    /// `/metrics` on the HTTP port.
    pub(crate) metrics_enabled: bool,
    /// When set, `/metrics` wants `Authorization: Bearer <token>`.
    pub(crate) metrics_token: Option<String>,
    /// `None`: no webhooks.
    pub(crate) notifications: Option<Notifications>,
}

/// Webhook receivers and how to sign and retry (`notifications.*`).
#[derive(Clone, Debug)]
pub(crate) struct Notifications {
    pub(crate) targets: Vec<oxcast_notify::Target>,
    pub(crate) secret: String,
    pub(crate) max_retry_interval: Duration,
}

/// A setting that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SettingsError(String);

impl SettingsError {
    /// Wraps another error's (possibly multi-line) message as one line.
    fn from_external(context: &str, e: impl std::fmt::Display) -> Self {
        let message = e.to_string();
        SettingsError(format!(
            "{context}{}",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        ))
    }
}

// The raw shape of the merged sources: strings here, checked below with messages of our own.
#[derive(Deserialize)]
struct Raw {
    rtmp: RawRtmp,
    http: RawHttp,
    hls: RawHls,
    archive: RawArchive,
    simulcast: RawSimulcast,
    limits: RawLimits,
    public: RawPublic,
    api: RawApi,
    storage: RawStorage,
    store: RawStore,
    log: RawLog,
    metrics: RawMetrics,
    notifications: RawNotifications,
}

#[derive(Deserialize)]
struct RawMetrics {
    enabled: bool,
    token: String,
}

#[derive(Deserialize)]
struct RawNotifications {
    url: RawUrls,
    secret: String,
    max_retry_interval_sec: u64,
}

/// A TOML array of URLs, or one string holding them separated by commas or spaces (as an
/// environment variable can).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawUrls {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawRtmp {
    listen: String,
    handshake_timeout_sec: u64,
    no_media_timeout_sec: u64,
    max_connections: u64,
    publish_timeout_sec: u64,
    max_pending_per_ip: u64,
    max_message_bytes: u64,
    pre_publish_max_message_bytes: u64,
    partial_messages_budget_bytes: u64,
}

#[derive(Deserialize)]
struct RawHls {
    segment_duration_sec: u64,
    window: u64,
    keep_after_end_sec: u64,
    max_segment_bytes: u64,
    max_segment_sec: u64,
    max_memory_bytes: u64,
}

#[derive(Deserialize)]
struct RawArchive {
    min_free_bytes: u64,
    min_recording_interval_sec: u64,
    max_fragment_bytes: u64,
    max_fragment_wait_sec: u64,
    retention_days: f64,
}

#[derive(Deserialize)]
struct RawSimulcast {
    ca_file: String,
    allow_private_destinations: bool,
}

#[derive(Deserialize)]
struct RawLimits {
    max_streams: u64,
    max_outputs_per_stream: u64,
    stream_backlog_bytes: u64,
}

#[derive(Deserialize)]
struct RawHttp {
    listen: String,
    header_timeout_sec: u64,
    keep_alive_timeout_sec: u64,
    write_timeout_sec: u64,
    max_connections: u64,
    max_connections_per_ip: u64,
}

#[derive(Deserialize)]
struct RawPublic {
    rtmp_url: String,
    http_url: String,
}

#[derive(Deserialize)]
struct RawApi {
    cloud_name: String,
    key: String,
    secret: String,
}

#[derive(Deserialize)]
struct RawStorage {
    dir: String,
}

#[derive(Deserialize)]
struct RawStore {
    url: String,
}

#[derive(Deserialize)]
struct RawLog {
    filter: String,
}

impl Settings {
    /// Loads the settings from the defaults, `file` and the process environment.
    pub(crate) fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_from(
            file,
            Environment::with_prefix("OXCAST")
                .prefix_separator("__")
                .separator("__"),
        )
    }

    fn load_from(file: Option<&Path>, env: Environment) -> Result<Settings, SettingsError> {
        let defaults = File::from_str(DEFAULT_TOML, FileFormat::Toml);
        let known = leaf_keys(
            &defaults
                .collect()
                .map_err(|e| SettingsError::from_external("built-in defaults: ", e))?,
        );
        let mut builder = Config::builder().add_source(defaults);
        if let Some(path) = file {
            let shown = path.display();
            if !path.is_file() {
                return Err(SettingsError(format!("config file {shown}: not found")));
            }
            let source = File::from(path).format(FileFormat::Toml).required(true);
            let values = source
                .collect()
                .map_err(|e| SettingsError::from_external(&format!("config file {shown}: "), e))?;
            check_known(&known, &values, &format!("in config file {shown}"))?;
            builder = builder.add_source(source);
        }
        let from_env = env
            .collect()
            .map_err(|e| SettingsError::from_external("environment: ", e))?;
        check_known(&known, &from_env, "from an OXCAST__… environment variable")?;
        let raw: Raw = builder
            .add_source(env)
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| SettingsError::from_external("", e))?;
        Self::validate(raw)
    }

    fn validate(raw: Raw) -> Result<Settings, SettingsError> {
        let credentials = match (raw.api.key.trim(), raw.api.secret.trim()) {
            ("", "") => None,
            ("", _) => {
                return Err(SettingsError(
                    "api.key is empty but api.secret is set: set both or neither".into(),
                ));
            }
            (_, "") => {
                return Err(SettingsError(
                    "api.secret is empty but api.key is set: set both or neither".into(),
                ));
            }
            (key, _) if key.contains(':') => {
                return Err(SettingsError(
                    "api.key must not contain ':' (Basic auth separates key and secret with it)".into(),
                ));
            }
            (key, secret) => Some((key.to_owned(), secret.to_owned())),
        };
        let cloud_name = raw.api.cloud_name;
        if cloud_name.is_empty()
            || cloud_name.len() > 64
            || !cloud_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(SettingsError(format!(
                "api.cloud_name {cloud_name:?}: use 1 to 64 letters, digits, '_' or '-'"
            )));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.filter) {
            return Err(SettingsError::from_external(
                &format!("log.filter {:?}: ", raw.log.filter),
                e,
            ));
        }
        if raw.storage.dir.trim().is_empty() {
            return Err(SettingsError(
                "storage.dir is empty: name a directory, e.g. ./data".into(),
            ));
        }
        Ok(Settings {
            rtmp_listen: listen_addr("rtmp.listen", &raw.rtmp.listen)?,
            rtmp_handshake_timeout: seconds("rtmp.handshake_timeout_sec", raw.rtmp.handshake_timeout_sec)?,
            rtmp_no_media_timeout: seconds("rtmp.no_media_timeout_sec", raw.rtmp.no_media_timeout_sec)?,
            rtmp_publish_timeout: seconds("rtmp.publish_timeout_sec", raw.rtmp.publish_timeout_sec)?,
            rtmp_max_pending_per_ip: count("rtmp.max_pending_per_ip", raw.rtmp.max_pending_per_ip, 1)?,
            rtmp_session: rtmp_session(&raw.rtmp)?,
            rtmp_partial_messages_budget: bytes(
                "rtmp.partial_messages_budget_bytes",
                raw.rtmp.partial_messages_budget_bytes,
            )?,
            rtmp_max_connections: match raw.rtmp.max_connections {
                0 => {
                    return Err(SettingsError(
                        "rtmp.max_connections is 0: no encoder could connect".into(),
                    ));
                }
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            http_listen: listen_addr("http.listen", &raw.http.listen)?,
            http_limits: http_limits(&raw.http)?,
            hls: oxcast_hls::HlsConfig {
                segment_duration: seconds_in(
                    "hls.segment_duration_sec",
                    raw.hls.segment_duration_sec,
                    1..=30,
                )?,
                window: within("hls.window", raw.hls.window, 2..=100, "segments")? as usize,
                keep_after_end: seconds_in("hls.keep_after_end_sec", raw.hls.keep_after_end_sec, 1..=86_400)?,
                segment_limits: oxcast_hls::segmenter::SegmentLimits {
                    max_bytes: bytes("hls.max_segment_bytes", raw.hls.max_segment_bytes)?,
                    max_duration: match raw.hls.max_segment_sec {
                        n if n > raw.hls.segment_duration_sec && n <= 300 => Duration::from_secs(n),
                        n => {
                            return Err(SettingsError(format!(
                                "hls.max_segment_sec {n}: use more than hls.segment_duration_sec ({}) and at most 300",
                                raw.hls.segment_duration_sec
                            )));
                        }
                    },
                },
                max_memory_bytes: bytes("hls.max_memory_bytes", raw.hls.max_memory_bytes)?,
            },
            public_rtmp_url: base_url("public.rtmp_url", &raw.public.rtmp_url, &["rtmp://", "rtmps://"])?,
            public_http_url: base_url("public.http_url", &raw.public.http_url, &["http://", "https://"])?,
            cloud_name,
            credentials,
            storage_dir: PathBuf::from(raw.storage.dir),
            store_url: store_url(&raw.store.url)?,
            archive_min_free_bytes: raw.archive.min_free_bytes,
            archive_min_recording_interval: seconds(
                "archive.min_recording_interval_sec",
                raw.archive.min_recording_interval_sec,
            )?,
            archive_max_fragment_bytes: within(
                "archive.max_fragment_bytes",
                raw.archive.max_fragment_bytes,
                MIN_FRAGMENT_BYTES..=MAX_FRAGMENT_BYTES,
                "bytes",
            )?,
            archive_max_fragment_wait: seconds_in(
                "archive.max_fragment_wait_sec",
                raw.archive.max_fragment_wait_sec,
                1..=60,
            )?,
            archive_retention: retention(raw.archive.retention_days)?,
            simulcast: oxcast_simulcast::SimulcastConfig {
                ca_file: Some(raw.simulcast.ca_file.trim())
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from),
                allow_private_destinations: raw.simulcast.allow_private_destinations,
            },
            limits: oxcast_core::RegistryLimits {
                max_streams: count("limits.max_streams", raw.limits.max_streams, 1)?,
                // The two default outputs come with every stream.
                max_outputs_per_stream: count(
                    "limits.max_outputs_per_stream",
                    raw.limits.max_outputs_per_stream,
                    2,
                )?,
                bus: oxcast_core::BusLimits {
                    max_bytes: bytes("limits.stream_backlog_bytes", raw.limits.stream_backlog_bytes)?,
                    ..oxcast_core::BusLimits::default()
                },
            },
            log_filter: raw.log.filter,
            metrics_enabled: raw.metrics.enabled,
            metrics_token: match raw.metrics.token.trim() {
                "" => None,
                token if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) => {
                    return Err(SettingsError(
                        "metrics.token: use at least 16 printable characters without spaces (it is a password)"
                            .into(),
                    ));
                }
                token => Some(token.to_owned()),
            },
            notifications: notifications(raw.notifications)?,
        })
    }
}

/// archive.retention_days: 0 keeps recordings forever; fractions are allowed (0.5 is 12 hours, and
/// a test can use seconds).
fn retention(days: f64) -> Result<Option<Duration>, SettingsError> {
    const MAX_DAYS: f64 = 36_500.0;
    if !(0.0..=MAX_DAYS).contains(&days) {
        return Err(SettingsError(format!(
            "archive.retention_days {days}: use 0 (keep recordings forever) or a number of days up \
             to {MAX_DAYS}; fractions are allowed (0.5 is 12 hours)"
        )));
    }
    Ok((days > 0.0).then(|| Duration::from_secs_f64(days * 86_400.0)))
}

fn notifications(raw: RawNotifications) -> Result<Option<Notifications>, SettingsError> {
    let urls: Vec<String> = match raw.url {
        RawUrls::One(s) => vec![s],
        RawUrls::Many(v) => v,
    }
    .iter()
    .flat_map(|s| s.split(|c: char| c == ',' || c.is_whitespace()))
    .filter(|u| !u.is_empty())
    .map(str::to_owned)
    .collect();
    let max_retry_interval = seconds("notifications.max_retry_interval_sec", raw.max_retry_interval_sec)?;
    if urls.is_empty() {
        return Ok(None);
    }
    let mut targets: Vec<oxcast_notify::Target> = Vec::new();
    for url in urls {
        let target = oxcast_notify::Target::parse(&url)
            .map_err(|why| SettingsError(format!("notifications.url {url:?}: {why}")))?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    let secret = raw.secret.trim();
    if secret.is_empty() {
        return Err(SettingsError(
            "notifications.url is set but notifications.secret is empty: set a secret, which signs \
             every webhook (receivers cannot trust unsigned ones)"
                .into(),
        ));
    }
    Ok(Some(Notifications {
        targets,
        secret: secret.to_owned(),
        max_retry_interval,
    }))
}

/// Bounds of archive.max_fragment_bytes: below 64 KiB a fragment's headers weigh; above 1 GiB a
/// recorder could hold more than a machine has to spare.
const MIN_FRAGMENT_BYTES: u64 = 64 << 10;
const MAX_FRAGMENT_BYTES: u64 = 1 << 30;

fn http_limits(raw: &RawHttp) -> Result<oxcast_api::HttpLimits, SettingsError> {
    let header_timeout = seconds("http.header_timeout_sec", raw.header_timeout_sec)?;
    let keep_alive_timeout = seconds("http.keep_alive_timeout_sec", raw.keep_alive_timeout_sec)?;
    if keep_alive_timeout > header_timeout {
        return Err(SettingsError(format!(
            "http.keep_alive_timeout_sec {}: use at most http.header_timeout_sec ({}), which also \
             bounds the wait for a kept-alive connection's next request",
            raw.keep_alive_timeout_sec, raw.header_timeout_sec
        )));
    }
    Ok(oxcast_api::HttpLimits {
        header_timeout,
        keep_alive_timeout,
        write_timeout: seconds("http.write_timeout_sec", raw.write_timeout_sec)?,
        max_connections: count("http.max_connections", raw.max_connections, 1)?,
        max_connections_per_ip: count("http.max_connections_per_ip", raw.max_connections_per_ip, 1)?,
    })
}

/// `value` if it lies in `range`; otherwise an error naming the key, the range and its unit.
fn within(key: &str, value: u64, range: RangeInclusive<u64>, unit: &str) -> Result<u64, SettingsError> {
    if !range.contains(&value) {
        return Err(SettingsError(format!(
            "{key} {value}: use {} to {} {unit}",
            range.start(),
            range.end()
        )));
    }
    Ok(value)
}

/// A duration in whole seconds, within `range`.
fn seconds_in(key: &str, value: u64, range: RangeInclusive<u64>) -> Result<Duration, SettingsError> {
    within(key, value, range, "seconds").map(Duration::from_secs)
}

/// A timeout of 1 second to 1 hour.
fn seconds(key: &str, value: u64) -> Result<Duration, SettingsError> {
    seconds_in(key, value, 1..=3600)
}

/// Message limits of RTMP sessions: `max_message_bytes` once publishing (with room for two such
/// messages in progress), `pre_publish_max_message_bytes` before.
fn rtmp_session(raw: &RawRtmp) -> Result<oxcast_rtmp::ServerConfig, SettingsError> {
    let default = oxcast_rtmp::ServerConfig::default();
    // Both fit a u32 (a chunk header's 24-bit length is the real ceiling).
    let max = within(
        "rtmp.max_message_bytes",
        raw.max_message_bytes,
        65_536..=268_435_456,
        "bytes",
    )? as usize;
    let pre = within(
        "rtmp.pre_publish_max_message_bytes",
        raw.pre_publish_max_message_bytes,
        4096..=1_048_576,
        "bytes",
    )? as usize;
    Ok(oxcast_rtmp::ServerConfig {
        limits: oxcast_rtmp::Limits {
            max_message_size: max as u32,
            max_buffered: 2 * max,
            ..default.limits
        },
        pre_publish: oxcast_rtmp::Limits {
            max_message_size: pre as u32,
            max_buffered: 2 * pre,
            ..default.pre_publish
        },
        ..default
    })
}

/// A count of at least `min`.
fn count(key: &str, value: u64, min: u64) -> Result<usize, SettingsError> {
    if value < min {
        return Err(SettingsError(format!("{key} {value}: use at least {min}")));
    }
    Ok(usize::try_from(value).unwrap_or(usize::MAX))
}

/// A size of 1 MiB to 64 GiB.
fn bytes(key: &str, value: u64) -> Result<usize, SettingsError> {
    within(key, value, 1 << 20..=64 << 30, "bytes").map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn listen_addr(key: &str, value: &str) -> Result<SocketAddr, SettingsError> {
    value.trim().parse().map_err(|_| {
        SettingsError(format!(
            "{key} {value:?}: not an address; expected IP:PORT such as 0.0.0.0:1935 or [::]:1935"
        ))
    })
}

/// `store.url`: empty for SQLite, else a PostgreSQL URL. The URL is not repeated in the message:
/// it may hold a password. The rest of it is checked when the store connects.
fn store_url(value: &str) -> Result<Option<String>, SettingsError> {
    match value.trim() {
        "" => Ok(None),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(Some(url.to_owned())),
        _ => Err(SettingsError(
            "store.url: use postgres://user:password@host:port/database, or leave it empty for SQLite in storage.dir"
                .into(),
        )),
    }
}

fn base_url(key: &str, value: &str, schemes: &[&str]) -> Result<String, SettingsError> {
    let url = value.trim().trim_end_matches('/');
    let lower = url.to_ascii_lowercase();
    let host = schemes.iter().find_map(|s| lower.strip_prefix(s));
    match host {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) => {
            Ok(url.to_owned())
        }
        _ => Err(SettingsError(format!(
            "{key} {value:?}: expected a URL starting with {} and naming a host",
            schemes.join(" or ")
        ))),
    }
}

/// Dotted names of every non-table value, e.g. `rtmp.listen`.
fn leaf_keys(values: &Map<String, Value>) -> BTreeSet<String> {
    fn walk(prefix: &str, values: &Map<String, Value>, out: &mut BTreeSet<String>) {
        for (k, v) in values {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match &v.kind {
                ValueKind::Table(t) => walk(&key, t, out),
                _ => {
                    out.insert(key);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", values, &mut out);
    out
}

fn check_known(
    known: &BTreeSet<String>,
    values: &Map<String, Value>,
    place: &str,
) -> Result<(), SettingsError> {
    match leaf_keys(values).into_iter().find(|k| !known.contains(k)) {
        None => Ok(()),
        Some(key) => Err(SettingsError(format!(
            "unknown setting {key} {place}; the settings are: {}",
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Environment {
        let source: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Environment::with_prefix("OXCAST")
            .prefix_separator("__")
            .separator("__")
            .source(Some(source))
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(f.path(), contents).unwrap();
        f
    }

    #[test]
    fn defaults() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.rtmp_listen.to_string(), "0.0.0.0:1935");
        assert_eq!(s.http_listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.public_rtmp_url, "rtmp://localhost:1935");
        assert_eq!(s.public_http_url, "http://localhost:8080");
        assert_eq!(s.cloud_name, "local");
        assert_eq!(s.credentials, None);
        assert_eq!(s.storage_dir, PathBuf::from("./data"));
        assert_eq!(s.store_url, None, "SQLite unless told otherwise");
        let http = &s.http_limits;
        assert_eq!(http.header_timeout, Duration::from_secs(10));
        assert_eq!(http.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(http.write_timeout, Duration::from_secs(30));
        assert_eq!(http.max_connections, 10_000);
        assert_eq!(http.max_connections_per_ip, 1000);
    }

    #[test]
    fn http_limits_from_the_environment() {
        let s = Settings::load_from(
            None,
            env(&[
                ("OXCAST__HTTP__HEADER_TIMEOUT_SEC", "60"),
                ("OXCAST__HTTP__KEEP_ALIVE_TIMEOUT_SEC", "60"),
                ("OXCAST__HTTP__WRITE_TIMEOUT_SEC", "2"),
                ("OXCAST__HTTP__MAX_CONNECTIONS", "3"),
                ("OXCAST__HTTP__MAX_CONNECTIONS_PER_IP", "7"),
            ]),
        )
        .unwrap();
        let http = &s.http_limits;
        assert_eq!(http.header_timeout, Duration::from_secs(60));
        assert_eq!(http.keep_alive_timeout, Duration::from_secs(60));
        assert_eq!(http.write_timeout, Duration::from_secs(2));
        assert_eq!(http.max_connections, 3);
        // Above max_connections is allowed: then only the overall cap counts.
        assert_eq!(http.max_connections_per_ip, 7);
    }

    #[test]
    fn file_then_environment_override() {
        let f = file("[http]\nlisten = \"127.0.0.1:9000\"\n[api]\ncloud_name = \"demo\"\n");
        let s = Settings::load_from(
            Some(f.path()),
            env(&[
                ("OXCAST__API__CLOUD_NAME", "prod"),
                ("OXCAST__PUBLIC__HTTP_URL", "https://cdn.example/"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http_listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.cloud_name, "prod");
        assert_eq!(s.public_http_url, "https://cdn.example");
        let s = Settings::load_from(
            None,
            env(&[("OXCAST__API__KEY", "k"), ("OXCAST__API__SECRET", "s")]),
        )
        .unwrap();
        assert_eq!(s.credentials, Some(("k".into(), "s".into())));
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case<'_>; 22] = [
            (
                None,
                &[("OXCAST__RTMP__LISTEN", "nope")],
                "rtmp.listen \"nope\": not an address",
            ),
            (None, &[("OXCAST__HTTP__LISTEN", "1.2.3.4")], "http.listen"),
            (
                None,
                &[("OXCAST__RTMP__LISTN", "x")],
                "unknown setting rtmp.listn from an OXCAST__",
            ),
            (
                Some("[rtmp]\nlisen = \"x\"\n"),
                &[],
                "unknown setting rtmp.lisen in config file",
            ),
            (Some("[nope]\na = 1\n"), &[], "unknown setting nope.a"),
            (Some("[rtmp\n"), &[], "config file"),
            (
                None,
                &[("OXCAST__PUBLIC__RTMP_URL", "http://x")],
                "public.rtmp_url",
            ),
            (None, &[("OXCAST__API__CLOUD_NAME", "a/b")], "api.cloud_name"),
            (None, &[("OXCAST__API__KEY", "k")], "api.secret is empty"),
            (None, &[("OXCAST__STORAGE__DIR", " ")], "storage.dir is empty"),
            (
                None,
                &[("OXCAST__STORE__URL", "mysql://u:secret@db/x")],
                "store.url: use postgres://",
            ),
            (
                None,
                &[("OXCAST__LOG__FILTER", "oxcast=loudly")],
                "log.filter \"oxcast=loudly\"",
            ),
            (
                None,
                &[("OXCAST__RTMP__MAX_PENDING_PER_IP", "0")],
                "rtmp.max_pending_per_ip 0: use at least 1",
            ),
            (
                None,
                &[("OXCAST__HLS__MAX_SEGMENT_SEC", "2")],
                "hls.max_segment_sec 2: use more than hls.segment_duration_sec (2)",
            ),
            (
                None,
                &[("OXCAST__LIMITS__STREAM_BACKLOG_BYTES", "1000")],
                "limits.stream_backlog_bytes 1000: use 1048576",
            ),
            (
                None,
                &[("OXCAST__LIMITS__MAX_OUTPUTS_PER_STREAM", "1")],
                "limits.max_outputs_per_stream 1: use at least 2",
            ),
            (
                None,
                &[("OXCAST__HTTP__HEADER_TIMEOUT_SEC", "0")],
                "http.header_timeout_sec 0: use 1 to 3600 seconds",
            ),
            (
                None,
                &[("OXCAST__HTTP__KEEP_ALIVE_TIMEOUT_SEC", "11")],
                "http.keep_alive_timeout_sec 11: use at most http.header_timeout_sec (10)",
            ),
            (
                None,
                &[("OXCAST__HTTP__WRITE_TIMEOUT_SEC", "3601")],
                "http.write_timeout_sec 3601",
            ),
            (
                None,
                &[("OXCAST__HTTP__MAX_CONNECTIONS", "0")],
                "http.max_connections 0: use at least 1",
            ),
            (
                None,
                &[("OXCAST__HTTP__MAX_CONNECTIONS_PER_IP", "0")],
                "http.max_connections_per_ip 0: use at least 1",
            ),
            (
                None,
                &[("OXCAST__HTTP__MAX_CONNECTIONS", "many")],
                "http.max_connections",
            ),
        ];
        for (contents, vars, wanted) in cases {
            let f = contents.map(file);
            let e = Settings::load_from(f.as_ref().map(|f| f.path()), env(vars))
                .unwrap_err()
                .to_string();
            assert!(e.contains(wanted), "{vars:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let e = Settings::load_from(Some(Path::new("/nonexistent/oxcast.toml")), env(&[])).unwrap_err();
        assert_eq!(e.to_string(), "config file /nonexistent/oxcast.toml: not found");
    }

    #[test]
    fn notifications() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.notifications.is_none(), "no webhooks by default");
        let urls = |s: &Settings| -> Vec<String> {
            s.notifications
                .as_ref()
                .unwrap()
                .targets
                .iter()
                .map(|t| t.url.clone())
                .collect()
        };
        let s = Settings::load_from(
            None,
            env(&[
                (
                    "OXCAST__NOTIFICATIONS__URL",
                    "http://a/x, https://b:8443/y http://a/x",
                ),
                ("OXCAST__NOTIFICATIONS__SECRET", "whsec"),
            ]),
        )
        .unwrap();
        assert_eq!(urls(&s), ["http://a/x", "https://b:8443/y"]);
        let n = s.notifications.as_ref().unwrap();
        assert_eq!(
            (n.secret.as_str(), n.max_retry_interval),
            ("whsec", Duration::from_secs(600))
        );
        let f = file("[notifications]\nurl = [\"http://a/1\", \"http://a/2\"]\nsecret = \"s\"\n");
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(urls(&s), ["http://a/1", "http://a/2"]);
        for (vars, wanted) in [
            (
                &[("OXCAST__NOTIFICATIONS__URL", "http://a/")][..],
                "notifications.url is set but notifications.secret is empty",
            ),
            (
                &[
                    ("OXCAST__NOTIFICATIONS__URL", "ftp://a/"),
                    ("OXCAST__NOTIFICATIONS__SECRET", "s"),
                ][..],
                "notifications.url \"ftp://a/\": use an http:// or https:// URL",
            ),
            (
                &[
                    ("OXCAST__NOTIFICATIONS__URL", "127.0.0.1:9000/hook"),
                    ("OXCAST__NOTIFICATIONS__SECRET", "s"),
                ][..],
                "notifications.url \"127.0.0.1:9000/hook\": use an http:// or https:// URL",
            ),
            (
                &[("OXCAST__NOTIFICATIONS__MAX_RETRY_INTERVAL_SEC", "0")][..],
                "notifications.max_retry_interval_sec 0",
            ),
        ] {
            let e = Settings::load_from(None, env(vars)).unwrap_err().to_string();
            assert!(e.contains(wanted) && !e.contains("  "), "{vars:?}: {e}");
        }
    }

    #[test]
    fn archive_limits() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.archive_min_recording_interval, Duration::from_secs(60));
        assert_eq!(s.archive_max_fragment_bytes, 8 << 20);
        assert_eq!(s.archive_max_fragment_wait, Duration::from_secs(2));
        assert_eq!(s.archive_retention, None);
        let days = |v: &str| {
            Settings::load_from(None, env(&[("OXCAST__ARCHIVE__RETENTION_DAYS", v)]))
                .unwrap()
                .archive_retention
        };
        assert_eq!(days("30"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(days("0.5"), Some(Duration::from_secs(43_200)));
        assert_eq!(days("0"), None);
        let tiny = days("0.0001").unwrap();
        assert!((tiny.as_secs_f64() - 8.64).abs() < 1e-9, "{tiny:?}");
        for (key, value, wanted) in [
            (
                "OXCAST__ARCHIVE__RETENTION_DAYS",
                "-1",
                "archive.retention_days -1: use 0 (keep recordings forever)",
            ),
            (
                "OXCAST__ARCHIVE__RETENTION_DAYS",
                "NaN",
                "archive.retention_days NaN",
            ),
            ("OXCAST__ARCHIVE__RETENTION_DAYS", "1e9", "archive.retention_days"),
            (
                "OXCAST__ARCHIVE__RETENTION_DAYS",
                "week",
                "archive.retention_days",
            ),
            (
                "OXCAST__ARCHIVE__MIN_RECORDING_INTERVAL_SEC",
                "0",
                "archive.min_recording_interval_sec 0",
            ),
            (
                "OXCAST__ARCHIVE__MAX_FRAGMENT_BYTES",
                "1000",
                "archive.max_fragment_bytes 1000",
            ),
            (
                "OXCAST__ARCHIVE__MAX_FRAGMENT_WAIT_SEC",
                "0",
                "archive.max_fragment_wait_sec 0",
            ),
        ] {
            let e = Settings::load_from(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(wanted), "{key}: {e}");
        }
    }
}
