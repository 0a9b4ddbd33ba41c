//! The two SP-API notifications the automatic rotation reads from SQS
//! (docs/automatic-rotation.md): `APPLICATION_OAUTH_CLIENT_NEW_SECRET` and
//! `APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY`.
//! Pure.
//!
//! Invariants: the new secret is moved into a `SecretString` as soon as it is parsed; the
//! parsed types print no secret in Debug; a parse error names what is wrong, never a value
//! from the body (the body may hold a secret even when it does not parse).

use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::rotation::fleet::parse_time;

pub const NEW_SECRET: &str = "APPLICATION_OAUTH_CLIENT_NEW_SECRET";
pub const SECRET_EXPIRY: &str = "APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY";

pub enum Notification {
    NewSecret(NewSecret),
    Expiry(Expiry),
}

impl Notification {
    pub fn client_id(&self) -> &str {
        match self {
            Notification::NewSecret(n) => &n.client_id,
            Notification::Expiry(e) => &e.client_id,
        }
    }
}

pub struct NewSecret {
    /// The app's client id (not a secret, but kept out of logs all the same: the log
    /// names credentials and parameters instead).
    pub client_id: String,
    pub secret: SecretString,
    /// RFC 3339, as Amazon sent them.
    pub new_secret_expires_at: Option<String>,
    pub old_secret_expires_at: Option<String>,
    pub notification_id: Option<String>,
    /// When Amazon published the notification (`notificationMetadata.publishTime`, else
    /// `eventTime`): orders two new secrets of one app, so an older message never
    /// overwrites a newer secret.
    pub published: Option<SystemTime>,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("secret", &"[redacted]")
            .field("old_secret_expires_at", &self.old_secret_expires_at)
            .field("notification_id", &self.notification_id)
            .field("published", &self.published)
            .finish()
    }
}

#[derive(Debug)]
pub struct Expiry {
    pub client_id: String,
    pub expires_at: Option<String>,
    pub reason: Option<String>,
    /// When Amazon published the notification (`notificationMetadata.publishTime`, else
    /// `eventTime`).
    pub published: Option<SystemTime>,
}

/// Why a body is not a notification this agent acts on. Never carries body content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    NotJson,
    /// Another notification type (cleaned and capped: it is only a type name).
    OtherType(String),
    Missing(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NotJson => f.write_str("the body is not a JSON notification"),
            ParseError::OtherType(t) => {
                write!(f, "notification type `{t}` is not one the agent handles")
            }
            ParseError::Missing(field) => write!(f, "the notification has no {field}"),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    notification_type: Option<String>,
    event_time: Option<String>,
    #[serde(default)]
    payload: Payload,
    #[serde(default)]
    notification_metadata: Metadata,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(rename = "applicationOAuthClientNewSecret")]
    new_secret: Option<RawNewSecret>,
    #[serde(rename = "applicationOAuthClientSecretExpiry")]
    expiry: Option<RawExpiry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNewSecret {
    client_id: Option<String>,
    /// Straight into a `SecretString`: every path that drops it, an error half-way
    /// through the body included, zeroizes it.
    #[serde(default, deserialize_with = "secret_field")]
    new_client_secret: Option<SecretString>,
    new_client_secret_expiry_time: Option<String>,
    old_client_secret_expiry_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExpiry {
    client_id: Option<String>,
    client_secret_expiry_time: Option<String>,
    client_secret_expiry_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    publish_time: Option<String>,
    notification_id: Option<String>,
}

/// Deserializes a string field into a `SecretString` without a plain `String` copy that
/// would be dropped unzeroized. (serde_json's own scratch buffer for a string with escapes
/// is out of reach; the body it parses from is itself a `SecretString`.)
fn secret_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    struct Secret;
    impl<'de> serde::de::Visitor<'de> for Secret {
        type Value = Option<SecretString>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v)))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v)))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_str(Secret)
        }
    }
    d.deserialize_option(Secret)
}

/// Printable, short: a value from the body that may be echoed (a type name, a time).
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

