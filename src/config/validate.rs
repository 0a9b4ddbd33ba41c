//! Turns a [`RawConfig`] into a [`Config`], collecting every problem instead of stopping at
//! the first. Pure apart from reading `$CREDENTIALS_DIRECTORY`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, RawCredential, RawRolesAnywhere, StringOrInt};
use super::*;
use crate::logging::LogFormat;

/// Every problem found so far, each with its key and the file or variable it came from.
struct Findings<'a> {
    problems: Vec<Problem>,
    source: &'a dyn Fn(&str) -> String,
}

impl Findings<'_> {
    fn problem(&mut self, key: &str, reason: impl Into<String>) {
        self.problems.push(Problem {
            source: (self.source)(key),
            key: key.to_string(),
            reason: reason.into(),
        });
    }

    fn required(&mut self, key: &str, value: Option<String>, hint: &str) -> String {
        match value {
            Some(v) if !v.trim().is_empty() => v,
            _ => {
                self.problem(key, format!("is required: {hint}"));
                String::new()
            }
        }
    }

    fn duration(&mut self, key: &str, value: Option<String>, default: &str) -> Duration {
        let text = value.unwrap_or_else(|| default.to_string());
        match parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                self.problem(key, e);
                // The default, so that range checks on this key do not report it twice.
                parse_duration(default).unwrap_or(Duration::ZERO)
            }
        }
    }

    fn url(&mut self, key: &str, value: &str) {
        match reqwest::Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(_) => self.problem(key, format!("`{value}` must be an http:// or https:// URL")),
            Err(e) => self.problem(key, format!("`{value}` is not a URL ({e})")),
        }
    }

    fn arn(&mut self, key: &str, value: &str, service: &str, example: &str) {
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != service || parts[5].is_empty() {
            self.problem(
                key,
                format!("`{value}` is not an {service} ARN; it looks like \"{example}\""),
            );
        }
    }

    fn parameter_name(&mut self, key: &str, value: &str) {
        let ok = !value.is_empty()
            && value.len() <= 2048
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
        if !ok {
            self.problem(
                key,
                format!(
                    "`{value}` is not an SSM parameter name (letters, digits and _ . - / only), \
                     e.g. \"/my-erp/lwa/clientsecret\""
                ),
            );
        }
    }
}

