//! `lwa-agent put-secret`: rotate one LWA value safely. The new value comes from stdin
//! (never argv), is proved with a real LWA exchange before anything is written, is stored
//! as a SecureString with the parameter's existing KMS key, tier and lasting policies (the
//! old secret's dated `Expiration` policies are dropped, and named), and the running agent
//! is reloaded and confirmed to serve tokens from the new version.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::ValueEnum;
use hyper::Method;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::client::{error_message, request};
use super::Outcome;
use crate::aws::ssm::{read, write};
use crate::config::{Config, CredentialConfig};
use crate::lwa::exchange::LwaClient;
use crate::lwa::grant::GrantKind;
use crate::lwa::parameters::ParameterStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Field {
    ClientSecret,
    RefreshToken,
    ClientId,
}

fn parameter_of(cred: &CredentialConfig, field: Field) -> Result<String, String> {
    let name = match field {
        Field::ClientSecret => "client_secret",
        Field::RefreshToken => "refresh_token",
        Field::ClientId => "client_id",
    };
    cred.fields()
        .find(|(f, _)| *f == name)
        .map(|(_, p)| p.to_string())
        .ok_or_else(|| {
            format!(
                "credential `{}` is grantless (scopes) and has no refresh token",
                cred.name
            )
        })
}

/// Reads the value without echo on a terminal, or all of stdin from a pipe.
fn read_value(field: Field) -> Result<SecretString, String> {
    let label = format!("New {field:?}");
    let mut values = read_secrets(&[label.as_str()])?;
    Ok(values.remove(0))
}

/// Reads one secret per label: on a terminal each after a prompt, without echo; from a
/// pipe one line each, in order, and nothing else. Never from argv or the environment
/// (they show in `ps` and /proc). Empty values and extra lines are refused: a stray line
/// must not shift a secret into the wrong parameter. Shared by `put-secret` and `setup`.
pub(super) fn read_secrets(labels: &[&str]) -> Result<Vec<SecretString>, String> {
    if std::io::stdin().is_terminal() {
        let mut out = Vec::with_capacity(labels.len());
        for label in labels {
            let text = Zeroizing::new(
                rpassword::prompt_password(format!("{label} (input is not shown): "))
                    .map_err(|e| format!("cannot read from the terminal: {e}"))?,
            );
            let value = text.trim();
            if value.is_empty() {
                return Err(format!(
                    "nothing was entered for {label}: nothing was changed"
                ));
            }
            out.push(SecretString::from(value.to_string()));
        }
        return Ok(out);
    }
    let mut buf = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut buf)
        .map_err(|e| format!("cannot read the values from stdin: {e}"))?;
    split_lines(&buf, labels.len())
}

/// Exactly `n` non-empty lines (a final newline optional), each trimmed.
fn split_lines(text: &str, n: usize) -> Result<Vec<SecretString>, String> {
    let text = text.trim_end_matches(['\r', '\n']);
    let lines: Vec<&str> = if text.trim().is_empty() {
        Vec::new()
    } else {
        text.split('\n').map(|l| l.trim()).collect()
    };
    if n == 1 {
        match lines.len() {
            0 => {
                return Err(
                    "no value on stdin: pipe the new value in, or type it at the prompt".into(),
                )
            }
            1 => {}
            _ => return Err("the value has more than one line: give exactly one value".into()),
        }
    } else if lines.len() != n {
        return Err(format!(
            "stdin has {} line{}, not {n}: give one value per line, in the order asked",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" }
        ));
    }
    if let Some(i) = lines.iter().position(|l| l.is_empty()) {
        return Err(format!(
            "line {} of stdin is empty: give one value per line, in the order asked",
            i + 1
        ));
    }
    Ok(lines
        .into_iter()
        .map(|l| SecretString::from(l.to_string()))
        .collect())
}

pub async fn run(
    cfg: Config,
    credential: String,
    field: Field,
    socket: Option<PathBuf>,
) -> Outcome {
    let Some(cred) = cfg.credential(&credential).cloned() else {
        let names: Vec<&str> = cfg.credentials.iter().map(|c| c.name.as_str()).collect();
        return Outcome::Usage(format!(
            "no credential named `{credential}` in {}: use one of {}",
            cfg.file.display(),
            names.join(", ")
        ));
    };
    let parameter = match parameter_of(&cred, field) {
        Ok(p) => p,
        Err(e) => return Outcome::Usage(e),
    };
    let value = match read_value(field) {
        Ok(v) => v,
        Err(e) => return Outcome::Usage(e),
    };
    match rotate(&cfg, &cred, field, &parameter, value, socket).await {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::Failed(e),
    }
}

