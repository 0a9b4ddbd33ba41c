//! The agent's configuration (docs/configuration.md): one TOML file plus `LWA_AGENT_…`
//! environment overrides, validated as a whole so that a sysadmin sees every problem in
//! one go.

mod raw;
pub mod schedule;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

pub use validate::{resolve_credential_path, COPIES_DIRECTORY_VARIABLE};

/// Where the packages install the config; `--config` and `LWA_AGENT_CONFIG` override it.
pub const DEFAULT_PATH: &str = "/etc/lwa-agent/lwa-agent.toml";
pub const DEFAULT_SOCKET: &str = "/run/lwa-agent/lwa-agent.sock";
pub const DEFAULT_TOKEN_URL: &str = "https://api.amazon.com/auth/o2/token";

#[derive(Debug, Clone)]
pub struct Config {
    /// The file the config was read from, for messages.
    pub file: PathBuf,
    pub aws: AwsConfig,
    pub lwa: LwaConfig,
    pub ssm: SsmConfig,
    pub credentials: Vec<CredentialConfig>,
    pub socket: SocketConfig,
    pub rotation: RotationConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct AwsConfig {
    pub region: String,
    pub endpoint_url: Option<String>,
    /// An AWS credentials file (static keys, profile `default`) for a host without Roles
    /// Anywhere, as written (`%d/` is resolved like the Roles Anywhere files): the
    /// packaged units hand `/etc/lwa-agent/aws-credentials` over as `%d/aws-credentials`.
    pub credentials_file: Option<String>,
    pub roles_anywhere: Option<RolesAnywhereConfig>,
}

#[derive(Debug, Clone)]
pub struct RolesAnywhereConfig {
    /// Paths as written; `%d/` is resolved against `$CREDENTIALS_DIRECTORY` when read.
    pub certificate: String,
    pub private_key: String,
    pub certificate_chain: Option<String>,
    pub trust_anchor_arn: String,
    pub profile_arn: String,
    pub role_arn: String,
    pub session_duration: Duration,
    pub role_session_name: Option<String>,
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LwaConfig {
    pub token_url: String,
    pub refresh_before_expiry: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SsmConfig {
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct CredentialConfig {
    pub name: String,
    pub client_id_parameter: String,
    pub client_secret_parameter: String,
    /// `None` makes this a grantless (`client_credentials`) credential using `scopes`.
    pub refresh_token_parameter: Option<String>,
    pub scopes: Vec<String>,
    pub allow_uids: Option<Vec<u32>>,
    pub allow_gids: Option<Vec<u32>>,
}

impl CredentialConfig {
    /// The credential's values as (`put-secret --field` name, SSM parameter), in a fixed
    /// order; a grantless credential has no refresh token.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            Some(("client_id", self.client_id_parameter.as_str())),
            Some(("client_secret", self.client_secret_parameter.as_str())),
            self.refresh_token_parameter
                .as_deref()
                .map(|p| ("refresh_token", p)),
        ]
        .into_iter()
        .flatten()
    }

    /// The SSM parameters this credential is built from, in a fixed order.
    pub fn parameters(&self) -> impl Iterator<Item = &str> {
        self.fields().map(|(_, p)| p)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSpec {
    Name(String),
    Gid(u32),
}

#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<GroupSpec>,
}

#[derive(Debug, Clone)]
pub struct RotationConfig {
    pub enabled: bool,
    pub schedule: String,
    pub warn_after: Duration,
    pub expire_after: Duration,
    pub repeat_every: Duration,
    pub topic_arn: Option<String>,
    pub honor_parameter_policies: bool,
    pub fleet_lock_prefix: Option<String>,
    pub parameters: Vec<String>,
    /// `[rotation.auto]`; `None` when the table is absent.
    pub auto: Option<AutoRotationConfig>,
}

/// Where Amazon's Application Management API lives for North America; `-eu` and `-fe`
/// serve the other regions.
pub const DEFAULT_SP_API_ENDPOINT: &str = "https://sellingpartnerapi-na.amazon.com";

/// `[rotation.auto]`: the agent rotates the LWA client secret itself
/// (docs/automatic-rotation.md).
#[derive(Debug, Clone)]
pub struct AutoRotationConfig {
    /// Off: no trigger starts a rotation and no queue is read; `lwa-agent rotate` still
    /// works, since a person asked for it.
    pub enabled: bool,
    /// The queue registered for `APPLICATION_OAUTH_CLIENT_NEW_SECRET`.
    pub new_secret_queue_url: String,
    /// The queue registered for `APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY`, if any.
    pub expiry_queue_url: Option<String>,
    pub rotate_after: Duration,
    /// Without a trailing slash.
    pub sp_api_endpoint: String,
    pub wait_for_secret: Duration,
}

impl AutoRotationConfig {
    /// The queues to listen on, each once (both notification types may share a queue).
    pub fn queues(&self) -> Vec<&str> {
        let mut queues = vec![self.new_secret_queue_url.as_str()];
        if let Some(q) = self.expiry_queue_url.as_deref() {
            if q != self.new_secret_queue_url {
                queues.push(q);
            }
        }
        queues
    }
}

impl RotationConfig {
    /// `[rotation.auto]` when it is present and enabled.
    pub fn auto_enabled(&self) -> Option<&AutoRotationConfig> {
        self.auto.as_ref().filter(|a| a.enabled)
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: Option<crate::logging::LogFormat>,
}

impl Config {
    /// Every SSM parameter any credential needs, deduplicated, in config order.
    pub fn credential_parameters(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self.credentials.iter().flat_map(|c| c.parameters()) {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        names
    }

    pub fn credential(&self, name: &str) -> Option<&CredentialConfig> {
        self.credentials.iter().find(|c| c.name == name)
    }
}

/// One thing wrong with the configuration: where it came from, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub source: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.reason)
        } else {
            write!(f, "{}: `{}`: {}", self.source, self.key, self.reason)
        }
    }
}

/// All problems found in a configuration; `Display` prints one per line.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The config path from `--config`, else `LWA_AGENT_CONFIG`, else the packaged default.
pub fn path_from(arg: Option<&Path>) -> PathBuf {
    if let Some(p) = arg {
        return p.to_path_buf();
    }
    match std::env::var_os("LWA_AGENT_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Reads and validates the file at `path` plus the environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file_label = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(single(
                &file_label,
                "is not a regular file: pass the config file with --config PATH",
            ))
        }
        Err(e) => {
            return Err(single(
                &file_label,
                &format!(
                    "cannot read the config file ({e}): create it from the example \
                     (/usr/share/doc/lwa-agent/lwa-agent.toml) or pass --config PATH"
                ),
            ))
        }
    }
    // Reading the file ourselves first turns a permission problem into a clear message;
    // figment would otherwise report it as a parse error.
    if let Err(e) = std::fs::read(path) {
        return Err(single(
            &file_label,
            &format!("cannot read the config file ({e}): run as root or fix its permissions"),
        ));
    }
    let figment = Figment::new().merge(Toml::file_exact(path)).merge(
        // LWA_AGENT_CONFIG names the file itself, it is not a key.
        Env::prefixed("LWA_AGENT_")
            .filter(|k| !k.as_str().eq_ignore_ascii_case("config"))
            .split("__"),
    );
    extract(&figment, path, &file_label)
}