pub(super) fn validate(
    raw: RawConfig,
    file: &Path,
    source: &dyn Fn(&str) -> String,
) -> Result<Config, ConfigError> {
    let mut c = Findings {
        problems: Vec::new(),
        source,
    };

    let region = c.required(
        "aws.region",
        raw.aws.region,
        "set the AWS region of the parameters, e.g. region = \"us-east-2\"",
    );
    if let Some(url) = &raw.aws.endpoint_url {
        c.url("aws.endpoint_url", url);
    }
    if let (Some(_), Some(_)) = (&raw.aws.credentials_file, &raw.aws.roles_anywhere) {
        c.problem(
            "aws.credentials_file",
            "is set together with [aws.roles_anywhere]: the agent takes its AWS credentials \
             from one of them; remove the one you do not use",
        );
    }
    if let Some(f) = &raw.aws.credentials_file {
        if f.trim().is_empty() {
            c.problem(
                "aws.credentials_file",
                "is empty: name the credentials file, e.g. \"%d/aws-credentials\"",
            );
        }
    }
    let roles_anywhere = raw.aws.roles_anywhere.map(|ra| roles_anywhere(&mut c, ra));

    let token_url = raw
        .lwa
        .token_url
        .unwrap_or_else(|| DEFAULT_TOKEN_URL.to_string());
    c.url("lwa.token_url", &token_url);
    let lwa = LwaConfig {
        token_url,
        refresh_before_expiry: c.duration(
            "lwa.refresh_before_expiry",
            raw.lwa.refresh_before_expiry,
            "5m",
        ),
        timeout: c.duration("lwa.timeout", raw.lwa.timeout, "10s"),
    };
    if lwa.timeout.is_zero() {
        c.problem("lwa.timeout", "must be more than 0s, e.g. \"10s\"");
    }
    if lwa.refresh_before_expiry >= Duration::from_secs(3600) {
        c.problem(
            "lwa.refresh_before_expiry",
            "must be less than the 1h token lifetime, e.g. \"5m\"",
        );
    }

    let ssm = SsmConfig {
        refresh_interval: c.duration("ssm.refresh_interval", raw.ssm.refresh_interval, "15m"),
    };
    if ssm.refresh_interval < Duration::from_secs(1) {
        c.problem("ssm.refresh_interval", "must be at least 1s, e.g. \"15m\"");
    }

    if raw.credentials.is_empty() {
        c.problem(
            "credentials",
            "no [[credentials]] table: add one with name, client_id_parameter, \
             client_secret_parameter and refresh_token_parameter",
        );
    }
    let mut credentials = Vec::new();
    for (i, rc) in raw.credentials.into_iter().enumerate() {
        let cred = credential(&mut c, i, rc);
        if credentials
            .iter()
            .any(|o: &CredentialConfig| o.name == cred.name)
        {
            c.problem(
                &format!("credentials.{i}.name"),
                format!(
                    "`{}` is used by two credentials: names must be unique",
                    cred.name
                ),
            );
        }
        credentials.push(cred);
    }

    let socket = socket(&mut c, raw.socket);
    let mut raw_rotation = raw.rotation;
    let raw_auto = raw_rotation.auto.take();
    let mut rotation = rotation(&mut c, raw_rotation);
    rotation.auto = raw_auto.map(|ra| auto_rotation(&mut c, ra, &rotation, &credentials));

    let level = raw.log.level.unwrap_or_else(|| "info".to_string());
    if !crate::logging::valid_level(&level) {
        c.problem(
            "log.level",
            format!("`{level}` is not a log level: use error, warn, info, debug or trace"),
        );
    }
    let format = match raw.log.format.as_deref() {
        None => None,
        Some("journald") => Some(LogFormat::Journald),
        Some("text") => Some(LogFormat::Text),
        Some("json") => Some(LogFormat::Json),
        Some(other) => {
            c.problem(
                "log.format",
                format!("`{other}` is not a log format: use journald, text or json"),
            );
            None
        }
    };

    if !c.problems.is_empty() {
        return Err(ConfigError {
            problems: c.problems,
        });
    }
    Ok(Config {
        file: file.to_path_buf(),
        aws: AwsConfig {
            region,
            endpoint_url: raw.aws.endpoint_url,
            credentials_file: raw.aws.credentials_file,
            roles_anywhere,
        },
        lwa,
        ssm,
        credentials,
        socket,
        rotation,
        log: LogConfig { level, format },
    })
}

