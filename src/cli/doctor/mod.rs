//! `lwa-agent doctor`: the online checks a sysadmin runs after install or when tokens stop
//! coming. Prints one line per check and never a secret value.

use std::time::SystemTime;

use super::Outcome;
use crate::aws;
use crate::config::Config;
use crate::lwa::exchange::LwaClient;
use crate::lwa::parameters::ParameterStore;

struct Report {
    failures: usize,
}

impl Report {
    fn ok(&self, what: &str, detail: &str) {
        println!("ok    {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: &str) {
        self.failures += 1;
        println!("FAIL  {what}: {detail}");
    }
    /// Works now, but will not for long, or not for the service.
    fn warn(&self, what: &str, detail: &str) {
        println!("WARN  {what}: {detail}");
    }
    /// Not checked, and why.
    fn skip(&self, what: &str, why: &str) {
        println!("skip  {what}: {why}");
    }
}

mod as_service;
pub use as_service::as_service;

pub async fn run(cfg: Config) -> Outcome {
    let mut r = Report { failures: 0 };
    let (sdk, source) = match aws::connect(&cfg.aws).await {
        Ok(c) => c,
        Err(e) => {
            r.fail("AWS credentials", &e);
            return Outcome::Failed("cannot set up AWS access (see above)".into());
        }
    };

    let what = "AWS credential source";
    match &source {
        aws::CredentialSource::RolesAnywhere(ra) => {
            r.ok(what, source.label());
            roles_anywhere(&mut r, ra).await;
        }
        aws::CredentialSource::CredentialsFile(path) => r.ok(
            what,
            &format!("static keys from {} (aws.credentials_file)", path.display()),
        ),
        aws::CredentialSource::DefaultChain => match aws::resolve(&sdk).await {
            Err(e) => {
                r.fail(what, &format!("the standard chain: {e}"));
                return Outcome::Failed(
                    "no AWS credentials, so nothing else can be checked (see above)".into(),
                );
            }
            Ok(origin) => {
                r.ok(what, &format!("the standard chain: {}", origin.describe()));
                if origin.is_the_callers() && std::env::var_os("INVOCATION_ID").is_none() {
                    r.warn(
                        what,
                        "these are this shell's credentials, which the service does not \
                         have (it runs as the lwa-agent user, with ProtectHome=yes and its own \
                         environment), so the checks below prove nothing about it: see what \
                         the service has with `sudo lwa-agent doctor --as-service`, and give \
                         it [aws.roles_anywhere], aws.credentials_file or an instance role \
                         (docs/aws-credentials.md)",
                    );
                }
            }
        },
    }

    let sts = aws_sdk_sts::Client::new(&sdk);
    match sts.get_caller_identity().send().await {
        Ok(id) => r.ok(
            "AWS identity",
            &format!(
                "{} (account {}, credentials: {})",
                id.arn().unwrap_or("?"),
                id.account().unwrap_or("?"),
                source.label()
            ),
        ),
        Err(e) => r.fail(
            "AWS identity",
            &format!(
                "{} (credential source: {})",
                aws::error::describe(
                    &e,
                    &aws::error::Call {
                        what: "STS GetCallerIdentity",
                        permission: "nothing (GetCallerIdentity needs no permission)",
                    },
                ),
                source.label()
            ),
        ),
    }

    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let names = cfg.credential_parameters();
    let store = ParameterStore::new(names.clone());
    match aws::ssm::read::fetch(&ssm, &names).await {
        Err(e) => r.fail("SSM", &e),
        Ok(fetched) => {
            let now = SystemTime::now();
            for p in &fetched.parameters {
                let age = p
                    .last_modified
                    .and_then(|t| now.duration_since(t).ok())
                    .map(|d| format!("{} days old", d.as_secs() / 86400))
                    .unwrap_or_else(|| "age unknown".into());
                let detail = format!("version {}, {}, {age}", p.version, p.kind);
                if p.kind == "SecureString" {
                    r.ok(&format!("parameter {}", p.name), &detail);
                } else {
                    r.fail(
                        &format!("parameter {}", p.name),
                        &format!("{detail}: store secrets as SecureString (KMS-encrypted)"),
                    );
                }
            }
            for (name, problem) in &fetched.problems {
                r.fail(&format!("parameter {name}"), problem);
            }
            store.load_fetched(fetched);
        }
    }

    match LwaClient::new(&cfg.lwa) {
        Err(e) => r.fail("LWA", &e),
        Ok(lwa) => {
            if cfg.rotation.auto_enabled().is_some() {
                rotation_scope(&mut r, &cfg, &store, &lwa).await;
            }
            for cred in &cfg.credentials {
                let what = format!("LWA exchange for `{}`", cred.name);
                match store.grant(cred) {
                    Err(e) => r.fail(&what, &e),
                    Ok((grant, _)) => match lwa.exchange(&grant).await {
                        Ok(t) => r.ok(
                            &what,
                            &format!(
                                "token issued, valid {}s",
                                t.seconds_left(std::time::Instant::now())
                            ),
                        ),
                        Err(e) => r.fail(&what, &e.to_string()),
                    },
                }
            }
        }
    }

    if let Some(topic) = &cfg.rotation.topic_arn {
        let sns = aws_sdk_sns::Client::new(&sdk);
        match sns.get_topic_attributes().topic_arn(topic).send().await {
            Ok(_) => r.ok("SNS topic", topic),
            Err(e) => r.fail(
                "SNS topic",
                &aws::error::describe(
                    &e,
                    &aws::error::Call {
                        what: &format!("SNS GetTopicAttributes on {topic}"),
                        permission: "sns:GetTopicAttributes and sns:Publish on the topic",
                    },
                )
                .line,
            ),
        }
    } else {
        r.skip(
            "SNS topic",
            "rotation.topic_arn is not set: reminders and alerts go to the log only",
        );
    }

    match cfg.rotation.auto_enabled() {
        Some(auto) => {
            let sqs = aws::sqs::client(&sdk);
            for queue in auto.queues() {
                let new_secrets = queue == auto.new_secret_queue_url;
                queue_check(&mut r, &sqs, queue, new_secrets).await;
            }
        }
        None => r.skip(
            "rotation queues and scope",
            if cfg.rotation.auto.is_some() {
                "[rotation.auto] has enabled = false"
            } else {
                "automatic rotation is not configured (no [rotation.auto])"
            },
        ),
    }

    if r.failures == 0 {
        println!("all checks passed");
        Outcome::Ok
    } else {
        Outcome::Failed(format!(
            "{} check{} failed (see above)",
            r.failures,
            if r.failures == 1 { "" } else { "s" }
        ))
    }
}

/// The automatic rotation asks Amazon with a grantless token of the rotation scope: LWA
/// issues one only to an app that has the scope. Checked once per app (client id).
async fn rotation_scope(r: &mut Report, cfg: &Config, store: &ParameterStore, lwa: &LwaClient) {
    use crate::lwa::grant::{Grant, GrantKind};
    use crate::rotation::auto::app_management::ROTATION_SCOPE;
    use secrecy::{ExposeSecret, SecretString};
    let mut seen: Vec<String> = Vec::new();
    for cred in &cfg.credentials {
        let Ok((grant, _)) = store.grant(cred) else {
            continue;
        };
        let id = grant.client_id.expose_secret().to_string();
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let what = format!("LWA rotation scope for `{}`'s app", cred.name);
        let scoped = Grant {
            client_id: SecretString::from(grant.client_id.expose_secret().to_string()),
            client_secret: SecretString::from(grant.client_secret.expose_secret().to_string()),
            kind: GrantKind::Scopes(vec![ROTATION_SCOPE.to_string()]),
        };
        match lwa.exchange(&scoped).await {
            Ok(_) => r.ok(
                &what,
                &format!("grantless token with {ROTATION_SCOPE} issued"),
            ),
            Err(e) => r.fail(
                &what,
                &format!(
                    "{e}: automatic rotation needs a grantless token with {ROTATION_SCOPE}; \
                     check the app in the Developer Console"
                ),
            ),
        }
    }
}

/// A rotation queue: reachable with this role (sqs:GetQueueAttributes), encrypted, open to
/// SP-API's sender, and, when it carries new secrets, without a dead-letter queue.
async fn queue_check(r: &mut Report, sqs: &aws_sdk_sqs::Client, queue: &str, new_secrets: bool) {
    let what = format!("SQS queue {queue}");
    match aws::sqs::attributes(sqs, queue).await {
        Err(e) => r.fail(&what, &e.message),
        Ok(info) => {
            let detail = format!(
                "{} messages waiting, {} in flight, encryption {}",
                info.messages.as_deref().unwrap_or("?"),
                info.in_flight.as_deref().unwrap_or("?"),
                info.encryption.as_deref().unwrap_or("none")
            );
            let mut problems = Vec::new();
            if info.encryption.is_none() {
                problems.push(
                    "the new client secret travels through this queue; turn on SSE-KMS (or \
                     SSE-SQS)"
                        .to_string(),
                );
            }
            if let Some(redrive) = info.redrive_policy.as_deref().filter(|_| new_secrets) {
                problems.push(format!(
                    "it has a redrive policy ({redrive}); a new-secret message is the only copy \
                     of a new client secret, and one moved to a dead-letter queue is lost to \
                     the agents: remove it (aws sqs set-queue-attributes --queue-url {queue} \
                     --attributes RedrivePolicy=)"
                ));
            }
            if !info.policy_allows_sp_api {
                problems.push(format!(
                    "its policy does not mention SP-API's account {}; Amazon cannot deliver \
                     notifications without sqs:SendMessage for it",
                    aws::sqs::SP_API_ACCOUNT
                ));
            }
            if problems.is_empty() {
                r.ok(&what, &detail);
            }
            for p in problems {
                r.warn(&what, &format!("{detail}: {p}"));
            }
        }
    }
}

/// The certificate, then one CreateSession (shared with the provider's own first one).
async fn roles_anywhere(r: &mut Report, ra: &aws::roles_anywhere::RolesAnywhereProvider) {
    let now = SystemTime::now();
    let cert = ra.certificate();
    let detail = format!(
        "subject {}, serial {}, issuer {}, not after {} ({} days left)",
        cert.subject,
        cert.serial,
        cert.issuer,
        humantime::format_rfc3339_seconds(cert.not_after),
        cert.expires_in_days(now)
    );
    match cert.expiry_warning(now) {
        Some(w) => r.warn("Roles Anywhere certificate", &format!("{detail}: {w}")),
        None => r.ok("Roles Anywhere certificate", &detail),
    }
    let what = "Roles Anywhere CreateSession";
    match ra.credentials().await {
        Ok(_) => r.ok(
            what,
            &format!(
                "session for {} until {} from {}",
                ra.config().role_arn,
                ra.session_expires_at()
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .unwrap_or_else(|| "?".into()),
                ra.endpoint()
            ),
        ),
        Err(e) => r.fail(what, &e),
    }
}