/// Validates `text` exactly as [`load`] validates a file, but without the environment
/// overrides: for a file that is about to be written (`lwa-agent setup` checks what it
/// writes before it writes it). `path` is where it will be written, for messages.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let figment = Figment::new().merge(Toml::string(text));
    let label = path.display().to_string();
    // The text is the only source: every problem is the file's.
    extract(&figment, path, &label).map_err(|mut e| {
        for p in &mut e.problems {
            p.source.clone_from(&label);
        }
        e
    })
}

fn extract(figment: &Figment, path: &Path, file_label: &str) -> Result<Config, ConfigError> {
    // Every unknown key is named, with every other problem: a typo must not hide the rest.
    // serde stops at the first unknown field, so each is taken out in turn and the rest
    // read again; the keys' sources are still looked up in the original figment.
    let mut value: figment::value::Value = match figment.extract() {
        Ok(v) => v,
        Err(e) => return Err(figment_problems(e, file_label)),
    };
    let mut unknown: Vec<Problem> = Vec::new();
    let raw = loop {
        let attempt: Result<raw::RawConfig, figment::Error> =
            Figment::from(figment::providers::Serialized::defaults(&value)).extract();
        match attempt {
            Ok(raw) => break raw,
            Err(e) => match unknown_field(&e) {
                Some((parent, field))
                    if unknown.len() < 100 && remove(&mut value, &parent, &field) =>
                {
                    let mut key = parent.clone();
                    key.push(field.clone());
                    let key = key.join(".");
                    unknown.push(Problem {
                        source: source_of(figment, &key, file_label),
                        reason: e.kind.to_string(),
                        key,
                    });
                }
                _ => {
                    // This error comes from re-reading `value`, whose metadata names this
                    // code; where the key was set is in the original figment.
                    let mut problems = unknown;
                    problems.extend(figment_problems(e, file_label).problems.into_iter().map(
                        |p| Problem {
                            source: source_of(figment, &p.key, file_label),
                            ..p
                        },
                    ));
                    return Err(ConfigError { problems });
                }
            },
        }
    };
    match validate::validate(raw, path, &|key| source_of(figment, key, file_label)) {
        Ok(cfg) if unknown.is_empty() => Ok(cfg),
        Ok(_) => Err(ConfigError { problems: unknown }),
        Err(e) => {
            unknown.extend(e.problems);
            Err(ConfigError { problems: unknown })
        }
    }
}

