//! Writing SecureStrings: `setup` creates them, `put-secret` and the automatic rotation
//! replace a client secret keeping its key, tier and lasting policies.

use aws_sdk_ssm::error::ProvideErrorMetadata;
use secrecy::{ExposeSecret, SecretString};

use super::policies;
use super::read::describe;
use crate::aws::error;

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
        error::describe(
            &e,
            &error::Call {
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
        Err(e) => Err(error::describe(
            &e,
            &error::Call {
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
/// Both shapes (docs/design.md, "Contracts") are read: AWS's JSON texts, and moto's Python
/// repr, which is sent back as the JSON it stands for. A policy that cannot be read is kept by sending no
/// policies at all, unless a dated one must go; then it is dropped too, and said so: a
/// policy that would delete the new secret is the greater harm.
fn policy_rewrite(policies: &[(Option<String>, Option<String>)]) -> PolicyRewrite {
    let mut kept = Vec::new();
    let mut unreadable = Vec::new();
    let mut dropped = Vec::new();
    for (kind, text) in policies {
        let name = policies::policy_type(kind.as_deref(), text.as_deref())
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
