//! `lwa-agent setup`: the step after the CloudFormation stack (packaging/aws/lwa-agent.yaml).
//! It asks for the three LWA values, proves them at LWA, stores them as SecureStrings with
//! the stack's KMS key, writes the config from the stack's outputs, runs `doctor`, and
//! prints the one command left to run.
//!
//! Every step is idempotent, so a second run changes nothing and a failed run can simply
//! be run again:
//! - a parameter is created only when missing (`Overwrite` false); when present, its
//!   decrypted value is compared first, and only a different value is written, through
//!   the same rewrite as `put-secret` (keeps key, tier and policies);
//! - the config text is deterministic; an existing file is kept unless `--force-config`,
//!   and a file equal to the new text is not touched at all;
//! - setup never puts back an older client secret: when the stored one differs from the
//!   one typed and still proves at LWA, it may be the newer (an automatic rotation or
//!   `put-secret` wrote it, and an old secret from someone's notes also proves during its
//!   7-day overlap), so setup refuses unless `--replace-secret`.
//!
//! Order matters for safety: everything that can be checked offline (the outputs, the
//! flags, the config that would be written) is checked before the secrets are read, and
//! the secrets are proved at LWA before anything is written. Secrets come from a terminal
//! without echo or from stdin, never from argv or the environment, and are never printed.
//!
//! SSM is read and written with the standard AWS credential chain (an administrator's
//! credentials), not the agent's role: the role may write the client secret only (so that
//! rotation works), never the client id or the refresh token.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::stack_outputs::{self, Outputs, Overrides, Plan};
use super::Outcome;
use crate::aws::ssm::{read, write};
use crate::config::{self, AwsConfig, Config};
use crate::lwa::exchange::{ExchangeError, LwaClient};
use crate::lwa::grant::{Grant, GrantKind};

/// Where the packaged units load the Roles Anywhere files from (`LoadCredential=`); the
/// config names them `%d/rolesanywhere-…`, which only exists under systemd.
const HOST_CERTIFICATE: &str = "/etc/lwa-agent/pki/cert.pem";
const HOST_KEY: &str = "/etc/lwa-agent/pki/key.pem";
const HOST_CHAIN: &str = "/etc/lwa-agent/pki/chain.pem";

/// The group of the service's user, which must read the config.
const SERVICE_GROUP: &str = "lwa-agent";
const GROUP_FILE: &str = "/etc/group";

/// The packaged example config (`/etc/lwa-agent/lwa-agent.toml` right after installing):
/// a file equal to it holds nothing of the site's and is replaced without `--force-config`.
const PACKAGED_EXAMPLE: &str = include_str!("../../config/lwa-agent.toml");

/// The one thing left to run after a successful setup.
pub const LAST_STEP: &str = "systemctl enable --now lwa-agent.socket";