async fn rotate(
    cfg: &Config,
    cred: &CredentialConfig,
    field: Field,
    parameter: &str,
    value: SecretString,
    socket: Option<PathBuf>,
) -> Result<(), String> {
    let (sdk, _) = crate::aws::connect(&cfg.aws).await?;
    let client = aws_sdk_ssm::Client::new(&sdk);

    // 1. Prove the new value at LWA with the other current values.
    let names: Vec<String> = cred.parameters().map(String::from).collect();
    let fetched = read::fetch(&client, &names).await?;
    if let Some((name, problem)) = fetched.problems.first() {
        return Err(format!("cannot read {name}: {problem}"));
    }
    let store = ParameterStore::new(names);
    store.load_fetched(fetched);
    let (mut grant, _) = store.grant(cred)?;
    let new = || SecretString::from(value.expose_secret().to_string());
    match field {
        Field::ClientSecret => grant.client_secret = new(),
        Field::ClientId => grant.client_id = new(),
        Field::RefreshToken => grant.kind = GrantKind::RefreshToken(new()),
    }
    let lwa = LwaClient::new(&cfg.lwa)?;
    lwa.exchange(&grant).await.map_err(|e| {
        format!("LWA did not accept the new value, so nothing was written to SSM: {e}")
    })?;
    println!("LWA accepted the new value.");

    // 2. Write it with the same key, tier and lasting policies.
    let written = write::rewrite_secret(&client, parameter, &value).await?;
    let version = written.version;
    println!(
        "Wrote {parameter} version {version} (SecureString, key {}, tier {}).",
        written.key_id.as_deref().unwrap_or("default"),
        written.tier.as_deref().unwrap_or("Standard")
    );
    for dropped in &written.dropped_policies {
        println!("Dropped the parameter policy {dropped}.");
    }
    let written_at = SystemTime::now();

    // 3. Reload the running agent and confirm it serves tokens from the new version.
    let socket = socket.unwrap_or_else(|| cfg.socket.path.clone());
    let reload = match request(&socket, Method::POST, "/v1/reload").await {
        Ok(a) => a,
        Err(e) => {
            println!(
                "The agent was not reloaded ({e}). It picks the new version up within \
                 ssm.refresh_interval, or run: systemctl reload lwa-agent"
            );
            return Ok(());
        }
    };
    if reload.status != 200 {
        return Err(format!(
            "the new value is in SSM, but the agent's reload failed ({}): {}",
            reload.status,
            error_message(&reload)
        ));
    }
    confirm(&socket, &cred.name, parameter, version, written_at).await?;
    println!(
        "The agent now serves tokens for `{}` from version {version}.",
        cred.name
    );
    Ok(())
}

async fn confirm(
    socket: &std::path::Path,
    credential: &str,
    parameter: &str,
    version: i64,
    written_at: SystemTime,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = humantime::format_rfc3339_seconds(written_at).to_string();
    loop {
        if let Ok(a) = request(socket, Method::GET, "/v1/status").await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&a.body) {
                let seen = v["parameters"][parameter]["version"].as_i64() == Some(version);
                let c = &v["credentials"][credential];
                let refreshed = c["last_refresh"]
                    .as_str()
                    .is_some_and(|t| t >= written.as_str());
                let valid = c["token"]["valid"].as_bool() == Some(true);
                if seen && refreshed && valid {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the new value is in SSM, but the agent did not serve a token from version \
                 {version} within 30s: check `lwa-agent status` and journalctl -u lwa-agent"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str, n: usize) -> Result<Vec<String>, String> {
        split_lines(text, n).map(|v| v.iter().map(|s| s.expose_secret().to_string()).collect())
    }

    #[test]
    fn stdin_gives_exactly_one_value_per_line_in_order() {
        assert_eq!(values("a\nb\nc\n", 3).unwrap(), ["a", "b", "c"]);
        assert_eq!(values(" a \r\nb\r\nc", 3).unwrap(), ["a", "b", "c"]);
        assert_eq!(values("only\n", 1).unwrap(), ["only"]);
        assert!(values("a\nb\n", 3).unwrap_err().contains("2 lines, not 3"));
        assert!(values("a\nb\nc\nd\n", 3).unwrap_err().contains("4 lines"));
        assert!(values("a\n\nc\n", 3)
            .unwrap_err()
            .contains("line 2 of stdin is empty"));
        assert!(values("", 3).unwrap_err().contains("0 lines"));
        assert!(values("\n", 1).unwrap_err().contains("no value on stdin"));
        assert!(values("a\nb\n", 1)
            .unwrap_err()
            .contains("more than one line"));
    }

    #[test]
    fn a_refused_input_never_names_its_values() {
        for (text, n) in [
            ("s3cret\nx\n", 3),
            ("s3cret\n\ns3cret\n", 3),
            ("s3cret\nx", 1),
        ] {
            assert!(!values(text, n).unwrap_err().contains("s3cret"));
        }
    }
}
