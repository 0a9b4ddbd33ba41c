//! Reading the credentials' SecureStrings from SSM Parameter Store.

use std::time::SystemTime;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use secrecy::{ExposeSecret, SecretString};

/// How a problem of [`fetch`] begins when SSM has no parameter of that name.
pub const NOT_FOUND: &str = "not found in SSM Parameter Store";

/// GetParameters takes at most 10 names per call.
pub const MAX_NAMES_PER_CALL: usize = 10;

/// A decrypted parameter. `value` is zeroized on drop and never printed.
pub struct Parameter {
    pub name: String,
    pub value: SecretString,
    pub version: i64,
    pub last_modified: Option<SystemTime>,
    pub kind: String,
}

impl std::fmt::Debug for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parameter")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// What one read of all parameters gave: values, and per-parameter problems.
#[derive(Debug, Default)]
pub struct Fetched {
    pub parameters: Vec<Parameter>,
    pub problems: Vec<(String, String)>,
    pub calls: u64,
}

/// Reads `names` with decryption, 10 per call. A call that fails as a whole because of one
/// parameter (a KMS key the role may not use, say) is retried name by name so that the
/// problem is pinned on that parameter and the others still load. A failure to reach SSM
/// at all is returned as `Err`.
pub async fn fetch(client: &aws_sdk_ssm::Client, names: &[String]) -> Result<Fetched, String> {
    let mut out = Fetched::default();
    for chunk in names.chunks(MAX_NAMES_PER_CALL) {
        out.calls += 1;
        match get_parameters(client, chunk).await {
            Ok((params, invalid)) => {
                out.parameters.extend(params);
                out.problems.extend(invalid.into_iter().map(|n| {
                    (
                        n,
                        format!(
                            "{NOT_FOUND}: create it (aws ssm put-parameter --type \
                             SecureString) or fix the name in the config"
                        ),
                    )
                }));
            }
            Err(e) if e.reachable && chunk.len() > 1 => {
                for name in chunk {
                    out.calls += 1;
                    match get_parameters(client, std::slice::from_ref(name)).await {
                        Ok((params, invalid)) => {
                            out.parameters.extend(params);
                            if !invalid.is_empty() {
                                out.problems.push((name.clone(), NOT_FOUND.to_string()));
                            }
                        }
                        Err(e) if e.reachable => out.problems.push((name.clone(), e.message)),
                        Err(e) => return Err(e.message),
                    }
                }
            }
            Err(e) if e.reachable => {
                out.problems
                    .extend(chunk.iter().map(|n| (n.clone(), e.message.clone())));
            }
            Err(e) => return Err(e.message),
        }
    }
    Ok(out)
}

struct CallError {
    /// SSM answered (with an error about the request); false when it could not be reached.
    reachable: bool,
    message: String,
}

async fn get_parameters(
    client: &aws_sdk_ssm::Client,
    names: &[String],
) -> Result<(Vec<Parameter>, Vec<String>), CallError> {
    let out = client
        .get_parameters()
        .set_names(Some(names.to_vec()))
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            let d = super::error::describe(
                &e,
                &super::error::Call {
                    what: "SSM GetParameters",
                    permission: "ssm:GetParameters on the parameters and kms:Decrypt on their key",
                },
            );
            // Throttling, server faults and an unreachable SSM say nothing about this
            // parameter: they fail the whole read, which then backs off and retries,
            // instead of being pinned on a parameter and left until the next
            // refresh_interval. So do credential problems: they concern every parameter.
            let reachable = matches!(
                d.class,
                super::error::Class::Service | super::error::Class::AccessDenied
            );
            CallError {
                reachable,
                message: d.line,
            }
        })?;
    let params = out
        .parameters
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(Parameter {
                name: p.name?,
                value: SecretString::from(p.value.unwrap_or_default()),
                version: p.version,
                last_modified: p
                    .last_modified_date
                    .and_then(|d| SystemTime::try_from(d).ok()),
                kind: p.r#type.map(|t| t.as_str().to_string()).unwrap_or_default(),
            })
        })
        .collect();
    Ok((params, out.invalid_parameters.unwrap_or_default()))
}