#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// The stack's outputs: a file with what `aws cloudformation describe-stacks
    /// --stack-name NAME --query 'Stacks[0].Outputs' --output json` prints (the whole
    /// describe-stacks answer works too). Not `-`: stdin carries the secrets
    #[arg(long, value_name = "FILE")]
    pub outputs: Option<PathBuf>,
    /// aws.region [default: the Region output]
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// The client id's SSM parameter [default: the ClientIdParameter output]
    #[arg(long, value_name = "NAME")]
    pub client_id_parameter: Option<String>,
    /// The client secret's SSM parameter [default: the ClientSecretParameter output]
    #[arg(long, value_name = "NAME")]
    pub client_secret_parameter: Option<String>,
    /// The refresh token's SSM parameter [default: the RefreshTokenParameter output]
    #[arg(long, value_name = "NAME")]
    pub refresh_token_parameter: Option<String>,
    /// The KMS key (id, ARN or alias/NAME) new SecureStrings are encrypted with [default:
    /// the ParameterKeyArn output]
    #[arg(long, value_name = "KEY")]
    pub key_id: Option<String>,
    /// rotation.topic_arn, the SNS topic for reminders [default: the TopicArn output]
    #[arg(long, value_name = "ARN")]
    pub topic_arn: Option<String>,
    /// aws.endpoint_url: one endpoint for every AWS service (VPC endpoints, tests); setup
    /// uses it too, and writes it into the config
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// lwa.token_url: the LWA token endpoint the values are proved at; written into the
    /// config only when given [default: https://api.amazon.com/auth/o2/token]
    #[arg(long, value_name = "URL")]
    pub token_url: Option<String>,
    /// With Roles Anywhere: the host's certificate, for the doctor run (the service gets it
    /// as %d/rolesanywhere-cert) [default: /etc/lwa-agent/pki/cert.pem]
    #[arg(long, value_name = "PATH")]
    pub certificate: Option<PathBuf>,
    /// With Roles Anywhere: the host's private key, for the doctor run (the service gets it
    /// as %d/rolesanywhere-key) [default: /etc/lwa-agent/pki/key.pem]
    #[arg(long, value_name = "PATH")]
    pub private_key: Option<PathBuf>,
    /// Write [rotation.auto] with enabled = true (needs the stack's queues). Without it,
    /// the table is written with enabled = false until the queues are registered for the
    /// app's notifications
    #[arg(long)]
    pub auto_rotation: bool,
    /// Replace an existing config that differs from what the outputs give; the old one is
    /// kept as <config>.bak. Without it an existing config is kept
    #[arg(long)]
    pub force_config: bool,
    /// Store the typed client secret even when SSM holds a different one that LWA still
    /// accepts (it may be newer: an automatic rotation or put-secret wrote it). Without
    /// it, setup refuses and writes nothing
    #[arg(long)]
    pub replace_secret: bool,
}

/// `lwa.token_url` of the config already at `path`, when it sets one.
fn existing_token_url(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let cfg = config::parse_str(&text, path).ok()?;
    (cfg.lwa.token_url != config::DEFAULT_TOKEN_URL).then_some(cfg.lwa.token_url)
}

pub fn run(args: SetupArgs, config_path: &Path) -> Outcome {
    // 1. Everything that can be wrong offline, before a secret is asked for.
    let outputs = match &args.outputs {
        None => None,
        Some(p) if p.as_os_str() == "-" => {
            return Outcome::Usage(
                "--outputs - : stdin carries the secrets, so the outputs must come from a \
                 file: save what `aws cloudformation describe-stacks --stack-name NAME --query \
                 'Stacks[0].Outputs' --output json` prints, and pass that file"
                    .into(),
            )
        }
        Some(p) => match std::fs::read_to_string(p) {
            Err(e) => {
                return Outcome::Usage(format!(
                    "cannot read the stack's outputs from {} ({e}): save what `aws \
                     cloudformation describe-stacks --stack-name NAME --query \
                     'Stacks[0].Outputs' --output json` prints, and pass that file",
                    p.display()
                ))
            }
            Ok(text) => match Outputs::parse(&text) {
                Ok(o) => Some(o),
                Err(e) => return Outcome::Usage(format!("{} {e}", p.display())),
            },
        },
    };
    let overrides = Overrides {
        region: args.region.clone(),
        client_id_parameter: args.client_id_parameter.clone(),
        client_secret_parameter: args.client_secret_parameter.clone(),
        refresh_token_parameter: args.refresh_token_parameter.clone(),
        key_id: args.key_id.clone(),
        topic_arn: args.topic_arn.clone(),
        endpoint_url: args.endpoint_url.clone(),
        // The config's own token URL counts when no flag replaces it: setup proves the
        // values where the agent will exchange them.
        token_url: args
            .token_url
            .clone()
            .or_else(|| existing_token_url(config_path)),
        auto_rotation: args.auto_rotation,
        certificate_chain: Path::new(HOST_CHAIN).exists(),
    };
    let plan = match stack_outputs::plan(outputs.as_ref(), &overrides) {
        Ok(p) => p,
        Err(e) => return Outcome::Usage(e),
    };
    // The file must pass `lwa-agent config check`: it is validated by the config loader
    // itself before anything happens, and written only as validated.
    let text = stack_outputs::config_text(&plan);
    let cfg = match config::parse_str(&text, config_path) {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Usage(format!(
                "the config that the outputs and flags give is not valid, so nothing was \
                 done; fix the output or flag behind each key:\n{e}"
            ))
        }
    };

    // 2. The secrets: a terminal without echo, or three lines on stdin.
    let values = match super::put_secret::read_secrets(&[
        "LWA client id",
        "LWA client secret",
        "LWA refresh token",
    ]) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::Usage(format!(
                "{e} (setup reads the client id, the client secret and the refresh token, one \
                 per line)"
            ))
        }
    };
    let mut values = values.into_iter();
    let (Some(client_id), Some(client_secret), Some(refresh_token)) =
        (values.next(), values.next(), values.next())
    else {
        return Outcome::Usage("three values are needed".into());
    };
    let values = Values {
        client_id,
        client_secret,
        refresh_token,
    };

    crate::logging::init_command();
    super::runtime(|| steps(args, config_path.to_path_buf(), plan, text, cfg, values))
}

