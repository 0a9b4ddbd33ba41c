//! Every SNS text the rotation sends: here a reminder's (an SNS subject, an email body, a
//! short SMS, and message attributes), in [`auto`] the automatic rotation's reports and
//! alerts. Pure. Built only from names, versions, dates and the host name: a secret value
//! never reaches these modules.

pub mod auto;

use std::time::{Duration, SystemTime};

use super::decide::Age;

/// SNS takes subjects of "less than 100 characters" on one line (its API reference): 99.
pub const MAX_SUBJECT: usize = 99;
/// One SMS segment.
pub const MAX_SMS: usize = 140;

pub struct Reminder<'a> {
    pub parameter: &'a str,
    pub version: i64,
    pub last_modified: SystemTime,
    pub now: SystemTime,
    pub expire_after: Duration,
    pub state: Age,
    pub host: &'a str,
    /// (credential name, field) pairs that use this parameter, for the put-secret command.
    pub uses: Vec<(String, &'static str)>,
}

/// Kept in the state file's outbox until it went out, so it is (de)serializable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub subject: String,
    pub email: String,
    pub sms: String,
    pub severity: String,
}

fn days(d: Duration) -> u64 {
    d.as_secs() / 86400
}

pub fn build(r: &Reminder) -> Message {
    let age = r.now.duration_since(r.last_modified).unwrap_or_default();
    let expires_at = r.last_modified + r.expire_after;
    let (severity, when) = match r.now.duration_since(expires_at) {
        Ok(past) => ("expired", format!("expired {} days ago", days(past))),
        Err(e) => ("warning", format!("expires in {} days", days(e.duration()))),
    };
    let severity = if r.state == Age::Expired {
        "expired"
    } else {
        severity
    };
    let subject = one_line(
        &format!("[lwa-agent] Rotate {} ({when})", r.parameter),
        MAX_SUBJECT,
    );
    let commands: Vec<String> = if r.uses.is_empty() {
        vec![format!(
            "aws ssm put-parameter --name {} --type SecureString --overwrite --value <new value>",
            r.parameter
        )]
    } else {
        r.uses
            .iter()
            .map(|(cred, field)| {
                format!("sudo lwa-agent put-secret --credential {cred} --field {field}")
            })
            .collect()
    };
    let is_secret = r.uses.iter().any(|(_, f)| *f == "client_secret");
    let mut email = format!(
        "The LWA parameter {param} on host {host} is {age} days old and {when}.\n\n\
         Parameter:     {param} (version {version})\n\
         Last changed:  {changed}\n\
         Age:           {age} days\n\
         Expiry:        {expiry} ({when})\n\
         Host:          {host}\n\
         Severity:      {severity}\n\n\
         How to rotate:\n",
        param = r.parameter,
        host = r.host,
        age = days(age),
        version = r.version,
        changed = humantime::format_rfc3339_seconds(r.last_modified),
        expiry = humantime::format_rfc3339_seconds(expires_at),
    );
    if is_secret {
        email.push_str(
            "1. In Seller Central (or Vendor Central), open Apps and Services > Develop Apps,\n   \
             choose the app's LWA credentials and generate a new client secret. The old\n   \
             secret keeps working for 7 days after the new one is made.\n",
        );
    } else {
        email.push_str("1. Get the new value from where it is issued.\n");
    }
    email.push_str("2. On a host that runs lwa-agent, store it (the value is read from stdin,\n   and proved at LWA before it is written):\n");
    for c in &commands {
        email.push_str(&format!("     {c}\n"));
    }
    email.push_str(
        "3. The agent reloads and uses the new version at once; other hosts pick it up\n   \
         within ssm.refresh_interval, or run: sudo systemctl reload lwa-agent\n\n\
         Sent by lwa-agent's rotation check. To stop these reminders for this parameter,\n\
         rotate it, or attach a NoChangeNotification policy (Advanced tier) with an\n\
         EventBridge rule.\n",
    );
    let sms = one_line(
        &format!(
            "lwa-agent {host}: {param} is {age}d old, {when}. Rotate: lwa-agent put-secret",
            host = r.host,
            param = r.parameter,
            age = days(age)
        ),
        MAX_SMS,
    );
    Message {
        subject,
        email,
        sms,
        severity: severity.to_string(),
    }
}

/// The reminder as SNS `MessageStructure=json`: per-protocol bodies.
pub fn sns_json(m: &Message) -> String {
    serde_json::json!({"default": m.email, "email": m.email, "sms": m.sms}).to_string()
}

/// Printable ASCII on one line, cut to `max` characters with an ellipsis.
pub fn one_line(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    format!("{}...", &clean[..max - 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn reminder(days_old: u64, parameter: &str) -> Message {
        let now = SystemTime::now();
        build(&Reminder {
            parameter,
            version: 4,
            last_modified: now - DAY * days_old as u32,
            now,
            expire_after: DAY * 180,
            state: if days_old >= 180 {
                Age::Expired
            } else {
                Age::Warn
            },
            host: "erp-1",
            uses: vec![("default".into(), "client_secret")],
        })
    }

    #[test]
    fn warning_names_parameter_age_expiry_host_and_the_command() {
        let m = reminder(151, "/my-erp/lwa/clientsecret");
        assert_eq!(m.severity, "warning");
        assert_eq!(
            m.subject,
            "[lwa-agent] Rotate /my-erp/lwa/clientsecret (expires in 29 days)"
        );
        for needle in [
            "/my-erp/lwa/clientsecret (version 4)",
            "151 days",
            "expires in 29 days",
            "erp-1",
            "Seller Central",
            "sudo lwa-agent put-secret --credential default --field client_secret",
        ] {
            assert!(
                m.email.contains(needle),
                "missing {needle:?} in\n{}",
                m.email
            );
        }
        assert!(m.sms.len() <= MAX_SMS);
        assert!(m.sms.contains("151d old"));
    }

    #[test]
    fn expired_parameters_say_so() {
        let m = reminder(200, "/my-erp/lwa/clientsecret");
        assert_eq!(m.severity, "expired");
        assert!(m.subject.contains("expired 20 days ago"), "{}", m.subject);
    }

    #[test]
    fn long_names_keep_the_subject_and_sms_within_limits() {
        let long = format!("/{}", "x".repeat(300));
        let m = reminder(160, &long);
        assert!(m.subject.len() <= MAX_SUBJECT, "{}", m.subject.len());
        assert!(m.sms.len() <= MAX_SMS);
        assert!(!m.subject.contains('\n'));
        let json: serde_json::Value = serde_json::from_str(&sns_json(&m)).expect("json");
        assert_eq!(json["sms"], m.sms.as_str());
        assert_eq!(json["default"], json["email"]);
    }
}
