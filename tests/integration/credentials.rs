//! AWS credentials for the administrator's commands and for the agent itself, besides
//! Roles Anywhere (tests/integration/roles_anywhere.rs): an IAM Identity Center (SSO)
//! profile, a static credentials file, and what doctor says about each, against moto and
//! the project's SSO portal stand-in (`aws_identity`). The service's own paths under the
//! booted systemd are in packaging/booted.rs.

use std::process::Command;

use lwa_agent_testservers::aws_identity::{AwsIdentity, Settings};
use lwa_agent_testservers::proxy::Proxy;

use crate::harness::*;

/// `config` with AWS reached through a proxy in front of moto. moto accepts any signature,
/// so only what was sent shows which credentials signed the calls (`assert_signed_with`).
async fn through_proxy(w: &World, config: &str) -> (Proxy, String) {
    let moto = format!("127.0.0.1:{}", w.moto_port)
        .parse()
        .expect("moto's address");
    let proxy = Proxy::start(moto).await.expect("proxy");
    let routed = config.replace(&w.endpoint(), &proxy.url());
    assert!(routed.contains(&proxy.url()), "{routed}");
    (proxy, routed)
}

/// The calls since the last look were signed with the access key `key`, and only with it.
fn assert_signed_with(proxy: &Proxy, key: &str) {
    let sent = proxy.take_sent();
    let signed = sent.matches("Credential=").count();
    let by_key = sent.matches(&format!("Credential={key}/")).count();
    assert!(
        signed > 0 && signed == by_key,
        "{signed} signed calls, {by_key} with {key}"
    );
}

const SSO_TOKEN: &str = "sso-cached-access-token-0123456789";

/// `aws sso login` as it leaves a host: a profile of an sso-session in ~/.aws/config, and
/// the session's token in ~/.aws/sso/cache/<sha1 of the session name>.json.
fn sso_home(dir: &std::path::Path) -> std::path::PathBuf {
    let home = dir.join("home");
    let aws = home.join(".aws");
    std::fs::create_dir_all(aws.join("sso/cache")).expect("mkdir");
    std::fs::write(
        aws.join("config"),
        "[profile corp-admin]\nsso_session = corp\nsso_account_id = 111122223333\n\
         sso_role_name = LwaAdmin\nregion = us-east-2\n\n[sso-session corp]\n\
         sso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-2\n\
         sso_registration_scopes = sso:account:access\n",
    )
    .expect("config");
    let out = Command::new("sh")
        .args(["-c", "printf corp | sha1sum"])
        .output()
        .expect("sha1sum (coreutils)");
    let key = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string();
    std::fs::write(
        aws.join(format!("sso/cache/{key}.json")),
        serde_json::json!({
            "startUrl": "https://corp.awsapps.com/start",
            "region": "us-east-2",
            "accessToken": SSO_TOKEN,
            "expiresAt": "2099-01-01T00:00:00Z",
            "clientId": "client",
            "clientSecret": "client-secret",
            "registrationExpiresAt": "2099-01-01T00:00:00Z",
            "refreshToken": "refresh",
        })
        .to_string(),
    )
    .expect("token cache");
    home
}