struct Values {
    client_id: SecretString,
    client_secret: SecretString,
    refresh_token: SecretString,
}

async fn steps(
    args: SetupArgs,
    config_path: PathBuf,
    plan: Plan,
    text: String,
    cfg: Config,
    values: Values,
) -> Outcome {
    // 3. Prove them at LWA: a set LWA rejects is never written anywhere.
    if let Err(e) = prove(&cfg, &values).await {
        return Outcome::Failed(e);
    }
    println!("LWA accepted the client id, client secret and refresh token.");

    // 4. Store them.
    let changed = match store(&plan, &values, &cfg, args.replace_secret).await {
        Ok(changed) => changed,
        Err(e) => return Outcome::Failed(e),
    };
    drop(values);

    // 5. The config.
    let written = match write_config(&config_path, &text, args.force_config) {
        Ok(w) => w,
        Err(e) => return Outcome::Failed(e),
    };
    println!(
        "{}: {}",
        config_path.display(),
        written.describe(&config_path)
    );
    if changed == 0 && !written.changed() {
        println!("Nothing changed in SSM or in the config.");
    }

    // 6. doctor, with the config as it is now on disk (and its environment overrides).
    let mut on_disk = match config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Usage(format!(
                "the config kept at {} is not valid:\n{e}\nfix it, or run setup with \
                 --force-config to replace it (the old one is kept as .bak)",
                config_path.display()
            ))
        }
    };
    host_files(&mut on_disk, &args);
    println!(
        "The service will take its AWS credentials from {}.",
        service_credentials(&on_disk)
    );
    println!("Running lwa-agent doctor:");
    match super::doctor::run(on_disk).await {
        Outcome::Ok => {}
        Outcome::Failed(e) => {
            return Outcome::Failed(format!(
                "doctor: {e}. The values are in SSM and the config is in place: fix what \
                 doctor reports, then run `lwa-agent doctor` (or setup) again"
            ))
        }
        Outcome::Usage(e) => return Outcome::Usage(e),
    }
    println!("One step is left; run it as root:");
    println!("{LAST_STEP}");
    Outcome::Ok
}

/// Which AWS credentials the service will have, from the config as it is on disk: what
/// setup says, since setup itself runs with an administrator's.
fn service_credentials(cfg: &Config) -> String {
    if let Some(ra) = &cfg.aws.roles_anywhere {
        format!(
            "IAM Roles Anywhere (its certificate {}, handed over by the units from \
             {HOST_CERTIFICATE})",
            ra.certificate
        )
    } else if let Some(file) = &cfg.aws.credentials_file {
        format!(
            "the static keys of aws.credentials_file ({file}, handed over by the units from \
             /etc/lwa-agent/aws-credentials)"
        )
    } else {
        "the standard chain: on EC2 the instance role; anywhere else it has none of its own \
         (your AWS_PROFILE is not its): configure [aws.roles_anywhere] or \
         aws.credentials_file (docs/aws-credentials.md). Once the socket is enabled, `sudo \
         lwa-agent doctor --as-service` shows what the service really has"
            .to_string()
    }
}