fn roles_anywhere(c: &mut Findings, ra: RawRolesAnywhere) -> RolesAnywhereConfig {
    let k = |f: &str| format!("aws.roles_anywhere.{f}");
    let certificate = c.required(
        &k("certificate"),
        ra.certificate,
        "the PEM end-entity certificate, e.g. \"%d/rolesanywhere-cert\"",
    );
    let private_key = c.required(
        &k("private_key"),
        ra.private_key,
        "the PEM private key, e.g. \"%d/rolesanywhere-key\"",
    );
    let trust_anchor_arn = c.required(
        &k("trust_anchor_arn"),
        ra.trust_anchor_arn,
        "the ARN of the Roles Anywhere trust anchor",
    );
    let profile_arn = c.required(
        &k("profile_arn"),
        ra.profile_arn,
        "the ARN of the Roles Anywhere profile",
    );
    let role_arn = c.required(
        &k("role_arn"),
        ra.role_arn,
        "the ARN of the IAM role to assume",
    );
    if !trust_anchor_arn.is_empty() {
        c.arn(
            &k("trust_anchor_arn"),
            &trust_anchor_arn,
            "rolesanywhere",
            "arn:aws:rolesanywhere:us-east-2:111122223333:trust-anchor/…",
        );
    }
    if !profile_arn.is_empty() {
        c.arn(
            &k("profile_arn"),
            &profile_arn,
            "rolesanywhere",
            "arn:aws:rolesanywhere:us-east-2:111122223333:profile/…",
        );
    }
    if !role_arn.is_empty() {
        c.arn(
            &k("role_arn"),
            &role_arn,
            "iam",
            "arn:aws:iam::111122223333:role/lwa-agent",
        );
    }
    let session_duration = c.duration(&k("session_duration"), ra.session_duration, "1h");
    if !(Duration::from_secs(900)..=Duration::from_secs(43200)).contains(&session_duration) {
        c.problem(
            &k("session_duration"),
            "must be between 15m and 12h (and within what the profile allows)",
        );
    }
    if let Some(url) = &ra.endpoint_url {
        c.url(&k("endpoint_url"), url);
    }
    if let Some(name) = &ra.role_session_name {
        let ok = (2..=64).contains(&name.len())
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_=,.@-".contains(ch));
        if !ok {
            c.problem(
                &k("role_session_name"),
                format!("`{name}` must be 2-64 characters of letters, digits and _=,.@-"),
            );
        }
    }
    RolesAnywhereConfig {
        certificate,
        private_key,
        certificate_chain: ra.certificate_chain,
        trust_anchor_arn,
        profile_arn,
        role_arn,
        session_duration,
        role_session_name: ra.role_session_name,
        endpoint_url: ra.endpoint_url,
    }
}

/// `[a-z0-9_-]{1,64}`: the name is a URL path segment and a metrics label.
pub fn valid_credential_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn credential(c: &mut Findings, i: usize, rc: RawCredential) -> CredentialConfig {
    let k = |f: &str| format!("credentials.{i}.{f}");
    let name = c.required(&k("name"), rc.name, "e.g. name = \"default\"");
    if !name.is_empty() && !valid_credential_name(&name) {
        c.problem(
            &k("name"),
            format!("`{name}` must be 1-64 characters of a-z, 0-9, _ and -"),
        );
    }
    let client_id_parameter = c.required(
        &k("client_id_parameter"),
        rc.client_id_parameter,
        "the SSM parameter holding the LWA client id",
    );
    let client_secret_parameter = c.required(
        &k("client_secret_parameter"),
        rc.client_secret_parameter,
        "the SSM SecureString holding the LWA client secret",
    );
    for (key, value) in [
        ("client_id_parameter", &client_id_parameter),
        ("client_secret_parameter", &client_secret_parameter),
    ] {
        if !value.is_empty() {
            c.parameter_name(&k(key), value);
        }
    }
    if let Some(p) = &rc.refresh_token_parameter {
        c.parameter_name(&k("refresh_token_parameter"), p);
    }
    let scopes = rc.scopes.unwrap_or_default();
    match (&rc.refresh_token_parameter, scopes.is_empty()) {
        (None, true) => c.problem(
            &k("refresh_token_parameter"),
            "is required unless the credential is grantless: set refresh_token_parameter, \
             or scopes = [\"sellingpartnerapi::notifications\"] for a grantless credential",
        ),
        (Some(_), false) => c.problem(
            &k("scopes"),
            "a credential has either a refresh token or scopes (grantless), not both: \
             remove one",
        ),
        _ => {}
    }
    for s in &scopes {
        if s.is_empty() || s.contains(char::is_whitespace) {
            c.problem(
                &k("scopes"),
                format!("`{s}` is not a scope (no spaces, not empty)"),
            );
        }
    }
    CredentialConfig {
        name,
        client_id_parameter,
        client_secret_parameter,
        refresh_token_parameter: rc.refresh_token_parameter,
        scopes,
        allow_uids: rc.allow_uids,
        allow_gids: rc.allow_gids,
    }
}

