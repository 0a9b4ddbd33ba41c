//! Rotation reminders (docs/rotation.md): the parameter-age check that runs from the
//! in-process cron or `lwa-agent check`, publishing one SNS reminder per due parameter.
//! With `[rotation.auto]` the same check starts the automatic rotation (`auto`,
//! docs/automatic-rotation.md) of a client secret older than `rotate_after`.
//!
//! The rotation stands beside the token core, which never imports it: the daemon starts
//! it (`service`) and the core sees it as a status view (docs/design.md, "Subsystems").
//!
//! Invariants: a reminder is recorded as sent only after SNS accepted it (or another host's
//! fleet marker proves it went out), so a failure is retried on the next run and never
//! lost; with a fleet lock, the marker is removed again when the publish fails, so the
//! fleet does not believe a failed reminder went out.

pub mod auto;
pub mod decide;
pub mod fleet;
pub mod owner;
pub mod publish;
pub mod scheduler;
pub mod service;
pub mod state;
pub mod texts;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::aws::ssm::{policies, read};
use crate::config::{Config, RotationConfig};
use crate::lwa::parameters::ParameterStore;
use crate::metrics::Metrics;
use decide::{Age, Observed, Verdict};
use publish::{Kind, Outcome, Publisher};

/// Remind about the Roles Anywhere certificate this long before it expires: the same
/// window in which the log and status warn about it.
pub const CERTIFICATE_WARNING: Duration = crate::aws::roles_anywhere::pki::EXPIRY_WARNING;

/// Where the rotation runs: beside the token core in the daemon, or in a one-shot command
/// (`check`, `rotate`). One value decides every difference between the two.
#[derive(Clone)]
pub enum Mode {
    /// The daemon: a written secret reloads its parameter store, a trigger's request runs
    /// in a task of its own (a 429's minute of waiting holds up nothing), and counts go to
    /// `/metrics`.
    Daemon {
        params: Arc<ParameterStore>,
        metrics: Arc<Metrics>,
    },
    /// A command: the running agent is reloaded through its socket, and requests run in
    /// the command's own time.
    Command,
}

impl Mode {
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        match self {
            Mode::Daemon { metrics, .. } => Some(metrics),
            Mode::Command => None,
        }
    }

    pub fn params(&self) -> Option<&Arc<ParameterStore>> {
        match self {
            Mode::Daemon { params, .. } => Some(params),
            Mode::Command => None,
        }
    }

    pub fn in_background(&self) -> bool {
        matches!(self, Mode::Daemon { .. })
    }
}