async fn prove(cfg: &Config, v: &Values) -> Result<(), String> {
    let copy = |s: &SecretString| SecretString::from(s.expose_secret().to_string());
    let grant = Grant {
        client_id: copy(&v.client_id),
        client_secret: copy(&v.client_secret),
        kind: GrantKind::RefreshToken(copy(&v.refresh_token)),
    };
    let lwa = LwaClient::new(&cfg.lwa)?;
    match lwa.exchange(&grant).await {
        Ok(_) => Ok(()),
        // invalid_grant comes only once the client id and secret passed.
        Err(ExchangeError::Auth { code, description }) if code == "invalid_grant" => Err(format!(
            "LWA refused the refresh token ({code}: {description}), so nothing was written: \
             the client id and secret passed. Copy the refresh token again from authorizing \
             the app (Seller Central or the Developer Console: Authorize, or the \
             authorization code grant), then run setup again"
        )),
        Err(ExchangeError::Auth { code, description }) => Err(format!(
            "LWA rejected the client id, client secret and refresh token ({code}: \
             {description}), so nothing was written: copy the client id and secret again from \
             the app in Seller Central or the Developer Console (Develop Apps, View under LWA \
             credentials), and the refresh token from authorizing the app, then run setup \
             again"
        )),
        Err(e) => Err(format!(
            "the values could not be proved at LWA, so nothing was written: {e}"
        )),
    }
}

/// One parameter: what it holds now and what setup does with it.
enum Action {
    Create,
    Keep(i64),
    Update(i64),
}

/// Creates or updates the three SecureStrings; returns how many changed.
async fn store(
    plan: &Plan,
    v: &Values,
    cfg: &Config,
    replace_secret: bool,
) -> Result<usize, String> {
    let aws = AwsConfig {
        region: plan.region.clone(),
        endpoint_url: plan.endpoint_url.clone(),
        credentials_file: None,
        roles_anywhere: None,
    };
    crate::net::require_ca_store()?;
    let sdk = crate::aws::sdk_config(&aws, None).await;
    // Credentials first: without any, the SDK's error would point at the agent's own
    // credential sources, which are not the ones setup needs.
    if let Some(provider) = sdk.credentials_provider() {
        use aws_credential_types::provider::ProvideCredentials;
        if let Err(e) = provider.provide_credentials().await {
            return Err(format!(
                "setup found no AWS credentials ({e}), so nothing was written: \
                 {CREDENTIALS_HINT}"
            ));
        }
    }
    let client = aws_sdk_ssm::Client::new(&sdk);
    let wanted: [(&str, &SecretString, &str); 3] = [
        (
            &plan.client_id_parameter,
            &v.client_id,
            "LWA client id (lwa-agent)",
        ),
        (
            &plan.client_secret_parameter,
            &v.client_secret,
            "LWA client secret (lwa-agent)",
        ),
        (
            &plan.refresh_token_parameter,
            &v.refresh_token,
            "LWA refresh token (lwa-agent)",
        ),
    ];
    let names: Vec<String> = wanted.iter().map(|(n, _, _)| n.to_string()).collect();
    let (current, _missing) = read::read_current(&client, &names)
        .await
        .map_err(|e| format!("{e}\n{CREDENTIALS_HINT}"))?;

    // Decide for all three before writing any: a parameter that cannot be used stops the
    // run with nothing written.
    let mut actions = Vec::new();
    for (name, value, _) in &wanted {
        let action = match current.iter().find(|p| p.name == *name) {
            None => Action::Create,
            Some(p) if p.kind != "SecureString" => {
                return Err(format!(
                    "{name} exists as a {} parameter, not a SecureString, so nothing was \
                     written: a secret must be KMS-encrypted; delete it (aws ssm \
                     delete-parameter --name {name}) and run setup again",
                    p.kind
                ))
            }
            Some(p) if p.value.expose_secret() == value.expose_secret() => Action::Keep(p.version),
            Some(p) => Action::Update(p.version),
        };
        actions.push(action);
    }
    if let (Some(Action::Update(version)), false) = (actions.get(1), replace_secret) {
        let stored = current
            .iter()
            .find(|p| p.name == plan.client_secret_parameter)
            .map(|p| &p.value);
        if let Some(stored) = stored {
            refuse_older_secret(cfg, v, stored, &plan.client_secret_parameter, *version).await?;
        }
    }

    let mut changed = 0;
    for ((name, value, description), action) in wanted.iter().zip(actions) {
        let stopped = |e: String| {
            format!(
                "{e}\nsetup stopped at {name}; what is listed above is done. Fix this and run \
                 setup again: it continues where it stopped.\n{CREDENTIALS_HINT}"
            )
        };
        match action {
            Action::Keep(version) => println!("{name}: unchanged (version {version})"),
            Action::Create => {
                let version = write::create_secret(&client, name, value, &plan.key_id, description)
                    .await
                    .map_err(stopped)?;
                changed += 1;
                println!(
                    "{name}: created (version {version}, SecureString, key {})",
                    plan.key_id
                );
            }
            Action::Update(old) => {
                let written = write::rewrite_secret(&client, name, value)
                    .await
                    .map_err(stopped)?;
                changed += 1;
                println!(
                    "{name}: updated (version {old} -> {}, same key {}, tier {})",
                    written.version,
                    written.key_id.as_deref().unwrap_or("default"),
                    written.tier.as_deref().unwrap_or("Standard")
                );
            }
        }
    }
    Ok(changed)
}

