//! Asking Amazon for a new client secret: what a trigger (the rotation check's age test,
//! an expiry notification, `lwa-agent rotate`) does. Runs [`machine::Request`]'s steps:
//! fleet marker → grantless token → `rotateApplicationClientSecret`, with the 429 rule.
//! Amazon then delivers the new secret to the queue, where `complete.rs` takes over,
//! on whichever host receives it.
//!
//! Invariants: the marker (`fleet::AppScope::request`, named by the app and the
//! fingerprint of the secret being replaced) is created before the call, so one host of
//! the fleet, once, asks to replace each secret, whatever its config calls the
//! parameters; it is given back only when no secret can have been made (nothing was
//! asked, or Amazon refused), so a later trigger may try again without risking a second
//! secret; the state file says `requesting`, then `waiting_for_secret`, so a restart
//! neither repeats nor forgets the request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::apps::App;
use super::machine::{self, outcome, Ending, Event, ExpiryAction, Skip, Step, Trigger};
use super::notification::Expiry;
use super::work::{Finish, Work};
use super::Rotator;
use crate::aws::ssm::{
    markers,
    read::{self, Parameter},
};
use crate::rotation::fleet;

/// Which app a trigger is about.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Credential(&'a str),
    /// A client secret parameter (the rotation check's view).
    SecretParameter(&'a str),
    ClientId(&'a str),
}

/// What a trigger did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// Not started, and why.
    Skipped(Skip),
    /// A dry run: what would be done.
    Would(String),
    /// Started in the background (the daemon).
    Started,
    /// Amazon accepted; the new secret is awaited until then.
    Requested { wait_until: SystemTime },
    /// Another host holds this version's marker (value: who and when).
    OtherHost(String),
    /// Nothing was asked of Amazon, or Amazon refused.
    Failed(String),
}

impl Requested {
    /// A short label for the rotation check's report.
    pub fn label(&self) -> String {
        match self {
            Requested::Skipped(s) => format!("rotation_{}", s.label()),
            Requested::Would(_) => "would_rotate".into(),
            Requested::Started => "rotation_started".into(),
            Requested::Requested { .. } => "rotation_requested".into(),
            Requested::OtherHost(_) => "rotation_by_other_host".into(),
            Requested::Failed(_) => "rotation_failed".into(),
        }
    }
}

/// The app, its current values, its key parameter's version, age and secret.
pub(super) struct Subject {
    pub app: App,
    pub values: HashMap<String, Parameter>,
    pub version: i64,
    pub last_modified: SystemTime,
    /// `fleet::fingerprint` of the secret the key parameter holds: the one a rotation
    /// replaces.
    pub fingerprint: String,
}

impl Rotator {
    /// Finds the app `target` names and reads where its secret stands in SSM.
    pub(super) async fn subject(&self, target: Target<'_>) -> Result<Subject, String> {
        let values = self.read_values().await?;
        let apps = self.apps(&values);
        let app = match target {
            Target::Credential(name) => {
                let Some(cred) = self.config.credential(name) else {
                    return Err(format!("no credential named `{name}` in the config"));
                };
                apps.into_iter()
                    .find(|a| a.credentials.contains(&cred.name))
                    .ok_or_else(|| {
                        format!(
                            "the client id of credential `{name}` ({}) cannot be read from SSM",
                            cred.client_id_parameter
                        )
                    })?
            }
            Target::SecretParameter(p) => apps
                .into_iter()
                .find(|a| a.secret_parameters.iter().any(|s| s == p))
                .ok_or_else(|| format!("no readable credential uses {p} as its client secret"))?,
            Target::ClientId(id) => apps
                .into_iter()
                .find(|a| a.is(id))
                .ok_or_else(|| "no credential uses this client id".to_string())?,
        };
        let (metas, _) = read::describe(&self.ssm, &[app.key_parameter().to_string()]).await?;
        let meta = metas
            .into_iter()
            .next()
            .ok_or_else(|| format!("{} is not in SSM", app.key_parameter()))?;
        let fingerprint = values
            .get(app.key_parameter())
            .map(|p| fleet::fingerprint(&p.value))
            .ok_or_else(|| format!("{} could not be read from SSM", app.key_parameter()))?;
        Ok(Subject {
            app,
            values,
            version: meta.version,
            last_modified: meta.last_modified.unwrap_or_else(SystemTime::now),
            fingerprint,
        })
    }

