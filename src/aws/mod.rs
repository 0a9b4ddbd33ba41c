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
    /// The SDK's standard chain (environment, profile, SSO, container, instance metadata).
    DefaultChain,
    /// Static keys from `aws.credentials_file` (the path as resolved).
    CredentialsFile(std::path::PathBuf),
    /// The host's X.509 certificate through IAM Roles Anywhere (`[aws.roles_anywhere]`).
    RolesAnywhere(RolesAnywhereProvider),
}

impl CredentialSource {
    pub fn label(&self) -> &'static str {
        match self {
            CredentialSource::DefaultChain => "default credential chain",
            CredentialSource::CredentialsFile(_) => "credentials file",
            CredentialSource::RolesAnywhere(_) => roles_anywhere::session::PROVIDER_NAME,
        }
    }

    /// The `aws` object of `/v1/status` beyond the region: where credentials come from
    /// and, for sources that have one, the session's expiry and last error.
    pub fn status(&self) -> serde_json::Value {
        match self {
            CredentialSource::DefaultChain => {
                serde_json::json!({ "credential_source": self.label() })
            }
            CredentialSource::CredentialsFile(path) => serde_json::json!({
                "credential_source": self.label(),
                "credentials_file": path.display().to_string(),
            }),
            CredentialSource::RolesAnywhere(p) => p.status(),
        }
    }

    /// When the host's identity itself expires (a Roles Anywhere certificate), for the
    /// rotation check's reminders. `None` for sources without such a date.
    pub fn certificate_expiry(&self) -> Option<std::time::SystemTime> {
        match self {
            CredentialSource::DefaultChain | CredentialSource::CredentialsFile(_) => None,
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
    if let Some(file) = &cfg.credentials_file {
        let path = credentials_file(file)?;
        let files = aws_runtime::env_config::file::EnvConfigFiles::builder()
            .include_default_config_file(false)
            .include_default_credentials_file(false)
            .with_file(
                aws_runtime::env_config::file::EnvConfigFileKind::Credentials,
                &path,
            )
            .build();
        // Static keys need no HTTP, but the provider's config must name a client (the
        // SDK panics without one): the agent's own, as everywhere.
        let provider_config = aws_config::provider_config::ProviderConfig::default()
            .with_http_client(crate::net::aws_http_client())
            .with_region(Some(Region::new(cfg.region.clone())));
        let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .configure(&provider_config)
            .profile_files(files)
            .profile_name("default")
            .build();
        let shared = SharedCredentialsProvider::new(provider);
        return Ok((
            sdk_config(cfg, Some(shared)).await,
            CredentialSource::CredentialsFile(path),
        ));
    }
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

/// `aws.credentials_file`, resolved and checked: readable, with a `[default]` profile that
/// has an access key. At start-up a problem here is a config error (exit 2), like a wrong
/// Roles Anywhere file. Never prints the file's content.
pub fn credentials_file(file: &str) -> Result<std::path::PathBuf, String> {
    let path = crate::config::resolve_credential_path(file)
        .map_err(|e| format!("`aws.credentials_file`: {e}"))?;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "`aws.credentials_file`: cannot read {} ({e}): the packaged units hand \
             /etc/lwa-agent/aws-credentials (0600 root) over as %d/aws-credentials; create it \
             (docs/aws-credentials.md) or remove the key",
            path.display()
        )
    })?);
    let has_default = text.lines().any(|l| l.trim() == "[default]");
    let has_key = text
        .lines()
        .any(|l| l.trim_start().starts_with("aws_access_key_id"));
    if !has_default || !has_key {
        return Err(format!(
            "`aws.credentials_file`: {} has no [default] profile with aws_access_key_id and \
             aws_secret_access_key (is it the units' fallback text? then \
             /etc/lwa-agent/aws-credentials is missing): write the keys there \
             (docs/aws-credentials.md)",
            path.display()
        ));
    }
    Ok(path)
}