/// A parameter's metadata from DescribeParameters (no value).
#[derive(Debug, Clone)]
pub struct Metadata {
    pub name: String,
    pub version: i64,
    pub last_modified: Option<SystemTime>,
    pub key_id: Option<String>,
    pub tier: Option<String>,
    pub description: Option<String>,
    /// (type, text) as SSM returned them; see `rotation::policies` for the two shapes.
    pub policies: Vec<(Option<String>, Option<String>)>,
}

/// DescribeParameters for exactly these names, 10 per call, all pages. Names that do not
/// exist are simply absent from the answer.
pub async fn describe(
    client: &aws_sdk_ssm::Client,
    names: &[String],
) -> Result<(Vec<Metadata>, u64), String> {
    use aws_sdk_ssm::types::ParameterStringFilter;
    let mut out = Vec::new();
    let mut calls = 0;
    for chunk in names.chunks(MAX_NAMES_PER_CALL) {
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .set_values(Some(chunk.to_vec()))
            .build()
            .map_err(|e| format!("cannot build the DescribeParameters filter: {e}"))?;
        let mut token: Option<String> = None;
        loop {
            calls += 1;
            let page = client
                .describe_parameters()
                .parameter_filters(filter.clone())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    super::error::describe(
                        &e,
                        &super::error::Call {
                            what: "SSM DescribeParameters",
                            permission: "ssm:DescribeParameters",
                        },
                    )
                    .line
                })?;
            for p in page.parameters.unwrap_or_default() {
                let Some(name) = p.name else { continue };
                out.push(Metadata {
                    name,
                    version: p.version,
                    last_modified: p
                        .last_modified_date
                        .and_then(|d| SystemTime::try_from(d).ok()),
                    key_id: p.key_id,
                    tier: p.tier.map(|t| t.as_str().to_string()),
                    description: p.description,
                    policies: p
                        .policies
                        .unwrap_or_default()
                        .into_iter()
                        .map(|pol| (pol.policy_type, pol.policy_text))
                        .collect(),
                });
            }
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
    }
    Ok((out, calls))
}

/// Creates `name` only if it does not exist yet. `Ok(true)`: created (we hold the lock);
/// `Ok(false)`: it existed (another host took it).
pub async fn create_marker(
    client: &aws_sdk_ssm::Client,
    name: &str,
    value: &str,
) -> Result<bool, String> {
    match client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(false)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ParameterAlreadyExists") => Ok(false),
        Err(e) => Err(super::error::describe(
            &e,
            &super::error::Call {
                what: &format!("SSM PutParameter of the fleet lock {name}"),
                permission: "ssm:PutParameter on rotation.fleet_lock_prefix",
            },
        )
        .line),
    }
}

/// Sets a String parameter under the fleet prefix, whether or not it exists (a record,
/// not a lock: see [`create_marker`] for those).
pub async fn set_marker(
    client: &aws_sdk_ssm::Client,
    name: &str,
    value: &str,
) -> Result<(), String> {
    client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            super::error::describe(
                &e,
                &super::error::Call {
                    what: &format!("SSM PutParameter of the fleet record {name}"),
                    permission: "ssm:PutParameter on rotation.fleet_lock_prefix",
                },
            )
            .line
        })
}

/// What [`rewrite_secret`] wrote.
#[derive(Debug, Clone)]
pub struct Rewritten {
    pub version: i64,
    pub key_id: Option<String>,
    pub tier: Option<String>,
    /// Policies the new value does not keep, each with why (see [`policy_rewrite`]).
    pub dropped_policies: Vec<String>,
}

