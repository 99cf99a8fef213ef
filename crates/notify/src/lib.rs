//! Signed webhooks: every event a [`Notifier`](oxcast_core::Notifier) hands on is recorded in the
//! store's outbox, a row per receiver URL, before anything is sent; then each receiver's own
//! task POSTs its due rows, signed, and retries failures with exponential backoff for 24 hours.
//! Rows survive a restart, so an event is delivered even if the server stops in between.
//!
//! Why a crate of its own: sending is HTTP *client* work (TLS, timeouts, retries) that neither
//! the output crates (which only say what happened, through `oxcast_core::notify`) nor `api` (the
//! HTTP server side) should carry; `server` starts it and `api` lists the outbox through the
//! store. The client is hyper's HTTP/1 connection (already in the build for the server side)
//! over tokio-rustls with ring and the webpki roots, as the simulcast relays use: no second HTTP
//! stack, no second TLS stack.
//!
//! Receivers verify the `X-Oxcast-Signature` header (`sha256=` + hex HMAC-SHA256 of
//! `X-Oxcast-Timestamp` + `.` + the body, keyed with `notifications.secret`); see the README.

mod body;
mod client;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use oxcast_core::Store;
use oxcast_core::clock::now_ms;
use oxcast_core::ids::random_hex128;
use oxcast_core::notify::Notice;
use oxcast_core::store::{Attempt, Delivery, NewDelivery};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use body::{Links, signature};
pub use client::Target;

/// Header with the Unix time (seconds) of the attempt, which the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-oxcast-timestamp";
/// Header with `sha256=<hex HMAC-SHA256 of "timestamp.body">`.
pub const SIGNATURE_HEADER: &str = "x-oxcast-signature";
/// Header with the event's name (also in the body), for routing without parsing.
pub const EVENT_HEADER: &str = "x-oxcast-event";

/// How long one attempt may take: connect, TLS, request, the answer's head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After this long from the event, a delivery that still fails is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The pause after the first failed attempt; it doubles with each failure, up to the setting.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Finished rows are kept this long, and at most this many, for the API to list.
const KEEP_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);
const KEEP_FINISHED_ROWS: usize = 10_000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// A store that fails is asked again after this long.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Settings from `notifications.*`, checked.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// The receivers; at least one.
    pub targets: Vec<Target>,
    /// The HMAC key.
    pub secret: String,
    /// The longest pause between two attempts of one delivery.
    pub max_retry_interval: Duration,
    pub links: Links,
}

/// The running outbox: the task that records events, and one sender per receiver.
pub struct Webhooks {
    /// Tells the recorder to write what is queued and stop.
    stop_recording: CancellationToken,
    recorder: tokio::task::JoinHandle<()>,
    /// Tells the senders to send what is due once more, then stop.
    closing: CancellationToken,
    senders: TaskTracker,
}

impl Webhooks {
    /// Starts recording `events` and delivering them (and what an earlier run left undelivered).
    /// Fails only when no TLS configuration can be made.
    pub fn start(
        config: WebhookConfig,
        store: Store,
        events: mpsc::UnboundedReceiver<Notice>,
    ) -> Result<Webhooks, tokio_rustls::rustls::Error> {
        let client = Arc::new(client::Client::new(REQUEST_TIMEOUT)?);
        let config = Arc::new(config);
        let closing = CancellationToken::new();
        let senders = TaskTracker::new();
        let mut wakes = Vec::new();
        for target in &config.targets {
            let wake = Arc::new(Notify::new());
            wakes.push(Arc::clone(&wake));
            let sender = Sender {
                target: target.clone(),
                config: Arc::clone(&config),
                store: store.clone(),
                client: Arc::clone(&client),
                wake,
                closing: closing.clone(),
            };
            senders.spawn(sender.run());
        }
        senders.close();
        let stop_recording = CancellationToken::new();
        let recorder = Recorder { config, store, wakes };
        let recorder = tokio::spawn(recorder.run(events, stop_recording.clone()));
        Ok(Webhooks {
            stop_recording,
            recorder,
            closing,
            senders,
        })
    }