fn present(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

pub fn parse(body: &str) -> Result<Notification, ParseError> {
    let env: Envelope = serde_json::from_str(body).map_err(|_| ParseError::NotJson)?;
    let published = env
        .notification_metadata
        .publish_time
        .as_deref()
        .or(env.event_time.as_deref())
        .and_then(parse_time);
    let kind = env
        .notification_type
        .ok_or(ParseError::Missing("notificationType"))?;
    match kind.as_str() {
        NEW_SECRET => {
            let raw = env.payload.new_secret.ok_or(ParseError::Missing(
                "payload.applicationOAuthClientNewSecret",
            ))?;
            let client_id = present(raw.client_id).ok_or(ParseError::Missing("clientId"))?;
            let secret = raw
                .new_client_secret
                .filter(|s| !s.expose_secret().trim().is_empty())
                .ok_or(ParseError::Missing("newClientSecret"))?;
            if secret.expose_secret().chars().any(char::is_whitespace) {
                // A secret is one token; whitespace means a broken message, not a secret
                // to store.
                return Err(ParseError::Missing("newClientSecret without whitespace"));
            }
            Ok(Notification::NewSecret(NewSecret {
                client_id,
                secret,
                new_secret_expires_at: present(raw.new_client_secret_expiry_time)
                    .map(|t| clean(&t, 64)),
                old_secret_expires_at: present(raw.old_client_secret_expiry_time)
                    .map(|t| clean(&t, 64)),
                notification_id: env
                    .notification_metadata
                    .notification_id
                    .map(|t| clean(&t, 128)),
                published,
            }))
        }
        SECRET_EXPIRY => {
            let raw = env.payload.expiry.ok_or(ParseError::Missing(
                "payload.applicationOAuthClientSecretExpiry",
            ))?;
            let client_id = present(raw.client_id).ok_or(ParseError::Missing("clientId"))?;
            Ok(Notification::Expiry(Expiry {
                client_id,
                expires_at: present(raw.client_secret_expiry_time).map(|t| clean(&t, 64)),
                reason: present(raw.client_secret_expiry_reason).map(|t| clean(&t, 64)),
                published,
            }))
        }
        other => Err(ParseError::OtherType(clean(other, 64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = r#"{"notificationVersion": "1.0", "notificationType": "APPLICATION_OAUTH_CLIENT_NEW_SECRET",
 "payloadVersion": "2023-11-30", "eventTime": "2026-05-01T10:00:00.000Z",
 "payload": {"applicationOAuthClientNewSecret": {"clientId": "amzn1.application-oa2-client.abc",
   "newClientSecret": "amzn1.oa2-cs.v1.NEWSECRET", "newClientSecretExpiryTime": "2026-10-28T10:00:00Z",
   "oldClientSecretExpiryTime": "2026-05-08T10:00:00Z"}},
 "notificationMetadata": {"applicationId": "amzn1.sp.solution.x", "subscriptionId": "s",
   "publishTime": "2026-05-01T10:00:01.000Z", "notificationId": "n-1"}}"#;

    #[test]
    fn reads_amazons_new_secret_notification() {
        let Ok(Notification::NewSecret(n)) = parse(NEW) else {
            panic!("not a new-secret notification");
        };
        assert_eq!(n.client_id, "amzn1.application-oa2-client.abc");
        assert_eq!(n.secret.expose_secret(), "amzn1.oa2-cs.v1.NEWSECRET");
        assert_eq!(
            n.old_secret_expires_at.as_deref(),
            Some("2026-05-08T10:00:00Z")
        );
        assert_eq!(n.notification_id.as_deref(), Some("n-1"));
        assert_eq!(
            n.published,
            parse_time("2026-05-01T10:00:01Z"),
            "publishTime, with its milliseconds"
        );
        assert!(!format!("{n:?}").contains("NEWSECRET"));
    }

    #[test]
    fn a_new_secret_without_publish_time_falls_back_to_event_time() {
        let no_publish = NEW.replace(r#""publishTime": "2026-05-01T10:00:01.000Z","#, "");
        let Ok(Notification::NewSecret(n)) = parse(&no_publish) else {
            panic!("not a new-secret notification");
        };
        assert_eq!(n.published, parse_time("2026-05-01T10:00:00Z"));
        let neither = no_publish.replace(r#""eventTime": "2026-05-01T10:00:00.000Z","#, "");
        let Ok(Notification::NewSecret(n)) = parse(&neither) else {
            panic!("not a new-secret notification");
        };
        assert_eq!(n.published, None);
    }

    #[test]
    fn reads_the_expiry_notification() {
        let body = r#"{"notificationVersion":"1.0","notificationType":"APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY",
          "payloadVersion":"2023-11-30","eventTime":"2026-04-01T00:00:00Z",
          "payload":{"applicationOAuthClientSecretExpiry":{"clientId":"amzn1.application-oa2-client.abc",
            "clientSecretExpiryTime":"2026-04-30T00:00:00Z","clientSecretExpiryReason":"PERIODIC_ROTATION"}},
          "notificationMetadata":{"publishTime":"2026-04-01T00:00:05+00:00"}}"#;
        let Ok(Notification::Expiry(e)) = parse(body) else {
            panic!("not an expiry notification");
        };
        assert_eq!(e.expires_at.as_deref(), Some("2026-04-30T00:00:00Z"));
        assert_eq!(e.reason.as_deref(), Some("PERIODIC_ROTATION"));
        assert_eq!(
            e.published,
            parse_time("2026-04-01T00:00:05Z"),
            "publishTime wins over eventTime, offsets are read"
        );
    }

    #[test]
    fn malformed_bodies_are_errors_that_echo_nothing() {
        let secret_bearing = NEW.replace("\"clientId\": \"amzn1.application-oa2-client.abc\",", "");
        for (body, want) in [
            ("not json amzn1.oa2-cs.v1.NEWSECRET", ParseError::NotJson),
            ("{}", ParseError::Missing("notificationType")),
            (secret_bearing.as_str(), ParseError::Missing("clientId")),
            (
                r#"{"notificationType":"APPLICATION_OAUTH_CLIENT_NEW_SECRET","payload":{}}"#,
                ParseError::Missing("payload.applicationOAuthClientNewSecret"),
            ),
            (
                r#"{"notificationType":"ANY_OFFER_CHANGED\n"}"#,
                ParseError::OtherType("ANY_OFFER_CHANGED".into()),
            ),
        ] {
            let err = parse(body).err().expect("an error");
            assert_eq!(err, want, "{body}");
            assert!(!err.to_string().contains("NEWSECRET"));
        }
        let spaced = NEW.replace("amzn1.oa2-cs.v1.NEWSECRET", "two words");
        assert!(parse(&spaced).is_err());
    }
}
