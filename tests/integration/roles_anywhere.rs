//! IAM Roles Anywhere end to end: the agent with `[aws.roles_anywhere]` and no AWS keys in
//! its environment gets session credentials from the verifying test endpoint, reads SSM
//! (moto) with them, refreshes them before they expire, and reports refusals; and the
//! config checks that name a bad certificate or key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lwa_agent_testservers::pki::{self, Ca, KeyFormat, KeyKind, LeafOptions};
use lwa_agent_testservers::rolesanywhere::{
    FakeRolesAnywhere, Settings, SECRET_CANARY, TOKEN_CANARY,
};

use crate::harness::*;

const TRUST_ANCHOR: &str = "arn:aws:rolesanywhere:us-east-2:111122223333:trust-anchor/ta-test";
const PROFILE: &str = "arn:aws:rolesanywhere:us-east-2:111122223333:profile/profile-test";
const ROLE: &str = "arn:aws:iam::111122223333:role/lwa-agent";

/// The `[aws.roles_anywhere]` table for `files` and the endpoint at `url`.
fn section(files: &pki::Files, url: &str) -> String {
    let chain = files
        .chain
        .as_ref()
        .map(|c| format!("certificate_chain = \"{}\"\n", c.display()))
        .unwrap_or_default();
    format!(
        "[aws.roles_anywhere]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n{chain}\
         trust_anchor_arn = \"{TRUST_ANCHOR}\"\nprofile_arn = \"{PROFILE}\"\nrole_arn = \"{ROLE}\"\n\
         session_duration = \"15m\"\nrole_session_name = \"erp-host-1\"\nendpoint_url = \"{url}\"\n",
        files.cert.display(),
        files.key.display()
    )
}

/// The agent binary with no AWS keys at all in its environment: Roles Anywhere or nothing.
fn without_aws_keys() -> Command {
    let mut cmd = agent_command();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    cmd
}

fn spawn(w: &World, config: &str) -> AgentProc {
    let path = w.write_config(config);
    let mut cmd = without_aws_keys();
    cmd.arg("--config").arg(&path).arg("run");
    AgentProc::spawn(cmd, w.socket())
}