    /// One trigger: decides whether to rotate, and if so asks Amazon (in the background in
    /// the daemon). Errors are about reading SSM; what the request itself met is in the
    /// returned value.
    pub async fn trigger(
        self: &Arc<Self>,
        target: Target<'_>,
        trigger: Trigger,
        dry_run: bool,
    ) -> Result<Requested, String> {
        let subject = self.subject(target).await?;
        Ok(self
            .start(subject, trigger, dry_run, self.mode.in_background())
            .await)
    }

    /// `spawn`: ask Amazon in a task of its own and return at once.
    pub(super) async fn start(
        self: &Arc<Self>,
        subject: Subject,
        trigger: Trigger,
        dry_run: bool,
        spawn: bool,
    ) -> Requested {
        let now = SystemTime::now();
        let age = now
            .duration_since(subject.last_modified)
            .unwrap_or_default();
        let record = self.record_of(&subject.app).await;
        if let Err(skip) = machine::decide_start(
            trigger,
            subject.version,
            age,
            self.auto().rotate_after,
            record.as_ref(),
            now,
        ) {
            return Requested::Skipped(skip);
        }
        if dry_run {
            return Requested::Would(self.plan(&subject).await);
        }
        let key = subject.app.key_parameter().to_string();
        // One request per secret in this process at a time.
        let fresh = self
            .memory
            .in_flight
            .lock()
            .map(|mut set| set.insert(key.clone()))
            .unwrap_or(false);
        if !fresh {
            return Requested::Skipped(Skip::InFlight {
                until: now + machine::REQUESTING_BOUND,
            });
        }
        if spawn {
            let me = self.clone();
            tokio::spawn(async move {
                me.request(subject, trigger).await;
            });
            return Requested::Started;
        }
        self.request(subject, trigger).await
    }

    /// Runs the request's steps and records each outcome.
    async fn request(&self, subject: Subject, trigger: Trigger) -> Requested {
        let Subject {
            app,
            values,
            version,
            fingerprint,
            ..
        } = subject;
        let parameter = app.key_parameter().to_string();
        tracing::info!(
            parameter = %parameter,
            version,
            trigger = trigger.label(),
            credentials = %app.credentials.join(","),
            "automatic rotation: asking Amazon for a new client secret"
        );
        let replacing = fingerprint.clone();
        self.record(&app.credentials, move |r| {
            *r = crate::rotation::state::AutoRotation {
                outcome: outcome::REQUESTING.into(),
                trigger: trigger.label().into(),
                parameter_version: Some(version),
                replacing: Some(replacing.clone()),
                ..Default::default()
            };
        })
        .await;
        let marker = self.scope(&app).request(&fingerprint);
        let (mut machine, mut step) = machine::Request::first();
        let ending = loop {
            let event = match step {
                Step::TakeMarker => {
                    let value = format!(
                        "{} {} {}",
                        self.host,
                        humantime::format_rfc3339_seconds(SystemTime::now()),
                        trigger.label()
                    );
                    match markers::create(&self.ssm, &marker, &value).await {
                        Ok(true) => Event::MarkerTaken,
                        Ok(false) => Event::MarkerHeld(
                            markers::get(&self.ssm, &marker)
                                .await
                                .ok()
                                .flatten()
                                .unwrap_or_else(|| "another host".into()),
                        ),
                        Err(e) => Event::MarkerError(e),
                    }
                }
                Step::GetToken => {
                    Event::Token(self.grantless_token(&app, &values).await.map(|_| ()))
                }
                Step::Call { attempt, after } => {
                    if !after.is_zero() {
                        tracing::warn!(
                            parameter = %parameter,
                            attempt,
                            wait_seconds = after.as_secs(),
                            "automatic rotation: waiting before calling Amazon again"
                        );
                        tokio::time::sleep(after).await;
                    }
                    let result = match self.grantless_token(&app, &values).await {
                        Ok(token) => {
                            self.app_management
                                .rotate_client_secret(&token.access_token)
                                .await
                        }
                        // Nothing was sent: retried like a refused connection.
                        Err(e) => Err(super::app_management::RotateError::Transport {
                            url: self.app_management.url().to_string(),
                            reason: format!("no grantless token: {e}"),
                            sent: false,
                        }),
                    };
                    match &result {
                        Ok(()) => self.count("rotate_call_ok"),
                        Err(e) => {
                            self.count(&format!("rotate_call_{}", e.kind()));
                            tracing::warn!(parameter = %parameter, attempt, error = %e, "automatic rotation: Amazon did not accept the rotate call");
                        }
                    }
                    Event::Called(result)
                }
                Step::Finish(ending) => break ending,
            };
            step = machine.next(event);
        };
        let result = self
            .finish(&app, version, &fingerprint, trigger, &marker, ending)
            .await;
        if let Ok(mut set) = self.memory.in_flight.lock() {
            set.remove(&parameter);
        }
        result
    }

