//! The one call of Amazon's Application Management API the agent makes:
//! `rotateApplicationClientSecret` (docs/automatic-rotation.md). Amazon answers 204 with no
//! body and delivers the new secret to the app's new-secret SQS queue; this client only
//! asks.
//!
//! Invariant: the grantless access token goes into the `x-amz-access-token` header and
//! nowhere else; errors carry Amazon's `errors[].message` texts (cleaned and capped), never
//! a header or a token.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The scope of the grantless token the rotation call needs.
pub const ROTATION_SCOPE: &str = "sellingpartnerapi::client_credential:rotation";

/// The operation's path under the regional SP-API endpoint.
pub const ROTATE_PATH: &str = "/applications/2023-11-30/clientSecret";

/// The operation's rate is 0.0167 requests per second, burst 1: after a 429, wait at least
/// this long (longer when Amazon says so).
pub const THROTTLE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    #[error("Amazon is throttling rotateApplicationClientSecret (HTTP 429): one call a minute is allowed")]
    Throttled { retry_after: Option<Duration> },
    /// 4xx other than 429: the request or the app is wrong; retrying soon will not help.
    #[error("Amazon refused rotateApplicationClientSecret with HTTP {status}: {message}{hint}")]
    Refused {
        status: u16,
        message: String,
        hint: &'static str,
    },
    #[error("Amazon answered rotateApplicationClientSecret with HTTP {status}: {message}")]
    Server { status: u16, message: String },
    /// `sent`: the connection was made, so Amazon may have received the request.
    #[error("cannot reach the SP-API endpoint {url}: {reason}: check network access to rotation.auto.sp_api_endpoint")]
    Transport {
        url: String,
        reason: String,
        sent: bool,
    },
}

impl RotateError {
    /// A short label for metrics and the state file.
    pub fn kind(&self) -> &'static str {
        match self {
            RotateError::Throttled { .. } => "throttled",
            RotateError::Refused { .. } => "refused",
            RotateError::Server { .. } => "server_error",
            RotateError::Transport { .. } => "unreachable",
        }
    }
}

pub struct AppManagementClient {
    http: reqwest::Client,
    url: String,
}

impl AppManagementClient {
    /// `endpoint` is `rotation.auto.sp_api_endpoint`, without a trailing slash.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, String> {
        let http = crate::net::build_client(
            crate::net::client_builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5))),
            "SP-API",
        )?;
        Ok(AppManagementClient {
            http,
            url: format!("{endpoint}{ROTATE_PATH}"),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks Amazon for a new client secret of the app whose grantless token this is.
    pub async fn rotate_client_secret(&self, token: &SecretString) -> Result<(), RotateError> {
        let response = self
            .http
            .post(&self.url)
            .header("x-amz-access-token", token.expose_secret())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| RotateError::Transport {
                url: self.url.clone(),
                sent: !e.is_connect(),
                reason: if e.is_timeout() {
                    "timed out".to_string()
                } else if e.is_connect() {
                    "connection failed".to_string()
                } else {
                    e.without_url().to_string()
                },
            })?;
        let status = response.status().as_u16();
        let retry_after = crate::net::retry_after(response.headers());
        let body = crate::net::read_capped(response).await.unwrap_or_default();
        classify(status, retry_after, &body)
    }
}

#[derive(Deserialize)]
struct ErrorList {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    code: Option<String>,
    message: Option<String>,
}

/// Amazon's `errors[].message` texts (with their codes), one line, at most 300 characters.
fn messages(body: &[u8]) -> String {
    let parsed: Option<ErrorList> = serde_json::from_slice(body).ok();
    let text = parsed
        .map(|l| {
            l.errors
                .into_iter()
                .map(|e| match (e.code, e.message) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c,
                    (None, Some(m)) => m,
                    (None, None) => String::new(),
                })
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no error details".to_string());
    let clean: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    clean
}

/// Maps Amazon's answer to the outcome. Pure, so every branch is unit-tested.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), RotateError> {
    match status {
        200..=299 => Ok(()),
        429 => Err(RotateError::Throttled { retry_after }),
        400..=499 => Err(RotateError::Refused {
            status,
            message: messages(body),
            hint: match status {
                401 | 403 => {
                    ": the app needs the rotation scope (sellingpartnerapi::client_credential:rotation) \
                     and a valid client secret; check the app in the Developer Console"
                }
                404 => ": check rotation.auto.sp_api_endpoint (sellingpartnerapi-na, -eu or -fe)",
                _ => "",
            },
        }),
        _ => Err(RotateError::Server {
            status,
            message: messages(body),
        }),
    }
}

/// How long to wait after a 429: at least [`THROTTLE_WAIT`].
pub fn throttle_wait(retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or(THROTTLE_WAIT).max(THROTTLE_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_content_is_success() {
        assert_eq!(classify(204, None, b""), Ok(()));
    }

    #[test]
    fn throttling_waits_at_least_a_minute() {
        let e = classify(429, Some(Duration::from_secs(5)), b"").expect_err("429");
        assert_eq!(
            e,
            RotateError::Throttled {
                retry_after: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(throttle_wait(Some(Duration::from_secs(5))), THROTTLE_WAIT);
        assert_eq!(throttle_wait(None), THROTTLE_WAIT);
        assert_eq!(
            throttle_wait(Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn errors_carry_amazons_messages() {
        let body = br#"{"errors":[{"code":"Unauthorized","message":"Access to requested resource is denied.","details":""}]}"#;
        let e = classify(403, None, body).expect_err("403");
        let text = e.to_string();
        assert!(
            text.contains("HTTP 403")
                && text.contains("Unauthorized: Access to requested resource is denied.")
                && text.contains("rotation scope"),
            "{text}"
        );
        let e = classify(500, None, b"<html>").expect_err("500");
        assert_eq!(e.kind(), "server_error");
        assert!(e.to_string().contains("no error details"));
    }

    #[test]
    fn long_or_multiline_messages_are_cleaned() {
        let long = format!(
            r#"{{"errors":[{{"code":"X","message":"{}\n"}}]}}"#,
            "y".repeat(1000)
        );
        let text = classify(400, None, long.as_bytes())
            .expect_err("400")
            .to_string();
        assert!(text.len() < 500 && !text.contains('\n'), "{}", text.len());
    }
}
