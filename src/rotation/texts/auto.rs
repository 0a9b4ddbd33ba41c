//! The SNS texts of the automatic rotation: the one "rotated automatically" report, the
//! alerts that ask a person to look, and the reminder that says a rotation is on its way.
//! Pure. Built from names, versions, dates and the host name only: no secret reaches
//! this module.

use std::time::Duration;

use super::{one_line, Message, Reminder, MAX_SMS, MAX_SUBJECT};

/// A completed rotation.
pub struct Rotated<'a> {
    /// (parameter, version now holding the new secret).
    pub parameters: &'a [(String, i64)],
    pub credentials: &'a [String],
    pub old_secret_expires_at: Option<&'a str>,
    pub new_secret_expires_at: Option<&'a str>,
    pub host: &'a str,
}

pub fn rotated(r: &Rotated) -> Message {
    let (first, version) = r
        .parameters
        .first()
        .map(|(p, v)| (p.as_str(), *v))
        .unwrap_or(("?", 0));
    let old = r
        .old_secret_expires_at
        .unwrap_or("in about 7 days (Amazon did not say)");
    let mut email = format!(
        "lwa-agent on host {host} rotated the LWA client secret of credential{s} {creds} \
         automatically.\n\n",
        host = r.host,
        s = if r.credentials.len() == 1 { "" } else { "s" },
        creds = r.credentials.join(", "),
    );
    for (p, v) in r.parameters {
        email.push_str(&format!("Parameter:     {p} (now version {v})\n"));
    }
    email.push_str(&format!(
        "Old secret:    keeps working until {old}\n\
         New secret:    expires {new}\n\
         Host:          {host}\n\n\
         Nothing to do. Every lwa-agent that reads these parameters uses the new secret\n\
         within ssm.refresh_interval (or at once: sudo systemctl reload lwa-agent).\n\
         Anything outside SSM that still holds the old secret stops working at {old}.\n",
        new = r.new_secret_expires_at.unwrap_or("(not given)"),
        host = r.host,
    ));
    Message {
        subject: one_line(
            &format!("[lwa-agent] Rotated {first} automatically (version {version})"),
            MAX_SUBJECT,
        ),
        sms: one_line(
            &format!(
                "lwa-agent {}: rotated {first} automatically (v{version}); old secret ends {old}",
                r.host
            ),
            MAX_SMS,
        ),
        email,
        severity: "info".into(),
    }
}

/// An automatic rotation that needs a person.
pub struct Alert<'a> {
    pub parameter: &'a str,
    pub credentials: &'a [String],
    /// One line: what went wrong.
    pub what: &'a str,
    /// The error, if any (never a secret: errors are built without them).
    pub detail: Option<&'a str>,
    /// What a person should do.
    pub action: &'a str,
    pub host: &'a str,
}

pub fn alert(a: &Alert) -> Message {
    let mut email = format!(
        "The automatic rotation of the LWA client secret {param} (credential{s} {creds}) on \
         host {host} needs a person: {what}.\n\n",
        param = a.parameter,
        s = if a.credentials.len() == 1 { "" } else { "s" },
        creds = a.credentials.join(", "),
        host = a.host,
        what = a.what,
    );
    if let Some(d) = a.detail {
        email.push_str(&format!("Error:         {d}\n"));
    }
    email.push_str(&format!(
        "Parameter:     {param}\nHost:          {host}\n\nWhat to do:\n{action}\n\n\
         The current secret in SSM keeps working until it expires; `lwa-agent status` and\n\
         journalctl -u lwa-agent show the rotation's state.\n",
        param = a.parameter,
        host = a.host,
        action = a.action,
    ));
    Message {
        subject: one_line(
            &format!(
                "[lwa-agent] ALERT: automatic rotation of {} failed",
                a.parameter
            ),
            MAX_SUBJECT,
        ),
        sms: one_line(
            &format!(
                "lwa-agent {}: automatic rotation of {} failed: {}",
                a.host, a.parameter, a.what
            ),
            MAX_SMS,
        ),
        email,
        severity: "alert".into(),
    }
}