/// Overwrites a SecureString with a new value the way a rotation must: the parameter's
/// existing KMS key, tier, description and lasting policies are kept, so a rotation never
/// silently moves a secret to the default key; its dated policies are dropped
/// ([`policy_rewrite`]) and named in the answer. Used by `put-secret` and by the
/// automatic rotation; the caller has proved the value first.
pub async fn rewrite_secret(
    client: &aws_sdk_ssm::Client,
    parameter: &str,
    value: &SecretString,
) -> Result<Rewritten, String> {
    let (metas, _) = describe(client, &[parameter.to_string()]).await?;
    let meta = metas
        .into_iter()
        .next()
        .ok_or_else(|| format!("{parameter} disappeared from SSM: create it again, then retry"))?;
    let policies = policy_rewrite(&meta.policies);
    let mut put = client
        .put_parameter()
        .name(parameter)
        .value(value.expose_secret())
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .set_key_id(meta.key_id.clone())
        .set_description(meta.description.clone());
    if let Some(tier) = &meta.tier {
        put = put.tier(aws_sdk_ssm::types::ParameterTier::from(tier.as_str()));
    }
    if let Some(p) = &policies.send {
        put = put.policies(p);
    }
    let written = put.send().await.map_err(|e| {
        super::error::describe(
            &e,
            &super::error::Call {
                what: &format!("SSM PutParameter on {parameter}"),
                permission: "ssm:PutParameter on the parameter and kms:Encrypt \
                             (kms:GenerateDataKey for the Advanced tier) on its key",
            },
        )
        .line
    })?;
    Ok(Rewritten {
        version: written.version,
        key_id: meta.key_id,
        tier: meta.tier,
        dropped_policies: policies.dropped,
    })
}

/// The current values of `names` (at most 10, one call) with decryption, and the names
/// that do not exist. Unlike [`fetch`], any failure is an error: `setup` must know what is
/// there before it writes anything.
pub async fn read_current(
    client: &aws_sdk_ssm::Client,
    names: &[String],
) -> Result<(Vec<Parameter>, Vec<String>), String> {
    debug_assert!(names.len() <= MAX_NAMES_PER_CALL);
    get_parameters(client, names).await.map_err(|e| e.message)
}

/// Creates a SecureString encrypted with `key_id`, only if `name` does not exist yet
/// (`Overwrite` false: a value someone else wrote meanwhile is never replaced unseen).
/// Returns the new version.
pub async fn create_secret(
    client: &aws_sdk_ssm::Client,
    name: &str,
    value: &SecretString,
    key_id: &str,
    description: &str,
) -> Result<i64, String> {
    match client
        .put_parameter()
        .name(name)
        .value(value.expose_secret())
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .key_id(key_id)
        .description(description)
        .overwrite(false)
        .send()
        .await
    {
        Ok(out) => Ok(out.version),
        Err(e) if e.code() == Some("ParameterAlreadyExists") => Err(format!(
            "{name} was created by someone else while setup ran: run setup again, it compares \
             the values first"
        )),
        Err(e) => Err(super::error::describe(
            &e,
            &super::error::Call {
                what: &format!("SSM PutParameter creating {name}"),
                permission: "ssm:PutParameter on the parameter and kms:Encrypt on the key \
                             (setup uses the standard AWS credential chain: an \
                             administrator's credentials, not the agent's role)",
            },
        )
        .line),
    }
}

/// What a rewrite does with the parameter's policies.
#[derive(Debug, Default, PartialEq, Eq)]
struct PolicyRewrite {
    /// The `Policies` to send with the new value; `None` leaves SSM's as they are.
    send: Option<String>,
    /// Each policy the new value does not keep, with why, for the caller to say.
    dropped: Vec<String>,
}

/// SSM's way to remove every policy of a parameter on PutParameter ("an empty policy of
/// brackets and curly braces"); sending no policies would keep them.
const NO_POLICIES: &str = "[{}]";