/// Panics if `text` holds any issued Roles Anywhere secret or token, or an LWA canary.
fn assert_no_session_secrets(w: &World, ra: &FakeRolesAnywhere, what: &str, text: &str) {
    w.canaries.assert_absent(what, text);
    assert!(
        !text.contains(SECRET_CANARY) && !text.contains(TOKEN_CANARY),
        "{what} contains a Roles Anywhere session secret"
    );
    for issued in ra.issued() {
        assert!(
            !text.contains(&issued.secret_access_key),
            "{what}: secret key"
        );
        assert!(
            !text.contains(&issued.session_token),
            "{what}: session token"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_anywhere_credentials_read_ssm_and_are_refreshed_before_expiry() {
    let w = World::new().await;
    let root = Ca::root("lwa-agent e2e root");
    let intermediate = root.intermediate("lwa-agent e2e intermediate");
    let leaf = intermediate.issue(KeyKind::Rsa2048);
    let files = pki::write(
        w.dir.path(),
        "host",
        &leaf,
        &[&intermediate],
        KeyFormat::Pkcs1,
    );
    let mut settings = Settings::trusting(root.der());
    // Whatever the 15m the agent asks for: sessions of 8 s, refreshed after 4 s.
    settings.session_lifetime = Some(Duration::from_secs(8));
    let ra = FakeRolesAnywhere::start(settings)
        .await
        .expect("Roles Anywhere endpoint");

    let config = w.config_parts(&Parts {
        ssm: "refresh_interval = \"2s\"",
        extra: &section(&files, &ra.url()),
        ..Parts::default()
    });
    let agent = spawn(&w, &config);
    agent.wait_listening().await;
    let token = agent.wait_for("/v1/token", 30, |r| r.status == 200).await;
    assert!(token.json()["access_token"]
        .as_str()
        .expect("token")
        .starts_with("Atza|test-token-"));

    let status = agent.get("/v1/status").await.json();
    let aws = &status["aws"];
    assert_eq!(aws["credential_source"], "IAM Roles Anywhere", "{status}");
    assert!(aws["last_error"].is_null(), "{status}");
    assert!(aws["certificate_subject"]
        .as_str()
        .expect("subject")
        .contains("erp-host-1"));
    assert!(aws["certificate_serial"]
        .as_str()
        .expect("serial")
        .chars()
        .all(|c| c.is_ascii_digit()));
    assert_eq!(aws["certificate_expires_in_days"], 364, "{status}");
    assert!(aws.get("warning").is_none(), "{status}");
    let first_expiry = aws["session_expires_at"]
        .as_str()
        .expect("expiry")
        .to_string();

    // A new session arrives before the first one expires, and SSM reads keep working on it.
    let started = Instant::now();
    let status = agent
        .wait_for("/v1/status", 20, |r| {
            r.json()["aws"]["session_expires_at"].as_str() != Some(first_expiry.as_str())
        })
        .await
        .json();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "refreshed only after expiry"
    );
    assert!(
        status["aws"]["sessions_created"].as_u64() >= Some(2),
        "{status}"
    );
    let reads_before = status["ssm"]["calls"].as_u64().expect("calls");
    agent
        .wait_for("/v1/status", 20, |r| {
            let v = r.json();
            v["ssm"]["calls"].as_u64() > Some(reads_before + 1) && v["ssm"]["last_error"].is_null()
        })
        .await;
    assert_eq!(agent.get("/v1/token").await.status, 200);

    ra.assert_all_verified();
    let received = ra.received();
    assert!(received.len() >= 2);
    let v = received[0].verified.as_ref().expect("verified");
    assert_eq!(v.algorithm, "AWS4-X509-RSA-SHA256");
    assert_eq!(v.chain_len, 1);
    assert_eq!(v.body["durationSeconds"], 900);
    assert_eq!(v.body["roleSessionName"], "erp-host-1");
    assert_eq!(v.body["trustAnchorArn"], TRUST_ANCHOR);

    // `lwa-agent status` shows where the credentials come from and when the session ends.
    let config_path = w.dir.path().join("lwa-agent.toml");
    let table = without_aws_keys()
        .args(["--config", config_path.to_str().expect("utf8"), "status"])
        .output()
        .expect("status runs");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("credentials from IAM Roles Anywhere, session expires 20"),
        "{table}"
    );

    let logs = agent.logs();
    assert!(
        logs.contains("IAM Roles Anywhere session created"),
        "{logs}"
    );
    for path in ["/v1/status", "/metrics", "/v1/health", "/v1/token"] {
        let r = agent.get(path).await;
        assert_no_session_secrets(&w, &ra, path, &format!("{:?}{}", r.headers, r.body));
    }
    assert_no_session_secrets(&w, &ra, "logs", &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_gives_503_and_a_reason_then_recovers_once_trusted() {
    let w = World::new().await;
    let trusted = Ca::root("the trust anchor's CA");
    let stranger = Ca::root("a CA nobody trusts");
    let leaf = stranger.issue(KeyKind::P384);
    let files = pki::write(w.dir.path(), "host", &leaf, &[], KeyFormat::Sec1);
    let ra = FakeRolesAnywhere::start(Settings::trusting(trusted.der()))
        .await
        .expect("Roles Anywhere endpoint");
    let agent = spawn(&w, &w.config("", &section(&files, &ra.url())));
    agent.wait_listening().await;

    let status = agent
        .wait_for("/v1/status", 30, |r| {
            r.json()["aws"]["last_error"].is_string()
        })
        .await
        .json();
    let reason = status["aws"]["last_error"].as_str().expect("reason");
    assert!(
        reason.contains("403 AccessDeniedException: Untrusted signing certificate")
            && reason.contains("trust anchor"),
        "{reason}"
    );
    let r = agent.wait_for("/v1/token", 30, |r| r.status == 503).await;
    assert_eq!(r.json()["error"], "unavailable");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    let ssm_error = agent.get("/v1/status").await.json()["ssm"]["last_error"].clone();
    assert!(
        ssm_error
            .as_str()
            .unwrap_or("")
            .contains("Untrusted signing certificate"),
        "the SSM failure carries the reason: {ssm_error}"
    );
    let logs = agent.logs();
    assert!(
        logs.contains("IAM Roles Anywhere refused CreateSession")
            && logs.contains("Untrusted signing certificate"),
        "{logs}"
    );

    // Retries back off instead of hammering the service.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = ra.calls();
    assert!(
        (2..=6).contains(&calls),
        "{calls} CreateSession calls in ~4s"
    );

    // Once the trust anchor holds the CA, the next retry works and tokens flow again.
    ra.update(|s| s.trust_anchors.push(stranger.der()));
    agent
        .wait_for("/v1/status", 30, |r| {
            r.json()["aws"]["last_error"].is_null()
        })
        .await;
    let reload = request(&agent.socket, "POST", "/v1/reload", &[]).await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    agent.wait_for("/v1/token", 30, |r| r.status == 200).await;
    assert_no_session_secrets(&w, &ra, "logs", &agent.logs());
}

fn config_check(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = without_aws_keys();
    cmd.args([
        "--config",
        config.to_str().expect("utf8"),
        "config",
        "check",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("lwa-agent runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_and_start_refuse_bad_certificates_and_keys() {
    let w = World::without_moto().await;
    let root = Ca::root("root");
    let leaf = root.issue(KeyKind::P256);
    let files = pki::write(w.dir.path(), "good", &leaf, &[], KeyFormat::Pkcs8);
    let url = "http://127.0.0.1:9";
    let write = |name: &str, f: &pki::Files| {
        let path = w.dir.path().join(name);
        std::fs::write(&path, w.config("", &section(f, url))).expect("write config");
        path
    };

    let good = write("good.toml", &files);
    let (code, out) = config_check(&good, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("note: IAM Roles Anywhere: EC P-256 key"),
        "{out}"
    );

    // World-readable key.
    let loose = pki::write(w.dir.path(), "loose", &leaf, &[], KeyFormat::Pkcs8);
    std::fs::set_permissions(&loose.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, out) = config_check(&write("loose.toml", &loose), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!(
            "{}: `aws.roles_anywhere.private_key`: is readable by every user",
            loose.key.display()
        )) && out.contains("chmod 600"),
        "{out}"
    );

    // A key that is not the certificate's.
    let other = root.issue(KeyKind::P256);
    let mismatched = pki::Files {
        key: pki::write(w.dir.path(), "other", &other, &[], KeyFormat::Pkcs8).key,
        ..files.clone()
    };
    let (code, out) = config_check(&write("mismatch.toml", &mismatched), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not belong to the certificate"), "{out}");

    // An expired certificate; the daemon refuses it too, with exit 2.
    let expired = root.issue_with(KeyKind::P256, &LeafOptions::expired(2));
    let expired_files = pki::write(w.dir.path(), "expired", &expired, &[], KeyFormat::Pkcs8);
    let expired_config = write("expired.toml", &expired_files);
    let (code, out) = config_check(&expired_config, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!(
            "{}: `aws.roles_anywhere.certificate`: expired on",
            expired_files.cert.display()
        )),
        "{out}"
    );
    let run = without_aws_keys()
        .args(["--config", expired_config.to_str().expect("utf8"), "run"])
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("expired on"));

    // Ed25519 is not a Roles Anywhere key type.
    let ed = root.issue(KeyKind::Ed25519);
    let ed_files = pki::write(w.dir.path(), "ed", &ed, &[], KeyFormat::Pkcs8);
    let (code, out) = config_check(&write("ed.toml", &ed_files), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Ed25519"), "{out}");

    // systemd credentials: a note without $CREDENTIALS_DIRECTORY, checked with it, and the
    // daemon refuses to start without it.
    // Names the packaged units do not hand over: run by root outside the units, those
    // (`rolesanywhere-cert`, …) are read where the units load them from, under
    // /etc/lwa-agent/pki, which the packaging tests own.
    let creds = w.dir.path().join("credentials");
    std::fs::create_dir(&creds).expect("mkdir");
    std::fs::copy(&files.cert, creds.join("site-cert")).expect("copy");
    std::fs::copy(&files.key, creds.join("site-key")).expect("copy");
    let systemd = pki::Files {
        cert: "%d/site-cert".into(),
        key: "%d/site-key".into(),
        chain: None,
    };
    let systemd_config = write("systemd.toml", &systemd);
    let (code, out) = config_check(&systemd_config, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("CREDENTIALS_DIRECTORY"), "{out}");
    let dir = creds.to_str().expect("utf8");
    let (code, out) = config_check(&systemd_config, &[("CREDENTIALS_DIRECTORY", dir)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("note: IAM Roles Anywhere: EC P-256 key"),
        "{out}"
    );
    let run = without_aws_keys()
        .args(["--config", systemd_config.to_str().expect("utf8"), "run"])
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("CREDENTIALS_DIRECTORY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_the_certificate_and_whether_create_session_works() {
    let w = World::new().await;
    let root = Ca::root("root");
    let leaf = root.issue_with(KeyKind::P256, &LeafOptions::expiring_in(12));
    let files = pki::write(w.dir.path(), "host", &leaf, &[], KeyFormat::Pkcs8);
    let ra = FakeRolesAnywhere::start(Settings::trusting(root.der()))
        .await
        .expect("Roles Anywhere endpoint");
    let config = w.write_config(&w.config("", &section(&files, &ra.url())));
    let doctor = |cmd: &mut Command| {
        let out = cmd
            .args(["--config", config.to_str().expect("utf8"), "doctor"])
            .output()
            .expect("doctor runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = doctor(&mut without_aws_keys());
    assert_eq!(code, Some(0), "{out}{err}");
    for line in [
        "ok    AWS credential source: IAM Roles Anywhere",
        "WARN  Roles Anywhere certificate: subject O=lwa-agent tests,CN=erp-host-1, serial ",
        "expires in 12 days",
        "ok    Roles Anywhere CreateSession: session for arn:aws:iam::111122223333:role/lwa-agent until",
        "ok    AWS identity:",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    assert!(
        err.contains("expires in 12 days"),
        "the start-up warning is logged: {err}"
    );
    assert_eq!(
        ra.calls(),
        1,
        "doctor and the provider share one CreateSession"
    );
    assert_no_session_secrets(&w, &ra, "doctor output", &format!("{out}{err}"));

    ra.update(|s| s.mode = lwa_agent_testservers::rolesanywhere::Mode::AccessDenied);
    let (code, out, _) = doctor(&mut without_aws_keys());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  Roles Anywhere CreateSession: IAM Roles Anywhere CreateSession")
            && out.contains("403 AccessDeniedException"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotation_check_reminds_about_a_certificate_close_to_expiry() {
    let w = World::new().await;
    let root = Ca::root("root");
    let leaf = root.issue_with(KeyKind::Rsa2048, &LeafOptions::expiring_in(12));
    let files = pki::write(w.dir.path(), "host", &leaf, &[], KeyFormat::Pkcs8);
    let ra = FakeRolesAnywhere::start(Settings::trusting(root.der()))
        .await
        .expect("Roles Anywhere endpoint");
    let (topic, queue) = w.topic_with_queue("cert").await;
    let config = w.write_config(&w.config(
        "",
        &format!(
            "{}\n[rotation]\ntopic_arn = \"{topic}\"\n",
            section(&files, &ra.url())
        ),
    ));
    let state = w.dir.path().join("state");
    let check = || {
        let out = without_aws_keys()
            .env("STATE_DIRECTORY", &state)
            .args([
                "--config",
                config.to_str().expect("utf8"),
                "check",
                "--json",
            ])
            .output()
            .expect("check runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("report")
    };
    let report = check();
    let cert = report["parameters"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|p| p["name"] == "roles-anywhere-certificate")
        .unwrap_or_else(|| panic!("no certificate entry: {report}"))
        .clone();
    assert_eq!(cert["action"], "sent", "{report}");
    assert_eq!(report["sent"], 1, "fresh parameters are not due: {report}");
    let messages = w.messages(&queue, 1, 10).await;
    assert_eq!(messages.len(), 1);
    let subject = messages[0]["Subject"].as_str().expect("subject");
    assert!(
        subject.contains("Roles Anywhere certificate")
            && (subject.contains("expires in 11 days") || subject.contains("expires in 12 days")),
        "{subject}"
    );
    assert_no_session_secrets(&w, &ra, "SNS message", &messages[0].to_string());
    // Not again within repeat_every.
    let again = check();
    assert_eq!(again["sent"], 0, "{again}");
}