/// Where the automatic rotation of a due parameter stands, for its reminder.
pub enum Plan<'a> {
    /// It starts at the next check (or just started).
    Scheduled { rotate_after: Duration },
    /// Under way since then.
    InProgress { since: &'a str },
    /// It failed in a way only a person can fix.
    Failed { error: &'a str },
}

/// The reminder for a client secret the agent rotates itself: says the rotation is on its
/// way instead of asking a person to act, unless it failed, then it is the full reminder
/// with the failure on top.
pub fn reminder(r: &Reminder, built: Message, plan: &Plan) -> Message {
    let expiry = humantime::format_rfc3339_seconds(r.last_modified + r.expire_after);
    match plan {
        Plan::Failed { error } => Message {
            subject: one_line(
                &format!(
                    "[lwa-agent] Rotate {} by hand: automatic rotation failed",
                    r.parameter
                ),
                MAX_SUBJECT,
            ),
            email: format!(
                "THE AUTOMATIC ROTATION OF {param} FAILED: {error}\n\
                 Until it is fixed, rotate by hand before {expiry}.\n\n{email}",
                param = r.parameter,
                email = built.email,
            ),
            sms: one_line(
                &format!(
                    "lwa-agent {}: automatic rotation of {} failed; rotate by hand before {expiry}",
                    r.host, r.parameter
                ),
                MAX_SMS,
            ),
            severity: built.severity,
        },
        Plan::Scheduled { .. } | Plan::InProgress { .. } => {
            let state = match plan {
                Plan::InProgress { since } => format!("in progress since {since}"),
                Plan::Scheduled { rotate_after } => format!(
                    "scheduled (rotation.auto.rotate_after = {})",
                    humantime::format_duration(*rotate_after)
                ),
                Plan::Failed { .. } => String::new(),
            };
            let age = r.now.duration_since(r.last_modified).unwrap_or_default();
            Message {
                subject: one_line(
                    &format!(
                        "[lwa-agent] {}: automatic rotation {}",
                        r.parameter,
                        short(plan)
                    ),
                    MAX_SUBJECT,
                ),
                email: format!(
                    "The LWA client secret {param} (version {version}) on host {host} is {days} \
                     days old; it expires on {expiry}.\n\n\
                     lwa-agent rotates it automatically: {state}.\n\
                     Nothing to do: you get a \"rotated automatically\" message when it is done, \
                     and an alert if it fails.\n",
                    param = r.parameter,
                    version = r.version,
                    host = r.host,
                    days = age.as_secs() / 86400,
                ),
                sms: one_line(
                    &format!(
                        "lwa-agent {}: {} automatic rotation {}",
                        r.host,
                        r.parameter,
                        short(plan)
                    ),
                    MAX_SMS,
                ),
                severity: "info".into(),
            }
        }
    }
}

fn short(plan: &Plan) -> &'static str {
    match plan {
        Plan::Scheduled { .. } => "scheduled",
        Plan::InProgress { .. } => "in progress",
        Plan::Failed { .. } => "failed",
    }
}

/// The SNS body (`MessageStructure=json`), as for reminders.
pub fn sns_json(m: &Message) -> String {
    super::sns_json(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::decide::Age;
    use std::time::SystemTime;

    #[test]
    fn the_report_names_parameter_version_and_old_expiry() {
        let params = vec![
            ("/erp/secret".to_string(), 2),
            ("/copy/secret".to_string(), 5),
        ];
        let creds = vec!["default".to_string()];
        let m = rotated(&Rotated {
            parameters: &params,
            credentials: &creds,
            old_secret_expires_at: Some("2026-05-08T10:00:00Z"),
            new_secret_expires_at: Some("2026-10-28T10:00:00Z"),
            host: "erp-1",
        });
        assert_eq!(
            m.subject,
            "[lwa-agent] Rotated /erp/secret automatically (version 2)"
        );
        for needle in [
            "/erp/secret (now version 2)",
            "/copy/secret (now version 5)",
            "keeps working until 2026-05-08T10:00:00Z",
            "erp-1",
            "credential default",
        ] {
            assert!(m.email.contains(needle), "{needle} in\n{}", m.email);
        }
        assert!(m.sms.len() <= MAX_SMS && m.sms.contains("2026-05-08"));
        assert_eq!(m.severity, "info");
    }

    #[test]
    fn alerts_say_what_happened_and_what_to_do() {
        let creds = vec!["default".to_string()];
        let m = alert(&Alert {
            parameter: "/erp/secret",
            credentials: &creds,
            what: "LWA rejected the new secret, so nothing was written",
            detail: Some("invalid_client"),
            action: "look at message m-1 in the queue",
            host: "erp-1",
        });
        assert!(m.subject.contains("ALERT") && m.subject.len() <= MAX_SUBJECT);
        assert!(m.email.contains("nothing was written") && m.email.contains("m-1"));
        assert_eq!(m.severity, "alert");
    }

    #[test]
    fn a_due_reminder_says_the_rotation_is_on_its_way_unless_it_failed() {
        let now = SystemTime::now();
        let r = Reminder {
            parameter: "/erp/secret",
            version: 4,
            last_modified: now - Duration::from_secs(151 * 86400),
            now,
            expire_after: Duration::from_secs(180 * 86400),
            state: Age::Warn,
            host: "erp-1",
            uses: vec![("default".into(), "client_secret")],
        };
        let built = crate::rotation::texts::build(&r);
        let scheduled = reminder(
            &r,
            crate::rotation::texts::build(&r),
            &Plan::Scheduled {
                rotate_after: Duration::from_secs(150 * 86400),
            },
        );
        assert!(
            scheduled.subject.contains("automatic rotation scheduled"),
            "{}",
            scheduled.subject
        );
        assert!(scheduled.email.contains("Nothing to do"));
        assert!(
            !scheduled.email.contains("put-secret"),
            "asks no one to act"
        );
        let failed = reminder(
            &r,
            built,
            &Plan::Failed {
                error: "LWA rejected it",
            },
        );
        assert!(failed.subject.contains("by hand"));
        assert!(failed.email.starts_with("THE AUTOMATIC ROTATION"));
        assert!(
            failed.email.contains("put-secret"),
            "the manual procedure follows"
        );
        assert_eq!(failed.severity, "warning");
    }
}