/// Which policies survive a new value. `Expiration` and `ExpirationNotification` carry an
/// absolute date that belonged to the old secret: sent again, SSM would delete the new
/// secret (or warn of that) at the old secret's date, so they are dropped. The others
/// (`NoChangeNotification`, counted from the last change) are sent again.
///
/// Both shapes of SPEC §8 are read: AWS's JSON texts, and moto's Python repr, which is
/// sent back as the JSON it stands for. A policy that cannot be read is kept by sending no
/// policies at all, unless a dated one must go; then it is dropped too, and said so: a
/// policy that would delete the new secret is the greater harm.
fn policy_rewrite(policies: &[(Option<String>, Option<String>)]) -> PolicyRewrite {
    let mut kept = Vec::new();
    let mut unreadable = Vec::new();
    let mut dropped = Vec::new();
    for (kind, text) in policies {
        let name = crate::rotation::policies::policy_type(kind.as_deref(), text.as_deref())
            .unwrap_or_else(|| "unknown".to_string());
        if name == "Expiration" || name == "ExpirationNotification" {
            dropped.push(format!(
                "{name} (its date belonged to the old secret; set a new one if you want it)"
            ));
            continue;
        }
        match [text, kind]
            .into_iter()
            .flatten()
            .find_map(|t| policy_json(t))
        {
            Some(json) => kept.push(json),
            None => unreadable.push(name),
        }
    }
    if dropped.is_empty() {
        return PolicyRewrite {
            send: (unreadable.is_empty() && !kept.is_empty())
                .then(|| serde_json::Value::Array(kept).to_string()),
            dropped,
        };
    }
    dropped.extend(unreadable.into_iter().map(|name| {
        format!("{name} (its text could not be read back, and the dated policies had to go)")
    }));
    PolicyRewrite {
        send: Some(if kept.is_empty() {
            NO_POLICIES.to_string()
        } else {
            serde_json::Value::Array(kept).to_string()
        }),
        dropped,
    }
}

/// A policy text as JSON: AWS's as it is, moto's Python repr with its quotes turned.
fn policy_json(text: &str) -> Option<serde_json::Value> {
    let parsed = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .or_else(|| {
            // Only a plain repr (no double quotes or escapes in it) is turned.
            (!text.contains(['"', '\\']))
                .then(|| serde_json::from_str(&text.replace('\'', "\"")).ok())
                .flatten()
        })?;
    parsed.get("Type").is_some().then_some(parsed)
}

/// Whether a (create-only) marker parameter exists, and what it says: for dry runs, which
/// must not take it.
pub async fn marker(client: &aws_sdk_ssm::Client, name: &str) -> Result<Option<String>, String> {
    match client.get_parameter().name(name).send().await {
        Ok(out) => Ok(out.parameter.and_then(|p| p.value)),
        Err(e) if e.code() == Some("ParameterNotFound") => Ok(None),
        Err(e) => Err(super::error::describe(
            &e,
            &super::error::Call {
                what: &format!("SSM GetParameter of the fleet lock {name}"),
                permission: "ssm:GetParameter on rotation.fleet_lock_prefix",
            },
        )
        .line),
    }
}

/// Every String parameter directly under `path`, as (name, value): the fleet's
/// registrations. Paged, so any number of hosts fits.
pub async fn markers_under(
    client: &aws_sdk_ssm::Client,
    path: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_parameters_by_path()
            .path(path)
            .recursive(false)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| {
                super::error::describe(
                    &e,
                    &super::error::Call {
                        what: &format!("SSM GetParametersByPath under {path}"),
                        permission: "ssm:GetParametersByPath on rotation.fleet_lock_prefix",
                    },
                )
                .line
            })?;
        for p in page.parameters.unwrap_or_default() {
            if let (Some(name), Some(value)) = (p.name, p.value) {
                out.push((name, value));
            }
        }
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
}

