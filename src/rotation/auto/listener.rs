//! The daemon's listeners: one long poll at a time on each rotation queue, for as long as
//! the agent runs, so that a new secret is completed by whichever host receives it; and
//! what becomes of a requested rotation whose secret never came.
//!
//! Invariants: at most one open receive per queue per agent; no busy loop (both loops
//! here, the daemon's and `lwa-agent rotate`'s, go through one receive round that lasts at
//! least a second, and `rotate`'s ends at its deadline); an unreachable queue is retried
//! with capped exponential backoff and jitter, like SSM; every message of a receive is
//! worked on at once (the daemon: a task each; `rotate`: all of a batch together), so
//! none waits out its invisibility behind another's slow proof. Beside the listeners, one
//! housekeeping task registers this host's parameters, looks at waiting rotations and
//! conflicts, and sends the outbox's alerts, so that none of it holds up a receive.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::apps::App;
use super::machine::{self, outcome, Waiting};
use super::Rotator;
use crate::aws::sqs;
use crate::backoff::Backoff;
use crate::rotation::fleet;
use crate::rotation::state::AutoRotation;

/// The shortest time between two receives on a queue.
const MIN_ROUND: Duration = Duration::from_secs(1);

/// How often the housekeeping runs (a long poll's length, as before it had a task).
const HOUSEKEEPING: Duration = Duration::from_secs(20);

impl Rotator {
    /// Starts a listener per queue (a queue that carries both notification types is
    /// listened to once), and the housekeeping.
    pub fn listen(self: &Arc<Self>) {
        let queues: Vec<String> = self.auto().queues().into_iter().map(String::from).collect();
        for queue in queues {
            let me = self.clone();
            tokio::spawn(async move { me.listen_on(queue).await });
        }
        self.keep_house();
    }