/// The command's environment with the person's SSO profile instead of the harness's keys.
fn as_sso_admin(home: &std::path::Path, portal: &AwsIdentity) -> Command {
    let mut cmd = agent_command();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env("HOME", home)
        .env("AWS_PROFILE", "corp-admin")
        .env("AWS_ENDPOINT_URL_SSO", portal.url());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_profile_works_for_the_administrators_commands() {
    let w = World::new().await;
    let portal = AwsIdentity::start(Settings {
        sso_token: SSO_TOKEN.into(),
        sso_account_id: "111122223333".into(),
        sso_role_name: "LwaAdmin".into(),
    })
    .await
    .expect("portal");
    let home = sso_home(w.dir.path());
    let (proxy, config) = through_proxy(&w, &w.config("", "")).await;
    let config = w.write_config(&config);

    let out = as_sso_admin(&home, &portal)
        .arg("--config")
        .arg(&config)
        .arg("doctor")
        .output()
        .expect("doctor runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(portal.sso_used(), "{:?}", portal.calls());
    assert!(
        stdout.contains(
            "ok    AWS credential source: the standard chain: an IAM Identity Center (SSO) profile"
        ),
        "{stdout}"
    );
    // These are the administrator's: doctor says the service does not have them.
    assert!(
        stdout.contains("WARN  AWS credential source: these are this shell's credentials")
            && stdout.contains("lwa-agent doctor --as-service"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    AWS identity"), "{stdout}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains('\u{1b}'),
        "{stderr}"
    );
    assert_signed_with(&proxy, "ASIASSOTESTKEY");

    // put-secret, with the same profile.
    let new = format!("{}-PUT", w.canaries.client_secret);
    w.lwa.update(|s| s.client_secrets.push(new.clone()));
    let mut put = as_sso_admin(&home, &portal);
    put.arg("--config")
        .arg(&config)
        .args([
            "put-secret",
            "--credential",
            "default",
            "--field",
            "client_secret",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = put.spawn().expect("put-secret runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{new}").expect("write");
    }
    let out = child.wait_with_output().expect("put-secret ends");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_signed_with(&proxy, "ASIASSOTESTKEY");
    assert_eq!(w.read(SECRET_PARAM).await.0, new);
    for text in [stdout, stderr] {
        w.canaries.assert_absent("doctor", &text);
        assert!(!text.contains(SSO_TOKEN));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_credentials_doctor_fails_and_names_every_way_to_give_them() {
    let w = World::new().await;
    let config = w.write_config(&w.config("", ""));
    let out = agent_command()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .arg("--config")
        .arg(&config)
        .arg("doctor")
        .output()
        .expect("doctor runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        !stdout.contains("ok    AWS credential source"),
        "a chain that found nothing is not ok: {stdout}"
    );
    for needle in [
        "FAIL  AWS credential source",
        "[aws.roles_anywhere]",
        "aws.credentials_file",
        "instance role",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from {stdout}");
    }
    assert!(
        !stdout.contains("`lwa-agent doctor` shows"),
        "doctor does not send the reader to doctor: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_gives_the_agent_static_keys_and_a_bad_one_is_a_config_error() {
    let w = World::new().await;
    let keys = w.dir.path().join("aws-credentials");
    std::fs::write(
        &keys,
        "[default]\naws_access_key_id = AKIASTATICTEST\naws_secret_access_key = static-test-secret\n",
    )
    .expect("keys");
    let extra = format!("credentials_file = \"{}\"\n", keys.display());
    let config = w.config("", "").replace(
        &format!("region = \"{REGION}\"\n"),
        &format!("region = \"{REGION}\"\n{extra}"),
    );
    assert!(config.contains("credentials_file"), "{config}");
    let (proxy, config) = through_proxy(&w, &config).await;
    // No keys in the environment: only the file can be the source.
    let mut cmd = agent_command();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .arg("--config")
        .arg(w.write_config(&config))
        .arg("run");
    let agent = AgentProc::spawn(cmd, w.socket());
    agent.wait_listening().await;
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    assert_signed_with(&proxy, "AKIASTATICTEST");
    let status = agent.get("/v1/status").await.json();
    assert_eq!(
        status["aws"]["credential_source"], "credentials file",
        "{status}"
    );
    assert!(!agent.logs().contains("static-test-secret"));
    drop(agent);

    let config_path = w.write_config(&config);
    let check = || {
        agent_command()
            .arg("--config")
            .arg(&config_path)
            .args(["config", "check"])
            .output()
            .expect("config check runs")
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The units' fallback text where the file should be: `run` and `config check` both
    // exit 2, and the message says what to write where.
    std::fs::write(&keys, "no keys: /etc/lwa-agent/aws-credentials is missing").expect("write");
    let mut cmd = agent_command();
    cmd.arg("--config").arg(&config_path).arg("run");
    let mut agent = AgentProc::spawn(cmd, w.socket());
    assert_eq!(agent.wait_exit(20).code(), Some(2), "{}", agent.logs());
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    for err in [
        agent.logs(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ] {
        assert!(
            err.contains("aws.credentials_file") && err.contains("docs/aws-credentials.md"),
            "{err}"
        );
        assert!(!err.contains("static-test-secret"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_takes_an_ec2_instance_role_from_instance_metadata() {
    let w = World::new().await;
    let imds = AwsIdentity::start(Settings {
        sso_token: String::new(),
        sso_account_id: String::new(),
        sso_role_name: String::new(),
    })
    .await
    .expect("instance metadata");
    let (proxy, config) = through_proxy(&w, &w.config("", "")).await;
    let mut cmd = agent_command();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("{}/", imds.url()),
        )
        .arg("--config")
        .arg(w.write_config(&config))
        .arg("run");
    let agent = AgentProc::spawn(cmd, w.socket());
    agent.wait_listening().await;
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    assert!(imds.instance_role_used(), "{:?}", imds.calls());
    assert_signed_with(&proxy, "ASIAIMDSTESTKEY");
}