/// Who in the standard chain supplied credentials, by the SDK's own name for its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOrigin {
    Environment,
    Profile,
    Sso,
    Process,
    WebIdentity,
    Container,
    InstanceRole,
    Other(String),
}

impl ChainOrigin {
    /// From the credentials' Debug text, which names their provider (the SDK has no getter
    /// for it). The text also holds the access key id, never the secret; it is not kept.
    pub fn of(credentials: &aws_credential_types::Credentials) -> ChainOrigin {
        let debug = format!("{credentials:?}");
        let name = debug
            .split("provider_name: \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
            .to_string();
        match name.as_str() {
            "EnvironmentVariable" => ChainOrigin::Environment,
            // A profile's own keys, the role it assumes (`role_arn`, also on top of SSO),
            // or an `aws login` session: all live in the caller's ~/.aws.
            "ProfileFile" | "AssumeRoleProvider" | "Login" => ChainOrigin::Profile,
            "SSO" => ChainOrigin::Sso,
            "CredentialProcess" => ChainOrigin::Process,
            "WebIdentityToken" => ChainOrigin::WebIdentity,
            "EcsContainer" => ChainOrigin::Container,
            "IMDSv2" => ChainOrigin::InstanceRole,
            _ => ChainOrigin::Other(name),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ChainOrigin::Environment => "environment variables (AWS_ACCESS_KEY_ID…)".into(),
            ChainOrigin::Profile => "a profile in ~/.aws/config or ~/.aws/credentials".into(),
            ChainOrigin::Sso => "an IAM Identity Center (SSO) profile".into(),
            ChainOrigin::Process => "a profile's credential_process".into(),
            ChainOrigin::WebIdentity => "a web identity token".into(),
            ChainOrigin::Container => "the container's role (ECS)".into(),
            ChainOrigin::InstanceRole => "the EC2 instance role (instance metadata)".into(),
            ChainOrigin::Other(name) => format!("the SDK's {name} provider"),
        }
    }

    /// Credentials that belong to the person or shell that runs the command, which the
    /// service (its own user, `ProtectHome=yes`, no such environment) does not have.
    pub fn is_the_callers(&self) -> bool {
        matches!(
            self,
            ChainOrigin::Environment
                | ChainOrigin::Profile
                | ChainOrigin::Sso
                | ChainOrigin::Process
        )
    }
}

/// The credentials the SDK config's provider gives now, and (for the standard chain) who
/// gave them.
pub async fn resolve(sdk: &SdkConfig) -> Result<ChainOrigin, String> {
    use aws_credential_types::provider::ProvideCredentials;
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| "no AWS credentials provider".to_string())?;
    provider
        .provide_credentials()
        .await
        .map(|c| ChainOrigin::of(&c))
        .map_err(|e| error::credentials_text(&e))
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

#[cfg(test)]
mod tests {
    use super::ChainOrigin;
    use aws_credential_types::Credentials;

    fn origin(provider: &'static str) -> ChainOrigin {
        ChainOrigin::of(&Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            provider,
        ))
    }

    /// The names are the SDK's own (aws-config's providers); an admin's profile that
    /// assumes a role is still the admin's shell, not the service.
    #[test]
    fn the_sdk_provider_names_map_to_where_the_credentials_live() {
        assert_eq!(origin("ProfileFile"), ChainOrigin::Profile);
        assert_eq!(origin("AssumeRoleProvider"), ChainOrigin::Profile);
        assert_eq!(origin("Login"), ChainOrigin::Profile);
        assert_eq!(origin("SSO"), ChainOrigin::Sso);
        assert_eq!(origin("EcsContainer"), ChainOrigin::Container);
        assert_eq!(origin("IMDSv2"), ChainOrigin::InstanceRole);
        assert!(origin("AssumeRoleProvider").is_the_callers());
        assert!(!origin("IMDSv2").is_the_callers());
        assert_eq!(origin("Else"), ChainOrigin::Other("Else".into()));
    }
}