fn socket(c: &mut Findings, rs: super::raw::RawSocket) -> SocketConfig {
    let path = PathBuf::from(rs.path.unwrap_or_else(|| DEFAULT_SOCKET.to_string()));
    if !path.is_absolute() {
        c.problem(
            "socket.path",
            format!("`{}` must be an absolute path", path.display()),
        );
    }
    // 108 bytes is sun_path's size, including the terminating NUL.
    if path.as_os_str().len() > 107 {
        c.problem(
            "socket.path",
            "is longer than the 107 bytes a Unix socket path may have",
        );
    }
    let mode = match rs.mode {
        None => Some(0o600),
        Some(m) => parse_mode(&m),
    };
    let mode = match mode {
        Some(m) => m,
        None => {
            c.problem(
                "socket.mode",
                "must be octal permission bits as a string, e.g. \"0600\" or \"0660\"",
            );
            0o600
        }
    };
    if mode & 0o007 != 0 {
        c.problem(
            "socket.mode",
            format!("{mode:04o} lets every local user in: use \"0600\" or \"0660\" with a group"),
        );
    }
    let group = match rs.group {
        None => None,
        Some(StringOrInt::Int(n)) => match u32::try_from(n) {
            Ok(g) => Some(GroupSpec::Gid(g)),
            Err(_) => {
                c.problem("socket.group", format!("{n} is not a group id"));
                None
            }
        },
        Some(StringOrInt::Str(s)) => match s.parse::<u32>() {
            Ok(g) => Some(GroupSpec::Gid(g)),
            Err(_) if !s.is_empty() && !s.contains([':', '\n', ' ']) => Some(GroupSpec::Name(s)),
            Err(_) => {
                c.problem("socket.group", format!("`{s}` is not a group name or id"));
                None
            }
        },
    };
    SocketConfig { path, mode, group }
}

/// Octal permission bits. An integer is read by its decimal digits, because the
/// environment provider turns `0600` into the number 600.
fn parse_mode(m: &StringOrInt) -> Option<u32> {
    let text = match m {
        StringOrInt::Str(s) => s.trim().to_string(),
        StringOrInt::Int(n) => n.to_string(),
    };
    let text = text.strip_prefix("0o").unwrap_or(&text);
    if text.is_empty() || text.len() > 4 {
        return None;
    }
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o777)
}

fn rotation(c: &mut Findings, rr: super::raw::RawRotation) -> RotationConfig {
    let schedule = rr.schedule.unwrap_or_else(|| "0 0 9 * * *".to_string());
    if let Err(e) = super::schedule::parse(&schedule) {
        c.problem("rotation.schedule", e);
    }
    let warn_after = c.duration("rotation.warn_after", rr.warn_after, "150d");
    let expire_after = c.duration("rotation.expire_after", rr.expire_after, "180d");
    let repeat_every = c.duration("rotation.repeat_every", rr.repeat_every, "7d");
    if warn_after >= expire_after && !expire_after.is_zero() {
        c.problem(
            "rotation.warn_after",
            "must be less than rotation.expire_after, or the first reminder comes too late",
        );
    }
    if repeat_every.is_zero() {
        c.problem("rotation.repeat_every", "must be more than 0s, e.g. \"7d\"");
    }
    if let Some(arn) = &rr.topic_arn {
        c.arn(
            "rotation.topic_arn",
            arn,
            "sns",
            "arn:aws:sns:us-east-2:111122223333:lwa-credential-rotation",
        );
    }
    if let Some(prefix) = &rr.fleet_lock_prefix {
        if !prefix.starts_with('/') || prefix.ends_with('/') {
            c.problem(
                "rotation.fleet_lock_prefix",
                format!("`{prefix}` must start with / and not end with /, e.g. \"/my-erp/lwa-agent/reminders\""),
            );
        } else {
            c.parameter_name("rotation.fleet_lock_prefix", prefix);
        }
    }
    let parameters = rr.parameters.unwrap_or_default();
    for (i, p) in parameters.iter().enumerate() {
        c.parameter_name(&format!("rotation.parameters.{i}"), p);
    }
    RotationConfig {
        enabled: rr.enabled.unwrap_or(true),
        schedule,
        warn_after,
        expire_after,
        repeat_every,
        topic_arn: rr.topic_arn,
        honor_parameter_policies: rr.honor_parameter_policies.unwrap_or(true),
        fleet_lock_prefix: rr.fleet_lock_prefix,
        parameters,
        auto: None,
    }
}

