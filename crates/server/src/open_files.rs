//! The process's open-file limit. Every connection, recording and segment file is a descriptor;
//! the usual soft limit (1024) is exhausted by a thousand idle HTTP clients, after which the RTMP
//! listener cannot accept and recorders cannot create files. The hard limit is what the operator
//! allows, so the soft one is raised to it at start.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for what is not a connection: the store, recordings, HLS segment files, relay
/// sockets, the listeners.
pub(crate) const FILE_RESERVE: u64 = 1024;

/// What start-up did about the limit, to be logged.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The soft limit before and after (`None`: unlimited).
    pub(crate) was: Option<u64>,
    pub(crate) now: Option<u64>,
    pub(crate) hard: Option<u64>,
    /// Why it could not be raised, when it could not.
    pub(crate) failed: Option<String>,
}

/// Raises the soft open-file limit to the hard limit, logs both, and warns when the HTTP and RTMP
/// connection caps together do not fit in it with [`FILE_RESERVE`] to spare.
pub(crate) fn raise_limit(http_cap: usize, rtmp_cap: usize) {
    let outcome = raise(getrlimit(Resource::Nofile), |new| {
        setrlimit(Resource::Nofile, new).map_err(|e| e.to_string())
    });
    let shown = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    match &outcome.failed {
        None => tracing::info!(
            "open-file limit {} (was {}; hard limit {})",
            shown(outcome.now),
            shown(outcome.was),
            shown(outcome.hard)
        ),
        Some(e) => tracing::warn!(
            "open-file limit {}: cannot raise it to the hard limit {}: {e}",
            shown(outcome.now),
            shown(outcome.hard)
        ),
    }
    if let Some(warning) = shortfall(outcome.now, http_cap, rtmp_cap) {
        tracing::warn!("{warning}");
    }
}

/// The limit to set, given the current one; `set` applies it.
fn raise(current: Rlimit, set: impl FnOnce(Rlimit) -> Result<(), String>) -> Outcome {
    let mut outcome = Outcome {
        was: current.current,
        now: current.current,
        hard: current.maximum,
        failed: None,
    };
    let below_hard = match (current.current, current.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        let wanted = Rlimit {
            current: current.maximum,
            maximum: current.maximum,
        };
        match set(wanted) {
            Ok(()) => outcome.now = current.maximum,
            Err(e) => outcome.failed = Some(e),
        }
    }
    outcome
}

/// A warning when the connection caps and [`FILE_RESERVE`] do not fit in `limit`.
fn shortfall(limit: Option<u64>, http_cap: usize, rtmp_cap: usize) -> Option<String> {
    let limit = limit?;
    let http = u64::try_from(http_cap).unwrap_or(u64::MAX);
    let rtmp = u64::try_from(rtmp_cap).unwrap_or(u64::MAX);
    let needed = http.saturating_add(rtmp).saturating_add(FILE_RESERVE);
    (needed > limit).then(|| {
        format!(
            "http.max_connections ({http}) + rtmp.max_connections ({rtmp}) + {FILE_RESERVE} for files \
             exceed the open-file limit ({limit}): at the caps, connections and recordings would fail \
             for want of file descriptors; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) \
             or lower the caps"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(current: Option<u64>, maximum: Option<u64>) -> Rlimit {
        Rlimit { current, maximum }
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let mut asked = None;
        let outcome = raise(limit(Some(1024), Some(524_288)), |new| {
            asked = Some(new.current);
            Ok(())
        });
        assert_eq!(asked, Some(Some(524_288)));
        assert_eq!(outcome.was, Some(1024));
        assert_eq!(outcome.now, Some(524_288));
        assert_eq!(outcome.failed, None);

        let outcome = raise(limit(Some(1024), Some(4096)), |_| Err("not permitted".into()));
        assert_eq!(outcome.now, Some(1024));
        assert_eq!(outcome.failed.as_deref(), Some("not permitted"));

        let untouched = |_: Rlimit| -> Result<(), String> { panic!("nothing to raise") };
        assert_eq!(raise(limit(Some(4096), Some(4096)), untouched).now, Some(4096));
        assert_eq!(raise(limit(None, None), untouched).now, None);
    }

    #[test]
    fn caps_that_do_not_fit_are_named() {
        assert_eq!(shortfall(Some(524_288), 10_000, 1000), None);
        assert_eq!(shortfall(None, 10_000, 1000), None);
        let warning = shortfall(Some(1024), 10_000, 1000).unwrap();
        assert!(
            warning.contains("http.max_connections (10000)")
                && warning.contains("rtmp.max_connections (1000)")
                && warning.contains("open-file limit (1024)"),
            "{warning}"
        );
        assert!(shortfall(Some(12_024), 10_000, 1000).is_none(), "exactly enough");
        assert!(shortfall(Some(12_023), 10_000, 1000).is_some());
    }
}
