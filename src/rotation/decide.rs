//! The rotation check's decisions, pure: for each watched parameter, how old it is, what
//! state that means, and whether a reminder is due now.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::RotationConfig;

/// What the check knows about one parameter (from DescribeParameters).
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub version: i64,
    pub last_modified: SystemTime,
    /// A `NoChangeNotification` policy is attached: EventBridge reminds instead.
    pub covered_by_policy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Age {
    Ok,
    Warn,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Younger than `warn_after`.
    Fine,
    /// Old, but a policy + EventBridge covers it.
    Covered,
    /// Old, and a reminder went out less than `repeat_every` ago.
    RemindedRecently,
    /// Old and due: send a reminder for this period.
    Due { period: String },
}

pub fn age_of(cfg: &RotationConfig, age: Duration) -> Age {
    if age >= cfg.expire_after {
        Age::Expired
    } else if age >= cfg.warn_after {
        Age::Warn
    } else {
        Age::Ok
    }
}

/// Decides for one parameter. `last_sent` is when this host (or the fleet) last reminded
/// about this parameter at this version.
///
/// The period names the reminder slot: `v<version>-p<n>`, where n counts `repeat_every`
/// windows since the parameter became due. Every host computes the same name from the same
/// SSM metadata, which is what makes the fleet lock work without clocks agreeing on more
/// than the window.
pub fn decide(
    cfg: &RotationConfig,
    p: &Observed,
    now: SystemTime,
    last_sent: Option<SystemTime>,
) -> (Age, Verdict) {
    let age = now
        .duration_since(p.last_modified)
        .unwrap_or(Duration::ZERO);
    let state = age_of(cfg, age);
    if state == Age::Ok {
        return (state, Verdict::Fine);
    }
    if cfg.honor_parameter_policies && p.covered_by_policy {
        return (state, Verdict::Covered);
    }
    if let Some(sent) = last_sent {
        if now.duration_since(sent).unwrap_or(Duration::ZERO) < cfg.repeat_every {
            return (state, Verdict::RemindedRecently);
        }
    }
    let since_due = age.saturating_sub(cfg.warn_after);
    let window = cfg.repeat_every.as_secs().max(1);
    let n = since_due.as_secs() / window;
    (
        state,
        Verdict::Due {
            period: format!("v{}-p{n}", p.version),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RotationConfig {
        RotationConfig {
            enabled: true,
            schedule: "0 0 9 * * *".into(),
            warn_after: Duration::from_secs(150 * 86400),
            expire_after: Duration::from_secs(180 * 86400),
            repeat_every: Duration::from_secs(7 * 86400),
            topic_arn: None,
            honor_parameter_policies: true,
            fleet_lock_prefix: None,
            parameters: vec![],
            auto: None,
        }
    }

    fn param(days_old: u64, covered: bool, now: SystemTime) -> Observed {
        Observed {
            name: "/erp/secret".into(),
            version: 3,
            last_modified: now - Duration::from_secs(days_old * 86400),
            covered_by_policy: covered,
        }
    }

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn young_parameters_are_fine() {
        let now = SystemTime::now();
        assert_eq!(
            decide(&cfg(), &param(149, false, now), now, None),
            (Age::Ok, Verdict::Fine)
        );
    }

    #[test]
    fn old_parameters_are_due_once_per_repeat_window() {
        let now = SystemTime::now();
        let (age, v) = decide(&cfg(), &param(151, false, now), now, None);
        assert_eq!(age, Age::Warn);
        assert_eq!(
            v,
            Verdict::Due {
                period: "v3-p0".into()
            }
        );
        // Reminded yesterday: not again.
        let (_, v) = decide(&cfg(), &param(151, false, now), now, Some(now - DAY));
        assert_eq!(v, Verdict::RemindedRecently);
        // Reminded 8 days ago: due again, in the next period.
        let (_, v) = decide(&cfg(), &param(158, false, now), now, Some(now - 8 * DAY));
        assert_eq!(
            v,
            Verdict::Due {
                period: "v3-p1".into()
            }
        );
    }

    #[test]
    fn expired_is_reported_as_such() {
        let now = SystemTime::now();
        let (age, v) = decide(&cfg(), &param(200, false, now), now, None);
        assert_eq!(age, Age::Expired);
        assert!(matches!(v, Verdict::Due { .. }));
    }

    #[test]
    fn a_no_change_notification_policy_covers_it_unless_ignored() {
        let now = SystemTime::now();
        assert_eq!(
            decide(&cfg(), &param(160, true, now), now, None).1,
            Verdict::Covered
        );
        let mut c = cfg();
        c.honor_parameter_policies = false;
        assert!(matches!(
            decide(&c, &param(160, true, now), now, None).1,
            Verdict::Due { .. }
        ));
    }

    #[test]
    fn clock_skew_does_not_panic() {
        let now = SystemTime::now();
        let future = Observed {
            last_modified: now + DAY,
            ..param(0, false, now)
        };
        assert_eq!(
            decide(&cfg(), &future, now, Some(now + DAY)).1,
            Verdict::Fine
        );
    }
}