/// The longest an SQS message may stay invisible (12 h): `wait_for_secret` sets how long a
/// message stays claimed while it is worked on, so it must fit.
const MAX_WAIT_FOR_SECRET: Duration = Duration::from_secs(12 * 3600);

/// `[rotation.auto]`, checked against the rest of `[rotation]` and the credentials.
fn auto_rotation(
    c: &mut Findings,
    ra: super::raw::RawAutoRotation,
    rotation: &RotationConfig,
    credentials: &[CredentialConfig],
) -> AutoRotationConfig {
    let k = |f: &str| format!("rotation.auto.{f}");
    let enabled = ra.enabled.unwrap_or(true);
    let new_secret_queue_url = if enabled {
        c.required(
            &k("new_secret_queue_url"),
            ra.new_secret_queue_url,
            "the URL of the SQS queue registered for APPLICATION_OAUTH_CLIENT_NEW_SECRET, e.g. \
             \"https://sqs.us-east-2.amazonaws.com/111122223333/lwa-new-secret\"",
        )
    } else {
        ra.new_secret_queue_url.unwrap_or_default()
    };
    if !new_secret_queue_url.is_empty() {
        c.url(&k("new_secret_queue_url"), &new_secret_queue_url);
    }
    if let Some(url) = &ra.expiry_queue_url {
        c.url(&k("expiry_queue_url"), url);
    }
    let sp_api_endpoint = ra
        .sp_api_endpoint
        .unwrap_or_else(|| DEFAULT_SP_API_ENDPOINT.to_string());
    c.url(&k("sp_api_endpoint"), &sp_api_endpoint);
    let rotate_after = c.duration(&k("rotate_after"), ra.rotate_after, "150d");
    let wait_for_secret = c.duration(&k("wait_for_secret"), ra.wait_for_secret, "15m");
    if rotate_after.is_zero() {
        c.problem(&k("rotate_after"), "must be more than 0s, e.g. \"150d\"");
    } else if rotate_after >= rotation.expire_after {
        c.problem(
            &k("rotate_after"),
            format!(
                "must be less than rotation.expire_after ({}), or the secret expires before it \
                 is rotated: e.g. \"150d\" with expire_after = \"180d\"",
                humantime::format_duration(rotation.expire_after)
            ),
        );
    }
    if wait_for_secret < Duration::from_secs(1) || wait_for_secret > MAX_WAIT_FOR_SECRET {
        c.problem(
            &k("wait_for_secret"),
            "must be between 1s and 12h (how long a rotation waits for Amazon's new-secret \
             message), e.g. \"15m\"",
        );
    }
    if enabled {
        // Once per fleet, and never twice for the same secret: the create-only marker is
        // what makes both true, so automatic rotation does not run without it.
        if rotation.fleet_lock_prefix.is_none() {
            c.problem(
                "rotation.fleet_lock_prefix",
                "is required with [rotation.auto]: the hosts take a create-only SSM marker \
                 under it so that one host, once, asks Amazon for a new secret; set e.g. \
                 fleet_lock_prefix = \"/my-erp/lwa-agent/reminders\"",
            );
        }
        if !credentials
            .iter()
            .any(|cr| cr.refresh_token_parameter.is_some())
        {
            c.problem(
                &k("enabled"),
                "needs a credential with a refresh_token_parameter: the new secret is proved \
                 with a real LWA exchange before it is written; add one, or set enabled = false",
            );
        }
    }
    AutoRotationConfig {
        enabled,
        new_secret_queue_url,
        expiry_queue_url: ra.expiry_queue_url,
        rotate_after,
        sp_api_endpoint: sp_api_endpoint.trim_end_matches('/').to_string(),
        wait_for_secret,
    }
}