/// The stored client secret differs from the typed one: refused when LWA still accepts
/// the stored one (it may be the newer), allowed when LWA rejects it (it is dead anyway).
async fn refuse_older_secret(
    cfg: &Config,
    v: &Values,
    stored: &SecretString,
    parameter: &str,
    version: i64,
) -> Result<(), String> {
    let copy = |s: &SecretString| SecretString::from(s.expose_secret().to_string());
    let grant = Grant {
        client_id: copy(&v.client_id),
        client_secret: copy(stored),
        kind: GrantKind::RefreshToken(copy(&v.refresh_token)),
    };
    let lwa = LwaClient::new(&cfg.lwa)?;
    match lwa.exchange(&grant).await {
        Ok(_) => Err(format!(
            "{parameter} (version {version}) holds a different client secret, and LWA still \
             accepts it, so nothing was written: it may be the newer secret (an automatic \
             rotation or put-secret wrote it), and the one typed an older copy that works \
             only until its 7-day overlap ends. Type the secret SSM holds (the Developer \
             Console shows the app's current secrets), or, if the typed one is the secret to \
             keep, run setup again with --replace-secret"
        )),
        Err(ExchangeError::Auth { .. } | ExchangeError::Rejected { .. }) => Ok(()),
        Err(e) => Err(format!(
            "{parameter} (version {version}) holds a different client secret, and LWA could \
             not be asked whether it still works ({e}), so nothing was written: run setup \
             again, or with --replace-secret if the typed one is the secret to keep"
        )),
    }
}

const CREDENTIALS_HINT: &str = "setup reads and writes the parameters with the standard AWS \
    credential chain (AWS_PROFILE, also an IAM Identity Center profile after `aws sso login`; \
    AWS_ACCESS_KEY_ID…), not the agent's role, which may write the client secret only: use an \
    administrator's credentials that may ssm:GetParameters and ssm:PutParameter under the \
    parameter prefix and use the stack's KMS key. sudo drops AWS_PROFILE from the \
    environment: run `sudo AWS_PROFILE=NAME lwa-agent setup …` (or `sudo -E`)";

/// What happened to the config file.
#[derive(Debug, PartialEq, Eq)]
enum ConfigWrite {
    Written(String),
    ReplacedExample(String),
    Replaced {
        mode: String,
        backup: PathBuf,
    },
    Unchanged,
    /// Kept, differing in these keys (their names only: never a value).
    Kept(Vec<String>),
}

impl ConfigWrite {
    fn changed(&self) -> bool {
        !matches!(self, ConfigWrite::Unchanged | ConfigWrite::Kept(_))
    }