/// Removes a marker again (a step that failed gives its turn back).
pub async fn delete_marker(client: &aws_sdk_ssm::Client, name: &str) -> Result<(), String> {
    match client.delete_parameter().name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ParameterNotFound") => Ok(()),
        Err(e) => Err(super::error::describe(
            &e,
            &super::error::Call {
                what: &format!("SSM DeleteParameter of the fleet lock {name}"),
                permission: "ssm:DeleteParameter on rotation.fleet_lock_prefix",
            },
        )
        .line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(kind: &str, text: &str) -> (Option<String>, Option<String>) {
        (Some(kind.to_string()), Some(text.to_string()))
    }

    fn moto(repr: &str) -> (Option<String>, Option<String>) {
        (Some(repr.to_string()), Some(repr.to_string()))
    }

    /// What is sent, as JSON (key order aside).
    fn sent(got: &PolicyRewrite) -> serde_json::Value {
        serde_json::from_str(got.send.as_deref().expect("policies sent")).expect("JSON")
    }

    fn json(texts: &[&str]) -> serde_json::Value {
        serde_json::Value::Array(
            texts
                .iter()
                .map(|t| serde_json::from_str(t).expect("JSON"))
                .collect(),
        )
    }

    const NO_CHANGE: &str = r#"{"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"30","Unit":"Days"}}"#;
    const EXPIRATION: &str = r#"{"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2026-12-02T21:34:33.000Z"}}"#;
    const EXPIRATION_NOTE: &str = r#"{"Type":"ExpirationNotification","Version":"1.0","Attributes":{"Before":"15","Unit":"Days"}}"#;

    #[test]
    fn lasting_policies_are_sent_back_as_they_are() {
        let got = policy_rewrite(&[aws("NoChangeNotification", NO_CHANGE)]);
        assert_eq!(sent(&got), json(&[NO_CHANGE]));
        assert!(got.dropped.is_empty());
        assert_eq!(policy_rewrite(&[]), PolicyRewrite::default());
    }

    #[test]
    fn dated_policies_are_dropped_in_the_aws_shape() {
        let got = policy_rewrite(&[
            aws("Expiration", EXPIRATION),
            aws("NoChangeNotification", NO_CHANGE),
            aws("ExpirationNotification", EXPIRATION_NOTE),
        ]);
        assert_eq!(sent(&got), json(&[NO_CHANGE]));
        assert_eq!(got.dropped.len(), 2, "{:?}", got.dropped);
        assert!(got.dropped[0].starts_with("Expiration (its date belonged to the old secret"));
        assert!(got.dropped[1].starts_with("ExpirationNotification ("));
        // Only dated ones: every policy is removed, the way SSM removes them.
        let got = policy_rewrite(&[aws("Expiration", EXPIRATION)]);
        assert_eq!(got.send.as_deref(), Some(NO_POLICIES));
        assert_eq!(got.dropped.len(), 1);
    }

    #[test]
    fn dated_policies_are_dropped_in_the_moto_shape() {
        let no_change = "{'Type': 'NoChangeNotification', 'Version': '1.0', 'Attributes': {'After': '30', 'Unit': 'Days'}}";
        let expiration = "{'Type': 'Expiration', 'Version': '1.0', 'Attributes': {'Timestamp': '2026-12-02T21:34:33.000Z'}}";
        let got = policy_rewrite(&[moto(expiration), moto(no_change)]);
        assert_eq!(sent(&got), json(&[NO_CHANGE]));
        assert_eq!(got.dropped.len(), 1);
        assert!(got.dropped[0].starts_with("Expiration ("));
        // Without a dated policy, moto's are sent back as JSON too.
        assert!(policy_rewrite(&[moto(no_change)]).send.is_some());
    }

    #[test]
    fn an_unreadable_policy_is_kept_unless_a_dated_one_must_go() {
        let odd = aws("NoChangeNotification", "not a policy text");
        let got = policy_rewrite(&[odd.clone(), aws("NoChangeNotification", NO_CHANGE)]);
        assert_eq!(got.send, None, "SSM keeps them all as they are");
        let got = policy_rewrite(&[odd, aws("Expiration", EXPIRATION)]);
        assert_eq!(got.send.as_deref(), Some(NO_POLICIES));
        assert_eq!(got.dropped.len(), 2, "{:?}", got.dropped);
        assert!(got.dropped[1].starts_with("NoChangeNotification (its text could not be read"));
    }
}