    /// At shutdown, once nothing makes events any more: records what is queued, sends what is
    /// due (the streams' `shutdown` idle events) for at most `limit`, then stops. What is not
    /// delivered by then stays in the outbox for the next start.
    pub async fn close(self, limit: Duration) {
        self.stop_recording.cancel();
        if let Err(e) = self.recorder.await {
            tracing::warn!("webhook recorder ended abnormally: {e}");
        }
        self.closing.cancel();
        if tokio::time::timeout(limit, self.senders.wait()).await.is_err() {
            tracing::warn!("webhooks still being sent after {limit:?}; they are sent after the next start");
        }
    }
}

/// Writes each event to the outbox, a row per receiver, then wakes the senders.
struct Recorder {
    config: Arc<WebhookConfig>,
    store: Store,
    wakes: Vec<Arc<Notify>>,
}

impl Recorder {
    async fn run(self, mut events: mpsc::UnboundedReceiver<Notice>, stop: CancellationToken) {
        let urls: Vec<String> = self.config.targets.iter().map(|t| t.url.clone()).collect();
        match self
            .store
            .abandon_deliveries(urls, "given up: the URL is no longer in notifications.url".into())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "webhooks to URLs no longer configured given up"),
            Err(e) => tracing::warn!("cannot give up webhooks to URLs no longer configured: {e}"),
        }
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(notice) => self.record(notice).await,
                    None => return,
                },
                _ = prune.tick() => self.prune().await,
                () = stop.cancelled() => {
                    while let Ok(notice) = events.try_recv() {
                        self.record(notice).await;
                    }
                    return;
                }
            }
        }
    }

    async fn record(&self, notice: Notice) {
        let id = random_hex128();
        let event = notice.event.name();
        let delivery = NewDelivery {
            body: body::render(&id, &notice, &self.config.links),
            event_id: id,
            event: event.to_owned(),
            created_at: notice.at,
        };
        let urls = self.config.targets.iter().map(|t| t.url.clone()).collect();
        match self.store.insert_deliveries(delivery, urls).await {
            Ok(()) => {
                for wake in &self.wakes {
                    wake.notify_one();
                }
            }
            Err(e) => tracing::error!(event, "webhook not recorded, so never sent: {e}"),
        }
    }

    async fn prune(&self) {
        let before = now_ms() - KEEP_FINISHED.as_millis() as i64;
        match self.store.prune_deliveries(before, KEEP_FINISHED_ROWS).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deliveries = n, "old webhook deliveries pruned"),
            Err(e) => tracing::warn!("cannot prune old webhook deliveries: {e}"),
        }
    }
}

/// Delivers one receiver's rows, one at a time, in the order they fall due: a receiver that is
/// down or slow holds up only its own deliveries.
struct Sender {
    target: Target,
    config: Arc<WebhookConfig>,
    store: Store,
    client: Arc<client::Client>,
    wake: Arc<Notify>,
    closing: CancellationToken,
}

impl Sender {
    async fn run(self) {
        loop {
            let wait = match self.store.next_delivery(&self.target.url).await {
                Ok(Some(delivery)) => {
                    let due = delivery.next_attempt_at.unwrap_or(i64::MIN);
                    let now = now_ms();
                    if due <= now {
                        self.attempt(delivery).await;
                        continue;
                    }
                    Some(Duration::from_millis(u64::try_from(due - now).unwrap_or(0)))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(url = %self.target.url, "cannot read the webhook outbox: {e}");
                    Some(STORE_RETRY)
                }
            };
            if self.closing.is_cancelled() {
                return;
            }
            tokio::select! {
                () = sleep(wait) => {}
                () = self.wake.notified() => {}
                () = self.closing.cancelled() => {}
            }
        }
    }