    /// Records that the new secret of the app's `version` is awaited from now on; returns
    /// until when.
    async fn waiting(&self, app: &App, version: i64, note: Option<String>) -> SystemTime {
        let wait = self.auto().wait_for_secret;
        let now = SystemTime::now();
        self.record(&app.credentials, move |r| {
            r.outcome = outcome::WAITING.into();
            r.requested_at = Some(humantime::format_rfc3339_seconds(now).to_string());
            r.wait_until = Some(humantime::format_rfc3339_seconds(now + wait).to_string());
            r.parameter_version = Some(version);
            r.needs_attention = false;
            r.error = note.clone();
        })
        .await;
        now + wait
    }

    async fn finish(
        &self,
        app: &App,
        version: i64,
        fingerprint: &str,
        trigger: Trigger,
        marker: &str,
        ending: Ending,
    ) -> Requested {
        let parameter = app.key_parameter();
        let wait = self.auto().wait_for_secret;
        match ending {
            Ending::Requested => {
                tracing::info!(
                    parameter = %parameter,
                    wait_seconds = wait.as_secs(),
                    queue = %self.auto().new_secret_queue_url,
                    "automatic rotation: Amazon accepted; waiting for the new secret on the queue"
                );
                Requested::Requested {
                    wait_until: self.waiting(app, version, None).await,
                }
            }
            Ending::MaybeRequested(e) => {
                tracing::warn!(parameter = %parameter, error = %e, "automatic rotation: the rotate call may have reached Amazon; waiting for a new secret");
                Requested::Requested {
                    wait_until: self.waiting(app, version, Some(e)).await,
                }
            }
            Ending::OtherHost(holder) => {
                tracing::info!(parameter = %parameter, marker = %marker, holder = %holder, "automatic rotation: another host asked Amazon to replace this secret");
                self.count("rotate_skipped_by_fleet_lock");
                self.waiting(app, version, None).await;
                Requested::OtherHost(holder)
            }
            Ending::Failed { error, give_back } => {
                tracing::error!(parameter = %parameter, error = %error, trigger = trigger.label(), "automatic rotation: no new secret was requested");
                if give_back {
                    if let Err(e) = markers::delete(&self.ssm, marker).await {
                        tracing::error!(error = %e, "cannot give the rotation marker back");
                    }
                }
                let recorded = error.clone();
                self.record(&app.credentials, move |r| {
                    r.outcome = outcome::FAILED.into();
                    r.needs_attention = false;
                    r.error = Some(recorded.clone());
                })
                .await;
                self.alert(
                    app,
                    self.scope(app).alert("request-failed", fingerprint),
                    "Amazon was not asked for a new secret, or refused; nothing changed",
                    Some(&error),
                    "Fix the cause named in the error. The next rotation check tries again; to \
                     try now: sudo lwa-agent rotate --credential NAME",
                )
                .await;
                Requested::Failed(error)
            }
        }
    }

