//! What happens when a message arrives on a rotation queue, and in full what happens when
//! it carries a new client secret (SPEC §9):
//!
//! 1. parse it; a body that is not a notification, or one for a client id no credential
//!    uses, is left untouched (not deleted, visibility not changed: it reappears for
//!    whoever it is for) and logged by message id only; the client id is matched before
//!    any secret is read, so such a message costs no decryption;
//! 2. claim it: hide it from other receivers while this host works on it;
//! 3. one completion per app at a time in this process; if every secret parameter of the
//!    app already holds the new secret (SQS delivers at least once; another host may have
//!    been first), skip to 7; if SSM already holds a newer secret (the message is older
//!    than what SSM holds: `machine::completion`), write nothing and delete the message;
//! 4. prove the new secret at LWA with the app's refresh token, a few times over minutes
//!    (LWA may take a moment to know it); a secret LWA still rejects is not written: the
//!    message stays (hidden for a while, then retried) and a person is alerted;
//! 5. write it to every secret parameter of the app that does not hold it yet, as
//!    `put-secret` does (same KMS key, tier and policies);
//! 6. reload the agent's parameters;
//! 7. report once per fleet: "rotated automatically", with the parameters, their new
//!    versions and the old secret's expiry (before the delete, so that a kill between the
//!    two loses no report: the fleet marker keeps a second completion from reporting
//!    again);
//! 8. delete the message: only now, with the new secret in SSM.
//!
//! Any host that receives the message completes it, whether or not it asked Amazon for the
//! secret: the host that did may have died.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};

use super::apps::{rotation_scope, App};
use super::machine::{self, outcome, Completion};
use super::notification::{self, NewSecret, Notification};
use super::{text, written, Rotator};
use crate::aws::sqs::{self, Received};
use crate::aws::ssm::{self, Parameter};
use crate::backoff::Backoff;
use crate::lwa::exchange::{ExchangeError, GrantKind};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Not for this agent (unknown client id, or not a notification): left untouched.
    Ignored,
    /// Already being worked on by this process.
    Busy,
    /// The new secret is in SSM and the message is deleted; `wrote`: by this host.
    Rotated { wrote: bool, version: i64 },
    /// SSM already holds a newer secret than the message's: nothing written, the
    /// message deleted.
    Stale,
    /// LWA rejected the new secret: nothing written, the message stays.
    Rejected,
    /// Something on the way failed (SSM, LWA unreachable): the message stays and is tried
    /// again when it reappears.
    Retry(String),
    /// An expiry notification (handled by `request.rs`).
    Expiry,
}

impl Rotator {
    /// One received message, from any rotation queue.
    pub async fn handle(self: &Arc<Self>, queue: &str, m: Received) -> Handled {
        let parsed = notification::parse(m.body.expose_secret());
        // The body is not needed any more; it may hold a secret.
        drop(m.body);
        let m = Received {
            body: SecretString::from(String::new()),
            ..m
        };
        let notification = match parsed {
            Ok(n) => n,
            Err(e) => {
                self.ignore(&m, &e.to_string(), "malformed");
                return Handled::Ignored;
            }
        };
        // The client id first: a message for another app costs no secret's decryption.
        let app = match self.app_of(notification.client_id()).await {
            Ok(app) => app,
            Err(e) => {
                tracing::warn!(message_id = %m.id, error = %e, "rotation message left in the queue: cannot read the client ids now; it is tried again when it reappears");
                return Handled::Retry(e);
            }
        };
        let Some(app) = app else {
            self.ignore(
                &m,
                "it is for a client id no configured credential uses",
                "unknown_client",
            );
            return Handled::Ignored;
        };
        // One worker per message in this process; SQS may hand it out again meanwhile.
        let fresh = self
            .handling
            .lock()
            .map(|mut set| set.insert(m.id.clone()))
            .unwrap_or(false);
        if !fresh {
            return Handled::Busy;
        }
        let handled = match notification {
            Notification::Expiry(e) => {
                self.on_expiry(queue, &m, e).await;
                Handled::Expiry
            }
            Notification::NewSecret(n) => self.on_new_secret(queue, &m, &app, n).await,
        };
        if let Ok(mut set) = self.handling.lock() {
            set.remove(&m.id);
        }
        handled
    }

