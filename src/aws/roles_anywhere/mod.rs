//! IAM Roles Anywhere, natively: AWS credentials from the host's X.509 certificate and key,
//! with no helper binary and no long-lived AWS keys on the host.
//!
//! - [`pki`] reads and checks the certificate, chain and private key;
//! - [`signer`] signs CreateSession with SigV4-X509;
//! - [`session`] calls CreateSession and reads the answer;
//! - [`provider`] caches the session, refreshes it ahead of expiry and plugs into the SDK.

pub mod pki;
pub mod provider;
pub mod session;
pub mod signer;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

pub use provider::RolesAnywhereProvider;

use crate::config::{AwsConfig, ConfigError, Problem};

/// Checks the Roles Anywhere files for `config check` and start-up. Returns notes worth
/// printing, or every problem with its file, key and fix.
///
/// `config check` passes `require_files = false`: paths under `%d/` only exist while systemd
/// runs the service, so without `$CREDENTIALS_DIRECTORY` they are noted, not failed. At
/// start-up (`true`) an unreadable path is an error.
pub fn check_files(aws: &AwsConfig, require_files: bool) -> Result<Vec<String>, ConfigError> {
    let Some(ra) = &aws.roles_anywhere else {
        return Ok(Vec::new());
    };
    let mut paths = vec![ra.certificate.as_str(), ra.private_key.as_str()];
    paths.extend(ra.certificate_chain.as_deref());
    let unresolved: Vec<&str> = paths
        .into_iter()
        .filter(|p| crate::config::resolve_credential_path(p).is_err())
        .collect();
    if !require_files && !unresolved.is_empty() {
        return Ok(vec![format!(
            "the IAM Roles Anywhere files {} are read from $CREDENTIALS_DIRECTORY, which only \
             systemd sets (LoadCredential=): they are checked when the agent starts, which \
             refuses to run if they are wrong",
            unresolved.join(", ")
        )]);
    }
    let now = SystemTime::now();
    match pki::load(ra, now) {
        Ok(identity) => {
            let cert = &identity.certificate;
            let mut notes = vec![format!(
                "IAM Roles Anywhere: {} key, certificate {} (serial {}), valid until {}",
                identity.key.algorithm().label(),
                cert.subject,
                cert.serial,
                humantime::format_rfc3339_seconds(cert.not_after)
            )];
            notes.extend(cert.expiry_warning(now));
            Ok(notes)
        }
        Err(problems) => Err(ConfigError {
            problems: problems
                .into_iter()
                .map(|p| Problem {
                    source: p.file,
                    key: p.key.to_string(),
                    reason: p.reason,
                })
                .collect(),
        }),
    }
}
