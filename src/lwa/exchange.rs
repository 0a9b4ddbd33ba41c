//! One call to the LWA token endpoint, and what its answer means for the caller.
//!
//! Invariant: no error built here contains a request body, a form field or a header: only
//! the status, LWA's error code and (length-capped) description, so a client secret or
//! refresh token cannot reach a log line through an error.

use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::grant::{Grant, GrantKind};
use crate::config::LwaConfig;

/// An access token and when it stops working.
pub struct Token {
    pub access_token: SecretString,
    pub token_type: String,
    /// For validity checks: immune to wall-clock jumps.
    pub expires_at: Instant,
    /// For display (`expires_at` in RFC 3339).
    pub expires_at_wall: SystemTime,
}

/// A token with less life than this is not handed out: the caller could not use it.
pub const MIN_LIFETIME: Duration = Duration::from_secs(10);

/// The one rule for whether a token that expires at `expires_at` may still be handed out
/// (the socket's answers, and the automatic rotation's grantless tokens).
pub fn usable(expires_at: Instant, now: Instant) -> bool {
    expires_at > now + MIN_LIFETIME
}

impl Token {
    pub fn seconds_left(&self, now: Instant) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }

    pub fn usable(&self, now: Instant) -> bool {
        usable(self.expires_at, now)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[redacted]")
            .field("expires_at_wall", &self.expires_at_wall)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// LWA refused the credentials (`invalid_client`, `invalid_grant`,
    /// `unauthorized_client`): the secret was probably rotated in SSM.
    #[error("LWA rejected the credentials ({code}: {description}): check the client id, client secret and refresh token in SSM; a rotated client secret is picked up on the next parameter read")]
    Auth { code: String, description: String },
    /// LWA refused the request itself (`invalid_request`, `invalid_scope`, …): a config or
    /// parameter problem that retrying will not fix quickly.
    #[error("LWA rejected the request with HTTP {status} ({code}: {description}): check the credential's scopes and parameters")]
    Rejected {
        status: u16,
        code: String,
        description: String,
    },
    #[error("LWA is throttling token requests (HTTP 429): retrying with backoff")]
    Throttled { retry_after: Option<Duration> },
    #[error("LWA answered HTTP {status}: retrying with backoff")]
    Server { status: u16 },
    #[error("cannot reach LWA at {url}: {reason}: check network access to the token endpoint (lwa.token_url)")]
    Transport { url: String, reason: String },
    #[error("LWA's answer was not a token ({0}): retrying with backoff")]
    BadResponse(String),
}

impl ExchangeError {
    /// Whether the fault lies with the credentials and a parameter re-read may fix it.
    pub fn is_auth(&self) -> bool {
        matches!(self, ExchangeError::Auth { .. })
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ExchangeError::Auth { .. } => "auth_error",
            ExchangeError::Rejected { .. } => "rejected",
            ExchangeError::Throttled { .. } => "throttled",
            ExchangeError::Server { .. } => "server_error",
            ExchangeError::Transport { .. } => "unreachable",
            ExchangeError::BadResponse(_) => "bad_response",
        }
    }
}

const MAX_LIFETIME_SECS: i64 = 86_400;

/// An LWA error description is echoed into logs and status; keep it short.
const MAX_DESCRIPTION: usize = 200;

pub struct LwaClient {
    http: reqwest::Client,
    url: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

impl LwaClient {
    pub fn new(cfg: &LwaConfig) -> Result<Self, String> {
        let http = crate::net::build_client(
            crate::net::client_builder()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout.min(Duration::from_secs(5))),
            "LWA",
        )?;
        Ok(LwaClient {
            http,
            url: cfg.token_url.clone(),
        })
    }

    pub async fn exchange(&self, grant: &Grant) -> Result<Token, ExchangeError> {
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(5);
        let scope_text;
        match &grant.kind {
            GrantKind::RefreshToken(rt) => {
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", rt.expose_secret()));
            }
            GrantKind::Scopes(scopes) => {
                scope_text = scopes.join(" ");
                form.push(("grant_type", "client_credentials"));
                form.push(("scope", &scope_text));
            }
        }
        form.push(("client_id", grant.client_id.expose_secret()));
        form.push(("client_secret", grant.client_secret.expose_secret()));

        let sent = Instant::now();
        let sent_wall = SystemTime::now();
        let response = self
            .http
            .post(&self.url)
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let retry_after = crate::net::retry_after(response.headers());
        let body = crate::net::read_capped(response)
            .await
            .map_err(ExchangeError::BadResponse)?;
        classify(status, retry_after, &body, sent, sent_wall)
    }

    fn transport(&self, e: reqwest::Error) -> ExchangeError {
        let reason = if e.is_timeout() {
            "timed out (lwa.timeout)".to_string()
        } else if e.is_connect() {
            "connection failed".to_string()
        } else {
            // reqwest's Display names the URL and the cause; never the body.
            e.without_url().to_string()
        };
        ExchangeError::Transport {
            url: self.url.clone(),
            reason,
        }
    }
}