/// The credentials the packaged units hand over (`LoadCredential=` ID and source file).
pub const HANDED_OVER: [(&str, &str); 4] = [
    ("rolesanywhere-cert", "/etc/lwa-agent/pki/cert.pem"),
    ("rolesanywhere-key", "/etc/lwa-agent/pki/key.pem"),
    ("rolesanywhere-chain", "/etc/lwa-agent/pki/chain.pem"),
    ("aws-credentials", "/etc/lwa-agent/aws-credentials"),
];

/// Where the packaged units' `lwa-agent load-credentials` copies the handed-over files on
/// systemd before 247 (their `RuntimeDirectory=`), and where the agent looks for them.
pub const COPIES_DIRECTORY_VARIABLE: &str = "LWA_CREDENTIALS_DIRECTORY";

/// Resolves a path that may start with `%d/` (systemd `LoadCredential=`) against
/// `$CREDENTIALS_DIRECTORY`, or, on systemd before 247, against the directory the packaged
/// units copy the same files to (`$LWA_CREDENTIALS_DIRECTORY`, `lwa-agent
/// load-credentials`): one config serves every systemd version. Run by root outside the
/// units, a name the units hand over is its source file ([`HANDED_OVER`]).
pub fn resolve_credential_path(path: &str) -> Result<PathBuf, String> {
    let Some(rest) = path.strip_prefix("%d/") else {
        return Ok(PathBuf::from(path));
    };
    let dir = ["CREDENTIALS_DIRECTORY", COPIES_DIRECTORY_VARIABLE]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|d| !d.is_empty()));
    // Root, outside the units (`sudo lwa-agent doctor`): the files the units hand over under
    // these names, read where they are (root-only) on the host.
    let handed_over = HANDED_OVER
        .iter()
        .find(|(id, _)| *id == rest)
        .filter(|_| nix::unistd::geteuid().is_root());
    match (dir, handed_over) {
        (Some(dir), _) => Ok(Path::new(&dir).join(rest)),
        (None, Some((_, source))) => Ok(PathBuf::from(source)),
        (None, None) => Err(format!(
            "`{path}` is relative to $CREDENTIALS_DIRECTORY, which is not set: run under \
             systemd with LoadCredential= (or the packaged units, which hand the files over on \
             every systemd version), or use an absolute path"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_paths_resolve_in_the_credentials_directory_or_as_root_in_place() {
        assert_eq!(
            resolve_credential_path("/etc/x.pem"),
            Ok(PathBuf::from("/etc/x.pem"))
        );
        // No credentials directory in unit tests: root reads a handed-over file in place,
        // anyone else is told what is missing.
        let handed = resolve_credential_path("%d/aws-credentials");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(handed, Ok(PathBuf::from("/etc/lwa-agent/aws-credentials")));
        } else {
            assert!(handed.is_err());
        }
        let other = resolve_credential_path("%d/not-handed-over").expect_err("unresolved");
        assert!(other.contains("CREDENTIALS_DIRECTORY"), "{other}");
    }

    fn check(toml: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(toml).expect("test TOML parses");
        validate(raw, Path::new("test.toml"), &|_| "test.toml".to_string())
    }

    const MINIMAL: &str = r#"
        [aws]
        region = "us-east-2"
        [[credentials]]
        name = "default"
        client_id_parameter = "/erp/id"
        client_secret_parameter = "/erp/secret"
        refresh_token_parameter = "/erp/refresh"
    "#;

    fn keys(err: ConfigError) -> Vec<String> {
        err.problems.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let cfg = check(MINIMAL).expect("valid");
        assert_eq!(cfg.lwa.token_url, DEFAULT_TOKEN_URL);
        assert_eq!(cfg.lwa.refresh_before_expiry, Duration::from_secs(300));
        assert_eq!(cfg.lwa.timeout, Duration::from_secs(10));
        assert_eq!(cfg.ssm.refresh_interval, Duration::from_secs(900));
        assert_eq!(cfg.socket.path, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(cfg.socket.mode, 0o600);
        assert!(cfg.rotation.enabled);
        assert_eq!(cfg.rotation.warn_after, Duration::from_secs(150 * 86400));
        assert_eq!(cfg.rotation.expire_after, Duration::from_secs(180 * 86400));
        assert_eq!(cfg.rotation.repeat_every, Duration::from_secs(7 * 86400));
        assert!(cfg.rotation.honor_parameter_policies);
        assert_eq!(cfg.log.level, "info");
        assert_eq!(
            cfg.credential_parameters(),
            vec!["/erp/id", "/erp/secret", "/erp/refresh"]
        );
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let err = check(
            r#"
            [lwa]
            timeout = "ten seconds"
            [[credentials]]
            name = "Bad Name"
            client_id_parameter = "/a"
            client_secret_parameter = "/b"
            [socket]
            mode = "0666"
            [log]
            format = "xml"
            "#,
        )
        .expect_err("invalid");
        let keys = keys(err);
        for k in [
            "aws.region",
            "lwa.timeout",
            "credentials.0.name",
            "credentials.0.refresh_token_parameter",
            "socket.mode",
            "log.format",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn grantless_needs_scopes_and_not_a_refresh_token() {
        let ok = check(
            r#"
            [aws]
            region = "us-east-2"
            [[credentials]]
            name = "notifications"
            client_id_parameter = "/a"
            client_secret_parameter = "/b"
            scopes = ["sellingpartnerapi::notifications"]
            "#,
        )
        .expect("grantless is valid");
        assert!(ok.credentials[0].refresh_token_parameter.is_none());
        let both = check(&format!(
            "{MINIMAL}\nscopes = [\"sellingpartnerapi::notifications\"]\n"
        ))
        .expect_err("both is ambiguous");
        assert_eq!(keys(both), vec!["credentials.0.scopes"]);
    }

    #[test]
    fn duplicate_credential_names_are_rejected() {
        let twice = format!(
            "{MINIMAL}{}",
            MINIMAL.replace("[aws]\n        region = \"us-east-2\"", "")
        );
        let err = check(&twice).expect_err("duplicate");
        assert_eq!(keys(err), vec!["credentials.1.name"]);
    }

    #[test]
    fn credential_names_follow_the_url_segment_rule() {
        assert!(valid_credential_name("default"));
        assert!(valid_credential_name("eu_seller-2"));
        assert!(!valid_credential_name(""));
        assert!(!valid_credential_name("Upper"));
        assert!(!valid_credential_name("a/b"));
        assert!(!valid_credential_name(&"a".repeat(65)));
    }

    #[test]
    fn socket_mode_accepts_strings_and_env_integers() {
        assert_eq!(parse_mode(&StringOrInt::Str("0660".into())), Some(0o660));
        assert_eq!(parse_mode(&StringOrInt::Str("600".into())), Some(0o600));
        assert_eq!(parse_mode(&StringOrInt::Int(600)), Some(0o600));
        // TOML's 0o600 is the integer 384, which is not octal digits: refused, not misread.
        assert_eq!(parse_mode(&StringOrInt::Int(384)), None);
        assert_eq!(parse_mode(&StringOrInt::Str("rw".into())), None);
    }

    #[test]
    fn socket_group_is_a_name_or_a_gid() {
        let cfg = check(&format!(
            "{MINIMAL}\n[socket]\ngroup = \"erp\"\nmode = \"0660\"\n"
        ))
        .expect("valid");
        assert_eq!(cfg.socket.group, Some(GroupSpec::Name("erp".into())));
        let cfg = check(&format!("{MINIMAL}\n[socket]\ngroup = 1001\n")).expect("valid");
        assert_eq!(cfg.socket.group, Some(GroupSpec::Gid(1001)));
    }

    #[test]
    fn roles_anywhere_is_checked_when_present() {
        let err = check(&format!(
            "{MINIMAL}\n[aws.roles_anywhere]\ncertificate = \"/c\"\nprivate_key = \"/k\"\n\
             trust_anchor_arn = \"nope\"\nprofile_arn = \"arn:aws:rolesanywhere:us-east-2:1:profile/p\"\n\
             role_arn = \"arn:aws:iam::1:role/r\"\nsession_duration = \"13h\"\n"
        ))
        .expect_err("invalid");
        assert_eq!(
            keys(err),
            vec![
                "aws.roles_anywhere.trust_anchor_arn",
                "aws.roles_anywhere.session_duration"
            ]
        );
    }

    #[test]
    fn rotation_limits_are_consistent() {
        let err = check(&format!(
            "{MINIMAL}\n[rotation]\nwarn_after = \"200d\"\nschedule = \"every day\"\n\
             topic_arn = \"arn:aws:sqs:us-east-2:1:q\"\n"
        ))
        .expect_err("invalid");
        assert_eq!(
            keys(err),
            vec![
                "rotation.schedule",
                "rotation.warn_after",
                "rotation.topic_arn"
            ]
        );
    }

    const AUTO: &str = "\n[rotation]\nfleet_lock_prefix = \"/erp/locks\"\n[rotation.auto]\n\
        new_secret_queue_url = \"https://sqs.us-east-2.amazonaws.com/1/new\"\n";

    #[test]
    fn auto_rotation_gets_the_documented_defaults() {
        let cfg = check(&format!("{MINIMAL}{AUTO}")).expect("valid");
        let auto = cfg.rotation.auto_enabled().expect("enabled by default");
        assert_eq!(auto.rotate_after, Duration::from_secs(150 * 86400));
        assert_eq!(auto.wait_for_secret, Duration::from_secs(900));
        assert_eq!(auto.sp_api_endpoint, DEFAULT_SP_API_ENDPOINT);
        assert_eq!(
            auto.queues(),
            vec!["https://sqs.us-east-2.amazonaws.com/1/new"]
        );
        assert!(check(MINIMAL).expect("valid").rotation.auto.is_none());
    }

    #[test]
    fn auto_rotation_problems_name_the_key() {
        let err = check(&format!(
            "{MINIMAL}\n[rotation]\n[rotation.auto]\nexpiry_queue_url = \"sqs\"\n\
             rotate_after = \"200d\"\nwait_for_secret = \"13h\"\nsp_api_endpoint = \"ftp://x\"\n"
        ))
        .expect_err("invalid");
        assert_eq!(
            keys(err),
            vec![
                "rotation.auto.new_secret_queue_url",
                "rotation.auto.expiry_queue_url",
                "rotation.auto.sp_api_endpoint",
                "rotation.auto.rotate_after",
                "rotation.auto.wait_for_secret",
                "rotation.fleet_lock_prefix",
            ]
        );
        // Unknown keys are errors here too.
        let raw: Result<RawConfig, _> =
            toml::from_str(&format!("{MINIMAL}{AUTO}rotate_afterr = \"1d\"\n"));
        assert!(raw.is_err());
    }

    #[test]
    fn auto_rotation_needs_a_refresh_token_to_prove_the_new_secret() {
        let grantless = MINIMAL.replace(
            "refresh_token_parameter = \"/erp/refresh\"",
            "scopes = [\"s\"]",
        );
        let err = check(&format!("{grantless}{AUTO}")).expect_err("invalid");
        assert_eq!(keys(err), vec!["rotation.auto.enabled"]);
        // Disabled, nothing is required.
        let off =
            check(&format!("{grantless}\n[rotation.auto]\nenabled = false\n")).expect("valid");
        assert!(off.rotation.auto_enabled().is_none());
    }

    #[test]
    fn credentials_directory_paths_resolve_or_say_why_not() {
        assert_eq!(
            resolve_credential_path("/etc/x").expect("absolute"),
            PathBuf::from("/etc/x")
        );
        // The error names the variable and the fix; CREDENTIALS_DIRECTORY is never set in
        // unit tests.
        let err = resolve_credential_path("%d/key").expect_err("unset");
        assert!(err.contains("CREDENTIALS_DIRECTORY") && err.contains("LoadCredential"));
    }
}