    /// The housekeeping alone: for a host whose automatic rotation is off but whose
    /// parameters must still get the fleet's new secrets (it registers them).
    pub fn keep_house(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.register().await;
                if me.auto().enabled {
                    me.reconcile().await;
                    me.flush_outbox().await;
                }
                tokio::time::sleep(HOUSEKEEPING).await;
            }
        });
    }

    async fn listen_on(self: Arc<Self>, queue: String) {
        tracing::info!(queue = %queue, "automatic rotation: listening for notifications");
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let Some(messages) = self
                .receive_round(&queue, sqs::LONG_POLL, &mut backoff, Duration::MAX)
                .await
            else {
                continue;
            };
            for m in messages {
                tracing::debug!(queue = %queue, message_id = %m.id, "rotation message received");
                let me = self.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    me.handle(&queue, m).await;
                });
            }
        }
    }

    /// One receive on `queue`, waiting up to `wait` for messages: what came, or `None`
    /// after an error, once the backoff's pause (at most `cap`) is over. Every round takes
    /// at least `MIN_ROUND`, whatever SQS answers, so no caller loops hot.
    async fn receive_round(
        &self,
        queue: &str,
        wait: Duration,
        backoff: &mut Backoff,
        cap: Duration,
    ) -> Option<Vec<sqs::Received>> {
        let started = Instant::now();
        let got = match sqs::receive(&self.sqs, queue, wait, super::RECEIVE_VISIBILITY).await {
            Ok(messages) => {
                if backoff.window() > Duration::from_secs(1) {
                    tracing::info!(queue = %queue, "automatic rotation: the queue is reachable again");
                }
                backoff.reset();
                self.note_queue(queue, Ok(messages.len()));
                Some(messages)
            }
            Err(e) => {
                self.count("receive_error");
                self.note_queue(queue, Err(&e.message));
                let delay = backoff.next_delay().min(cap);
                tracing::warn!(
                    queue = %queue,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "automatic rotation: cannot receive from the queue; messages wait there"
                );
                tokio::time::sleep(delay).await;
                None
            }
        };
        let spent = started.elapsed();
        if spent < MIN_ROUND {
            tokio::time::sleep(MIN_ROUND - spent).await;
        }
        got
    }

    /// Looks at this host's rotations that wait for a new secret: done when SSM holds a
    /// newer version that came from a new-secret notification (whichever host wrote it);
    /// failed, with an alert, when the wait ended without one.
    pub async fn reconcile(&self) {
        let records = self.records_now().await;
        self.settled_elsewhere(&records).await;
        let waiting: Vec<(String, AutoRotation)> = records
            .into_iter()
            .filter(|(_, r)| r.outcome == outcome::WAITING)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let mut names: Vec<String> = Vec::new();
        for cred in waiting
            .iter()
            .filter_map(|(c, _)| self.config.credential(c))
        {
            for p in [&cred.client_id_parameter, &cred.client_secret_parameter] {
                if !names.contains(p) {
                    names.push(p.clone());
                }
            }
        }
        let values = match self.read_named(&names).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "cannot look at the waiting rotations now");
                return;
            }
        };
        let apps = self.apps(&values);
        let now = SystemTime::now();
        for (credential, record) in waiting {
            let Some(cred) = self.config.credential(&credential) else {
                continue;
            };
            let (Some(app), Some(current)) = (
                apps.iter().find(|a| a.credentials.contains(&credential)),
                values.get(&cred.client_secret_parameter),
            ) else {
                continue;
            };
            let from_notification = match self
                .origin(&self.scope(app), &fleet::fingerprint(&current.value))
                .await
            {
                Ok(origin) => origin.is_some_and(|o| o.from_notification()),
                Err(e) => {
                    tracing::debug!(credential = %credential, error = %e, "cannot read where the current secret came from; looking again next round");
                    continue;
                }
            };
            match machine::reconcile(&record, current.version, from_notification, now) {
                Waiting::Still => {}
                Waiting::Rotated { version } => {
                    tracing::info!(credential = %credential, version, "automatic rotation: SSM holds the new secret (written by this or another host)");
                    self.record(std::slice::from_ref(&credential), move |r| {
                        r.outcome = outcome::ROTATED.into();
                        r.parameter_version = Some(version);
                        r.wait_until = None;
                        r.error = None;
                    })
                    .await;
                }
                // A message being worked on right now may be this very secret: give it
                // until the next round rather than alert about a secret that did come.
                Waiting::TimedOut if self.memory.working.any() => {}
                Waiting::TimedOut => self.timed_out(app, &credential, &record).await,
            }
        }
    }

    /// A conflict this host recorded that the fleet no longer has (another host deleted or
    /// wrote its message after a person settled it) is settled here too.
    async fn settled_elsewhere(&self, records: &std::collections::BTreeMap<String, AutoRotation>) {
        let conflicts: Vec<String> = records
            .iter()
            .filter(|(_, r)| r.outcome == outcome::CONFLICT)
            .map(|(c, _)| c.clone())
            .collect();
        if conflicts.is_empty() {
            return;
        }
        let Ok(values) = self.read_named(&self.client_id_parameters()).await else {
            return;
        };
        for app in self.apps(&values) {
            let mine: Vec<String> = conflicts
                .iter()
                .filter(|c| app.credentials.contains(c))
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            if let Ok(None) = self.conflict_record(&self.scope(&app)).await {
                tracing::info!(credentials = %mine.join(","), "automatic rotation: the conflict was settled on another host");
                self.record(&mine, |r| {
                    if r.outcome == outcome::CONFLICT {
                        r.outcome = outcome::SETTLED.into();
                        r.needs_attention = false;
                        r.error = None;
                    }
                })
                .await;
            }
        }
    }

    async fn timed_out(&self, app: &App, credential: &str, record: &AutoRotation) {
        let version = record.parameter_version.unwrap_or(0);
        let error = format!(
            "no new-secret message arrived within rotation.auto.wait_for_secret ({})",
            humantime::format_duration(self.auto().wait_for_secret)
        );
        tracing::error!(credential = %credential, version, error = %error, "automatic rotation: gave up waiting for the new secret");
        self.count("secret_not_received");
        self.record_failed(&[credential.to_string()], error.clone())
            .await;
        let scope = self.scope(app);
        let replacing = record
            .replacing
            .clone()
            .unwrap_or_else(|| format!("v{version}"));
        let action = format!(
            "Amazon may have made a new secret that never reached the queue. Check that \
             APPLICATION_OAUTH_CLIENT_NEW_SECRET is subscribed to {queue} in the Developer \
             Console and that the queue policy lets SP-API send (docs/automatic-rotation.md). \
             If the message arrives later, any agent still completes it. To ask Amazon again, \
             delete the SSM parameter {marker} and run: sudo lwa-agent rotate --credential \
             {credential}",
            queue = self.auto().new_secret_queue_url,
            marker = scope.request(&replacing),
        );
        self.alert(
            app,
            scope.alert("no-secret", &replacing),
            "Amazon accepted the rotation request, but no new secret arrived",
            Some(&error),
            &action,
        )
        .await;
    }
}

