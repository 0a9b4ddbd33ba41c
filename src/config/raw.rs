//! The configuration exactly as written in TOML / the environment, before validation.
//!
//! Every field that can be wrong in more than one way is kept loose here (strings, options)
//! so that `check` can report *all* problems at once instead of serde's first one. Unknown
//! keys are still rejected by serde: a typo must never silently disable a check.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub aws: RawAws,
    #[serde(default)]
    pub lwa: RawLwa,
    #[serde(default)]
    pub ssm: RawSsm,
    #[serde(default)]
    pub credentials: Vec<RawCredential>,
    #[serde(default)]
    pub socket: RawSocket,
    #[serde(default)]
    pub rotation: RawRotation,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub credentials_file: Option<String>,
    pub roles_anywhere: Option<RawRolesAnywhere>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRolesAnywhere {
    pub certificate: Option<String>,
    pub private_key: Option<String>,
    pub certificate_chain: Option<String>,
    pub trust_anchor_arn: Option<String>,
    pub profile_arn: Option<String>,
    pub role_arn: Option<String>,
    pub session_duration: Option<String>,
    pub role_session_name: Option<String>,
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLwa {
    pub token_url: Option<String>,
    pub refresh_before_expiry: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsm {
    pub refresh_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub name: Option<String>,
    pub client_id_parameter: Option<String>,
    pub client_secret_parameter: Option<String>,
    pub refresh_token_parameter: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub allow_uids: Option<Vec<u32>>,
    pub allow_gids: Option<Vec<u32>>,
}

/// A value that TOML writes as a string but the environment provider may hand over as a
/// number (`LWA_AGENT_SOCKET__MODE=0600` arrives as the integer 600).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrInt {
    Int(i64),
    Str(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSocket {
    pub path: Option<String>,
    pub mode: Option<StringOrInt>,
    pub group: Option<StringOrInt>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRotation {
    pub enabled: Option<bool>,
    pub schedule: Option<String>,
    pub warn_after: Option<String>,
    pub expire_after: Option<String>,
    pub repeat_every: Option<String>,
    pub topic_arn: Option<String>,
    pub honor_parameter_policies: Option<bool>,
    pub fleet_lock_prefix: Option<String>,
    pub parameters: Option<Vec<String>>,
    pub auto: Option<RawAutoRotation>,
}

/// `[rotation.auto]`: automatic client-secret rotation (docs/automatic-rotation.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoRotation {
    pub enabled: Option<bool>,
    pub new_secret_queue_url: Option<String>,
    pub expiry_queue_url: Option<String>,
    pub rotate_after: Option<String>,
    pub sp_api_endpoint: Option<String>,
    pub wait_for_secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}
