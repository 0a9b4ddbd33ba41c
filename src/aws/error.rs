//! AWS errors as one readable line: the real cause first, then advice that fits it.
//!
//! The SDK's `DisplayErrorContext` appends the Debug form of every error in the chain
//! (`DispatchFailure(DispatchFailure { source: ConnectorError { … } })`), which hides the
//! cause from a sysadmin. Here the chain is classified instead: no credentials, AWS
//! rejected the credentials, access denied, throttled, cannot reach the endpoint, no
//! answer in time, or a service error with AWS's own code and message.
//!
//! Invariant: only `Display` texts and AWS's error code and message are used, never a
//! request or Debug form, so no secret that was in a request can reach the line.

use std::error::Error;

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What went wrong, for callers that act on it (retry, pin on a parameter) as well as
/// print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The credential chain found nothing (no Roles Anywhere, no environment keys…).
    NoCredentials,
    /// A credential source is configured but failed (Roles Anywhere CreateSession…).
    CredentialSource,
    /// AWS answered that the credentials are invalid or expired.
    RejectedCredentials,
    /// AWS answered that the role may not do this.
    AccessDenied,
    /// AWS asked to slow down, or failed on its side (5xx): worth retrying.
    Throttled,
    /// No connection to the endpoint (DNS, refused, TLS).
    Unreachable,
    /// Connected, but no answer in time.
    Timeout,
    /// Any other answer from the service (not found, invalid request, KMS…).
    Service,
    /// The request could not be built, or the answer could not be read.
    Other,
}

impl Class {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(self, Class::Throttled | Class::Unreachable | Class::Timeout)
    }
}

/// One AWS call, named the way a sysadmin grants it.
pub struct Call<'a> {
    /// "SSM GetParameters".
    pub what: &'a str,
    /// The IAM permission(s) it needs, for access-denied advice: "ssm:GetParameters on
    /// the parameters and kms:Decrypt on their key".
    pub permission: &'a str,
}

/// A described AWS error: its class, AWS's error code if it answered, and the line.
#[derive(Debug, Clone)]
pub struct Described {
    pub class: Class,
    pub code: Option<String>,
    pub line: String,
}

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// Where AWS credentials come from, for a message that found none: the ways the agent
/// takes them, and where each is explained.
pub const NO_CREDENTIALS_ADVICE: &str = "the agent takes them from [aws.roles_anywhere] \
    (docs/roles-anywhere.md), from aws.credentials_file (static keys, \
    docs/aws-credentials.md), or else from the standard chain (on EC2 the instance role; \
    for a person's commands AWS_PROFILE, also an SSO profile); give it one of them";

/// One line for a credentials provider's error, its cause included.
pub fn credentials_text(e: &CredentialsError) -> String {
    match e {
        CredentialsError::CredentialsNotLoaded(_) => {
            format!("no AWS credentials found: {NO_CREDENTIALS_ADVICE}")
        }
        other => format!("cannot get AWS credentials: {}", root_cause(other)),
    }
}