/// The problems of a figment error, each with its key and source.
fn figment_problems(e: figment::Error, file_label: &str) -> ConfigError {
    let problems = e
        .into_iter()
        .map(|err| {
            let source = err
                .metadata
                .as_ref()
                .map(|m| describe(m, &err.path.join(".")))
                .unwrap_or_else(|| file_label.to_string());
            Problem {
                source,
                key: err.path.join("."),
                reason: err.kind.to_string(),
            }
        })
        .collect();
    ConfigError { problems }
}

/// The table path and name of an unknown key, when that is the (first) error.
fn unknown_field(e: &figment::Error) -> Option<(Vec<String>, String)> {
    match &e.kind {
        figment::error::Kind::UnknownField(field, _) => {
            // The path may end with the field itself.
            let mut parent = e.path.clone();
            if parent.last() == Some(field) {
                parent.pop();
            }
            Some((parent, field.clone()))
        }
        _ => None,
    }
}

/// Removes `field` from the table at `parent` (array elements are indices); whether it
/// was there.
fn remove(value: &mut figment::value::Value, parent: &[String], field: &str) -> bool {
    use figment::value::Value;
    let mut at = value;
    for step in parent {
        at = match at {
            Value::Dict(_, d) => match d.get_mut(step) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(_, a) => match step.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        Value::Dict(_, d) => d.remove(field).is_some(),
        _ => false,
    }
}

fn single(source: &str, reason: &str) -> ConfigError {
    ConfigError {
        problems: vec![Problem {
            source: source.to_string(),
            key: String::new(),
            reason: reason.to_string(),
        }],
    }
}

/// Names where `key` was set (the file or an environment variable), trying parent keys
/// for array elements and absent keys.
fn source_of(figment: &Figment, key: &str, file: &str) -> String {
    let mut k = key;
    loop {
        if let Some(meta) = figment.find_metadata(k) {
            return describe(meta, key);
        }
        match k.rfind('.') {
            Some(i) => k = &k[..i],
            None => return file.to_string(),
        }
    }
}

/// The file a value came from, or the environment variable that set `key`.
fn describe(meta: &figment::Metadata, key: &str) -> String {
    match &meta.source {
        Some(src) => src.to_string(),
        None if meta.name.contains("environment") => format!(
            "environment variable LWA_AGENT_{}",
            key.to_ascii_uppercase().replace('.', "__")
        ),
        None => meta.name.to_string(),
    }
}

/// Parses a humantime duration (`90s`, `5m`, `150d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write it like \"90s\", \"5m\" or \"150d\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of the wrong type is reported where it was written, with an unknown key
    /// beside it (both go through the re-read that collects every unknown key).
    #[test]
    fn a_wrong_type_names_the_config_file_not_the_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lwa-agent.toml");
        std::fs::write(
            &path,
            "[aws]\nregion = \"us-east-2\"\n[lwa]\ntimeout = 5\nretries = 1\n\
             [[credentials]]\nname = \"default\"\nclient_id_parameter = \"/a\"\n\
             client_secret_parameter = \"/b\"\nrefresh_token_parameter = \"/c\"\n",
        )
        .expect("write");
        let err = load(&path).expect_err("a number is no duration");
        // figment may show the path relative to the working directory: match its last
        // two components.
        let file = Path::new(dir.path().file_name().expect("temp dir name"))
            .join("lwa-agent.toml")
            .display()
            .to_string();
        for key in ["lwa.timeout", "lwa.retries"] {
            let p = err
                .problems
                .iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("no problem for {key}: {err}"));
            assert!(
                p.source.contains(&file) && !p.source.contains(".rs"),
                "{key} comes from {}",
                p.source
            );
        }
    }
}
