//! The retention sweep: recordings finalized longer ago than `archive.retention_days` are deleted,
//! at start and then periodically, until shutdown. At start it also removes the files of
//! recordings whose deletion a crash interrupted, whatever the retention.

use std::sync::Arc;
use std::time::Duration;

use oxcast_core::Registry;
use tokio_util::sync::CancellationToken;

/// How often the sweep runs: every hour, or every tenth of the retention when that is shorter (a
/// recording then outlives its retention by a tenth at most), but not more than once a second.
fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Runs until `shutdown`; meant for a tracked task, so that shutdown waits for a sweep under way.
pub(crate) async fn sweep(registry: Arc<Registry>, retention: Option<Duration>, shutdown: CancellationToken) {
    finish_deletions(&registry).await;
    let Some(retention) = retention else { return };
    let every = interval(retention);
    tracing::info!(
        retention_days = retention.as_secs_f64() / 86_400.0,
        every_sec = every.as_secs_f64(),
        "recordings are deleted after archive.retention_days"
    );
    loop {
        match registry.expire_assets(retention).await {
            Ok(expired) if !expired.is_empty() => {
                let bytes: i64 = expired.iter().map(|a| a.bytes).sum();
                tracing::info!(
                    recordings = expired.len(),
                    bytes,
                    "retention sweep deleted old recordings"
                );
            }
            Ok(_) => tracing::debug!("retention sweep: nothing to delete"),
            Err(e) => tracing::warn!("retention sweep failed (tried again in {every:?}): {e}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        // Files whose removal failed last time (a busy or read-only disk) are tried again.
        finish_deletions(&registry).await;
    }
}

async fn finish_deletions(registry: &Registry) {
    match registry.finish_deletions().await {
        Ok(0) => {}
        Ok(files) => tracing::info!(files, "removed the files of deleted recordings"),
        Err(e) => tracing::warn!("cannot remove the files of deleted recordings (tried again later): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_hourly_or_ten_times_per_retention() {
        let day = Duration::from_secs(86_400);
        assert_eq!(interval(30 * day), Duration::from_secs(3600));
        assert_eq!(interval(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(interval(Duration::from_secs(20)), Duration::from_secs(2));
        assert_eq!(interval(Duration::from_secs(3)), Duration::from_secs(1));
    }
}
