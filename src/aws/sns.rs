//! Publishing rotation reminders to SNS.

use aws_sdk_sns::types::MessageAttributeValue;

/// One reminder, already rendered.
pub struct Publish<'a> {
    pub topic_arn: &'a str,
    pub subject: &'a str,
    /// `MessageStructure=json` body: `{"default","email","sms"}`.
    pub message_json: &'a str,
    pub attributes: &'a [(&'a str, &'a str)],
}

#[derive(Debug, Clone)]
pub struct PublishError {
    /// Throttling and server errors: worth retrying now.
    pub retryable: bool,
    pub message: String,
}

pub async fn publish(
    client: &aws_sdk_sns::Client,
    p: &Publish<'_>,
) -> Result<String, PublishError> {
    let mut req = client
        .publish()
        .topic_arn(p.topic_arn)
        .subject(p.subject)
        .message_structure("json")
        .message(p.message_json);
    for (k, v) in p.attributes {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(*v)
            .build()
            .map_err(|e| PublishError {
                retryable: false,
                message: format!("bad message attribute {k}: {e}"),
            })?;
        req = req.message_attributes(*k, value);
    }
    match req.send().await {
        Ok(out) => Ok(out.message_id.unwrap_or_default()),
        Err(e) => {
            let d = super::error::describe(
                &e,
                &super::error::Call {
                    what: "SNS Publish",
                    permission: "sns:Publish on the topic",
                },
            );
            let missing = matches!(d.code.as_deref(), Some("NotFound" | "NotFoundException"));
            Err(PublishError {
                retryable: d.class.is_transient(),
                message: if missing {
                    format!(
                        "{}: the topic does not exist: create it or fix rotation.topic_arn",
                        d.line
                    )
                } else {
                    d.line
                },
            })
        }
    }
}