/// The rotation check: every watched parameter's age, a reminder for each one due, and
/// (with `[rotation.auto]`) the automatic rotation of a client secret that is due.
pub struct Checker {
    config: RotationConfig,
    /// (parameter, credential, field) for every credential parameter.
    uses: Vec<(String, String, &'static str)>,
    watched: Vec<String>,
    ssm: aws_sdk_ssm::Client,
    state_dir: PathBuf,
    host: String,
    metrics: Option<Arc<Metrics>>,
    certificate_expiry: Option<SystemTime>,
    publisher: Publisher,
    /// The automatic rotation: the check starts it for a client secret older than
    /// `rotate_after`, and reminders say it is on its way.
    auto: Option<Arc<auto::Rotator>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checked_at: String,
    pub dry_run: bool,
    pub topic_arn: Option<String>,
    pub parameters: Vec<ParameterReport>,
    pub sent: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParameterReport {
    pub name: String,
    pub version: Option<i64>,
    pub last_modified: Option<String>,
    pub age_days: Option<u64>,
    /// ok, warn, expired, or missing.
    pub state: String,
    /// none, covered_by_eventbridge, reminded_recently, sent, would_send, logged,
    /// sent_by_other_host, sending_by_other_host, failed.
    pub action: String,
    pub subject: Option<String>,
    pub error: Option<String>,
    /// For a client secret the agent rotates itself: what the automatic rotation did
    /// (rotation_started, rotation_in_flight, would_rotate, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_rotation: Option<String>,
}

/// The fields of a credential, as `put-secret --field` names them.
fn uses_of(config: &Config) -> Vec<(String, String, &'static str)> {
    config
        .credentials
        .iter()
        .flat_map(|c| {
            c.fields()
                .map(|(field, p)| (p.to_string(), c.name.clone(), field))
        })
        .collect()
}

/// Every credential's parameters plus `rotation.parameters`, deduplicated.
pub fn watched(config: &Config) -> Vec<String> {
    let mut names = config.credential_parameters();
    for p in &config.rotation.parameters {
        if !names.contains(p) {
            names.push(p.clone());
        }
    }
    names
}

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

impl Checker {
    pub fn new(
        config: &Config,
        sdk: &aws_config::SdkConfig,
        state_dir: PathBuf,
        certificate_expiry: Option<SystemTime>,
        mode: &Mode,
        auto: Option<Arc<auto::Rotator>>,
    ) -> Self {
        let publisher = Publisher::new(&config.rotation, sdk, mode);
        Checker {
            config: config.rotation.clone(),
            uses: uses_of(config),
            watched: watched(config),
            ssm: aws_sdk_ssm::Client::new(sdk),
            state_dir,
            host: publisher.host().to_string(),
            metrics: mode.metrics().cloned(),
            certificate_expiry,
            publisher,
            auto,
        }
    }

    pub async fn run(&self, dry_run: bool) -> Result<Report, String> {
        let now = SystemTime::now();
        // Alerts an earlier run could not publish (a timer-only site has no daemon).
        if let (Some(auto), false) = (&self.auto, dry_run) {
            auto.flush_outbox().await;
        }
        let (metas, calls) = read::describe(&self.ssm, &self.watched).await?;
        if let Some(m) = &self.metrics {
            m.ssm_calls(calls, "ok");
        }
        // One check at a time per state directory: the agent's cron and the timer's
        // `lwa-agent check` must not both send, or overwrite each other's records.
        let _lock = if dry_run {
            None
        } else {
            Some(state::lock(&self.state_dir)?)
        };
        let mut state = if dry_run {
            state::load_readonly(&self.state_dir)
        } else {
            state::load(&self.state_dir)?
        };
        let mut report = Report {
            checked_at: humantime::format_rfc3339_seconds(now).to_string(),
            dry_run,
            topic_arn: self.config.topic_arn.clone(),
            parameters: Vec::new(),
            sent: 0,
            failed: 0,
        };
        for name in &self.watched {
            let Some(meta) = metas.iter().find(|m| &m.name == name) else {
                report.parameters.push(ParameterReport {
                    name: name.clone(),
                    version: None,
                    last_modified: None,
                    age_days: None,
                    state: "missing".into(),
                    action: "none".into(),
                    subject: None,
                    error: Some("not found in SSM Parameter Store".into()),
                    auto_rotation: None,
                });
                continue;
            };
            let observed = Observed {
                name: name.clone(),
                version: meta.version,
                last_modified: meta.last_modified.unwrap_or(now),
                covered_by_policy: meta.policies.iter().any(|(t, x)| {
                    policies::policy_type(t.as_deref(), x.as_deref()).as_deref()
                        == Some(policies::NO_CHANGE_NOTIFICATION)
                }),
            };
            let (age, verdict) = decide::decide(
                &self.config,
                &observed,
                now,
                state.last_sent(name, meta.version),
            );
            let mut entry = ParameterReport {
                name: name.clone(),
                version: Some(meta.version),
                last_modified: meta
                    .last_modified
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                age_days: Some(
                    now.duration_since(observed.last_modified)
                        .unwrap_or_default()
                        .as_secs()
                        / 86400,
                ),
                state: match age {
                    Age::Ok => "ok",
                    Age::Warn => "warn",
                    Age::Expired => "expired",
                }
                .into(),
                action: "none".into(),
                subject: None,
                error: None,
                auto_rotation: None,
            };
            // The automatic rotation first, so that a due reminder says where it stands.
            let auto = match &self.auto {
                Some(r) => {
                    r.on_check(name, meta.version, observed.last_modified, now, dry_run)
                        .await
                }
                None => None,
            };
            entry.auto_rotation = auto.as_ref().and_then(|a| a.label.clone());
            match verdict {
                Verdict::Fine => {}
                Verdict::Covered => entry.action = "covered_by_eventbridge".into(),
                Verdict::RemindedRecently => entry.action = "reminded_recently".into(),
                Verdict::Due { period } => {
                    let reminder = texts::Reminder {
                        parameter: name,
                        version: meta.version,
                        last_modified: observed.last_modified,
                        now,
                        expire_after: self.config.expire_after,
                        state: age,
                        host: &self.host,
                        uses: self
                            .uses
                            .iter()
                            .filter(|(p, _, _)| p == name)
                            .map(|(_, c, f)| (c.clone(), *f))
                            .collect(),
                    };
                    let msg = texts::build(&reminder);
                    let msg = match &auto {
                        Some(a) => texts::auto::reminder(&reminder, msg, &a.plan()),
                        None => msg,
                    };
                    entry.subject = Some(msg.subject.clone());
                    let outcome = if dry_run {
                        Outcome::WouldSend
                    } else {
                        let marker = self
                            .config
                            .fleet_lock_prefix
                            .as_deref()
                            .map(|prefix| fleet::reminder(prefix, name, &period));
                        self.publisher
                            .deliver(Kind::Reminder, name, marker.as_deref(), &msg)
                            .await
                    };
                    match outcome {
                        Outcome::WouldSend => entry.action = "would_send".into(),
                        Outcome::Logged => entry.action = "logged".into(),
                        // Another host holds the claim and has not sent it yet: nothing
                        // recorded, so the next check looks again (sent by then, or taken
                        // over if that host died).
                        Outcome::SendingElsewhere(_) => {
                            entry.action = "sending_by_other_host".into();
                        }
                        Outcome::Sent | Outcome::SentElsewhere => {
                            let elsewhere = !matches!(outcome, Outcome::Sent);
                            state.record(name, meta.version, &period, elsewhere);
                            // Merged into the file under its lock: the automatic rotation
                            // writes to the same file meanwhile.
                            let (key, version, at) = (name.clone(), meta.version, period.clone());
                            let saved = state::update_off_runtime(&self.state_dir, move |s| {
                                s.record(&key, version, &at, elsewhere)
                            })
                            .await;
                            if elsewhere {
                                entry.action = "sent_by_other_host".into();
                            } else {
                                report.sent += 1;
                                entry.action = "sent".into();
                            }
                            // The reminder went out; failing to record it must not stop
                            // the others (it may be repeated once, which is the lesser harm).
                            if let Err(e) = saved {
                                tracing::error!(error = %e, "reminder sent but not recorded");
                                entry.error = Some(e);
                            }
                        }
                        Outcome::Failed(e) => {
                            report.failed += 1;
                            entry.action = "failed".into();
                            entry.error = Some(e);
                        }
                    }
                }
            }
            tracing::info!(
                parameter = %entry.name,
                state = %entry.state,
                action = %entry.action,
                age_days = entry.age_days.unwrap_or(0),
                "rotation check"
            );
            report.parameters.push(entry);
        }
        if let Some(not_after) = self.certificate_expiry {
            if let Some(entry) = self
                .certificate(not_after, now, dry_run, &mut state)
                .await?
            {
                if entry.action == "sent" {
                    report.sent += 1;
                } else if entry.action == "failed" {
                    report.failed += 1;
                }
                report.parameters.push(entry);
            }
        }
        Ok(report)
    }

    /// The Roles Anywhere certificate is the next outage once it expires: remind about it
    /// like a parameter, from 30 days before its notAfter.
    async fn certificate(
        &self,
        not_after: SystemTime,
        now: SystemTime,
        dry_run: bool,
        state: &mut state::State,
    ) -> Result<Option<ParameterReport>, String> {
        let left = not_after.duration_since(now).unwrap_or_default();
        if left > CERTIFICATE_WARNING {
            return Ok(None);
        }
        let key = "roles-anywhere-certificate";
        let version = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let days = left.as_secs() / 86400;
        let mut entry = ParameterReport {
            name: key.into(),
            version: None,
            last_modified: None,
            age_days: None,
            state: if left.is_zero() { "expired" } else { "warn" }.into(),
            action: "none".into(),
            subject: Some(texts::one_line(
                &format!(
                    "[lwa-agent] Roles Anywhere certificate on {} expires in {days} days",
                    self.host
                ),
                texts::MAX_SUBJECT,
            )),
            error: None,
            auto_rotation: None,
        };
        let recent = state
            .last_sent(key, version)
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() < self.config.repeat_every);
        if recent {
            entry.action = "reminded_recently".into();
            return Ok(Some(entry));
        }
        let body = format!(
            "The X.509 certificate lwa-agent on host {host} uses for IAM Roles Anywhere expires \
             on {when} ({days} days). When it expires the agent can no longer read its \
             parameters and tokens stop.\n\nIssue a new certificate from the CA of the trust \
             anchor, install it and its key where LoadCredential= points, and restart: \
             sudo systemctl restart lwa-agent\n",
            host = self.host,
            when = humantime::format_rfc3339_seconds(not_after),
        );
        let msg = texts::Message {
            subject: entry.subject.clone().unwrap_or_default(),
            sms: format!(
                "lwa-agent {}: Roles Anywhere certificate expires in {days}d",
                self.host
            ),
            email: body,
            severity: if left.is_zero() { "expired" } else { "warning" }.into(),
        };
        let period = format!("cert-{version}");
        // Each host has its own certificate: no fleet lock, or one host's reminder would
        // silence another's.
        let outcome = if dry_run {
            Outcome::WouldSend
        } else {
            self.publisher
                .deliver(Kind::Reminder, key, None, &msg)
                .await
        };
        entry.action = match outcome {
            Outcome::WouldSend => "would_send".into(),
            Outcome::Logged => "logged".into(),
            // No claim (each host has its own certificate): never sending elsewhere.
            Outcome::Sent | Outcome::SentElsewhere | Outcome::SendingElsewhere(_) => {
                state.record(key, version, &period, false);
                let (key, at) = (key.to_string(), period.clone());
                state::update_off_runtime(&self.state_dir, move |s| {
                    s.record(&key, version, &at, false)
                })
                .await?;
                "sent".into()
            }
            Outcome::Failed(e) => {
                entry.error = Some(e);
                "failed".into()
            }
        };
        Ok(Some(entry))
    }
}

/// The in-process view of the rotation check, for `/v1/status`.
#[derive(Default)]
pub struct Status {
    pub last_check: Option<SystemTime>,
    /// The last check was the start-up look (a dry run: nothing sent, nothing asked).
    pub last_check_was_look: bool,
    pub last_report: Option<Report>,
    pub last_error: Option<String>,
    pub last_reminder: Option<String>,
}

pub type SharedStatus = Arc<Mutex<Status>>;

/// One scheduled check: run it and keep the outcome for `/v1/status`.
pub async fn run_and_record(checker: &Checker, status: &SharedStatus) {
    let result = checker.run(false).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "rotation check failed; it runs again at the next scheduled time");
    }
    if let Ok(mut s) = status.lock() {
        s.last_check = Some(SystemTime::now());
        s.last_check_was_look = false;
        match result {
            Ok(report) => {
                s.last_error = None;
                s.last_report = Some(report);
            }
            Err(e) => s.last_error = Some(e),
        }
        s.last_reminder = state::load_readonly(&checker.state_dir).last_reminder();
    }
}