    /// Logs an ignored message by id (once at warn, then at debug) and leaves it alone.
    fn ignore(&self, m: &Received, why: &str, metric: &str) {
        self.count(&format!("message_{metric}"));
        let first = self
            .ignored
            .lock()
            .map(|mut seen| {
                if seen.len() > 10_000 {
                    seen.clear();
                }
                seen.insert(m.id.clone())
            })
            .unwrap_or(true);
        if first {
            tracing::warn!(message_id = %m.id, receive_count = m.receive_count, reason = %why, "rotation queue message left untouched");
        } else {
            tracing::debug!(message_id = %m.id, receive_count = m.receive_count, reason = %why, "rotation queue message left untouched");
        }
    }

    /// Steps 2 to 8 for a new secret of a configured app.
    async fn on_new_secret(&self, queue: &str, m: &Received, app: &App, n: NewSecret) -> Handled {
        let parameter = app.key_parameter().to_string();
        tracing::info!(
            message_id = %m.id,
            parameter = %parameter,
            credentials = %app.credentials.join(","),
            old_secret_expires_at = %n.old_secret_expires_at.as_deref().unwrap_or("?"),
            "automatic rotation: a new client secret arrived"
        );
        // 2. Claimed for the proofs and the writes.
        let window = machine::proof_window(self.auto().wait_for_secret);
        if let Err(e) =
            sqs::hide_for(&self.sqs, queue, &m.receipt, window + machine::WORK_MARGIN).await
        {
            tracing::warn!(message_id = %m.id, error = %e, "cannot claim the message; going on (completing twice is harmless)");
        }

        // One completion per app at a time in this process: a second message for the
        // same app (an older or a newer secret) waits, then sees what the first wrote.
        let lock = self.app_lock(app);
        let _completing = lock.lock().await;

        // 3. What SSM holds now, and whether this message is still the newest word.
        let targets = match self.completion(app, &n).await {
            Ok(Completion::Current) => Vec::new(),
            Ok(Completion::Stale) => return self.stale(queue, m, &parameter).await,
            Ok(Completion::Write(targets)) => targets,
            Err(e) => return self.retry(queue, m, &parameter, e).await,
        };
        let mut wrote = false;
        if !targets.is_empty() {
            // 4. Prove it, with the app's own parameters (read only now that it is known).
            let values = match self.read_app_values(app).await {
                Ok(v) => v,
                Err(e) => return self.retry(queue, m, &parameter, e).await,
            };
            match self.prove(app, &n.secret, window, &values).await {
                Proof::Accepted => {
                    tracing::info!(parameter = %parameter, "automatic rotation: LWA accepted the new secret");
                }
                Proof::Rejected(e) => return self.rejected(queue, m, app, e).await,
                Proof::Unreachable(e) => {
                    return self
                        .retry(queue, m, &parameter, format!("LWA could not be asked: {e}"))
                        .await
                }
            }
            // 5. Write it, each parameter that does not hold it (re-read: a host may have
            // written meanwhile).
            let targets = match self.completion(app, &n).await {
                Ok(Completion::Current) => Vec::new(),
                Ok(Completion::Stale) => return self.stale(queue, m, &parameter).await,
                Ok(Completion::Write(targets)) => targets,
                Err(e) => return self.retry(queue, m, &parameter, e).await,
            };
            for i in targets {
                let Some(p) = app.secret_parameters.get(i) else {
                    continue;
                };
                match ssm::rewrite_secret(&self.ssm, p, &n.secret).await {
                    Ok(w) => {
                        wrote = true;
                        self.count("parameter_written");
                        tracing::info!(parameter = %p, version = w.version, "automatic rotation: new client secret written to SSM");
                        for dropped in &w.dropped_policies {
                            tracing::warn!(parameter = %p, policy = %dropped, "automatic rotation: a parameter policy was not kept with the new secret");
                        }
                        self.note_written(p, &n, w.version).await;
                    }
                    Err(e) => {
                        // The version the rotation is from: what triggers compare with.
                        let version = values
                            .get(app.key_parameter())
                            .map(|v| v.version)
                            .unwrap_or(0);
                        return self.write_failed(queue, m, app, &n, p, version, e).await;
                    }
                }
            }
            // 6. Reload: the refreshers exchange with the new version at once.
            if wrote {
                if let Some(params) = &self.params {
                    if let Err(e) = params.reload_now(Duration::from_secs(30)).await {
                        tracing::warn!(error = %e, "parameter reload after the rotation failed; the new secret is picked up on the next read");
                    }
                }
            }
        }
        let versions = match self.versions(app).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the new versions back");
                Vec::new()
            }
        };
        let version = versions
            .iter()
            .find(|(p, _)| *p == parameter)
            .map(|(_, v)| *v)
            .unwrap_or(0);

        let old_secret_expires_at = n.old_secret_expires_at.clone();
        self.record(&app.credentials, move |r| {
            if r.outcome != outcome::WAITING {
                r.trigger = "new_secret_message".into();
            }
            r.outcome = outcome::ROTATED.into();
            r.parameter_version = Some(version);
            r.old_secret_expires_at = old_secret_expires_at.clone();
            r.needs_attention = false;
            r.error = None;
            r.wait_until = None;
        })
        .await;
        self.count(if wrote { "rotated" } else { "already_current" });

        // 7. One report per fleet for this version, before the message goes: killed in
        // between, the host that completes the message again finds the secret in SSM and
        // reports, and the period's fleet marker keeps it to one report.
        let msg = text::rotated(&text::Rotated {
            parameters: &versions,
            credentials: &app.credentials,
            old_secret_expires_at: n.old_secret_expires_at.as_deref(),
            new_secret_expires_at: n.new_secret_expires_at.as_deref(),
            host: &self.host,
        });
        let sent = self
            .publish(&parameter, &machine::report_period(version), &msg)
            .await;

        // 8. Only now, with the new secret in SSM.
        match sqs::delete(&self.sqs, queue, &m.receipt).await {
            Ok(()) => {
                tracing::info!(message_id = %m.id, "automatic rotation: new-secret message deleted")
            }
            Err(e) => {
                tracing::warn!(message_id = %m.id, error = %e, "cannot delete the new-secret message; whoever receives it again finds the secret in SSM and deletes it")
            }
        }
        tracing::info!(
            parameter = %parameter,
            version,
            wrote,
            report = ?sent,
            "automatic rotation: rotated"
        );
        Handled::Rotated { wrote, version }
    }

    /// What the message means for the app's secret parameters, from what SSM holds now
    /// (`machine::completion`).
    async fn completion(&self, app: &App, n: &NewSecret) -> Result<Completion, String> {
        let fetched = ssm::fetch(&self.ssm, &app.secret_parameters).await?;
        let mut held = Vec::with_capacity(app.secret_parameters.len());
        for p in &app.secret_parameters {
            let current = fetched.parameters.iter().find(|c| &c.name == p);
            let holds_new =
                current.is_some_and(|c| c.value.expose_secret() == n.secret.expose_secret());
            let published = match current {
                Some(c) if !holds_new => self.written_record(p, c.version).await,
                _ => None,
            };
            held.push(machine::Held {
                holds_new,
                published,
                last_modified: current.and_then(|c| c.last_modified),
            });
        }
        Ok(machine::completion(&held, n.published))
    }

    /// When the secret `parameter` holds at `version` was published, from the record the
    /// agent that wrote it left (`written.rs`); `None` without one.
    async fn written_record(&self, parameter: &str, version: i64) -> Option<SystemTime> {
        let prefix = self.config.rotation.fleet_lock_prefix.as_deref()?;
        match ssm::marker(&self.ssm, &written::name(prefix, parameter)).await {
            Ok(record) => record.and_then(|r| written::published(&r, version)),
            Err(e) => {
                tracing::debug!(parameter = %parameter, error = %e, "cannot read which message the secret came from; going by SSM's write time");
                None
            }
        }
    }

    /// Records which message the secret just written came from. A failure is logged, not
    /// fatal: without the record, SSM's write time is what orders messages.
    async fn note_written(&self, parameter: &str, n: &NewSecret, version: i64) {
        let (Some(prefix), Some(published)) = (
            self.config.rotation.fleet_lock_prefix.as_deref(),
            n.published,
        ) else {
            return;
        };
        let record = written::value(published, version, &self.host);
        if let Err(e) = ssm::set_marker(&self.ssm, &written::name(prefix, parameter), &record).await
        {
            tracing::warn!(parameter = %parameter, error = %e, "cannot record which message the new secret came from; an older message completed later is then judged by SSM's write time");
        }
    }

    /// SSM already holds a newer secret than this message's: nothing is written, and the
    /// message is deleted (it can never be the one to complete).
    async fn stale(&self, queue: &str, m: &Received, parameter: &str) -> Handled {
        self.count("message_stale");
        tracing::warn!(
            message_id = %m.id,
            parameter = %parameter,
            "automatic rotation: stale new-secret message: SSM already holds a newer secret; nothing written, the message is deleted"
        );
        if let Err(e) = sqs::delete(&self.sqs, queue, &m.receipt).await {
            tracing::warn!(message_id = %m.id, error = %e, "cannot delete the stale new-secret message; it is found stale again when it reappears");
        }
        Handled::Stale
    }

    async fn versions(&self, app: &App) -> Result<Vec<(String, i64)>, String> {
        let (metas, _) = ssm::describe(&self.ssm, &app.secret_parameters).await?;
        Ok(app
            .secret_parameters
            .iter()
            .filter_map(|p| {
                metas
                    .iter()
                    .find(|m| &m.name == p)
                    .map(|m| (p.clone(), m.version))
            })
            .collect())
    }

    /// A real LWA exchange with the new secret: with the app's refresh token, or, for an
    /// app with only grantless credentials, with the rotation scope. LWA refusing the
    /// refresh token (`invalid_grant`) says the client secret passed: the secret is proved
    /// again with the rotation scope, so that a bad refresh token is not taken for a bad
    /// secret.
    async fn prove(
        &self,
        app: &App,
        secret: &SecretString,
        window: Duration,
        values: &HashMap<String, Parameter>,
    ) -> Proof {
        let refresh_token = app
            .prover
            .as_ref()
            .and_then(|c| c.refresh_token_parameter.as_ref());
        let kind = match refresh_token {
            Some(p) => match values.get(p) {
                Some(rt) => GrantKind::RefreshToken(SecretString::from(
                    rt.value.expose_secret().to_string(),
                )),
                None => return Proof::Unreachable(format!("{p} could not be read from SSM")),
            },
            None => rotation_scope(),
        };
        let grant = app.grant(secret, kind);
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self.lwa.exchange(&grant).await;
            let error = match result {
                Ok(_) => return Proof::Accepted,
                Err(e) => e,
            };
            if machine::refresh_token_refused(&error, refresh_token.is_some()) {
                return self
                    .prove_without_refresh_token(app, secret, refresh_token, error)
                    .await;
            }
            tracing::warn!(parameter = %app.key_parameter(), attempt = attempts, error = %error, "automatic rotation: LWA did not accept the new secret (yet)");
            if !machine::prove_again(attempts, started.elapsed(), window) {
                return match error {
                    ExchangeError::Auth { .. } | ExchangeError::Rejected { .. } => {
                        Proof::Rejected(error.to_string())
                    }
                    other => Proof::Unreachable(other.to_string()),
                };
            }
            tokio::time::sleep(backoff.next_delay().min(window.max(Duration::from_secs(1)))).await;
        }
    }

    /// LWA refused the app's refresh token: the new secret is proved with the rotation
    /// scope instead, and the refresh token is named as the problem.
    async fn prove_without_refresh_token(
        &self,
        app: &App,
        secret: &SecretString,
        refresh_token: Option<&String>,
        refused: ExchangeError,
    ) -> Proof {
        let token = refresh_token.map(String::as_str).unwrap_or("?");
        self.count("refresh_token_refused");
        match self
            .lwa
            .exchange(&app.grant(secret, rotation_scope()))
            .await
        {
            Ok(_) => {
                tracing::warn!(
                    parameter = %app.key_parameter(),
                    refresh_token_parameter = %token,
                    error = %refused,
                    "automatic rotation: LWA refused the refresh token, not the new secret (which it accepted with the rotation scope); the new secret is written, but tokens from this refresh token fail until it is replaced: lwa-agent put-secret --field refresh_token"
                );
                Proof::Accepted
            }
            Err(e) => Proof::Rejected(format!(
                "LWA refused the refresh token in {token} ({refused}), and the rotation-scope \
                 grant with the new secret too ({e})"
            )),
        }
    }

    /// LWA rejected the new secret: nothing is written, the message stays (hidden for a
    /// while, then it is proved again), and a person is alerted once per message.
    async fn rejected(&self, queue: &str, m: &Received, app: &App, error: String) -> Handled {
        let parameter = app.key_parameter();
        tracing::error!(
            message_id = %m.id,
            parameter = %parameter,
            error = %error,
            "automatic rotation: LWA rejects the new secret; nothing written, the message stays in the queue"
        );
        self.count("secret_rejected");
        if let Err(e) = sqs::hide_for(&self.sqs, queue, &m.receipt, machine::REJECTED_RETRY).await {
            tracing::warn!(message_id = %m.id, error = %e, "cannot postpone the message's next try");
        }
        let version = self
            .record_of(app)
            .await
            .and_then(|r| r.parameter_version)
            .unwrap_or(0);
        let recorded = format!("LWA rejected the new secret from message {}: {error}", m.id);
        self.record(&app.credentials, move |r| {
            r.outcome = outcome::FAILED.into();
            r.needs_attention = true;
            r.error = Some(recorded.clone());
        })
        .await;
        let action =
            format!(
            "Nothing was written: SSM still holds the current secret, which keeps working until \
             Amazon expires it. The new secret is in message {id} on {queue}, which the agent \
             tries again every {retry} minutes. Check the app in the Developer Console; if the \
             new secret works there, store it by hand: sudo lwa-agent put-secret --credential \
             {cred} --field client_secret",
            id = m.id,
            retry = machine::REJECTED_RETRY.as_secs() / 60,
            cred = app.credentials.first().map(String::as_str).unwrap_or("NAME"),
        );
        self.alert(
            app,
            &machine::alert_period(
                &format!("rejected-{}", crate::rotation::fleet_hash(&m.id)),
                version,
            ),
            "LWA rejected the new client secret Amazon delivered, so nothing was written",
            Some(&error),
            &action,
        )
        .await;
        Handled::Rejected
    }

    /// SSM refused the write (no ssm:PutParameter or kms:Encrypt, a full version
    /// history, …): the new secret now exists only in the message. It is safe there until
    /// the queue's retention runs out, which may come before the old secret expires, so the
    /// rotation needs attention until it completes, and a person is alerted once per
    /// message, told the queue and the deadline.
    #[allow(clippy::too_many_arguments)]
    async fn write_failed(
        &self,
        queue: &str,
        m: &Received,
        app: &App,
        n: &NewSecret,
        parameter: &str,
        version: i64,
        error: String,
    ) -> Handled {
        self.count("write_failed");
        let handled = self.retry(queue, m, parameter, error.clone()).await;
        let recorded = format!(
            "cannot write the new secret from message {} to {parameter}: {error}",
            m.id
        );
        self.record(&app.credentials, move |r| {
            r.outcome = outcome::FAILED.into();
            r.needs_attention = true;
            r.parameter_version = Some(version);
            r.error = Some(recorded.clone());
        })
        .await;
        let within = match (sqs::retention(&self.sqs, queue).await, m.sent_at) {
            (Ok(keep), Some(sent)) => format!(
                "before the queue's retention ({}) runs out at {}",
                humantime::format_duration(keep),
                humantime::format_rfc3339_seconds(sent + keep)
            ),
            (Ok(keep), None) => format!(
                "within the queue's retention ({}) from when it arrived",
                humantime::format_duration(keep)
            ),
            (Err(e), _) => {
                tracing::debug!(error = %e, "cannot read the queue's retention period");
                "within the queue's retention period (SQS's default: 4 days)".to_string()
            }
        };
        let action = format!(
            "SSM still holds the current secret, which keeps working until {old}. The new \
             secret exists only in message {id} on {queue}; the agent tries it again every \
             few minutes and completes it once SSM accepts the write. Fix the cause named \
             above (for example ssm:PutParameter on {parameter} and kms:Encrypt / \
             kms:GenerateDataKey on its key). The message must be completed {within}: after \
             that the new secret is lost, and the old one still expires.",
            old = n
                .old_secret_expires_at
                .as_deref()
                .unwrap_or("Amazon expires it"),
            id = m.id,
        );
        self.alert(
            app,
            &machine::alert_period(
                &format!("write-failed-{}", crate::rotation::fleet_hash(&m.id)),
                version,
            ),
            "the new client secret Amazon delivered could not be written to SSM",
            Some(&error),
            &action,
        )
        .await;
        handled
    }

    /// The message could not be completed now: it stays in the queue, hidden until its
    /// next try (`machine::retry_after`).
    async fn retry(&self, queue: &str, m: &Received, parameter: &str, error: String) -> Handled {
        self.count("message_retry");
        let after = machine::retry_after(m.receive_count);
        tracing::error!(
            message_id = %m.id,
            parameter = %parameter,
            error = %error,
            retry_in_seconds = after.as_secs(),
            "automatic rotation: not completed now; the message stays in the queue and is tried again when it reappears"
        );
        if let Err(e) = sqs::hide_for(&self.sqs, queue, &m.receipt, after).await {
            tracing::warn!(message_id = %m.id, error = %e, "cannot set the message's next try; it reappears when its claim runs out");
        }
        Handled::Retry(error)
    }
}

enum Proof {
    Accepted,
    Rejected(String),
    Unreachable(String),
}
