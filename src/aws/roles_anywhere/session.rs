//! One CreateSession call: the request body, the signed POST, and the answer turned into
//! AWS credentials or into an error that says what went wrong and what to do.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_smithy_types::date_time::{DateTime, Format};
use serde::Deserialize;

use super::pki::Identity;
use super::signer::{self, Request};
use crate::config::RolesAnywhereConfig;

/// The name of these credentials' source: the SDK's provider name, and the label in
/// status, doctor and logs.
pub const PROVIDER_NAME: &str = "IAM Roles Anywhere";

/// A session: credentials and when they expire.
#[derive(Clone)]
pub struct Session {
    pub credentials: Credentials,
    pub expires_at: SystemTime,
    pub received_at: SystemTime,
}

/// What kind of failure, for the retry policy and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 403: the trust anchor, profile, role or certificate was refused.
    Denied,
    /// 400: a parameter was refused (duration, ARNs).
    Invalid,
    /// 429: too many requests.
    Throttled,
    /// 5xx, timeouts, connection errors, answers we cannot read.
    Unavailable,
    /// The request could not be built or signed.
    Local,
}

/// A failed CreateSession. `message` names the endpoint, the reason and the fix; it never
/// holds a credential.
#[derive(Debug, Clone)]
pub struct SessionError {
    pub kind: ErrorKind,
    pub message: String,
    /// The server's Retry-After, when it sent one.
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SessionError {}

/// The JSON body: AWS's field names, `roleSessionName` only when configured.
pub fn body(cfg: &RolesAnywhereConfig) -> Vec<u8> {
    let mut body = serde_json::json!({
        "durationSeconds": cfg.session_duration.as_secs(),
        "profileArn": cfg.profile_arn,
        "roleArn": cfg.role_arn,
        "trustAnchorArn": cfg.trust_anchor_arn,
    });
    if let Some(name) = &cfg.role_session_name {
        body["roleSessionName"] = name.clone().into();
    }
    body.to_string().into_bytes()
}

/// The `Host` header reqwest sends for `url`: the port only when it is not the default.
pub fn host_header(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// Calls CreateSession at `url` (`…/sessions`).
pub async fn create(
    http: &reqwest::Client,
    url: &reqwest::Url,
    region: &str,
    cfg: &RolesAnywhereConfig,
    identity: &Identity,
) -> Result<Session, SessionError> {
    let local = |message: String| SessionError {
        kind: ErrorKind::Local,
        message,
        retry_after: None,
    };
    let host = host_header(url)
        .ok_or_else(|| local(format!("the Roles Anywhere endpoint {url} has no host")))?;
    let body = body(cfg);
    let signed = signer::sign(
        identity,
        &Request {
            host: &host,
            path: url.path(),
            body: &body,
            region,
            time: SystemTime::now(),
        },
    )
    .map_err(local)?;
    let mut request = http.post(url.clone()).body(body);
    for (name, value) in signed.headers(&host) {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| SessionError {
        kind: ErrorKind::Unavailable,
        message: format!(
            "cannot reach IAM Roles Anywhere at {url} ({}): check the host's network, DNS \
             and proxy, or aws.roles_anywhere.endpoint_url",
            error_chain(&e)
        ),
        retry_after: None,
    })?;
    let status = response.status();
    let retry_after = crate::net::retry_after(response.headers());
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_string());
    let bytes = crate::net::read_capped(response)
        .await
        .map_err(|reason| SessionError {
            kind: ErrorKind::Unavailable,
            message: format!("IAM Roles Anywhere at {url} did not finish its answer ({reason})"),
            retry_after: None,
        })?;
    if status.is_success() {
        return parse_session(&bytes).map_err(|reason| SessionError {
            kind: ErrorKind::Unavailable,
            message: format!("IAM Roles Anywhere at {url} answered CreateSession with {reason}"),
            retry_after: None,
        });
    }
    Err(service_error(
        status.as_u16(),
        error_type,
        &bytes,
        retry_after,
        url,
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// An error answer: AWS's error type (header or body) and message, and what to do.
fn service_error(
    status: u16,
    error_type: Option<String>,
    body: &[u8],
    retry_after: Option<Duration>,
    url: &reqwest::Url,
) -> SessionError {
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(alias = "Message")]
        message: Option<String>,
        #[serde(rename = "__type", alias = "code")]
        kind: Option<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = error_type
        .or(parsed
            .kind
            .map(|k| k.rsplit('#').next().unwrap_or(&k).to_string()))
        .unwrap_or_default();
    // AWS's messages carry no secrets; bound their length all the same.
    let message: String = parsed
        .message
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let (kind, hint) = match (status, code.as_str()) {
        (429, _) | (_, "ThrottlingException") => (
            ErrorKind::Throttled,
            "throttled by AWS; retrying with backoff",
        ),
        (403, _) | (_, "AccessDeniedException") => (
            ErrorKind::Denied,
            "check that the trust anchor holds the CA that issued the certificate (and is \
             enabled), that the profile and role ARNs are right and enabled, that the role's \
             trust policy allows rolesanywhere.amazonaws.com, and that the certificate is valid",
        ),
        (400, _) | (_, "ValidationException") => (
            ErrorKind::Invalid,
            "check the ARNs, the region and that session_duration is within what the profile \
             allows",
        ),
        (404, _) | (_, "ResourceNotFoundException") => (
            ErrorKind::Invalid,
            "check the trust anchor and profile ARNs and their region",
        ),
        _ if status >= 500 => (
            ErrorKind::Unavailable,
            "the service failed; retrying with backoff",
        ),
        _ => (ErrorKind::Invalid, "check the aws.roles_anywhere settings"),
    };
    let code_part = if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    };
    let message_part = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    SessionError {
        kind,
        message: format!(
            "IAM Roles Anywhere CreateSession at {url} failed with {status}{code_part}{message_part}: {hint}"
        ),
        retry_after,
    }
}

/// The CreateSession answer. No Debug: it holds the secret key and session token.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    credential_set: Vec<CredentialSetItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialSetItem {
    credentials: Option<WireCredentials>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// Parses the answer's first credential set. Errors describe the shape, never the values.
fn parse_session(bytes: &[u8]) -> Result<Session, String> {
    let answer: Answer = serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            // "missing field `x`" names the field only; other data errors may quote a value.
            Category::Data if e.to_string().starts_with("missing field") => {
                format!("an answer without a field it needs ({e})")
            }
            Category::Data => "an answer whose fields have unexpected types".to_string(),
            _ => "an answer that is not JSON".to_string(),
        }
    })?;
    let creds = answer
        .credential_set
        .into_iter()
        .next()
        .and_then(|c| c.credentials)
        .ok_or_else(|| "an answer without credentialSet[0].credentials".to_string())?;
    let expires_at = DateTime::from_str(creds.expiration.trim(), Format::DateTime)
        .ok()
        .and_then(|d| SystemTime::try_from(d).ok())
        .ok_or_else(|| {
            format!(
                "an expiration that is not an ISO 8601 time (`{}`)",
                creds.expiration.chars().take(40).collect::<String>()
            )
        })?;
    let received_at = SystemTime::now();
    if expires_at <= received_at {
        return Err(format!(
            "credentials that expired already ({}): check the host's clock",
            humantime::format_rfc3339_seconds(expires_at)
        ));
    }
    if creds.access_key_id.is_empty()
        || creds.secret_access_key.is_empty()
        || creds.session_token.is_empty()
    {
        return Err("empty credentials".into());
    }
    Ok(Session {
        credentials: Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
            Some(creds.session_token),
            Some(expires_at),
            PROVIDER_NAME,
        ),
        expires_at,
        received_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> reqwest::Url {
        reqwest::Url::parse("https://rolesanywhere.us-east-2.amazonaws.com/sessions").expect("url")
    }

    #[test]
    fn errors_are_classified_with_code_message_and_fix() {
        let e = service_error(
            403,
            Some("AccessDeniedException".into()),
            br#"{"message":"Untrusted signing certificate"}"#,
            None,
            &url(),
        );
        assert_eq!(e.kind, ErrorKind::Denied);
        assert!(
            e.message
                .contains("403 AccessDeniedException: Untrusted signing certificate")
                && e.message.contains("trust anchor"),
            "{}",
            e.message
        );
        let e = service_error(
            400,
            None,
            br#"{"__type":"ValidationException","message":"bad"}"#,
            None,
            &url(),
        );
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(
            e.message.contains("ValidationException: bad"),
            "{}",
            e.message
        );
        let e = service_error(429, None, b"", Some(Duration::from_secs(3)), &url());
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(
            service_error(503, None, b"<html>", None, &url()).kind,
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn answers_parse_and_bad_ones_never_echo_secrets() {
        let ok = br#"{"credentialSet":[{"credentials":{"accessKeyId":"ASIAEXAMPLE",
            "secretAccessKey":"SECRETCANARY","sessionToken":"TOKENCANARY",
            "expiration":"2999-01-02T03:04:05Z"}}],"subjectArn":"x"}"#;
        let s = parse_session(ok).expect("parses");
        assert_eq!(s.credentials.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(s.credentials.secret_access_key(), "SECRETCANARY");
        assert_eq!(s.credentials.session_token(), Some("TOKENCANARY"));
        assert!(!format!("{:?}", s.credentials).contains("SECRETCANARY"));
        // Fractional seconds, as AWS sometimes writes them.
        let frac = String::from_utf8_lossy(ok).replace("05Z", "05.123Z");
        assert!(parse_session(frac.as_bytes()).is_ok());

        let wrong_type = br#"{"credentialSet":[{"credentials":{"accessKeyId":"A",
            "secretAccessKey":["SECRETCANARY"],"sessionToken":"TOKENCANARY","expiration":"x"}}]}"#;
        let e = parse_session(wrong_type).err().expect("fails");
        assert!(!e.contains("CANARY"), "{e}");
        let missing = br#"{"credentialSet":[{"credentials":{"accessKeyId":"A","secretAccessKey":"SECRETCANARY"}}]}"#;
        let e = parse_session(missing).err().expect("fails");
        assert!(e.contains("sessionToken") && !e.contains("CANARY"), "{e}");
        assert!(parse_session(br#"{"credentialSet":[]}"#).is_err());
        assert!(parse_session(b"not json SECRETCANARY")
            .err()
            .expect("fails")
            .contains("not JSON"));
    }

    #[test]
    fn the_body_has_aws_field_names() {
        let cfg = RolesAnywhereConfig {
            certificate: String::new(),
            private_key: String::new(),
            certificate_chain: None,
            trust_anchor_arn: "arn:aws:rolesanywhere:us-east-2:1:trust-anchor/t".into(),
            profile_arn: "arn:aws:rolesanywhere:us-east-2:1:profile/p".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            session_duration: Duration::from_secs(3600),
            role_session_name: Some("erp-host-1".into()),
            endpoint_url: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&cfg)).expect("json");
        assert_eq!(v["durationSeconds"], 3600);
        assert_eq!(v["roleSessionName"], "erp-host-1");
        assert_eq!(v["trustAnchorArn"], cfg.trust_anchor_arn.as_str());
        let u = reqwest::Url::parse("http://127.0.0.1:8443/sessions").expect("url");
        assert_eq!(host_header(&u).as_deref(), Some("127.0.0.1:8443"));
        assert_eq!(
            host_header(&url()).as_deref(),
            Some("rolesanywhere.us-east-2.amazonaws.com")
        );
    }
}