/// What `lwa-agent rotate` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// The rotation it asked for (or another host asked for).
    Rotation,
    /// A conflict settled in favour of what SSM holds: the message deleted.
    KeptSsm,
    /// A conflict settled in favour of the message: its secret written.
    TookMessage,
}

/// How the wait ended.
#[derive(Debug)]
pub enum Waited {
    Done(Box<AutoRotation>),
    /// The deadline passed first.
    TimedOut(String),
    Failed(String),
}

impl Awaited {
    /// What a record written since the wait began says about it.
    fn ended(self, r: &AutoRotation) -> Option<Waited> {
        match (self, r.outcome.as_str()) {
            (Awaited::Rotation | Awaited::TookMessage, outcome::ROTATED)
            | (Awaited::KeptSsm, outcome::SETTLED) => Some(Waited::Done(Box::new(r.clone()))),
            (_, outcome::FAILED) if r.needs_attention => Some(Waited::Failed(
                r.error
                    .clone()
                    .unwrap_or_else(|| "the rotation failed".into()),
            )),
            (Awaited::Rotation, outcome::CONFLICT) => Some(Waited::Failed(format!(
                "{}; see the alert for the command that settles it",
                r.error.clone().unwrap_or_else(|| "a conflict".into())
            ))),
            _ => None,
        }
    }
}

impl Rotator {
    /// For `lwa-agent rotate`: receives from the new-secret queue itself (the command must
    /// work with the agent stopped) and completes what arrives, until `credential`'s record
    /// (written after `since`) says what is `awaited` happened or failed, or `until`
    /// passes.
    pub async fn receive_until(
        self: &Arc<Self>,
        credential: &str,
        awaited: Awaited,
        since: SystemTime,
        until: SystemTime,
    ) -> Waited {
        let queue = self.auto().new_secret_queue_url.clone();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(20));
        let fresh = |r: &AutoRotation| {
            humantime::parse_rfc3339(&r.at).is_ok_and(|at| at + Duration::from_secs(1) >= since)
        };
        loop {
            if let Some(end) = self
                .records_now()
                .await
                .get(credential)
                .filter(|r| fresh(r))
                .and_then(|r| awaited.ended(r))
            {
                return end;
            }
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            if left.is_zero() {
                // The wait is over, whatever the record says: one last look, then an answer
                // (never another round).
                self.reconcile().await;
                let record = self.records_now().await.get(credential).cloned();
                if let Some(end) = record
                    .as_ref()
                    .filter(|r| fresh(r))
                    .and_then(|r| awaited.ended(r))
                {
                    return end;
                }
                return match record {
                    Some(r) if r.outcome == outcome::FAILED => {
                        Waited::Failed(r.error.unwrap_or_else(|| "the rotation failed".into()))
                    }
                    _ => Waited::TimedOut(
                        "nothing arrived in time; if it arrives later, a running agent \
                         completes it"
                            .into(),
                    ),
                };
            }
            if let Some(messages) = self
                .receive_round(
                    &queue,
                    left.clamp(Duration::from_secs(1), sqs::LONG_POLL),
                    &mut backoff,
                    left,
                )
                .await
            {
                // All at once: a message must not wait out its invisibility behind
                // another's proof.
                futures_util::future::join_all(
                    messages.into_iter().map(|m| self.handle(&queue, m)),
                )
                .await;
            }
            // Another host (or the running agent) may have completed it.
            self.reconcile().await;
            self.flush_outbox().await;
        }
    }
}
