//! Wall-clock timestamps as the API shows them: Unix epoch milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    // A clock before 1970 is a broken machine; 0 keeps timestamps ordered rather than panicking.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `secs` since the Unix epoch as ISO 8601 in UTC, `2024-06-25T08:41:31Z` (what Cloudinary's
/// Admin API shows).
pub fn utc_iso8601(secs: i64) -> String {
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

/// `millis` since the Unix epoch as RFC 3339 in UTC with milliseconds,
/// `2025-11-28T08:53:20.123Z` (HLS `EXT-X-PROGRAM-DATE-TIME`).
pub fn utc_rfc3339_millis(millis: i64) -> String {
    let (days, ms_of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

/// Year, month and day of a count of days since 1970-01-01 (Howard Hinnant,
/// "chrono-Compatible Low-Level Date Algorithms").
fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::{utc_iso8601, utc_rfc3339_millis};

    #[test]
    fn iso8601() {
        assert_eq!(utc_iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_iso8601(1_719_304_891), "2024-06-25T08:41:31Z");
        assert_eq!(utc_iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_iso8601(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(utc_iso8601(-1), "1969-12-31T23:59:59Z");
        assert_eq!(utc_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_rfc3339_millis(1_764_320_000_123), "2025-11-28T08:53:20.123Z");
        assert_eq!(utc_rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