/// Maps an LWA answer to a token or an error. Pure, so every branch is unit-tested.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    sent: Instant,
    sent_wall: SystemTime,
) -> Result<Token, ExchangeError> {
    match status {
        200 => {
            let parsed: TokenBody = serde_json::from_slice(body)
                .map_err(|e| ExchangeError::BadResponse(format!("invalid JSON: {e}")))?;
            let access_token = parsed
                .access_token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ExchangeError::BadResponse("no access_token".into()))?;
            // LWA tokens live an hour; a lifetime outside a day is not a real answer (and a
            // huge one would overflow the expiry instant).
            let expires_in = parsed
                .expires_in
                .filter(|s| (1..=MAX_LIFETIME_SECS).contains(s))
                .ok_or_else(|| {
                    ExchangeError::BadResponse("no expires_in between 1s and 1 day".into())
                })?;
            let lifetime = Duration::from_secs(expires_in as u64);
            // Measured from when the request was sent, so network time only ever makes the
            // agent think the token expires sooner than it does.
            Ok(Token {
                access_token: SecretString::from(access_token),
                token_type: parsed
                    .token_type
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "bearer".into())
                    .to_ascii_lowercase(),
                expires_at: sent + lifetime,
                expires_at_wall: sent_wall + lifetime,
            })
        }
        429 => Err(ExchangeError::Throttled { retry_after }),
        500..=599 => Err(ExchangeError::Server { status }),
        400..=499 => {
            let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
            let code = parsed
                .as_ref()
                .and_then(|b| b.error.clone())
                .unwrap_or_else(|| "unknown_error".into());
            let description = parsed
                .and_then(|b| b.error_description)
                .map(|d| truncate(&d, MAX_DESCRIPTION))
                .unwrap_or_default();
            let code = truncate(&code, 64);
            if matches!(
                code.as_str(),
                "invalid_client" | "invalid_grant" | "unauthorized_client"
            ) {
                Err(ExchangeError::Auth { code, description })
            } else {
                Err(ExchangeError::Rejected {
                    status,
                    code,
                    description,
                })
            }
        }
        other => Err(ExchangeError::BadResponse(format!("HTTP {other}"))),
    }
}

fn truncate(s: &str, max: usize) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    match clean.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &clean[..i]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: u16, body: &str) -> Result<Token, ExchangeError> {
        classify(
            status,
            None,
            body.as_bytes(),
            Instant::now(),
            SystemTime::now(),
        )
    }

    #[test]
    fn a_token_answer_gives_a_token_that_expires_on_time() {
        let sent = Instant::now();
        let t = classify(
            200,
            None,
            br#"{"access_token":"Atza|x","token_type":"bearer","expires_in":3600,"refresh_token":"r"}"#,
            sent,
            SystemTime::now(),
        )
        .expect("token");
        assert_eq!(t.access_token.expose_secret(), "Atza|x");
        assert_eq!(t.token_type, "bearer");
        assert_eq!(t.expires_at, sent + Duration::from_secs(3600));
        assert!(!format!("{t:?}").contains("Atza"));
    }

    #[test]
    fn a_200_without_a_usable_token_is_a_bad_response() {
        for body in [
            "not json",
            r#"{"expires_in":3600}"#,
            r#"{"access_token":"","expires_in":3600}"#,
            r#"{"access_token":"a","expires_in":0}"#,
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","expires_in":9223372036854775807}"#,
            r#"{"access_token":"a","expires_in":86401}"#,
        ] {
            assert!(
                matches!(run(200, body), Err(ExchangeError::BadResponse(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn auth_errors_are_told_apart_from_other_rejections() {
        for code in ["invalid_client", "invalid_grant", "unauthorized_client"] {
            let e = run(
                401,
                &format!(r#"{{"error":"{code}","error_description":"no"}}"#),
            )
            .expect_err("auth");
            assert!(e.is_auth(), "{code}");
        }
        let e = run(400, r#"{"error":"invalid_scope"}"#).expect_err("rejected");
        assert!(matches!(e, ExchangeError::Rejected { status: 400, .. }));
        assert!(!e.is_auth());
        let e = run(400, "<html>").expect_err("rejected");
        assert!(matches!(e, ExchangeError::Rejected { ref code, .. } if code == "unknown_error"));
    }

    #[test]
    fn throttling_and_server_errors_are_retryable_kinds() {
        let e = classify(
            429,
            Some(Duration::from_secs(3)),
            b"",
            Instant::now(),
            SystemTime::now(),
        )
        .expect_err("throttled");
        assert_eq!(
            e,
            ExchangeError::Throttled {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            run(503, "").expect_err("5xx"),
            ExchangeError::Server { status: 503 }
        );
    }

    #[test]
    fn error_descriptions_are_capped_and_cleaned() {
        let long = "x".repeat(1000);
        let e = run(
            401,
            &format!(r#"{{"error":"invalid_client","error_description":"{long}\n"}}"#),
        )
        .expect_err("auth");
        let text = e.to_string();
        assert!(text.len() < 600, "{}", text.len());
        assert!(!text.contains('\n'));
    }
}