    /// What a dry run would do.
    async fn plan(&self, subject: &Subject) -> String {
        let marker = self.scope(&subject.app).request(&subject.fingerprint);
        let holder = match markers::get(&self.ssm, &marker).await {
            Ok(Some(v)) => format!("held by {v}: no call would be made"),
            Ok(None) => "free".to_string(),
            Err(e) => format!("unreadable ({e})"),
        };
        format!(
            "would take the fleet marker {} ({holder}), get a grantless LWA token with scope \
             {}, POST {}, wait up to {} for the new secret on {}, prove it at LWA, and write it \
             to {} (version {} now)",
            marker,
            super::app_management::ROTATION_SCOPE,
            self.app_management.url(),
            humantime::format_duration(self.auto().wait_for_secret),
            self.auto().new_secret_queue_url,
            subject.app.secret_parameters.join(", "),
            subject.version,
        )
    }

    /// An expiry notification for a configured app: Amazon's word that the secret ends,
    /// so it starts a rotation whatever the parameter's age in SSM (SSM's age says when a
    /// value was stored, not when Amazon made it), unless it is about a secret already
    /// replaced (`machine::expiry_action`). The message is deleted once acted on (a
    /// rotation was asked for, is under way, or was not needed); it stays when the
    /// request failed, so that it is tried again.
    pub(super) async fn on_expiry(self: &Arc<Self>, work: Work, e: Expiry) {
        let subject = match self.subject(Target::ClientId(&e.client_id)).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(message_id = %work.id, error = %err, "expiry notification left in the queue: cannot look at the secret now");
                let after = machine::retry_after(work.receive_count);
                let _ = work.finish(Finish::RetryAfter(after)).await;
                return;
            }
        };
        let parameter = subject.app.key_parameter().to_string();
        tracing::info!(
            message_id = %work.id,
            parameter = %parameter,
            expires_at = %e.expires_at.as_deref().unwrap_or("?"),
            reason = %e.reason.as_deref().unwrap_or("?"),
            "automatic rotation: Amazon announced the client secret's expiry"
        );
        // The notification the current value came from, when it came from one.
        let origin = match self
            .origin(&self.scope(&subject.app), &subject.fingerprint)
            .await
        {
            Ok(origin) => origin,
            Err(err) => {
                tracing::warn!(message_id = %work.id, error = %err, "expiry notification left in the queue: cannot read where the current secret came from");
                let after = machine::retry_after(work.receive_count);
                let _ = work.finish(Finish::RetryAfter(after)).await;
                return;
            }
        };
        let old_secret_expiry = origin
            .and_then(|o| o.old_secret_expires_at)
            .and_then(|t| fleet::parse_time(&t));
        let action = machine::expiry_action(
            e.published,
            subject.last_modified,
            e.expires_at.as_deref().and_then(fleet::parse_time),
            old_secret_expiry,
        );
        let done = match action {
            ExpiryAction::Replaced(why) => {
                self.count("expiry_message_replaced");
                tracing::info!(message_id = %work.id, parameter = %parameter, why = ?why, "automatic rotation: the expiry notification is about a secret already replaced; nothing to do");
                true
            }
            ExpiryAction::Rotate => {
                // In this message's own task, so that the message is deleted only once the
                // request got somewhere.
                let app = subject.app.clone();
                let outcome = self
                    .start(subject, Trigger::ExpiryNotification, false, false)
                    .await;
                tracing::info!(message_id = %work.id, parameter = %parameter, outcome = %outcome.label(), "automatic rotation: expiry notification handled");
                if let Requested::Skipped(Skip::NeedsAttention) = &outcome {
                    // Amazon's only warning must reach a person: the agent cannot act on it.
                    self.expiry_blocked(&app, &work.id, &e).await;
                }
                !matches!(outcome, Requested::Failed(_))
            }
        };
        let (id, after) = (work.id.clone(), machine::retry_after(work.receive_count));
        let finish = if done {
            Finish::Delete
        } else {
            Finish::RetryAfter(after)
        };
        match work.finish(finish).await {
            Ok(()) if done => self.count("expiry_message_done"),
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(message_id = %id, error = %err, "cannot finish the expiry notification; it reappears and is looked at again")
            }
        }
    }
}

