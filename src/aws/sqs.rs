//! The SQS queues Amazon delivers the rotation notifications to
//! (docs/automatic-rotation.md): long-poll receive, delete, visibility changes, and the
//! attributes `doctor` reads.
//!
//! Invariants: a message body is a secret (a new-secret notification carries the new
//! client secret), so it is kept in a `SecretString`, never formatted into a log line or an
//! error, and this module's Debug output names only message ids; every AWS error text goes
//! through [`describe`], one place to change how SDK errors read.

use std::time::{Duration, SystemTime};

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use secrecy::SecretString;

/// SQS's longest long poll, and the one docs/automatic-rotation.md describes.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// Up to 10 messages per receive (SQS's maximum).
const MAX_MESSAGES: i32 = 10;

/// The SQS client, from the shared SDK config (same credentials, resolver, region and
/// `aws.endpoint_url`), with call timeouts that leave room for a 20 s long poll: the
/// shared config's 10 s attempt timeout would cut every long poll short.
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(LONG_POLL + Duration::from_secs(10))
        .operation_timeout(LONG_POLL * 3 + Duration::from_secs(10))
        .build();
    let conf = aws_sdk_sqs::config::Builder::from(sdk)
        .timeout_config(timeouts)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// One received message. The body is secret; Debug shows only the id.
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: SecretString,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
    /// When the message reached the queue: it is gone once the queue's retention period
    /// has passed since then.
    pub sent_at: Option<SystemTime>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("id", &self.id)
            .field("receive_count", &self.receive_count)
            .field("sent_at", &self.sent_at)
            .field("body", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct SqsError {
    /// SQS could not be reached (or failed on its side): back off and try again.
    pub unreachable: bool,
    pub message: String,
}

impl std::fmt::Display for SqsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn error<E>(
    what: &str,
    queue: &str,
    e: &aws_sdk_sqs::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> SqsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let d = super::error::describe(
        e,
        &super::error::Call {
            what: &format!("SQS {what} on {queue}"),
            permission: "sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility and \
                         sqs:GetQueueAttributes on the queue (and kms:Decrypt on its key)",
        },
    );
    let code = d.code.as_deref().unwrap_or("");
    let hint = if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
        ": the queue does not exist: create it or fix the URL in [rotation.auto]"
    } else {
        ""
    };
    SqsError {
        // Also the credential classes: they concern every call, so the listener backs
        // off and tries again rather than giving up.
        unreachable: !matches!(
            d.class,
            super::error::Class::Service | super::error::Class::AccessDenied
        ),
        message: format!("{}{hint}", d.line),
    }
}

/// One long poll: waits up to `wait` for messages and hides the ones it returns from other
/// receivers for `visibility`.
pub async fn receive(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    wait: Duration,
    visibility: Duration,
) -> Result<Vec<Received>, SqsError> {
    let out = client
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(MAX_MESSAGES)
        .wait_time_seconds(wait.as_secs().min(20) as i32)
        .visibility_timeout(seconds(visibility))
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .map_err(|e| error("ReceiveMessage", queue, &e))?;
    Ok(out
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let attribute = |name: MessageSystemAttributeName| {
                m.attributes
                    .as_ref()
                    .and_then(|a| a.get(&name))
                    .and_then(|n| n.parse::<u64>().ok())
            };
            let receive_count = attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1);
            // Milliseconds since the epoch.
            let sent_at = attribute(MessageSystemAttributeName::SentTimestamp)
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
            Some(Received {
                id: m.message_id?,
                receipt: m.receipt_handle?,
                body: SecretString::from(m.body.unwrap_or_default()),
                receive_count,
                sent_at,
            })
        })
        .collect())
}

/// Deletes a message: only once what it asked for is done (SSM holds the new secret).
pub async fn delete(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    receipt: &str,
) -> Result<(), SqsError> {
    client
        .delete_message()
        .queue_url(queue)
        .receipt_handle(receipt)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| error("DeleteMessage", queue, &e))
}

/// Keeps a message hidden from other receivers for `visibility` from now: while this host
/// works on it, or until a retry is due.
pub async fn hide_for(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    receipt: &str,
    visibility: Duration,
) -> Result<(), SqsError> {
    client
        .change_message_visibility()
        .queue_url(queue)
        .receipt_handle(receipt)
        .visibility_timeout(seconds(visibility))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| error("ChangeMessageVisibility", queue, &e))
}

/// How long the queue keeps a message (`MessageRetentionPeriod`; SQS's default is 4 days).
pub async fn retention(client: &aws_sdk_sqs::Client, queue: &str) -> Result<Duration, SqsError> {
    let out = client
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::MessageRetentionPeriod)
        .send()
        .await
        .map_err(|e| error("GetQueueAttributes", queue, &e))?;
    out.attributes
        .unwrap_or_default()
        .get(&QueueAttributeName::MessageRetentionPeriod)
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .ok_or_else(|| SqsError {
            unreachable: false,
            message: format!("SQS GetQueueAttributes on {queue} gave no MessageRetentionPeriod"),
        })
}

/// What `doctor` shows about a queue.
#[derive(Debug, Clone, Default)]
pub struct QueueInfo {
    pub arn: Option<String>,
    pub messages: Option<String>,
    pub in_flight: Option<String>,
    /// SSE-KMS key, or `SQS-managed` for SSE-SQS; `None` for an unencrypted queue.
    pub encryption: Option<String>,
    /// The queue policy mentions Amazon's SP-API notification account.
    pub policy_allows_sp_api: bool,
    /// The queue's redrive policy (its dead-letter queue), if it has one.
    pub redrive_policy: Option<String>,
}

/// AWS account that SP-API sends notifications from (Amazon's "Set up credential rotation
/// notifications" tutorial); the queue policy must let it `sqs:SendMessage`.
pub const SP_API_ACCOUNT: &str = "437568002678";

pub async fn attributes(client: &aws_sdk_sqs::Client, queue: &str) -> Result<QueueInfo, SqsError> {
    let out = client
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| error("GetQueueAttributes", queue, &e))?;
    let attrs = out.attributes.unwrap_or_default();
    let get = |k: QueueAttributeName| attrs.get(&k).cloned();
    let encryption = get(QueueAttributeName::KmsMasterKeyId).or_else(|| {
        (get(QueueAttributeName::SqsManagedSseEnabled).as_deref() == Some("true"))
            .then(|| "SQS-managed".to_string())
    });
    Ok(QueueInfo {
        arn: get(QueueAttributeName::QueueArn),
        messages: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        encryption,
        policy_allows_sp_api: get(QueueAttributeName::Policy)
            .is_some_and(|p| p.contains(SP_API_ACCOUNT)),
        redrive_policy: get(QueueAttributeName::RedrivePolicy).filter(|p| !p.trim().is_empty()),
    })
}

/// SQS takes visibility timeouts in whole seconds, 0 to 12 hours.
fn seconds(d: Duration) -> i32 {
    d.as_secs().min(12 * 3600) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_message_never_prints_its_body() {
        let m = Received {
            id: "m-1".into(),
            receipt: "r".into(),
            body: SecretString::from("amzn1.oa2-cs.v1.SECRET".to_string()),
            receive_count: 2,
            sent_at: None,
        };
        let text = format!("{m:?}");
        assert!(text.contains("m-1") && !text.contains("SECRET"), "{text}");
    }

    #[test]
    fn visibility_is_capped_at_twelve_hours() {
        assert_eq!(seconds(Duration::from_secs(30)), 30);
        assert_eq!(seconds(Duration::from_secs(100 * 3600)), 43200);
    }
}
