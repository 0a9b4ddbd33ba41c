//! The rotation subsystem as the daemon runs it, beside the token core: the check on its
//! schedule (and a first look at start-up), the automatic rotation's listener, and their
//! part of `/v1/status` and `/metrics`. `daemon::run` starts it; the core sees it only as
//! a `status::View` (docs/design.md, "Subsystems").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::auto::Rotator;
use super::decide::{age_of, Age};
use super::{scheduler, state, Checker, Mode, SharedStatus};
use crate::config::{Config, RotationConfig};
use crate::lwa::exchange::LwaClient;
use crate::lwa::parameters::ParameterStore;
use crate::metrics::{AutoRotationGauge, Gauges, Metrics};
use crate::status::{Document, View};

pub struct Rotation {
    config: RotationConfig,
    /// The credentials' names: each gets its `auto_rotation` record in status (null when
    /// there is none).
    credentials: Vec<String>,
    params: Arc<ParameterStore>,
    /// The scheduled checks' last outcome.
    check: SharedStatus,
    auto: Option<Arc<Rotator>>,
    /// Kept for the life of the daemon: dropping it stops the schedule.
    _scheduler: Option<tokio_cron_scheduler::JobScheduler>,
}

impl Rotation {
    /// Starts the automatic rotation's listener (with `[rotation.auto]`) and the scheduled
    /// check (unless `rotation.enabled = false`).
    pub async fn start(
        config: &Config,
        sdk: &aws_config::SdkConfig,
        lwa: Arc<LwaClient>,
        params: Arc<ParameterStore>,
        metrics: Arc<Metrics>,
        certificate_expiry: Option<SystemTime>,
    ) -> Result<Arc<Rotation>, String> {
        let mode = Mode::Daemon {
            params: params.clone(),
            metrics,
        };
        let state_dir = state::directory();
        let auto = Rotator::new(config, sdk, lwa, state_dir.clone(), mode.clone())?;
        if let Some(auto) = &auto {
            if auto.auto().enabled {
                // Whichever host receives a new secret completes it: listen for as long as
                // the agent runs.
                auto.listen();
            } else {
                tracing::info!(
                    "automatic rotation configured but disabled (rotation.auto.enabled = \
                     false); this host's client secret parameters are still registered, so \
                     the host that rotates writes them too"
                );
                auto.keep_house();
            }
        }
        let check = SharedStatus::default();
        let scheduler = if config.rotation.enabled {
            let checker = Checker::new(
                config,
                sdk,
                state_dir.clone(),
                certificate_expiry,
                &mode,
                auto.clone(),
            );
            Some(schedule(config, Arc::new(checker), state_dir, &check).await?)
        } else {
            tracing::info!("rotation check disabled in the agent (rotation.enabled = false)");
            None
        };
        Ok(Arc::new(Rotation {
            config: config.rotation.clone(),
            credentials: config.credentials.iter().map(|c| c.name.clone()).collect(),
            params,
            check,
            auto,
            _scheduler: scheduler,
        }))
    }
}

/// The first look, then the check on `rotation.schedule`.
async fn schedule(
    config: &Config,
    checker: Arc<Checker>,
    state_dir: PathBuf,
    check: &SharedStatus,
) -> Result<tokio_cron_scheduler::JobScheduler, String> {
    if config.rotation.topic_arn.is_none() {
        tracing::warn!("rotation.topic_arn is not set: rotation reminders go to the log only");
    }
    if let Ok(mut s) = check.lock() {
        s.last_reminder = state::load_readonly(&state_dir).last_reminder();
    }
    // A first look (a dry run: nothing sent) so that status and metrics show every watched
    // parameter's state before the first scheduled check, which may be a day away.
    let (first, status) = (checker.clone(), check.clone());
    tokio::spawn(async move {
        if let Ok(report) = first.run(true).await {
            if let Ok(mut s) = status.lock() {
                if s.last_check.is_none() {
                    s.last_check = Some(SystemTime::now());
                    s.last_check_was_look = true;
                }
                s.last_report.get_or_insert(report);
            }
        }
    });
    let scheduler = scheduler::start(checker, &config.rotation.schedule, check.clone()).await?;
    tracing::info!(schedule = %config.rotation.schedule, "rotation check scheduled (host local time)");
    Ok(scheduler)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn unix(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

impl Rotation {
    fn next_check(&self) -> Option<SystemTime> {
        self.config
            .enabled
            .then(|| crate::config::schedule::next_after_now(&self.config.schedule))
            .flatten()
    }
}

impl View for Rotation {
    fn status(&self, doc: &mut Document) {
        // Each credential parameter's state, by its age against warn_after/expire_after.
        let now = SystemTime::now();
        {
            let snap = self.params.snapshot();
            for (name, p) in &snap.values {
                // Whole seconds, as `age_seconds` shows it.
                let age = p
                    .last_modified
                    .map(|t| Duration::from_secs(now.duration_since(t).map_or(0, |d| d.as_secs())));
                let state = match age.map(|a| age_of(&self.config, a)) {
                    Some(Age::Expired) => "expired",
                    Some(Age::Warn) => "warn",
                    Some(Age::Ok) => "ok",
                    None => "unknown",
                };
                doc.parameter_field(name, "state", state.into());
            }
        }
        let records = self.auto.as_ref().map(|a| a.records()).unwrap_or_default();
        for credential in &self.credentials {
            doc.credential_field(credential, "auto_rotation", json!(records.get(credential)));
        }
        let section = match self.check.lock() {
            Ok(s) => json!({
                "enabled": self.config.enabled,
                "schedule": self.config.schedule,
                "topic_arn": self.config.topic_arn,
                "last_check": s.last_check.map(rfc3339),
                // The start-up look reads every parameter's age and sends nothing.
                "last_check_kind": s.last_check.map(|_| if s.last_check_was_look { "start_up_look" } else { "check" }),
                "next_check": self.next_check().map(rfc3339),
                "last_reminder": s.last_reminder,
                "last_error": s.last_error,
                "parameters": s.last_report.as_ref().map(|r| &r.parameters),
                "auto": self.auto.as_ref().map(|r| r.status()),
            }),
            Err(_) => Value::Null,
        };
        doc.section("rotation", section);
    }

    fn gauges(&self, g: &mut Gauges) {
        if let Ok(r) = self.check.lock() {
            g.last_check = r.last_check.and_then(unix);
            for p in r.last_report.iter().flat_map(|r| &r.parameters) {
                g.parameter_state.push((p.name.clone(), p.state.clone()));
                // Watched parameters that are not a credential's are aged from the report.
                if let (Some(days), false) = (
                    p.age_days,
                    g.parameter_age_seconds.iter().any(|(n, _)| n == &p.name),
                ) {
                    g.parameter_age_seconds.push((p.name.clone(), days * 86400));
                }
            }
        }
        g.next_check = self.next_check().and_then(unix);
        g.auto_rotations = self
            .auto
            .iter()
            .flat_map(|a| a.records())
            .map(|(credential, r)| AutoRotationGauge {
                credential,
                at: humantime::parse_rfc3339(&r.at).ok().and_then(unix),
                outcome: r.outcome,
                needs_attention: r.needs_attention,
            })
            .collect();
    }
}