    fn describe(&self, path: &Path) -> String {
        match self {
            ConfigWrite::Written(mode) => format!("written ({mode})"),
            ConfigWrite::ReplacedExample(mode) => {
                format!("written over the packaged example ({mode})")
            }
            ConfigWrite::Replaced { mode, backup } => format!(
                "written ({mode}); the old one is kept as {}",
                backup.display()
            ),
            ConfigWrite::Unchanged => "unchanged".into(),
            ConfigWrite::Kept(keys) => format!(
                "kept as it is, though it differs from what the outputs give in {}: doctor \
                 checks the kept file. To replace it, run setup again with --force-config \
                 (the old one is kept as {})",
                if keys.is_empty() {
                    "its layout only".to_string()
                } else {
                    keys.join(", ")
                },
                backup_of(path).display()
            ),
        }
    }
}

/// The dotted keys whose values differ between two configs (set in one only, or set to
/// another value), from their TOML; array elements are named by index.
fn differing_keys(old: &str, new: &str) -> Vec<String> {
    use figment::providers::{Format, Toml};
    let flat = |text: &str| -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(v) = figment::Figment::from(Toml::string(text)).extract::<figment::value::Value>()
        {
            flatten("", &v, &mut out);
        }
        out
    };
    let (a, b) = (flat(old), flat(new));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn flatten(prefix: &str, v: &figment::value::Value, out: &mut BTreeMap<String, String>) {
    use figment::value::Value;
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Dict(_, d) => {
            for (k, v) in d {
                flatten(&join(k), v, out);
            }
        }
        Value::Array(_, a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&join(&i.to_string()), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), format!("{other:?}"));
        }
    }
}

fn backup_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    PathBuf::from(s)
}

/// Writes `text` to `path` unless an equal file is there, or a different one and not
/// `force`. Atomic: a temp file in the same directory, with its final owner and mode
/// before it is renamed into place, so the agent never reads half a file or a file it
/// cannot read.
fn write_config(path: &Path, text: &str, force: bool) -> Result<ConfigWrite, String> {
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(format!(
                "cannot read the existing config {} ({e}): run setup as root, or pass \
                 --config PATH",
                path.display()
            ))
        }
    };
    Ok(match existing {
        None => ConfigWrite::Written(write_atomic(path, text, None)?),
        Some(b) if b == text.as_bytes() => ConfigWrite::Unchanged,
        Some(b) if b == PACKAGED_EXAMPLE.as_bytes() => {
            ConfigWrite::ReplacedExample(write_atomic(path, text, None)?)
        }
        Some(b) if !force => ConfigWrite::Kept(differing_keys(&String::from_utf8_lossy(&b), text)),
        Some(_) => {
            let backup = backup_of(path);
            let mode = write_atomic(path, text, Some(&backup))?;
            ConfigWrite::Replaced { mode, backup }
        }
    })
}

