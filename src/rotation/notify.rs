//! Publishing a rotation message (a reminder, or an automatic rotation's report or alert)
//! to SNS: once per fleet when asked, with retries.
//!
//! Invariants: with a fleet lock, a host publishes only after it created the period's
//! create-only marker, and removes the marker again when the publish fails, so the fleet
//! neither sends twice nor believes a failed message went out. A message never carries a
//! secret: callers build it from names, versions and dates only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aws::{sns, ssm};
use crate::backoff::Backoff;
use crate::config::RotationConfig;
use crate::metrics::Metrics;

use super::{fleet_hash, message};

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
    /// Another host of the fleet holds this period's marker: it sent (or sends) it.
    SentElsewhere,
    Failed(String),
}

#[derive(Clone)]
pub struct Notifier {
    pub config: RotationConfig,
    pub ssm: aws_sdk_ssm::Client,
    pub sns: aws_sdk_sns::Client,
    pub host: String,
    pub metrics: Option<Arc<Metrics>>,
}

impl Notifier {
    pub fn new(
        config: &RotationConfig,
        sdk: &aws_config::SdkConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Notifier {
            config: config.clone(),
            ssm: aws_sdk_ssm::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            host: super::host_name(),
            metrics,
        }
    }

    fn count(&self, kind: Kind, result: &str) {
        if let Some(m) = &self.metrics {
            match kind {
                Kind::Reminder => m.reminder(result),
                Kind::AutoRotation => m.auto_rotation_event(&format!("sns_{result}")),
            }
        }
    }

    /// Takes the fleet lock `{prefix}/{hash(name)}/{period}` (when configured and `fleet`
    /// is set), then publishes with retries.
    pub async fn deliver(
        &self,
        kind: Kind,
        name: &str,
        period: &str,
        msg: &message::Message,
        fleet: bool,
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
        let marker = self
            .config
            .fleet_lock_prefix
            .as_ref()
            .filter(|_| fleet)
            .map(|prefix| format!("{prefix}/{}/{period}", fleet_hash(name)));
        if let Some(marker) = &marker {
            let value = format!(
                "{} {}",
                self.host,
                humantime::format_rfc3339_seconds(SystemTime::now())
            );
            match ssm::create_marker(&self.ssm, marker, &value).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(parameter = %name, marker = %marker, "another host of the fleet sent this {}", kind.label());
                    self.count(kind, "skipped_by_fleet_lock");
                    return Outcome::SentElsewhere;
                }
                Err(e) => {
                    self.count(kind, "failed");
                    return Outcome::Failed(e);
                }
            }
        }
        let json = message::sns_json(msg);
        let attributes = [
            ("parameter", name),
            ("severity", msg.severity),
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
                    tracing::info!(parameter = %name, message_id = %id, severity = msg.severity, "{} sent", kind.label());
                    self.count(kind, "sent");
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
        if let Some(marker) = &marker {
            // Give the period back so that this or another host can send it later.
            let _ = ssm::delete_marker(&self.ssm, marker).await;
        }
        Outcome::Failed(match kind {
            Kind::Reminder => format!("{last} (the reminder is retried on the next check)"),
            Kind::AutoRotation => last,
        })
    }
}
