//! The command line: config check, token, status, exit codes; and no secret anywhere a
//! user can see it.

use crate::harness::*;

fn lwa_agent(args: &[&str]) -> std::process::Output {
    agent_command().args(args).output().expect("lwa-agent runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_names_file_key_and_reason_and_exits_2() {
    let w = World::without_moto().await;
    let good = w.write_config(&w.config("", ""));
    let out = lwa_agent(&["--config", good.to_str().expect("utf8"), "config", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = w.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        w.config(
            "refresh_before_expiry = \"soon\"",
            "[rotation]\nwarn_afterr = \"150d\"\n",
        ),
    )
    .expect("write");
    let out = lwa_agent(&["--config", bad.to_str().expect("utf8"), "config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(bad.to_str().expect("utf8")),
        "names the file: {err}"
    );
    assert!(err.contains("warn_afterr"), "names the unknown key: {err}");
    // An unknown key hides no other problem: both typos and the bad duration are named.
    std::fs::write(
        &bad,
        w.config(
            "refresh_before_expiry = \"soon\"\ntimeuot = \"3s\"",
            "[rotation]\nwarn_afterr = \"150d\"\n",
        ),
    )
    .expect("write");
    let out = lwa_agent(&["--config", bad.to_str().expect("utf8"), "config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "warn_afterr",
        "timeuot",
        "`lwa.refresh_before_expiry`",
        "3 problems",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }

    // Semantic problems are all reported, each with its key.
    std::fs::write(
        &bad,
        w.config("refresh_before_expiry = \"soon\"", "")
            .replace("name = \"default\"", "name = \"Default!\""),
    )
    .expect("write");
    let out = lwa_agent(&["--config", bad.to_str().expect("utf8"), "config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`lwa.refresh_before_expiry`") && err.contains("`credentials.0.name`"),
        "{err}"
    );

    // The daemon refuses the same config with exit 2.
    let out = lwa_agent(&["--config", bad.to_str().expect("utf8"), "run"]);
    assert_eq!(out.status.code(), Some(2));

    // Environment overrides name the variable.
    let out = agent_command()
        .env("LWA_AGENT_LWA__TIMEOUT", "whenever")
        .args(["--config", good.to_str().expect("utf8"), "config", "check"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("whenever"));
    let out = agent_command()
        .env("LWA_AGENT_AWS__REGION", "eu-west-1")
        .env("LWA_AGENT_CONFIG", good.to_str().expect("utf8"))
        .args(["config", "check"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = lwa_agent(&["--config", "/nonexistent/lwa-agent.toml", "config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_status_commands_talk_to_the_running_agent() {
    let w = World::new().await;
    let agent = w.agent(&w.config("", "")).await;
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    let config = w.dir.path().join("lwa-agent.toml");
    let cfg = config.to_str().expect("utf8");

    let out = lwa_agent(&["--config", cfg, "token"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("Atza|test-token-"), "{token}");

    let out = lwa_agent(&["--config", cfg, "token", "default", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["access_token"], token.as_str());

    let out = lwa_agent(&["--config", cfg, "token", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credential named `nope`"));

    let out = lwa_agent(&["--config", cfg, "status"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("default") && table.contains("valid") && table.contains(SECRET_PARAM),
        "{table}"
    );
    // The agent's look at the parameters' ages at start-up shows as the last check.
    let table =
        || String::from_utf8_lossy(&lwa_agent(&["--config", cfg, "status"]).stdout).into_owned();
    let shown = eventually(
        10,
        || async {
            let t = table();
            t.contains("(the look at start-up: ages read, nothing sent)")
                .then_some(t)
        },
        table,
    )
    .await;
    assert!(!shown.contains("Rotation check: last -"), "{shown}");
    // Logs to a pipe carry no colour codes.
    assert!(!agent.logs().contains('\u{1b}'), "{}", agent.logs());

    let out = lwa_agent(&["--config", cfg, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let out = lwa_agent(&["token", "--socket", "/nonexistent.sock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the agent running?"));

    let out = lwa_agent(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_nowhere_but_in_ssm_and_the_lwa_request() {
    let w = World::new().await;
    // The most verbose logging there is: secrets must stay out of it too.
    let agent = w.spawn_agent(&w.config("", ""), &[("RUST_LOG", "trace")]);
    agent.wait_listening().await;
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    // The error paths too: LWA revokes the secret, and a new version in SSM makes the
    // agent exchange at once, get invalid_client, re-read SSM and retry.
    w.lwa.update(|s| s.client_secrets = vec!["other".into()]);
    w.put(SECRET_PARAM, &w.canaries.client_secret).await;
    let reload = request(&agent.socket, "POST", "/v1/reload", &[]).await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    agent
        .wait_for("/v1/status", 20, |r| {
            r.json()["credentials"]["default"]["failed"] == true
        })
        .await;
    let refused = w.lwa.received().iter().filter(|r| r.status == 401).count();
    assert_eq!(
        refused, 2,
        "the rejected secret was sent, then sent again after a re-read"
    );
    let _ = agent.get("/v1/token/nope").await;

    for path in [
        "/v1/token",
        "/v1/status",
        "/metrics",
        "/v1/health",
        "/v1/token/nope",
    ] {
        let r = agent.get(path).await;
        w.canaries
            .assert_absent(path, &format!("{:?}{}", r.headers, r.body));
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", agent.child.id())).expect("cmdline");
    w.canaries
        .assert_absent("argv", &String::from_utf8_lossy(&cmdline));
    let environ = std::fs::read(format!("/proc/{}/environ", agent.child.id())).expect("environ");
    w.canaries
        .assert_absent("environment", &String::from_utf8_lossy(&environ));
    // Nothing written to disk beside the config (no temp files with secrets).
    for entry in std::fs::read_dir(w.dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let text = std::fs::read(&path).unwrap_or_default();
            w.canaries
                .assert_absent(&path.display().to_string(), &String::from_utf8_lossy(&text));
        }
    }
    let logs = agent.logs();
    assert!(
        logs.contains("access token refreshed"),
        "logs are being captured"
    );
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(logs.contains("invalid_client"), "the rejection is logged");
    w.canaries.assert_absent("logs", &logs);
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lwa-agent.toml");
    let out = lwa_agent(&[
        "--config",
        example.to_str().expect("utf8"),
        "config",
        "check",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_identity_parameters_lwa_and_the_topic() {
    let w = World::new().await;
    let (topic, _) = w.topic_with_queue("doctor").await;
    let config = w.write_config(&w.config("", &format!("[rotation]\ntopic_arn = \"{topic}\"\n")));
    let cfg = config.to_str().expect("utf8");
    let out = lwa_agent(&["--config", cfg, "doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok    AWS identity",
        &format!("ok    parameter {SECRET_PARAM}: version 1, SecureString"),
        "ok    LWA exchange for `default`: token issued",
        "ok    SNS topic",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from\n{stdout}");
    }
    w.canaries.assert_absent("doctor output", &stdout);

    // A revoked secret and a missing topic are reported, and the exit code says so.
    w.lwa.update(|s| s.client_secrets = vec!["other".into()]);
    let bad = w.write_config(&w.config(
        "",
        "[rotation]\ntopic_arn = \"arn:aws:sns:us-east-2:123456789012:missing\"\n",
    ));
    let out = lwa_agent(&["--config", bad.to_str().expect("utf8"), "doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  LWA exchange for `default`") && stdout.contains("invalid_client"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL  SNS topic"), "{stdout}");
    w.canaries.assert_absent("doctor output", &stdout);
}
