//! The automatic rotation's alerts: each goes into the state file's outbox first and
//! leaves it only once it went out, from this host or another of the fleet (its claim
//! says sent). A publish that fails, or a crash before it, is sent again by
//! [`Rotator::flush_outbox`], which every housekeeping round, every check and `lwa-agent
//! rotate` run.
//!
//! Invariants: an alert is never dropped while its claim is not sent; a failing alert is
//! tried again after a growing pause (30 s, doubling, at most 15 minutes), not every round.

use std::time::{Duration, SystemTime};

use super::apps::App;
use super::Rotator;
use crate::rotation::publish::Outcome;
use crate::rotation::state;
use crate::rotation::texts::auto as text;

/// The longest pause between two tries of one alert.
const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// When an alert that failed `tries` times is tried again.
fn next_try(tries: u32, now: SystemTime) -> SystemTime {
    now + (Duration::from_secs(30) * 2u32.pow(tries.min(5))).min(MAX_PAUSE)
}

impl Rotator {
    /// Alerts a person, once per fleet (the claim `marker`): kept in the outbox, then sent.
    pub(super) async fn alert(
        &self,
        app: &App,
        marker: String,
        what: &str,
        detail: Option<&str>,
        action: &str,
    ) {
        let msg = text::alert(&text::Alert {
            parameter: app.key_parameter(),
            credentials: &app.credentials,
            what,
            detail,
            action,
            host: &self.host,
        });
        let pending = state::Pending {
            parameter: app.key_parameter().to_string(),
            message: msg,
            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            tries: 0,
            next_try: None,
        };
        let key = marker.clone();
        let fallback = pending.clone();
        // An entry already in the outbox wins: it carries the tries and the next try.
        let queued = state::update_off_runtime(&self.state_dir, move |s| {
            s.outbox.entry(key).or_insert(pending).clone()
        })
        .await;
        let pending = queued.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot keep the alert in the state file's outbox; it is sent now, but not again if this fails");
            fallback
        });
        self.send_pending(&marker, &pending).await;
    }

    /// Sends the alerts in the outbox whose time has come.
    pub async fn flush_outbox(&self) {
        let now = SystemTime::now();
        for (marker, pending) in self.outbox().await {
            let due = pending
                .next_try
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .is_none_or(|t| t <= now);
            if due {
                self.send_pending(&marker, &pending).await;
            }
        }
    }

    async fn outbox(&self) -> std::collections::BTreeMap<String, state::Pending> {
        let dir = self.state_dir.clone();
        tokio::task::spawn_blocking(move || state::load_readonly(&dir).outbox)
            .await
            .unwrap_or_default()
    }

    /// One outbox entry: published, and removed once the fleet has sent it; else its next
    /// try is set.
    async fn send_pending(&self, marker: &str, pending: &state::Pending) {
        let outcome = self
            .publish(&pending.parameter, marker, &pending.message)
            .await;
        let key = marker.to_string();
        let result = if outcome.went_out() {
            state::update_off_runtime(&self.state_dir, move |s| {
                s.outbox.remove(&key);
            })
            .await
        } else {
            let tries = pending.tries + 1;
            let next = humantime::format_rfc3339_seconds(next_try(tries, SystemTime::now()));
            let when = next.to_string();
            match &outcome {
                Outcome::SendingElsewhere(holder) => {
                    tracing::info!(parameter = %pending.parameter, holder = %holder, next_try = %when, "another host is sending this alert; it stays in the outbox until it went out")
                }
                Outcome::Failed(e) => {
                    tracing::error!(parameter = %pending.parameter, error = %e, pending_since = %pending.since, next_try = %when, "cannot send the automatic rotation alert; it stays in the outbox and is sent again")
                }
                _ => {}
            }
            state::update_off_runtime(&self.state_dir, move |s| {
                if let Some(p) = s.outbox.get_mut(&key) {
                    p.tries = tries;
                    p.next_try = Some(when);
                }
            })
            .await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot update the outbox in the state file; its fleet claim stops an alert from going out twice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_alert_waits_longer_each_time_up_to_a_quarter_hour() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let pause = |tries| next_try(tries, now).duration_since(now).unwrap_or_default();
        assert_eq!(pause(0), Duration::from_secs(30));
        assert_eq!(pause(1), Duration::from_secs(60));
        assert_eq!(pause(4), Duration::from_secs(480));
        assert_eq!(pause(5), MAX_PAUSE);
        assert_eq!(pause(40), MAX_PAUSE);
    }
}