/// Describes `err` from `call` in one line.
pub fn describe<E>(err: &SdkError<E, HttpResponse>, call: &Call<'_>) -> Described
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let what = call.what;
    if let Some(service) = err.as_service_error() {
        let code = service.code().unwrap_or("").to_string();
        let message = service.message().unwrap_or("").trim().to_string();
        let status = err.raw_response().map(|r| r.status().as_u16());
        return service_error(call, code, message, status);
    }
    if let Some(cred) = find::<CredentialsError>(err) {
        return match cred {
            CredentialsError::CredentialsNotLoaded(_) => Described {
                class: Class::NoCredentials,
                code: None,
                line: format!("{what} failed: no AWS credentials found: {NO_CREDENTIALS_ADVICE}"),
            },
            _ => Described {
                class: Class::CredentialSource,
                code: None,
                line: format!(
                    "{what} failed: cannot get AWS credentials: {}: check the credential \
                     source `lwa-agent doctor` names ([aws.roles_anywhere] and its certificate, \
                     aws.credentials_file, or the profile or instance role of the standard \
                     chain)",
                    root_cause(cred)
                ),
            },
        };
    }
    match err {
        SdkError::TimeoutError(_) => Described {
            class: Class::Timeout,
            code: None,
            line: format!(
                "{what} failed: AWS did not answer in time: check the network path to AWS \
                 (proxy, firewall) or aws.endpoint_url; it is retried"
            ),
        },
        SdkError::DispatchFailure(d) => {
            let connector: Option<&ConnectorError> = d.as_connector_error();
            let timeout = connector.is_some_and(|c| c.is_timeout());
            Described {
                class: if timeout {
                    Class::Timeout
                } else {
                    Class::Unreachable
                },
                code: None,
                line: format!(
                    "{what} failed: cannot reach AWS: {}: check DNS, the network path to AWS \
                     (proxy, firewall) and aws.endpoint_url; it is retried",
                    root_cause(err)
                ),
            }
        }
        SdkError::ResponseError(_) => Described {
            class: Class::Other,
            code: None,
            line: format!(
                "{what} failed: AWS's answer could not be read: {}: check aws.endpoint_url \
                 points at the AWS service (not a proxy's error page)",
                root_cause(err)
            ),
        },
        _ => Described {
            class: Class::Other,
            code: None,
            line: format!("{what} failed: {}", root_cause(err)),
        },
    }
}

fn service_error(call: &Call<'_>, code: String, message: String, status: Option<u16>) -> Described {
    let what = call.what;
    let said = match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.clone(),
        (true, false) => message.clone(),
        (true, true) => format!("HTTP {}", status.unwrap_or(0)),
    };
    let lower = code.to_ascii_lowercase();
    let (class, advice) = if lower.contains("accessdenied")
        || lower.contains("authorizationerror")
        || lower.contains("unauthorizedoperation")
        || message.contains("is not authorized to perform")
    {
        (
            Class::AccessDenied,
            format!("allow {} for the agent's role", call.permission),
        )
    } else if matches!(
        code.as_str(),
        "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
    ) {
        (
            Class::RejectedCredentials,
            "AWS rejected the agent's credentials: check the host clock, the Roles Anywhere \
             profile and role, and the region; `lwa-agent doctor` shows the identity"
                .to_string(),
        )
    } else if lower.contains("throttl")
        || lower.contains("toomanyrequests")
        || lower.contains("ratelimit")
        || status.is_some_and(|s| s >= 500)
        || lower.contains("internalerror")
        || lower.contains("internalserver")
        || lower.contains("serviceunavailable")
    {
        (
            Class::Throttled,
            "AWS is busy or failing; it is retried with backoff".to_string(),
        )
    } else if lower.contains("kms") || lower.contains("keyid") {
        (
            Class::Service,
            "check the parameter's KMS key and the role's kms:Decrypt permission on it".to_string(),
        )
    } else {
        (Class::Service, String::new())
    };
    let line = if advice.is_empty() {
        format!("{what} failed: {said}")
    } else {
        format!("{what} failed: {said}: {advice}")
    };
    Described {
        class,
        code: (!code.is_empty()).then_some(code),
        line,
    }
}

/// The first error of type `T` in the chain, `err` included.
fn find<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

/// The chain's Display texts from the deepest up to the first that says something the
/// deeper ones do not: "Connection refused (os error 111)", not "dispatch failure".
fn root_cause(err: &(dyn Error + 'static)) -> String {
    let mut texts = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !texts.contains(&text) {
            texts.push(text);
        }
        next = e.source();
    }
    // Generic wrappers add nothing a sysadmin can act on.
    let generic = [
        "dispatch failure",
        "io error",
        "other",
        "service error",
        "response error",
        "timeout",
        "unhandled error",
    ];
    let useful: Vec<&String> = texts
        .iter()
        .filter(|t| !generic.contains(&t.as_str()))
        .collect();
    match useful.last() {
        Some(deepest) => {
            // One line, whatever the source put in it.
            deepest.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        None => texts
            .last()
            .cloned()
            .unwrap_or_else(|| "unknown error".into()),
    }
}

#[cfg(test)]
mod tests;
