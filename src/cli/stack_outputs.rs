//! `lwa-agent setup`'s pure half: the CloudFormation stack's outputs
//! (packaging/aws/lwa-agent.yaml) and setup's flags in, the agent's config text out. No
//! I/O, so every shape and every missing key is unit-tested here.
//!
//! The outputs come as the JSON that the aws CLI prints, not from a CloudFormation client:
//! an SDK crate for one DescribeStacks call would grow the static binary for nothing the
//! CLI cannot already do, on a machine where the administrator runs `aws` anyway to deploy
//! the stack.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

/// The stack's outputs by `OutputKey`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs(BTreeMap<String, String>);

#[derive(Deserialize)]
struct Output {
    #[serde(rename = "OutputKey")]
    key: String,
    #[serde(rename = "OutputValue", default)]
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Shape {
    /// `describe-stacks --query 'Stacks[0].Outputs'`
    List(Vec<Output>),
    /// The whole `describe-stacks` answer.
    Stacks {
        #[serde(rename = "Stacks")]
        stacks: Vec<serde_json::Value>,
    },
    /// `describe-stacks --query 'Stacks[0]'`
    Stack(serde_json::Value),
}

/// What `null` outputs mean, and what to do.
const NO_OUTPUTS: &str = "holds `null`: the stack has no outputs yet. It is still being \
    created or updated (wait: aws cloudformation wait stack-create-complete --stack-name \
    NAME), or it failed and rolled back (aws cloudformation describe-stack-events \
    --stack-name NAME says why). Describe it again once it is CREATE_COMPLETE or \
    UPDATE_COMPLETE";

const HOW: &str = "save what `aws cloudformation describe-stacks --stack-name NAME --query \
                   'Stacks[0].Outputs' --output json` prints and pass that file";

impl Outputs {
    /// Parses either JSON shape the aws CLI gives: the list of `{OutputKey, OutputValue}`
    /// (`--query 'Stacks[0].Outputs'`), or the whole `describe-stacks` answer with exactly
    /// one stack (a single stack object works too).
    pub fn parse(json: &str) -> Result<Outputs, String> {
        if json.trim() == "null" {
            return Err(NO_OUTPUTS.to_string());
        }
        let shape: Shape = serde_json::from_str(json)
            .map_err(|e| format!("is not the JSON of a stack's outputs ({e}): {HOW}"))?;
        let list = match shape {
            Shape::List(list) => list,
            Shape::Stacks { stacks } => match stacks.as_slice() {
                [stack] => stack_outputs(stack)?,
                _ => {
                    return Err(format!(
                        "describes {} stacks, not one: pass --stack-name to describe-stacks, \
                         or {HOW}",
                        stacks.len()
                    ))
                }
            },
            Shape::Stack(stack) => stack_outputs(&stack)?,
        };
        let mut map = BTreeMap::new();
        for o in list {
            if let Some(v) = o.value {
                map.insert(o.key, v);
            }
        }
        Ok(Outputs(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    #[cfg(test)]
    fn from_pairs(pairs: &[(&str, &str)]) -> Outputs {
        Outputs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

fn stack_outputs(stack: &serde_json::Value) -> Result<Vec<Output>, String> {
    if !stack.is_object() {
        return Err(format!("is not the JSON of a stack's outputs: {HOW}"));
    }
    match stack.get("Outputs") {
        Some(serde_json::Value::Null) => Err(NO_OUTPUTS.to_string()),
        Some(list) => serde_json::from_value(list.clone())
            .map_err(|e| format!("has Outputs that are not a list of OutputKey/OutputValue ({e})")),
        None => Err(format!(
            "describes a stack without outputs (StackStatus {}): wait until the stack is \
             CREATE_COMPLETE or UPDATE_COMPLETE, then describe it again",
            stack
                .get("StackStatus")
                .and_then(|s| s.as_str())
                .unwrap_or("unknown")
        )),
    }
}

/// What the flags say; each replaces its output.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub region: Option<String>,
    pub client_id_parameter: Option<String>,
    pub client_secret_parameter: Option<String>,
    pub refresh_token_parameter: Option<String>,
    pub key_id: Option<String>,
    pub topic_arn: Option<String>,
    pub endpoint_url: Option<String>,
    pub token_url: Option<String>,
    pub auto_rotation: bool,
    /// The host has an intermediate CA's chain (/etc/lwa-agent/pki/chain.pem), so the
    /// config names it.
    pub certificate_chain: bool,
}

/// Everything `setup` writes, from the outputs and the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id_parameter: String,
    pub client_secret_parameter: String,
    pub refresh_token_parameter: String,
    /// The KMS key new SecureStrings are created with.
    pub key_id: String,
    pub topic_arn: Option<String>,
    pub fleet_lock_prefix: Option<String>,
    pub roles_anywhere: Option<RolesAnywhere>,
    pub auto: Option<AutoRotation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesAnywhere {
    pub trust_anchor_arn: String,
    pub profile_arn: String,
    pub role_arn: String,
    /// What the stack allows (`SessionDurationSeconds`), if it says.
    pub max_session: Option<Duration>,
    /// Whether the config names the chain file (see [`Overrides::certificate_chain`]).
    pub certificate_chain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoRotation {
    pub enabled: bool,
    pub new_secret_queue_url: String,
    pub expiry_queue_url: Option<String>,
    pub sp_api_endpoint: Option<String>,
}

/// The session the config asks for: the agent's default hour, or less if the stack allows
/// less. Not the stack's maximum: a shorter session is a shorter window for stolen session
/// credentials, and the agent renews its session before it ends anyway.
const SESSION: Duration = Duration::from_secs(3600);

/// Combines the outputs (if any) with the flags. Every missing value is named at once,
/// with the output and the flag that would give it.
pub fn plan(outputs: Option<&Outputs>, o: &Overrides) -> Result<Plan, String> {
    let empty = Outputs::default();
    let out = outputs.unwrap_or(&empty);
    let mut missing: Vec<String> = Vec::new();
    let mut need = |flag: &Option<String>, key: &str, name: &str| -> String {
        match flag.as_deref().filter(|v| !v.is_empty()).or(out.get(key)) {
            Some(v) => v.to_string(),
            None => {
                missing.push(format!("{key} (or {name})"));
                String::new()
            }
        }
    };
    let region = need(&o.region, "Region", "--region");
    let client_id_parameter = need(
        &o.client_id_parameter,
        "ClientIdParameter",
        "--client-id-parameter",
    );
    let client_secret_parameter = need(
        &o.client_secret_parameter,
        "ClientSecretParameter",
        "--client-secret-parameter",
    );
    let refresh_token_parameter = need(
        &o.refresh_token_parameter,
        "RefreshTokenParameter",
        "--refresh-token-parameter",
    );
    let key_id = need(&o.key_id, "ParameterKeyArn", "--key-id");

    let roles_anywhere = match (out.get("TrustAnchorArn"), out.get("ProfileArn")) {
        (None, None) => None,
        (Some(anchor), Some(profile)) => {
            let role_arn = out.get("RoleArn").unwrap_or_default().to_string();
            if role_arn.is_empty() {
                missing.push("RoleArn (the stack's outputs have a Roles Anywhere profile)".into());
            }
            let max_session = match out.get("SessionDurationSeconds") {
                None => None,
                Some(s) => Some(Duration::from_secs(s.trim().parse().map_err(|_| {
                    format!("the output SessionDurationSeconds `{s}` is not a number of seconds")
                })?)),
            };
            Some(RolesAnywhere {
                trust_anchor_arn: anchor.to_string(),
                profile_arn: profile.to_string(),
                role_arn,
                max_session,
                certificate_chain: o.certificate_chain,
            })
        }
        (Some(_), None) => {
            missing.push("ProfileArn (the outputs have TrustAnchorArn)".into());
            None
        }
        (None, Some(_)) => {
            missing.push("TrustAnchorArn (the outputs have ProfileArn)".into());
            None
        }
    };

    let auto = match out.get("NewSecretQueueUrl") {
        Some(queue) => Some(AutoRotation {
            enabled: o.auto_rotation,
            new_secret_queue_url: queue.to_string(),
            expiry_queue_url: out.get("ExpiryQueueUrl").map(String::from),
            sp_api_endpoint: out.get("SpApiEndpoint").map(String::from),
        }),
        None if o.auto_rotation => {
            return Err(
                "--auto-rotation needs the stack's rotation queues, and its outputs have no \
                 NewSecretQueueUrl: deploy the stack with AutomaticRotation=true, describe it \
                 again, and pass the new outputs"
                    .into(),
            )
        }
        None => None,
    };

    if missing.is_empty() {
        let names = [
            &client_id_parameter,
            &client_secret_parameter,
            &refresh_token_parameter,
        ];
        if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
            return Err(format!(
                "the client id, client secret and refresh token need three different \
                 parameters, not {}: fix the outputs or the --…-parameter flags",
                names.map(|n| format!("`{n}`")).join(", ")
            ));
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} missing: {}. {}",
            if missing.len() == 1 {
                "a value is"
            } else {
                "values are"
            },
            missing.join(", "),
            if outputs.is_some() {
                "Pass the outputs of the stack made from lwa-agent.yaml, or give the flags"
            } else {
                "Pass the stack's outputs with --outputs FILE, or give the flags"
            }
        ));
    }
    Ok(Plan {
        region,
        endpoint_url: o.endpoint_url.clone().filter(|v| !v.is_empty()),
        token_url: o.token_url.clone().filter(|v| !v.is_empty()),
        client_id_parameter,
        client_secret_parameter,
        refresh_token_parameter,
        key_id,
        topic_arn: o
            .topic_arn
            .clone()
            .filter(|v| !v.is_empty())
            .or(out.get("TopicArn").map(String::from)),
        fleet_lock_prefix: out.get("FleetLockPrefix").map(String::from),
        roles_anywhere,
        auto,
    })
}

/// A TOML basic string: quoted, with `"`, `\` and every control character escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The config file `setup` writes. Deterministic (no date, no host name): the same outputs
/// and flags give the same bytes, which is how a second run sees that nothing changed.
pub fn config_text(p: &Plan) -> String {
    let mut t = String::new();
    let mut line = |s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line(
        "# lwa-agent's configuration, written by `lwa-agent setup` from the outputs of the".into(),
    );
    line("# CloudFormation stack (lwa-agent.yaml). setup keeps this file once it exists;".into());
    line(
        "# `lwa-agent setup --force-config` writes it again and keeps the old one as .bak.".into(),
    );
    line("# Check it with `lwa-agent config check` after every edit. Every key, explained:".into());
    line("# /usr/share/doc/lwa-agent/lwa-agent.toml".into());
    line(String::new());
    line("[aws]".into());
    line(format!("region = {}", quote(&p.region)));
    if let Some(url) = &p.endpoint_url {
        line(format!(
            "endpoint_url = {}   # every AWS service (VPC endpoints, tests)",
            quote(url)
        ));
    }
    line(String::new());
    match &p.roles_anywhere {
        Some(ra) => {
            line(
                "# IAM Roles Anywhere: AWS credentials from this host's certificate. \"%d/\" is"
                    .into(),
            );
            line("# systemd's credentials directory: lwa-agent.service loads".into());
            line("# /etc/lwa-agent/pki/cert.pem and key.pem there (LoadCredential=).".into());
            line("[aws.roles_anywhere]".into());
            line(format!("certificate = {}", quote("%d/rolesanywhere-cert")));
            line(format!("private_key = {}", quote("%d/rolesanywhere-key")));
            if ra.certificate_chain {
                line(format!(
                    "certificate_chain = {}   # /etc/lwa-agent/pki/chain.pem: the intermediate CA",
                    quote("%d/rolesanywhere-chain")
                ));
            } else {
                line(
                    "# certificate_chain = \"%d/rolesanywhere-chain\"   # /etc/lwa-agent/pki/chain.pem, \
                     for an intermediate CA"
                        .into(),
                );
            }
            line(format!(
                "trust_anchor_arn = {}",
                quote(&ra.trust_anchor_arn)
            ));
            line(format!("profile_arn = {}", quote(&ra.profile_arn)));
            line(format!("role_arn = {}", quote(&ra.role_arn)));
            let session = ra.max_session.map_or(SESSION, |m| m.min(SESSION));
            let allows = ra
                .max_session
                .map(|m| format!("; the stack allows up to {}", humantime::format_duration(m)))
                .unwrap_or_default();
            line(format!(
                "session_duration = {}   # renewed before it ends{allows}",
                quote(&humantime::format_duration(session).to_string())
            ));
        }
        None => {
            line(
                "# No [aws.roles_anywhere]: the stack has no trust anchor, so the agent uses the"
                    .into(),
            );
            line("# standard AWS credential chain (environment, profile, instance role).".into());
        }
    }
    if let Some(url) = &p.token_url {
        line(String::new());
        line("[lwa]".into());
        line(format!("token_url = {}", quote(url)));
    }
    line(String::new());
    line("# The SecureStrings that `lwa-agent setup` wrote; served at /v1/token.".into());
    line("[[credentials]]".into());
    line(format!("name = {}", quote("default")));
    line(format!(
        "client_id_parameter = {}",
        quote(&p.client_id_parameter)
    ));
    line(format!(
        "client_secret_parameter = {}",
        quote(&p.client_secret_parameter)
    ));
    line(format!(
        "refresh_token_parameter = {}",
        quote(&p.refresh_token_parameter)
    ));
    if p.topic_arn.is_some() || p.fleet_lock_prefix.is_some() {
        line(String::new());
        line("# Reminders before the client secret's 180-day expiry, once per fleet.".into());
        line("[rotation]".into());
        if let Some(topic) = &p.topic_arn {
            line(format!("topic_arn = {}", quote(topic)));
        }
        if let Some(prefix) = &p.fleet_lock_prefix {
            line(format!("fleet_lock_prefix = {}", quote(prefix)));
        }
    }
    if let Some(auto) = &p.auto {
        line(String::new());
        line(
            "# Automatic rotation of the client secret (docs/automatic-rotation.md). Register"
                .into(),
        );
        line(
            "# the stack's NewSecretQueueArn and ExpiryQueueArn for the app's notifications in"
                .into(),
        );
        line("# the Developer Console first, then set enabled = true (or run setup with".into());
        line("# --auto-rotation --force-config) and check with `lwa-agent doctor`.".into());
        line("[rotation.auto]".into());
        line(format!("enabled = {}", auto.enabled));
        line(format!(
            "new_secret_queue_url = {}",
            quote(&auto.new_secret_queue_url)
        ));
        if let Some(q) = &auto.expiry_queue_url {
            line(format!("expiry_queue_url = {}", quote(q)));
        }
        if let Some(e) = &auto.sp_api_endpoint {
            line(format!("sp_api_endpoint = {}", quote(e)));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const OUTPUTS: &[(&str, &str)] = &[
        ("Region", "us-east-2"),
        ("ParameterPrefix", "/erp/lwa"),
        ("ClientIdParameter", "/erp/lwa/clientidentifier"),
        ("ClientSecretParameter", "/erp/lwa/clientsecret"),
        ("RefreshTokenParameter", "/erp/lwa/refreshtoken"),
        (
            "ParameterKeyArn",
            "arn:aws:kms:us-east-2:111122223333:key/0b6f3b1e-0000-4000-8000-000000000001",
        ),
        ("ParameterKeyAlias", "alias/lwa-agent-parameters"),
        (
            "TopicArn",
            "arn:aws:sns:us-east-2:111122223333:lwa-agent-Topic-ABC",
        ),
        ("FleetLockPrefix", "/erp/lwa/fleet-lock"),
        (
            "RoleArn",
            "arn:aws:iam::111122223333:role/lwa-agent-AgentRole-XYZ",
        ),
        ("SessionDurationSeconds", "43200"),
        ("SpApiEndpoint", "https://sellingpartnerapi-eu.amazon.com"),
    ];
    const ANCHOR: &str = "arn:aws:rolesanywhere:us-east-2:111122223333:trust-anchor/abc";
    const PROFILE: &str = "arn:aws:rolesanywhere:us-east-2:111122223333:profile/def";
    const QUEUE: &str = "https://sqs.us-east-2.amazonaws.com/111122223333/lwa-new-secret";
    const EXPIRY: &str = "https://sqs.us-east-2.amazonaws.com/111122223333/lwa-expiry";

    fn outputs(extra: &[(&str, &str)]) -> Outputs {
        let mut all = OUTPUTS.to_vec();
        all.extend_from_slice(extra);
        Outputs::from_pairs(&all)
    }

    fn cli_json(pairs: &[(&str, &str)]) -> serde_json::Value {
        serde_json::Value::Array(
            pairs
                .iter()
                .map(|(k, v)| {
                    serde_json::json!({"OutputKey": k, "OutputValue": v, "Description": "x"})
                })
                .collect(),
        )
    }

    /// The text must be what `config check` accepts, and mean what the plan says.
    fn check(text: &str) -> crate::config::Config {
        crate::config::parse_str(text, Path::new("/etc/lwa-agent/lwa-agent.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn both_json_shapes_of_the_aws_cli_give_the_same_outputs() {
        let list = cli_json(OUTPUTS);
        let from_list = Outputs::parse(&list.to_string()).unwrap();
        assert_eq!(from_list, outputs(&[]));
        let full = serde_json::json!({"Stacks": [{
            "StackName": "lwa-agent",
            "StackStatus": "CREATE_COMPLETE",
            "CreationTime": "2025-01-01T00:00:00Z",
            "Outputs": list,
        }]});
        assert_eq!(Outputs::parse(&full.to_string()).unwrap(), from_list);
        let one = full["Stacks"][0].clone();
        assert_eq!(Outputs::parse(&one.to_string()).unwrap(), from_list);
    }

    #[test]
    fn outputs_that_are_not_one_stacks_say_how_to_get_them() {
        let e = Outputs::parse("not json").unwrap_err();
        assert!(
            e.contains("describe-stacks") && e.contains("Stacks[0].Outputs"),
            "{e}"
        );
        let e = Outputs::parse(r#"{"Stacks": []}"#).unwrap_err();
        assert!(e.contains("0 stacks"), "{e}");
        let e = Outputs::parse(r#"{"Stacks": [{"Outputs": []}, {"Outputs": []}]}"#).unwrap_err();
        assert!(e.contains("2 stacks") && e.contains("--stack-name"), "{e}");
        let e =
            Outputs::parse(r#"{"Stacks": [{"StackStatus": "CREATE_IN_PROGRESS"}]}"#).unwrap_err();
        assert!(
            e.contains("CREATE_IN_PROGRESS") && e.contains("CREATE_COMPLETE"),
            "{e}"
        );
        let e = Outputs::parse(r#"[{"Key": "Region"}]"#).unwrap_err();
        assert!(e.contains("describe-stacks"), "{e}");
    }

    #[test]
    fn every_missing_value_is_named_with_its_flag() {
        let e = plan(
            Some(&Outputs::from_pairs(&[("Region", "us-east-2")])),
            &Overrides::default(),
        )
        .unwrap_err();
        for named in [
            "ClientIdParameter (or --client-id-parameter)",
            "ClientSecretParameter (or --client-secret-parameter)",
            "RefreshTokenParameter (or --refresh-token-parameter)",
            "ParameterKeyArn (or --key-id)",
        ] {
            assert!(e.contains(named), "{named} in {e}");
        }
        assert!(!e.contains("Region ("), "{e}");
        let e = plan(None, &Overrides::default()).unwrap_err();
        assert!(
            e.contains("Region (or --region)") && e.contains("--outputs FILE"),
            "{e}"
        );
        let e = plan(
            Some(&outputs(&[("TrustAnchorArn", ANCHOR)])),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.contains("ProfileArn"), "{e}");
        let e = plan(
            Some(&outputs(&[])),
            &Overrides {
                refresh_token_parameter: Some("/erp/lwa/clientsecret".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("three different parameters"), "{e}");
    }

    #[test]
    fn flags_replace_outputs_and_can_stand_without_them() {
        let o = Overrides {
            region: Some("eu-west-1".into()),
            client_id_parameter: Some("/x/id".into()),
            client_secret_parameter: Some("/x/secret".into()),
            refresh_token_parameter: Some("/x/refresh".into()),
            key_id: Some("alias/x".into()),
            topic_arn: Some("arn:aws:sns:eu-west-1:111122223333:t".into()),
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            token_url: Some("http://127.0.0.1:9000/auth/o2/token".into()),
            auto_rotation: false,
            certificate_chain: false,
        };
        let from_flags = plan(None, &o).unwrap();
        let overridden = plan(Some(&outputs(&[])), &o).unwrap();
        assert_eq!(overridden.region, "eu-west-1");
        assert_eq!(overridden.client_secret_parameter, "/x/secret");
        assert_eq!(overridden.key_id, "alias/x");
        assert_eq!(overridden.topic_arn, from_flags.topic_arn);
        assert_eq!(
            overridden.fleet_lock_prefix.as_deref(),
            Some("/erp/lwa/fleet-lock")
        );
        assert_eq!(from_flags.fleet_lock_prefix, None);
        let cfg = check(&config_text(&from_flags));
        assert_eq!(
            cfg.aws.endpoint_url.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(cfg.lwa.token_url, "http://127.0.0.1:9000/auth/o2/token");
        assert!(cfg.rotation.auto.is_none() && cfg.aws.roles_anywhere.is_none());
    }

    #[test]
    fn the_config_of_a_stack_without_roles_anywhere_with_rotation_queues() {
        let p = plan(
            Some(&outputs(&[
                ("NewSecretQueueUrl", QUEUE),
                ("ExpiryQueueUrl", EXPIRY),
            ])),
            &Overrides::default(),
        )
        .unwrap();
        let text = config_text(&p);
        let cfg = check(&text);
        assert_eq!(cfg.aws.region, "us-east-2");
        assert_eq!(cfg.aws.endpoint_url, None);
        assert!(cfg.aws.roles_anywhere.is_none());
        assert!(text.contains("standard AWS credential chain"));
        assert_eq!(cfg.lwa.token_url, crate::config::DEFAULT_TOKEN_URL);
        assert!(
            !text.contains("[lwa]"),
            "the default token URL is not written"
        );
        let [c] = cfg.credentials.as_slice() else {
            panic!("one credential")
        };
        assert_eq!(c.name, "default");
        assert_eq!(c.client_id_parameter, "/erp/lwa/clientidentifier");
        assert_eq!(c.client_secret_parameter, "/erp/lwa/clientsecret");
        assert_eq!(
            c.refresh_token_parameter.as_deref(),
            Some("/erp/lwa/refreshtoken")
        );
        assert_eq!(
            cfg.rotation.topic_arn.as_deref(),
            Some("arn:aws:sns:us-east-2:111122223333:lwa-agent-Topic-ABC")
        );
        assert_eq!(
            cfg.rotation.fleet_lock_prefix.as_deref(),
            Some("/erp/lwa/fleet-lock")
        );
        let auto = cfg.rotation.auto.expect("[rotation.auto]");
        assert!(!auto.enabled, "off until the queues are registered");
        assert!(text.contains("enabled = false"));
        assert_eq!(auto.new_secret_queue_url, QUEUE);
        assert_eq!(auto.expiry_queue_url.as_deref(), Some(EXPIRY));
        assert_eq!(
            auto.sp_api_endpoint,
            "https://sellingpartnerapi-eu.amazon.com"
        );
        assert!(
            !text.contains("ParameterKey") && !text.contains("0b6f3b1e"),
            "no key in it"
        );
        // Same inputs, same bytes: how a second run sees that nothing changed.
        assert_eq!(config_text(&p), text);

        let on = plan(
            Some(&outputs(&[("NewSecretQueueUrl", QUEUE)])),
            &Overrides {
                auto_rotation: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        let auto = check(&config_text(&on))
            .rotation
            .auto
            .expect("[rotation.auto]");
        assert!(auto.enabled);
        assert_eq!(auto.expiry_queue_url, None);
    }

    #[test]
    fn auto_rotation_without_the_queues_is_refused() {
        let e = plan(
            Some(&outputs(&[])),
            &Overrides {
                auto_rotation: true,
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("AutomaticRotation=true"), "{e}");
        let p = plan(Some(&outputs(&[])), &Overrides::default()).unwrap();
        assert!(!config_text(&p).contains("[rotation.auto]"));
    }

    #[test]
    fn the_config_of_a_stack_with_roles_anywhere() {
        let p = plan(
            Some(&outputs(&[
                ("TrustAnchorArn", ANCHOR),
                ("ProfileArn", PROFILE),
            ])),
            &Overrides::default(),
        )
        .unwrap();
        let text = config_text(&p);
        let ra = check(&text)
            .aws
            .roles_anywhere
            .expect("[aws.roles_anywhere]");
        assert_eq!(ra.certificate, "%d/rolesanywhere-cert");
        assert_eq!(ra.private_key, "%d/rolesanywhere-key");
        assert_eq!(ra.certificate_chain, None);
        assert_eq!(ra.trust_anchor_arn, ANCHOR);
        assert_eq!(ra.profile_arn, PROFILE);
        assert_eq!(
            ra.role_arn,
            "arn:aws:iam::111122223333:role/lwa-agent-AgentRole-XYZ"
        );
        assert_eq!(ra.session_duration, Duration::from_secs(3600));
        assert!(text.contains("the stack allows up to 12h"), "{text}");

        // A host whose certificate an intermediate CA issued: the chain is named too.
        let with_chain = Overrides {
            certificate_chain: true,
            ..Overrides::default()
        };
        let p = plan(
            Some(&outputs(&[
                ("TrustAnchorArn", ANCHOR),
                ("ProfileArn", PROFILE),
            ])),
            &with_chain,
        )
        .unwrap();
        let ra = check(&config_text(&p)).aws.roles_anywhere.unwrap();
        assert_eq!(
            ra.certificate_chain.as_deref(),
            Some("%d/rolesanywhere-chain")
        );

        let mut without_role = outputs(&[("TrustAnchorArn", ANCHOR), ("ProfileArn", PROFILE)]);
        without_role.0.remove("RoleArn");
        let e = plan(Some(&without_role), &Overrides::default()).unwrap_err();
        assert!(e.contains("RoleArn"), "{e}");
    }

    #[test]
    fn values_are_quoted_so_that_no_output_can_add_a_key() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny\u{7f}"), "\"x\\ny\\u007F\"");
        let p = plan(
            Some(&outputs(&[])),
            &Overrides {
                region: Some("us-east-2\"\n[log]\nlevel = \"trace".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        let text = config_text(&p);
        let parsed: toml::Value = toml::from_str(&text).expect("still TOML");
        assert!(parsed.get("log").is_none(), "{text}");
        assert_eq!(
            parsed["aws"]["region"].as_str(),
            Some("us-east-2\"\n[log]\nlevel = \"trace")
        );
    }
}
