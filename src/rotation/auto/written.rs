//! The fleet-wide record of which new-secret message a secret parameter's current version
//! came from: `{fleet_lock_prefix}/<hash of the parameter>/auto-secret`, a String
//! parameter holding `<publish time> v<version> <host>`, set by the agent that wrote the
//! secret. It orders two new secrets of one app: an older message completed late writes
//! SSM after the newer message was published, so the write time alone would make the
//! newer message look stale (`machine::completion`). Pure.
//!
//! Invariants: the record names no secret (a time, a version, a host); it counts only for
//! the version it names, so a later `put-secret` or console write, or a write whose record
//! was never set, falls back to SSM's write time.

use std::time::SystemTime;

use crate::rotation::fleet_hash;

/// The record's name for `parameter`, beside the parameter's fleet markers.
pub fn name(prefix: &str, parameter: &str) -> String {
    format!("{prefix}/{}/auto-secret", fleet_hash(parameter))
}

/// The record of a write of the secret Amazon published at `published`, as `version`.
pub fn value(published: SystemTime, version: i64, host: &str) -> String {
    format!(
        "{} v{version} {host}",
        humantime::format_rfc3339_millis(published)
    )
}

/// When the secret at `version` was published, if the record is about that version.
pub fn published(record: &str, version: i64) -> Option<SystemTime> {
    let mut words = record.split_whitespace();
    let time = humantime::parse_rfc3339(words.next()?).ok()?;
    (words.next()? == format!("v{version}")).then_some(time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_record_counts_only_for_its_own_version() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_777_000_000_123);
        let record = value(t, 7, "host-a");
        assert_eq!(published(&record, 7), Some(t));
        assert_eq!(published(&record, 8), None, "a later write is not this one");
        assert_eq!(published("garbage", 7), None);
        assert_eq!(published("", 7), None);
    }

    #[test]
    fn the_name_hides_the_parameter_beside_its_markers() {
        let n = name("/erp/locks", "/erp/lwa/clientsecret");
        assert!(
            n.starts_with("/erp/locks/") && n.ends_with("/auto-secret"),
            "{n}"
        );
        assert!(!n.contains("clientsecret"));
    }
}
