//! AWS clients. Every client the agent builds comes from [`sdk_config`], the one place where
//! region, endpoint, timeouts and the credentials provider are chosen.

pub mod error;
pub mod roles_anywhere;
pub mod sns;
pub mod sqs;
pub mod ssm;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::config::AwsConfig;
use roles_anywhere::RolesAnywhereProvider;

/// Where the agent's AWS credentials come from, for status and doctor.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// The SDK's standard chain (environment, profile, container, instance metadata).
    DefaultChain,
    /// The host's X.509 certificate through IAM Roles Anywhere (`[aws.roles_anywhere]`).
    RolesAnywhere(RolesAnywhereProvider),
}

impl CredentialSource {
    pub fn label(&self) -> &'static str {
        match self {
            CredentialSource::DefaultChain => "default credential chain",
            CredentialSource::RolesAnywhere(_) => roles_anywhere::provider::LABEL,
        }
    }

    /// The `aws` object of `/v1/status` beyond the region: where credentials come from
    /// and, for sources that have one, the session's expiry and last error.
    pub fn status(&self) -> serde_json::Value {
        match self {
            CredentialSource::DefaultChain => {
                serde_json::json!({ "credential_source": self.label() })
            }
            CredentialSource::RolesAnywhere(p) => p.status(),
        }
    }

    /// When the host's identity itself expires (a Roles Anywhere certificate), for the
    /// rotation check's reminders. `None` for sources without such a date.
    pub fn certificate_expiry(&self) -> Option<std::time::SystemTime> {
        match self {
            CredentialSource::DefaultChain => None,
            CredentialSource::RolesAnywhere(p) => Some(p.certificate().not_after),
        }
    }
}

/// The one entry point for AWS access: the shared SDK config with the configured
/// credentials provider (Roles Anywhere when `[aws.roles_anywhere]` is present, else the
/// standard chain), and a description of that source for status and doctor.
///
/// With Roles Anywhere this starts the background session refresher, so it must run inside
/// the tokio runtime that serves the clients.
pub async fn connect(cfg: &AwsConfig) -> Result<(SdkConfig, CredentialSource), String> {
    crate::net::require_ca_store()?;
    match &cfg.roles_anywhere {
        None => Ok((sdk_config(cfg, None).await, CredentialSource::DefaultChain)),
        Some(ra) => {
            let provider = RolesAnywhereProvider::new(ra, &cfg.region)?;
            provider.start();
            let shared = SharedCredentialsProvider::new(provider.clone());
            Ok((
                sdk_config(cfg, Some(shared)).await,
                CredentialSource::RolesAnywhere(provider),
            ))
        }
    }
}

/// Builds the shared SDK config. `credentials` replaces the standard chain when given.
pub async fn sdk_config(
    cfg: &AwsConfig,
    credentials: Option<SharedCredentialsProvider>,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        // The SDK's default client resolves names with glibc's getaddrinfo, which in the
        // static binary would load the host's NSS modules; this one uses hickory.
        .http_client(crate::net::aws_http_client())
        // Bounded calls: a hung SSM call must not stall a parameter refresh forever. The
        // SDK's standard retry (3 attempts) sits inside these limits.
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(provider) = credentials {
        loader = loader.credentials_provider(provider);
    }
    loader.load().await
}
