//! What happens when a message arrives on a rotation queue, and in full what happens when
//! it carries a new client secret (docs/automatic-rotation.md):
//!
//! 1. parse it; a body that is not a notification, or one for a client id no credential
//!    uses, is left untouched (not deleted, visibility not changed: it reappears for
//!    whoever it is for) and logged by message id only; the client id is matched before
//!    any secret is read, so such a message costs no decryption;
//! 2. work on it (`work.rs`): kept invisible to the other hosts, with the newest receipt,
//!    for as long as the work lasts; one completion per app at a time in this process;
//! 3. what SSM holds, in every client secret parameter of the app (this host's and those
//!    other hosts registered: `machine::completion`): all hold the new secret (SQS
//!    delivers at least once; another host may have been first) → skip to 7; one holds a
//!    secret from a later notification → write nothing, delete; one holds a secret
//!    someone stored after Amazon sent this one → write nothing, keep the message, alert
//!    a person once, who settles it (`lwa-agent rotate --settle`);
//! 4. prove the new secret at LWA with the app's refresh token, a few times over minutes
//!    (LWA may take a moment to know it); a secret LWA still rejects is not written: the
//!    message stays (retried every 15 minutes) and a person is alerted;
//! 5. record where the secret comes from (`fleet::Origin`), then write it to every
//!    parameter that does not hold it yet, as `put-secret` does (same KMS key, tier and
//!    lasting policies);
//! 6. reload the agent's parameters;
//! 7. report once per fleet: "rotated automatically", with the parameters, their new
//!    versions and the old secret's expiry; a report that did not go out keeps the
//!    message, so it is sent again when the message reappears;
//! 8. delete the message: only now, with the new secret in SSM and the report out.
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
use super::work::{Finish, Work};
use super::Rotator;
use crate::aws::sqs::Received;
use crate::aws::ssm::{
    read::{self, Parameter},
    write,
};
use crate::backoff::Backoff;
use crate::lwa::exchange::ExchangeError;
use crate::lwa::grant::GrantKind;
use crate::rotation::fleet;
use crate::rotation::publish::Outcome;
use crate::rotation::texts::auto as text;

/// What became of one message from a rotation queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Not for this agent (unknown client id, or not a notification): left untouched.
    Ignored,
    /// Already being worked on by this process (which now holds the newer receipt).
    Busy,
    /// The new secret is in SSM and the message is deleted; `wrote`: by this host.
    Rotated { wrote: bool, version: i64 },
    /// SSM already holds a secret from a later notification: nothing written, the
    /// message deleted.
    Stale,
    /// SSM holds a secret someone stored after Amazon sent this one: nothing written, the
    /// message stays until a person settles it.
    Conflict,
    /// LWA rejected the new secret: nothing written, the message stays.
    Rejected,
    /// Something on the way failed (SSM, LWA unreachable, the report): the message stays
    /// and is tried again when it reappears.
    Retry(String),
    /// An expiry notification (handled by `request.rs`).
    Expiry,
}

/// One client secret parameter of the app, as SSM holds it now.
struct Target {
    name: String,
    version: Option<i64>,
    last_modified: Option<SystemTime>,
}

/// What SSM holds for a new-secret message: the decision and the parameters it is about.
struct View {
    completion: Completion,
    targets: Vec<Target>,
}

