//! Publishing a rotation message (a reminder, or an automatic rotation's report or alert)
//! to SNS: once per fleet when asked, with retries.
//!
//! Invariants: with a fleet claim (`fleet::Claim`), a host publishes only after it created
//! the claim create-only, marks it sent once SNS accepted, and removes it when the
//! publish fails, so the fleet neither sends twice nor believes a failed message went
//! out; a claim left pending by a host that died before publishing is taken over after
//! its lease (under a create-only name of its own), so a kill between claim and publish
//! loses nothing. A message never carries a secret: callers build it from names,
//! versions and dates only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aws::sns;
use crate::aws::ssm::markers;
use crate::backoff::Backoff;
use crate::config::RotationConfig;
use crate::metrics::Metrics;

use super::fleet::{self, Claim};
use super::{texts, Mode};

/// Which counter a delivery bumps and how the log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reminder,
    AutoRotation,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Reminder => "rotation reminder",
            Kind::AutoRotation => "automatic rotation report",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    WouldSend,
    /// No topic configured: the message went to the log only.
    Logged,
    Sent,
    /// Another host of the fleet sent it.
    SentElsewhere,
    /// Another host of the fleet holds the claim and has not sent it yet: it may still
    /// fail, so the message is not done until its claim says sent.
    SendingElsewhere(String),
    Failed(String),
}

impl Outcome {
    /// Whether the message went out (or, with no topic, to the log): nothing is left to do.
    pub fn went_out(&self) -> bool {
        matches!(
            self,
            Outcome::Sent | Outcome::SentElsewhere | Outcome::Logged | Outcome::WouldSend
        )
    }
}

#[derive(Clone)]
pub struct Publisher {
    config: RotationConfig,
    ssm: aws_sdk_ssm::Client,
    sns: aws_sdk_sns::Client,
    host: String,
    /// The daemon's counters; none in a one-shot command.
    metrics: Option<Arc<Metrics>>,
}

impl Publisher {
    pub fn new(config: &RotationConfig, sdk: &aws_config::SdkConfig, mode: &Mode) -> Self {
        Publisher {
            config: config.clone(),
            ssm: aws_sdk_ssm::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            host: super::host_name(),
            metrics: mode.metrics().cloned(),
        }
    }

    /// The host name the messages are signed with.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn count(&self, kind: Kind, result: &str) {
        if let Some(m) = &self.metrics {
            match kind {
                Kind::Reminder => m.reminder(result),
                Kind::AutoRotation => m.auto_rotation_event(&format!("sns_{result}")),
            }
        }
    }

    /// Takes the fleet claim `marker` (when given and a topic is configured), then
    /// publishes with retries. `name` is what the message is about (log and attribute).
    pub async fn deliver(
        &self,
        kind: Kind,
        name: &str,
        marker: Option<&str>,
        msg: &texts::Message,
    ) -> Outcome {
        let Some(topic) = &self.config.topic_arn else {
            tracing::warn!(
                parameter = %name,
                subject = %msg.subject,
                "{} (rotation.topic_arn is not set, so it goes to the log only)",
                kind.label()
            );
            self.count(kind, "logged");
            return Outcome::Logged;
        };
        let claim = match marker {
            None => None,
            Some(marker) => match self.claim(marker).await {
                Ok(name) => Some(name),
                Err(outcome) => {
                    match &outcome {
                        Outcome::SentElsewhere => {
                            tracing::info!(parameter = %name, marker = %marker, "another host of the fleet sent this {}", kind.label());
                            self.count(kind, "skipped_by_fleet_lock");
                        }
                        Outcome::SendingElsewhere(holder) => {
                            tracing::info!(parameter = %name, marker = %marker, holder = %holder, "another host of the fleet is sending this {}", kind.label());
                        }
                        _ => self.count(kind, "failed"),
                    }
                    return outcome;
                }
            },
        };
        let json = texts::sns_json(msg);
        let attributes = [
            ("parameter", name),
            ("severity", msg.severity.as_str()),
            ("host", self.host.as_str()),
        ];
        let request = sns::Publish {
            topic_arn: topic,
            subject: &msg.subject,
            message_json: &json,
            attributes: &attributes,
        };
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let mut last = String::new();
        for attempt in 1..=3 {
            match sns::publish(&self.sns, &request).await {
                Ok(id) => {
                    tracing::info!(parameter = %name, message_id = %id, severity = %msg.severity, "{} sent", kind.label());
                    self.count(kind, "sent");
                    if let Some(claim) = &claim {
                        // Not fatal: a claim left pending is taken over later, and the
                        // worst that comes of it is one message sent twice.
                        let sent = Claim::sent(&self.host, SystemTime::now());
                        if let Err(e) = markers::set(&self.ssm, claim, &sent).await {
                            tracing::warn!(marker = %claim, error = %e, "cannot mark the fleet claim as sent");
                        }
                    }
                    return Outcome::Sent;
                }
                Err(e) => {
                    tracing::warn!(parameter = %name, attempt, error = %e.message, "{} not sent", kind.label());
                    last = e.message;
                    if !e.retryable || attempt == 3 {
                        break;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        self.count(kind, "failed");
        if let Some(claim) = &claim {
            // Give the claim back so that this or another host can send it later.
            let _ = markers::delete(&self.ssm, claim).await;
        }
        Outcome::Failed(match kind {
            Kind::Reminder => format!("{last} (the reminder is retried on the next check)"),
            Kind::AutoRotation => last,
        })
    }

    /// Takes `marker`, or the first takeover of it whose holder is not alive: the name
    /// this host now holds, or what stops it from sending.
    async fn claim(&self, marker: &str) -> Result<String, Outcome> {
        let mut generation = 1;
        // A claim given back between our create and our read is taken again (bounded).
        let mut given_back = 0;
        while generation <= fleet::MAX_GENERATIONS {
            let name = fleet::generation(marker, generation);
            let now = SystemTime::now();
            match markers::create(&self.ssm, &name, &Claim::pending(&self.host, now)).await {
                Ok(true) => return Ok(name),
                Ok(false) => {}
                Err(e) => return Err(Outcome::Failed(e)),
            }
            let held = match markers::get(&self.ssm, &name).await {
                Ok(Some(value)) => Claim::parse(&value),
                Ok(None) if given_back < 3 => {
                    given_back += 1;
                    continue;
                }
                Ok(None) => {
                    return Err(Outcome::SendingElsewhere(
                        "a host that gives its claim back".into(),
                    ))
                }
                Err(e) => return Err(Outcome::Failed(e)),
            };
            match held {
                Claim::Sent => return Err(Outcome::SentElsewhere),
                claim if claim.abandoned(now, fleet::CLAIM_LEASE) => {
                    tracing::warn!(marker = %name, "a fleet claim was left pending by a host that stopped before sending; taking it over");
                    generation += 1;
                }
                Claim::Pending { host, since } => {
                    return Err(Outcome::SendingElsewhere(format!(
                        "{host} since {}",
                        humantime::format_rfc3339_seconds(since)
                    )))
                }
            }
        }
        Err(Outcome::Failed(format!(
            "every claim of {marker} was left pending by hosts that stopped; delete the \
             parameters {marker} and {marker}.2 to {marker}.{} under \
             rotation.fleet_lock_prefix to send it again",
            fleet::MAX_GENERATIONS
        )))
    }
}
