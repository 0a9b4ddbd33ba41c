//! The daemon's listeners: one long poll at a time on each rotation queue, for as long as
//! the agent runs, so that a new secret is completed by whichever host receives it; and
//! what becomes of a requested rotation whose secret never came.
//!
//! Invariants: at most one open receive per queue per agent; no busy loop (both loops
//! here, the daemon's and `lwa-agent rotate`'s, go through one receive round that lasts at
//! least a second, and `rotate`'s ends at its deadline); an unreachable queue is retried
//! with capped exponential backoff and jitter, like SSM; each message is worked on in its
//! own task, so a slow proof does not stop the queue.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::machine::{self, outcome, Waiting};
use super::Rotator;
use crate::aws::sqs;
use crate::aws::ssm;
use crate::backoff::Backoff;

/// The shortest time between two receives on a queue.
const MIN_ROUND: Duration = Duration::from_secs(1);

impl Rotator {
    /// Starts a listener per queue (a queue that carries both notification types is
    /// listened to once).
    pub fn listen(self: &Arc<Self>) {
        let queues: Vec<String> = self.auto().queues().into_iter().map(String::from).collect();
        for (i, queue) in queues.into_iter().enumerate() {
            let me = self.clone();
            // The new-secret queue's listener also watches the requests waiting for it.
            let reconciles = i == 0;
            tokio::spawn(async move { me.listen_on(queue, reconciles).await });
        }
    }

    async fn listen_on(self: Arc<Self>, queue: String, reconciles: bool) {
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
            if reconciles {
                self.reconcile().await;
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
    /// newer version (whichever host wrote it); failed, with an alert, when the wait ended
    /// without one.
    pub async fn reconcile(&self) {
        let waiting: Vec<(String, crate::rotation::state::AutoRotation)> = self
            .records_now()
            .await
            .into_iter()
            .filter(|(_, r)| r.outcome == outcome::WAITING)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let parameters: Vec<String> = waiting
            .iter()
            .filter_map(|(c, _)| self.config.credential(c))
            .map(|c| c.client_secret_parameter.clone())
            .collect();
        let metas = match ssm::describe(&self.ssm, &parameters).await {
            Ok((m, _)) => m,
            Err(e) => {
                tracing::debug!(error = %e, "cannot look at the waiting rotations now");
                return;
            }
        };
        let now = SystemTime::now();
        for (credential, record) in waiting {
            let Some(cred) = self.config.credential(&credential) else {
                continue;
            };
            let Some(meta) = metas
                .iter()
                .find(|m| m.name == cred.client_secret_parameter)
            else {
                continue;
            };
            match machine::reconcile(&record, meta.version, now) {
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
                Waiting::TimedOut if self.busy() => {}
                Waiting::TimedOut => self.timed_out(&credential, &record).await,
            }
        }
    }

    fn busy(&self) -> bool {
        self.handling.lock().map(|h| !h.is_empty()).unwrap_or(false)
    }

    async fn timed_out(&self, credential: &str, record: &crate::rotation::state::AutoRotation) {
        let version = record.parameter_version.unwrap_or(0);
        let error = format!(
            "no new-secret message arrived within rotation.auto.wait_for_secret ({})",
            humantime::format_duration(self.auto().wait_for_secret)
        );
        tracing::error!(credential = %credential, version, error = %error, "automatic rotation: gave up waiting for the new secret");
        self.count("secret_not_received");
        let recorded = error.clone();
        self.record(&[credential.to_string()], move |r| {
            r.outcome = outcome::FAILED.into();
            r.needs_attention = true;
            r.error = Some(recorded.clone());
        })
        .await;
        let Some(cred) = self.config.credential(credential) else {
            return;
        };
        let app = super::apps::App {
            client_id: secrecy::SecretString::from(String::new()),
            credentials: vec![credential.to_string()],
            secret_parameters: vec![cred.client_secret_parameter.clone()],
            prover: None,
        };
        let action = format!(
            "Amazon may have made a new secret that never reached the queue. Check that \
             APPLICATION_OAUTH_CLIENT_NEW_SECRET is subscribed to {queue} in the Developer \
             Console and that the queue policy lets SP-API send (docs/automatic-rotation.md). \
             If the message arrives later, any agent still completes it. To ask Amazon again, \
             delete the marker under rotation.fleet_lock_prefix for version {version} and run: \
             sudo lwa-agent rotate --credential {credential}",
            queue = self.auto().new_secret_queue_url,
        );
        self.alert(
            &app,
            &machine::alert_period("no-secret", version),
            "Amazon accepted the rotation request, but no new secret arrived",
            Some(&error),
            &action,
        )
        .await;
    }
}

impl Rotator {
    /// For `lwa-agent rotate`: receives from the new-secret queue itself (the command must
    /// work with the agent stopped) and completes what arrives, until `credential`'s
    /// rotation is done or failed, or `until` passes.
    pub async fn receive_until(
        self: &Arc<Self>,
        credential: &str,
        until: SystemTime,
    ) -> Result<crate::rotation::state::AutoRotation, String> {
        let queue = self.auto().new_secret_queue_url.clone();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(20));
        loop {
            match self.records_now().await.get(credential) {
                Some(r) if r.outcome == outcome::ROTATED => return Ok(r.clone()),
                Some(r) if r.outcome == outcome::FAILED && r.needs_attention => {
                    return Err(r
                        .error
                        .clone()
                        .unwrap_or_else(|| "the rotation failed".into()))
                }
                _ => {}
            }
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            if left.is_zero() {
                // The wait is over, whatever the record says: one last look, then an answer
                // (never another round).
                self.reconcile().await;
                return match self.records_now().await.get(credential) {
                    Some(r) if r.outcome == outcome::ROTATED => Ok(r.clone()),
                    Some(r) if r.outcome == outcome::WAITING => Err(
                        "no new secret arrived in time; if it arrives later, a running agent \
                         completes it"
                            .into(),
                    ),
                    Some(r) => Err(r
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("the rotation ended as `{}`", r.outcome))),
                    None => Err("no new secret arrived in time".into()),
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
                for m in messages {
                    self.handle(&queue, m).await;
                }
            }
            // Another host (or the running agent) may have completed it.
            self.reconcile().await;
        }
    }
}