impl Rotator {
    /// An expiry notice arrived while the last rotation needs a person: it is passed on.
    async fn expiry_blocked(&self, app: &App, message_id: &str, e: &Expiry) {
        let credential = app
            .credentials
            .first()
            .map(String::as_str)
            .unwrap_or("NAME");
        let what = format!(
            "Amazon says the client secret expires at {} ({}), and the agent cannot rotate it \
             on its own: the last automatic rotation of {} needs a person",
            e.expires_at.as_deref().unwrap_or("?"),
            e.reason.as_deref().unwrap_or("no reason given"),
            app.key_parameter(),
        );
        let action = format!(
            "Settle what the earlier alert about {param} names (`lwa-agent status` shows it), \
             then rotate before that time: sudo lwa-agent rotate --credential {credential}",
            param = app.key_parameter(),
        );
        self.alert(
            app,
            self.scope(app)
                .alert("expiry-blocked", &fleet::hash(message_id)),
            &what,
            None,
            &action,
        )
        .await;
    }
}

/// What the rotation check learnt about one client secret the agent rotates itself.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// What the trigger did, when the secret was due (for the report).
    pub label: Option<String>,
    state: PlanState,
    rotate_after: Duration,
}

#[derive(Debug, Clone)]
enum PlanState {
    Scheduled,
    InProgress(String),
    Failed(String),
}

impl CheckOutcome {
    /// Where the rotation stands, for the parameter's reminder.
    pub fn plan(&self) -> crate::rotation::texts::auto::Plan<'_> {
        match &self.state {
            PlanState::Scheduled => crate::rotation::texts::auto::Plan::Scheduled {
                rotate_after: self.rotate_after,
            },
            PlanState::InProgress(since) => {
                crate::rotation::texts::auto::Plan::InProgress { since }
            }
            PlanState::Failed(error) => crate::rotation::texts::auto::Plan::Failed { error },
        }
    }
}

impl Rotator {
    /// The rotation check's part: for a credential's client secret parameter, start the
    /// rotation when it is older than `rotate_after`, and say where it stands. `None` for
    /// other parameters, or when automatic rotation is off.
    pub async fn on_check(
        self: &Arc<Self>,
        parameter: &str,
        version: i64,
        last_modified: SystemTime,
        now: SystemTime,
        dry_run: bool,
    ) -> Option<CheckOutcome> {
        if !self.auto().enabled {
            return None;
        }
        let credential = self
            .config
            .credentials
            .iter()
            .find(|c| c.client_secret_parameter == parameter)?;
        let age = now.duration_since(last_modified).unwrap_or_default();
        let label = if age >= self.auto().rotate_after {
            let result = self
                .trigger(Target::SecretParameter(parameter), Trigger::Age, dry_run)
                .await;
            Some(match result {
                Ok(r) => {
                    if let Requested::Would(plan) = &r {
                        tracing::info!(parameter = %parameter, version, plan = %plan, "automatic rotation due (dry run)");
                    }
                    r.label()
                }
                Err(e) => {
                    tracing::error!(parameter = %parameter, error = %e, "automatic rotation could not start; the next check tries again");
                    "rotation_error".to_string()
                }
            })
        } else {
            None
        };
        let asked = matches!(
            label.as_deref(),
            Some("rotation_started" | "rotation_requested" | "rotation_by_other_host")
        );
        let state = match self.records_now().await.get(&credential.name) {
            // Just asked (in the daemon the request may not be recorded yet).
            _ if asked => PlanState::InProgress(humantime::format_rfc3339_seconds(now).to_string()),
            Some(r) if r.needs_attention && r.parameter_version == Some(version) => {
                PlanState::Failed(r.error.clone().unwrap_or_else(|| "see the alert".into()))
            }
            Some(r)
                if r.parameter_version == Some(version)
                    && (r.outcome == outcome::REQUESTING || r.outcome == outcome::WAITING) =>
            {
                PlanState::InProgress(r.requested_at.clone().unwrap_or_else(|| r.at.clone()))
            }
            _ => PlanState::Scheduled,
        };
        Some(CheckOutcome {
            label,
            state,
            rotate_after: self.auto().rotate_after,
        })
    }
}
