//! Timestamps: UTC, stored with microsecond precision, written as RFC 3339 with milliseconds.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

/// A point in time, always UTC.
pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to microseconds so that it survives a round trip through either
/// database unchanged.
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(6)
}

/// `2026-11-23T10:15:02.123Z`: the one textual form every API response and event uses.
pub(crate) fn format_millis(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde adapter writing a [`Timestamp`] as RFC 3339 UTC with milliseconds
/// (`#[serde(with = "newspaper_domain::rfc3339_millis")]`).
pub mod rfc3339_millis {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    /// Writes `2026-11-23T10:15:02.123Z`.
    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_millis(ts))
    }

    /// Reads any RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let raw = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn formats_utc_with_milliseconds_and_z() {
        let ts = Utc.with_ymd_and_hms(2026, 11, 23, 10, 15, 2).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(format_millis(&ts), "2026-11-23T10:15:02.123Z");
    }

    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(now().timestamp_subsec_nanos() % 1000, 0);
    }
}