impl Rotator {
    /// One received message, from any rotation queue.
    pub async fn handle(self: &Arc<Self>, queue: &str, m: Received) -> MessageOutcome {
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
                return MessageOutcome::Ignored;
            }
        };
        // The client id first: a message for another app costs no secret's decryption.
        let app = match self.app_of(notification.client_id()).await {
            Ok(app) => app,
            Err(e) => {
                tracing::warn!(message_id = %m.id, error = %e, "rotation message left in the queue: cannot read the client ids now; it is tried again when it reappears");
                return MessageOutcome::Retry(e);
            }
        };
        let Some(app) = app else {
            self.ignore(
                &m,
                "it is for a client id no configured credential uses",
                "unknown_client",
            );
            return MessageOutcome::Ignored;
        };
        // One worker per message in this process; SQS may hand it out again meanwhile.
        let Some(work) = self.memory.working.begin(queue, &self.sqs, &m) else {
            return MessageOutcome::Busy;
        };
        match notification {
            Notification::Expiry(e) => {
                self.on_expiry(work, e).await;
                MessageOutcome::Expiry
            }
            Notification::NewSecret(n) => self.on_new_secret(work, &app, n).await,
        }
    }

    /// Logs an ignored message by id (once at warn, then at debug) and leaves it alone.
    fn ignore(&self, m: &Received, why: &str, metric: &str) {
        self.count(&format!("message_{metric}"));
        let first = self
            .memory
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

    /// Steps 3 to 8 for a new secret of a configured app.
    async fn on_new_secret(&self, work: Work, app: &App, n: NewSecret) -> MessageOutcome {
        let parameter = app.key_parameter().to_string();
        tracing::info!(
            message_id = %work.id,
            parameter = %parameter,
            credentials = %app.credentials.join(","),
            old_secret_expires_at = %n.old_secret_expires_at.as_deref().unwrap_or("?"),
            "automatic rotation: a new client secret arrived"
        );

        // One completion per app at a time in this process: a second message for the
        // same app (an older or a newer secret) waits, then sees what the first wrote.
        let lock = self.app_lock(app);
        let _completing = lock.lock().await;

        // 3. What SSM holds now, and whether this message is still the newest word.
        let targets = self.targets(app).await;
        let view = match self.view(app, &targets.names, &n).await {
            Ok(v) => v,
            Err(e) => return self.retry(work, &parameter, e).await,
        };
        let mut wrote = false;
        let view = match view.completion {
            Completion::Current => view,
            Completion::Stale => return self.stale(work, app).await,
            Completion::Conflict(ref at) => return self.conflict(work, app, &n, &view, at).await,
            Completion::Write(_) => {
                // 4. Prove it, with the app's own parameters (read only now that it is
                // known).
                let values = match self.read_app_values(app).await {
                    Ok(v) => v,
                    Err(e) => return self.retry(work, &parameter, e).await,
                };
                let window = machine::proof_window(self.auto().wait_for_secret);
                match self.prove(app, &n.secret, window, &values).await {
                    Proof::Accepted => {
                        tracing::info!(parameter = %parameter, "automatic rotation: LWA accepted the new secret");
                    }
                    Proof::Rejected(e) => return self.rejected(work, app, e).await,
                    Proof::Unreachable(e) => {
                        let e = format!("LWA could not be asked: {e}");
                        return self.retry(work, &parameter, e).await;
                    }
                }
                // 5. Under the app's completing lease (no other host writes its parameters
                // meanwhile): look again (a host may have written), record the origin,
                // then write each parameter that does not hold it.
                let scope = self.scope(app);
                let lease = match self.take_completing(&scope).await {
                    Ok(Some(lease)) => lease,
                    Ok(None) => {
                        let e = "another host is writing this app's secret now".to_string();
                        return self.retry(work, &parameter, e).await;
                    }
                    Err(e) => return self.retry(work, &parameter, e).await,
                };
                let (view, wrote_now) = self.write_under_lease(app, &n, &targets.names).await;
                self.release(lease).await;
                let view = match view {
                    Ok(v) => v,
                    Err(Unwritten::Stale) => return self.stale(work, app).await,
                    Err(Unwritten::Conflict(view, at)) => {
                        return self.conflict(work, app, &n, &view, &at).await
                    }
                    Err(Unwritten::Retry(e)) => return self.retry(work, &parameter, e).await,
                    Err(Unwritten::WriteFailed(name, e)) => {
                        return self.write_failed(work, app, &n, &name, e).await
                    }
                };
                wrote = wrote_now;
                // 6. Reload: the refreshers exchange with the new version at once.
                if wrote {
                    if let Some(params) = self.mode.params() {
                        if let Err(e) = params.reload_now(Duration::from_secs(30)).await {
                            tracing::warn!(error = %e, "parameter reload after the rotation failed; the new secret is picked up on the next read");
                        }
                    }
                }
                view
            }
        };
        self.clear_conflict(&self.scope(app), &work.id).await;
        if let Some(why) = &targets.unlisted {
            self.unlisted(&work, app, &n, why).await;
        }
        let names: Vec<String> = view.targets.iter().map(|t| t.name.clone()).collect();
        let versions = match self.versions(&names).await {
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

        // 7. One report per fleet for this secret, before the message goes. A report that
        // did not go out keeps the message: whoever completes it again finds the secret
        // in SSM and reports then; the claim keeps it to one report.
        let msg = text::rotated(&text::Rotated {
            parameters: &versions,
            credentials: &app.credentials,
            old_secret_expires_at: n.old_secret_expires_at.as_deref(),
            new_secret_expires_at: n.new_secret_expires_at.as_deref(),
            host: &self.host,
        });
        let marker = self.scope(app).report(&fleet::fingerprint(&n.secret));
        let sent = self.publish(&parameter, &marker, &msg).await;
        let unsent = match &sent {
            o if o.went_out() => None,
            Outcome::SendingElsewhere(holder) => {
                Some(format!("another host is sending the report ({holder})"))
            }
            Outcome::Failed(e) => Some(format!("the report could not be sent: {e}")),
            _ => None,
        };
        if let Some(why) = unsent {
            tracing::warn!(parameter = %parameter, version, "automatic rotation: the new secret is in SSM; the message stays until its report went out");
            return self.retry(work, &parameter, why).await;
        }

        // 8. Only now, with the new secret in SSM and the report out.
        let id = work.id.clone();
        match work.finish(Finish::Delete).await {
            Ok(()) => {
                tracing::info!(message_id = %id, "automatic rotation: new-secret message deleted")
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "cannot delete the new-secret message; whoever receives it again finds the secret in SSM and deletes it")
            }
        }
        tracing::info!(
            parameter = %parameter,
            version,
            wrote,
            report = ?sent,
            "automatic rotation: rotated"
        );
        MessageOutcome::Rotated { wrote, version }
    }

    /// Step 5, under the app's completing lease: the second look, the origin record, the
    /// writes. Also says whether anything was written.
    async fn write_under_lease(
        &self,
        app: &App,
        n: &NewSecret,
        targets: &[String],
    ) -> (Result<View, Unwritten>, bool) {
        let view = match self.view(app, targets, n).await {
            Ok(v) => v,
            Err(e) => return (Err(Unwritten::Retry(e)), false),
        };
        let write = match &view.completion {
            Completion::Current => return (Ok(view), false),
            Completion::Stale => return (Err(Unwritten::Stale), false),
            Completion::Conflict(at) => {
                let at = at.clone();
                return (Err(Unwritten::Conflict(view, at)), false);
            }
            Completion::Write(at) => at.clone(),
        };
        let origin = self
            .set_origin(
                &self.scope(app),
                fleet::fingerprint(&n.secret),
                n.published,
                n.old_secret_expires_at.clone(),
                fleet::source::MESSAGE,
            )
            .await;
        if let Err(e) = origin {
            let e = format!("cannot record where the new secret comes from: {e}");
            return (Err(Unwritten::Retry(e)), false);
        }
        let mut wrote = false;
        for i in write {
            let Some(t) = view.targets.get(i) else {
                continue;
            };
            match write::rewrite_secret(&self.ssm, &t.name, &n.secret).await {
                Ok(w) => {
                    wrote = true;
                    self.count("parameter_written");
                    tracing::info!(parameter = %t.name, version = w.version, "automatic rotation: new client secret written to SSM");
                    for dropped in &w.dropped_policies {
                        tracing::warn!(parameter = %t.name, policy = %dropped, "automatic rotation: a parameter policy was not kept with the new secret");
                    }
                }
                Err(e) => return (Err(Unwritten::WriteFailed(t.name.clone(), e)), wrote),
            }
        }
        (Ok(view), wrote)
    }

    /// The other hosts' registered parameters could not be listed, so the new secret went
    /// to this host's parameters only: a person is told, once per message, how to bring it
    /// to the others before the old secret ends.
    async fn unlisted(&self, work: &Work, app: &App, n: &NewSecret, why: &str) {
        let own = app.secret_parameters.join(", ");
        let action = format!(
            "The new secret is in {own}, this host's parameter(s), only. Any other host that \
             keeps this app's secret in a parameter of its own still holds the old one, which \
             stops working at {old}. Let the agents' role list the fleet's registrations \
             (ssm:GetParametersByPath on rotation.fleet_lock_prefix; \
             docs/automatic-rotation.md), then copy the secret on each such host: aws ssm \
             get-parameter --name {first} --with-decryption --query Parameter.Value --output \
             text | sudo lwa-agent put-secret --credential NAME --field client_secret",
            old = n
                .old_secret_expires_at
                .as_deref()
                .unwrap_or("Amazon expires it"),
            first = app.key_parameter(),
        );
        self.alert(
            app,
            self.scope(app).alert("unlisted", &fleet::hash(&work.id)),
            "the new client secret was written to this host's parameters only: the other \
             hosts' registered parameters could not be listed",
            Some(why),
            &action,
        )
        .await;
    }

    /// What the message means for the app's client secret parameters, from what SSM and
    /// the fleet's origin record hold now (`machine::completion`). A parameter another
    /// host registered that is no longer in SSM is left out, and its registration removed.
    async fn view(&self, app: &App, targets: &[String], n: &NewSecret) -> Result<View, String> {
        let fetched = read::fetch(&self.ssm, targets).await?;
        let scope = self.scope(app);
        // Where each secret SSM holds came from, read once per distinct secret.
        let mut origins: HashMap<String, Option<SystemTime>> = HashMap::new();
        for c in &fetched.parameters {
            let fp = fleet::fingerprint(&c.value);
            if let std::collections::hash_map::Entry::Vacant(slot) = origins.entry(fp) {
                let published = self
                    .origin(&scope, slot.key())
                    .await?
                    .and_then(|o| o.published_at());
                slot.insert(published);
            }
        }
        let mut held = Vec::with_capacity(targets.len());
        let mut kept = Vec::with_capacity(targets.len());
        for p in targets {
            let current = fetched.parameters.iter().find(|c| &c.name == p);
            let missing = fetched
                .problems
                .iter()
                .any(|(name, why)| name == p && why.starts_with(read::NOT_FOUND));
            if current.is_none() && missing && !app.secret_parameters.contains(p) {
                self.deregister(app, p).await;
                continue;
            }
            held.push(machine::Held {
                holds_new: current
                    .is_some_and(|c| c.value.expose_secret() == n.secret.expose_secret()),
                origin_published: current.and_then(|c| {
                    origins
                        .get(&fleet::fingerprint(&c.value))
                        .copied()
                        .flatten()
                }),
                last_modified: current.and_then(|c| c.last_modified),
            });
            kept.push(Target {
                name: p.clone(),
                version: current.map(|c| c.version),
                last_modified: current.and_then(|c| c.last_modified),
            });
        }
        Ok(View {
            completion: machine::completion(&held, n.published),
            targets: kept,
        })
    }

    /// SSM already holds a secret from a later notification: nothing is written, and the
    /// message is deleted (it can never be the one to complete). A conflict this host was
    /// waiting on is settled by it (a person said SSM's secret is the newest).
    async fn stale(&self, work: Work, app: &App) -> MessageOutcome {
        self.count("message_stale");
        tracing::warn!(
            message_id = %work.id,
            parameter = %app.key_parameter(),
            "automatic rotation: stale new-secret message: SSM holds a secret from a later notification; nothing written, the message is deleted"
        );
        self.record(&app.credentials, |r| {
            if r.outcome == outcome::CONFLICT {
                r.outcome = outcome::SETTLED.into();
                r.needs_attention = false;
                r.error = None;
            }
        })
        .await;
        self.clear_conflict(&self.scope(app), &work.id).await;
        let id = work.id.clone();
        if let Err(e) = work.finish(Finish::Delete).await {
            tracing::warn!(message_id = %id, error = %e, "cannot delete the stale new-secret message; it is found stale again when it reappears");
        }
        MessageOutcome::Stale
    }

    /// SSM holds a secret someone stored after Amazon sent this message, and no record
    /// says which is newer. The message may be the only copy of its secret: it stays,
    /// nothing is written, and a person is alerted once with both versions and the
    /// command that settles it.
    async fn conflict(
        &self,
        work: Work,
        app: &App,
        n: &NewSecret,
        view: &View,
        at: &[usize],
    ) -> MessageOutcome {
        self.count("message_conflict");
        let held: Vec<String> = at
            .iter()
            .filter_map(|i| view.targets.get(*i))
            .map(|t| {
                format!(
                    "{} version {} (written {})",
                    t.name,
                    t.version
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "?".into()),
                    t.last_modified
                        .map(|w| humantime::format_rfc3339_seconds(w).to_string())
                        .unwrap_or_else(|| "?".into())
                )
            })
            .collect();
        let published = n
            .published
            .map(|p| humantime::format_rfc3339_seconds(p).to_string())
            .unwrap_or_else(|| "?".into());
        let detail = format!(
            "message {id} holds the secret Amazon sent at {published} (new secret expires {new}; \
             the one before it {old}); SSM holds {held}, stored after that and not by the \
             agent from a later notification",
            id = work.id,
            new = n.new_secret_expires_at.as_deref().unwrap_or("?"),
            old = n.old_secret_expires_at.as_deref().unwrap_or("?"),
            held = held.join(", "),
        );
        tracing::warn!(message_id = %work.id, parameter = %app.key_parameter(), detail = %detail, "automatic rotation: a new secret meets a secret someone else stored after it; nothing written, the message stays until a person settles it");
        let recorded = detail.clone();
        // The version of this host's secret now: no trigger but a person's asks Amazon
        // again for it while the conflict waits (another new secret would join it).
        let version = view
            .targets
            .iter()
            .find(|t| t.name == app.key_parameter())
            .and_then(|t| t.version);
        self.record(&app.credentials, move |r| {
            r.outcome = outcome::CONFLICT.into();
            r.needs_attention = true;
            r.error = Some(recorded.clone());
            if version.is_some() {
                r.parameter_version = version;
            }
        })
        .await;
        if let Some(published) = n.published {
            let record = fleet::Conflict {
                message_id: work.id.clone(),
                published: fleet::format_time(published),
                host: self.host.clone(),
                at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            };
            self.set_conflict(&self.scope(app), &record).await;
        }
        let credential = app
            .credentials
            .first()
            .map(String::as_str)
            .unwrap_or("NAME");
        let action = format!(
            "Find out which secret is current (the Developer Console shows when the app's \
             secrets were made). If what SSM holds is right (a person rotated after Amazon \
             sent this one), keep it; the message is then deleted:\n  sudo lwa-agent rotate \
             --credential {credential} --settle ssm\nIf Amazon's is right (an older value was \
             put back into SSM), write it; the agent proves it at LWA first:\n  sudo \
             lwa-agent rotate --credential {credential} --settle message\nUntil then the \
             message stays in {queue} and is looked at again every few minutes (at most \
             every {minutes}); settle it before the queue's retention drops it, or its \
             secret is lost.",
            queue = work.queue(),
            minutes = machine::REJECTED_RETRY.as_secs() / 60,
        );
        self.alert(
            app,
            self.scope(app).alert("conflict", &fleet::hash(&work.id)),
            "Amazon sent a new client secret, but SSM holds a secret stored after it, so the \
             agent wrote nothing and keeps the message",
            Some(&detail),
            &action,
        )
        .await;
        let (id, after) = (work.id.clone(), machine::retry_after(work.receive_count));
        if let Err(e) = work.finish(Finish::RetryAfter(after)).await {
            tracing::warn!(message_id = %id, error = %e, "cannot set the message's next look; it reappears when its invisibility runs out");
        }
        MessageOutcome::Conflict
    }

    async fn versions(&self, names: &[String]) -> Result<Vec<(String, i64)>, String> {
        let (metas, _) = read::describe(&self.ssm, names).await?;
        Ok(names
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
    async fn rejected(&self, work: Work, app: &App, error: String) -> MessageOutcome {
        let parameter = app.key_parameter();
        tracing::error!(
            message_id = %work.id,
            parameter = %parameter,
            error = %error,
            "automatic rotation: LWA rejects the new secret; nothing written, the message stays in the queue"
        );
        self.count("secret_rejected");
        let recorded = format!(
            "LWA rejected the new secret from message {}: {error}",
            work.id
        );
        self.record_failed(&app.credentials, recorded).await;
        let action =
            format!(
            "Nothing was written: SSM still holds the current secret, which keeps working until \
             Amazon expires it. The new secret is in message {id} on {queue}, which the agent \
             tries again every {retry} minutes. Check the app in the Developer Console; if the \
             new secret works there, store it by hand: sudo lwa-agent put-secret --credential \
             {cred} --field client_secret",
            id = work.id,
            queue = work.queue(),
            retry = machine::REJECTED_RETRY.as_secs() / 60,
            cred = app.credentials.first().map(String::as_str).unwrap_or("NAME"),
        );
        self.alert(
            app,
            self.scope(app).alert("rejected", &fleet::hash(&work.id)),
            "LWA rejected the new client secret Amazon delivered, so nothing was written",
            Some(&error),
            &action,
        )
        .await;
        let id = work.id.clone();
        if let Err(e) = work
            .finish(Finish::RetryAfter(machine::REJECTED_RETRY))
            .await
        {
            tracing::warn!(message_id = %id, error = %e, "cannot postpone the message's next try");
        }
        MessageOutcome::Rejected
    }

    /// SSM refused the write (no ssm:PutParameter or kms:Encrypt, a full version
    /// history, …): the new secret now exists only in the message. It is safe there until
    /// the queue's retention runs out, which may come before the old secret expires, so the
    /// rotation needs attention until it completes, and a person is alerted once per
    /// message, told the queue and the deadline.
    async fn write_failed(
        &self,
        work: Work,
        app: &App,
        n: &NewSecret,
        parameter: &str,
        error: String,
    ) -> MessageOutcome {
        self.count("write_failed");
        let recorded = format!(
            "cannot write the new secret from message {} to {parameter}: {error}",
            work.id
        );
        self.record_failed(&app.credentials, recorded).await;
        let within = match (
            crate::aws::sqs::retention(&self.sqs, work.queue()).await,
            work.sent_at,
        ) {
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
            id = work.id,
            queue = work.queue(),
        );
        self.alert(
            app,
            self.scope(app)
                .alert("write-failed", &fleet::hash(&work.id)),
            "the new client secret Amazon delivered could not be written to SSM",
            Some(&error),
            &action,
        )
        .await;
        self.retry(work, parameter, error).await
    }

    /// The message could not be completed now: it stays in the queue, hidden until its
    /// next try (`machine::retry_after`).
    async fn retry(&self, work: Work, parameter: &str, error: String) -> MessageOutcome {
        self.count("message_retry");
        let after = machine::retry_after(work.receive_count);
        tracing::error!(
            message_id = %work.id,
            parameter = %parameter,
            error = %error,
            retry_in_seconds = after.as_secs(),
            "automatic rotation: not completed now; the message stays in the queue and is tried again when it reappears"
        );
        let id = work.id.clone();
        if let Err(e) = work.finish(Finish::RetryAfter(after)).await {
            tracing::warn!(message_id = %id, error = %e, "cannot set the message's next try; it reappears when its invisibility runs out");
        }
        MessageOutcome::Retry(error)
    }
}

enum Proof {
    Accepted,
    Rejected(String),
    Unreachable(String),
}

/// Why step 5 wrote nothing (or not everything).
enum Unwritten {
    Stale,
    Conflict(View, Vec<usize>),
    Retry(String),
    /// The parameter SSM refused, and why.
    WriteFailed(String, String),
}