/// Returns the owner and mode it gave the file, for the report.
fn write_atomic(path: &Path, text: &str, backup: Option<&Path>) -> Result<String, String> {
    let fail = |what: &str, e: std::io::Error| {
        format!(
            "cannot {what} {} ({e}): run setup as root (sudo), or pass --config PATH",
            path.display()
        )
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail("create the directory of", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "lwa-agent.toml".into());
    let tmp = dir.join(format!(".{name}.setup-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail("write", e))?;
        let (mode, owner) = ownership(&f).map_err(|e| fail("set the owner of", e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("set the mode of", e))?;
        f.write_all(text.as_bytes()).map_err(|e| fail("write", e))?;
        f.sync_all().map_err(|e| fail("write", e))?;
        if let Some(backup) = backup {
            keep_backup(path, backup, &dir, &name)?;
        }
        std::fs::rename(&tmp, path).map_err(|e| fail("replace", e))?;
        Ok(format!("{mode:04o} {owner}"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    // The rename is durable only once the directory entry is on disk.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    result
}

/// The old file's own inode becomes the backup (a hard link, so owner and mode stay), put
/// in place with a rename: the config itself never goes missing.
fn keep_backup(path: &Path, backup: &Path, dir: &Path, name: &str) -> Result<(), String> {
    let link = dir.join(format!(".{name}.bak-setup-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    let fail = |e: std::io::Error| {
        format!(
            "cannot keep the old config as {} ({e}), so it was not replaced",
            backup.display()
        )
    };
    if std::fs::hard_link(path, &link).is_err() {
        // A file system without hard links: a copy (same mode; owner root).
        std::fs::copy(path, &link).map_err(fail)?;
    }
    std::fs::rename(&link, backup).map_err(|e| {
        let _ = std::fs::remove_file(&link);
        fail(e)
    })
}

/// 0640 root:lwa-agent when run as root and the service's group exists (the service reads
/// the file as user lwa-agent); else 0600 and the current owner. Looked up in /etc/group
/// directly (see `crate::accounts`).
fn ownership(f: &std::fs::File) -> std::io::Result<(u32, String)> {
    if !nix::unistd::geteuid().is_root() {
        return Ok((0o600, "owned by the current user".into()));
    }
    match crate::accounts::gid_of(SERVICE_GROUP, Path::new(GROUP_FILE)) {
        Ok(gid) => {
            std::os::unix::fs::fchown(f, Some(0), Some(gid))?;
            Ok((0o640, format!("root:{SERVICE_GROUP}")))
        }
        Err(_) => Ok((
            0o600,
            format!(
                "root:root; group {SERVICE_GROUP} does not exist yet, so the service cannot \
                 read it: install the package, then chgrp {SERVICE_GROUP} and chmod 0640 it"
            ),
        )),
    }
}

/// The Roles Anywhere files for the doctor run. The config names them `%d/…`, which only
/// systemd resolves (LoadCredential=); outside systemd, doctor reads the files the unit
/// loads, or the ones given with --certificate and --private-key.
fn host_files(cfg: &mut Config, args: &SetupArgs) {
    let Some(ra) = cfg.aws.roles_anywhere.as_mut() else {
        return;
    };
    let unresolved = |p: &str| config::resolve_credential_path(p).is_err();
    let pick = |path: &mut String, flag: &Option<PathBuf>, default: &str| {
        if let Some(f) = flag {
            *path = f.display().to_string();
        } else if unresolved(path) {
            *path = default.to_string();
        }
    };
    pick(&mut ra.certificate, &args.certificate, HOST_CERTIFICATE);
    pick(&mut ra.private_key, &args.private_key, HOST_KEY);
    if ra.certificate_chain.as_deref().is_some_and(unresolved) {
        ra.certificate_chain = Some(HOST_CHAIN.to_string()).filter(|p| Path::new(p).exists());
    }
    println!(
        "doctor uses the Roles Anywhere certificate {} and key {}",
        ra.certificate, ra.private_key
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_written_kept_or_replaced_with_a_backup_and_never_touched_when_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/lwa-agent.toml");
        let w = write_config(&path, "a = 1\n", false).unwrap();
        assert!(matches!(w, ConfigWrite::Written(_)), "{w:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 1\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert!(mode == 0o640 || mode == 0o600, "{mode:o}");

        let before = std::fs::metadata(&path).unwrap();
        assert_eq!(
            write_config(&path, "a = 1\n", true).unwrap(),
            ConfigWrite::Unchanged
        );
        let after = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ino(), after.ino(), "an equal file is not rewritten");

        assert_eq!(
            write_config(&path, "a = 2\n", false).unwrap(),
            ConfigWrite::Kept(vec!["a".to_string()])
        );
        assert_eq!(
            differing_keys(
                "[aws]\nregion = \"x\"\n[[credentials]]\nname = \"a\"\n",
                "[aws]\nregion = \"y\"\nendpoint_url = \"u\"\n[[credentials]]\nname = \"a\"\n"
            ),
            vec!["aws.endpoint_url", "aws.region"],
            "names, never values"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 1\n");

        let w = write_config(&path, "a = 2\n", true).unwrap();
        assert!(matches!(w, ConfigWrite::Replaced { .. }), "{w:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\n");
        assert_eq!(
            std::fs::read_to_string(backup_of(&path)).unwrap(),
            "a = 1\n"
        );
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "no temp file left: {left:?}");

        // The packaged example holds nothing of the site's: replaced without --force-config.
        std::fs::write(&path, PACKAGED_EXAMPLE).unwrap();
        let w = write_config(&path, "a = 3\n", false).unwrap();
        assert!(matches!(w, ConfigWrite::ReplacedExample(_)), "{w:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 3\n");
    }
}