    async fn attempt(&self, delivery: Delivery) {
        let timestamp = now_ms() / 1000;
        let headers = [
            (EVENT_HEADER, delivery.event.clone()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (
                SIGNATURE_HEADER,
                signature(&self.config.secret, timestamp, &delivery.body),
            ),
        ];
        let answer = self
            .client
            .post(&self.target, &headers, Bytes::from(delivery.body.clone()))
            .await;
        let at = now_ms();
        let attempt = match answer {
            Ok(status) if status.is_success() => Attempt::Delivered,
            Ok(status) => self.failed(&delivery, at, format!("the receiver answered {status}")),
            Err(e) => self.failed(&delivery, at, e.to_string()),
        };
        match &attempt {
            Attempt::Delivered => {
                tracing::debug!(url = %self.target.url, event = delivery.event, id = delivery.event_id, "webhook delivered")
            }
            Attempt::Failed {
                error,
                retry_at: Some(_),
            } => {
                tracing::info!(url = %self.target.url, event = delivery.event, id = delivery.event_id, "webhook not delivered, will retry: {error}")
            }
            Attempt::Failed {
                error,
                retry_at: None,
            } => {
                tracing::warn!(url = %self.target.url, event = delivery.event, id = delivery.event_id, "{error}")
            }
        }
        if let Err(e) = self.store.delivery_attempted(delivery.seq, at, attempt).await {
            tracing::warn!(url = %self.target.url, "cannot record a webhook attempt: {e}");
            // Not to spin on a row whose attempt cannot be recorded.
            sleep(Some(STORE_RETRY)).await;
        }
    }

    fn failed(&self, delivery: &Delivery, at: i64, error: String) -> Attempt {
        after_failure(delivery, at, error, self.config.max_retry_interval)
    }
}

/// The next attempt after a failed one made at `at`, or none (given up) when it would come more
/// than 24 hours after the event.
fn after_failure(delivery: &Delivery, at: i64, error: String, max_pause: Duration) -> Attempt {
    let attempts = delivery.attempts.saturating_add(1);
    let pause = retry_pause(attempts, max_pause);
    let retry_at = at.saturating_add(pause.as_millis() as i64);
    if retry_at
        > delivery
            .created_at
            .saturating_add(GIVE_UP_AFTER.as_millis() as i64)
    {
        return Attempt::Failed {
            error: format!("given up after {attempts} attempts over 24 hours; the last: {error}"),
            retry_at: None,
        };
    }
    Attempt::Failed {
        error,
        retry_at: Some(retry_at),
    }
}

/// 1 s after the first failure, doubling with each, at most `max`.
fn retry_pause(attempts: u32, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    FIRST_RETRY.saturating_mul(1 << doublings).min(max)
}

/// Sleeps `wait`, or forever.
async fn sleep(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_setting() {
        let max = Duration::from_secs(600);
        let pauses: Vec<u64> = (1..=12).map(|n| retry_pause(n, max).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(retry_pause(u32::MAX, max), max);
        assert_eq!(retry_pause(5, Duration::from_secs(3)), Duration::from_secs(3));
    }

    #[test]
    fn deliveries_are_given_up_24_hours_after_their_event() {
        let hour = 3_600_000;
        let delivery = Delivery {
            seq: 1,
            event_id: "e".into(),
            event: "live_stream.active".into(),
            url: "http://r/".into(),
            body: "{}".into(),
            created_at: 0,
            attempts: 20,
            next_attempt_at: Some(0),
            delivered_at: None,
            last_error: None,
        };
        let max = Duration::from_secs(600);
        assert_eq!(
            after_failure(&delivery, 23 * hour, "refused".into(), max),
            Attempt::Failed {
                error: "refused".into(),
                retry_at: Some(23 * hour + 600_000)
            }
        );
        assert_eq!(
            after_failure(&delivery, 24 * hour - 1000, "refused".into(), max),
            Attempt::Failed {
                error: "given up after 21 attempts over 24 hours; the last: refused".into(),
                retry_at: None
            }
        );
    }
}
