//! AWS trouble: the agent becomes ready anyway, answers 503 with Retry-After, and recovers.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_unreachable_at_start_then_recovers() {
    let w = World::without_moto().await;
    let agent = w
        .agent(&w.config_parts(&Parts {
            ssm: "refresh_interval = \"2s\"",
            ..Parts::default()
        }))
        .await;
    agent
        .wait_for("/v1/status", 30, |r| {
            r.json()["ssm"]["last_error"].is_string()
        })
        .await;
    let r = agent.get("/v1/token").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "unavailable");
    assert!(r.header("retry-after").is_some());
    let health = agent.get("/v1/health").await;
    assert_eq!(health.status, 503);
    let status = agent.get("/v1/status").await.json();
    assert!(
        status["ssm"]["last_error"]
            .as_str()
            .expect("error")
            .contains("SSM"),
        "{status}"
    );
    assert_eq!(w.lwa.calls(), 0);

    let w = w.start_moto().await;
    let r = agent.wait_for("/v1/token", 90, |r| r.status == 200).await;
    assert_eq!(r.json()["credential"], "default");
    assert_eq!(agent.get("/v1/health").await.status, 200);
    w.canaries.assert_absent("logs", &agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_parameter_fails_only_its_credential() {
    let w = World::new().await;
    let extra = format!(
        "[[credentials]]\nname = \"broken\"\nclient_id_parameter = \"{ID_PARAM}\"\n\
         client_secret_parameter = \"/erp/lwa/does-not-exist\"\nrefresh_token_parameter = \"{REFRESH_PARAM}\"\n"
    );
    let agent = w.agent(&w.config("", &extra)).await;
    agent
        .wait_for("/v1/token/default", 20, |r| r.status == 200)
        .await;
    let r = agent
        .wait_for("/v1/token/broken", 20, |r| r.status == 503)
        .await;
    let msg = r.json()["message"].as_str().expect("message").to_string();
    assert!(
        msg.contains("/erp/lwa/does-not-exist") && msg.contains("not found"),
        "{msg}"
    );
    let status = agent.get("/v1/status").await.json();
    assert_eq!(
        status["parameters"]["/erp/lwa/does-not-exist"]["state"],
        "unread"
    );
    let health = agent.get("/v1/health").await;
    assert_eq!(health.status, 503);
    assert!(health.json()["credentials"]["broken"]["error"].is_string());
    assert!(health.json()["credentials"].get("default").is_none());

    // Creating the parameter and reloading fixes it without a restart.
    w.put("/erp/lwa/does-not-exist", &w.canaries.client_secret)
        .await;
    let reload = request(&agent.socket, "POST", "/v1/reload", &[]).await;
    assert_eq!(reload.status, 200);
    agent
        .wait_for("/v1/token/broken", 70, |r| r.status == 200)
        .await;
}

/// What `lwa-agent check` prints when AWS cannot be used: one readable line per failure,
/// the real cause first and advice that fits it (no SDK Debug text, no advice about a
/// permission when the problem is the credentials or the network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_errors_are_one_line_with_the_cause_and_fitting_advice() {
    let w = World::new().await;
    let config = w.write_config(&w.config("", ""));
    let check = |env: &[(&str, &str)], config: &std::path::Path| {
        let mut cmd = agent_command();
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("STATE_DIRECTORY", w.dir.path().join("state"))
            .arg("--config")
            .arg(config)
            .args(["check", "--dry-run"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("lwa-agent runs");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        for bad in ["DispatchFailure", "ConnectorError", "source:", "Some("] {
            assert!(!stderr.contains(bad), "Debug text in: {stderr}");
        }
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        stderr
    };

    // No credentials anywhere (no keys, no instance metadata).
    let said = check(&[], &config);
    assert!(said.contains("no AWS credentials found"), "{said}");
    assert!(said.contains("[aws.roles_anywhere]"), "{said}");
    assert!(!said.contains("allow ssm:"), "{said}");

    // Credentials, but nothing listens at the endpoint.
    let closed = lwa_agent_testservers::moto::free_port();
    let unreachable = w.dir.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        w.config("", "")
            .replace(&w.endpoint(), &format!("http://127.0.0.1:{closed}")),
    )
    .expect("write");
    let said = check(
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
        &unreachable,
    );
    assert!(said.contains("cannot reach AWS"), "{said}");
    assert!(said.to_lowercase().contains("refused"), "{said}");
    assert!(!said.contains("allow ssm:"), "{said}");
}

/// TLS trusts the system's CA store. Without one (here: the environment points rustls at
/// files that do not exist) the agent cannot check any certificate, so it stops at once
/// and says what to install; the AWS SDK's client would panic, reqwest would say only
/// "builder error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_store_the_agent_stops_and_names_the_package() {
    let w = World::new().await;
    let missing = w.dir.path().join("no-such-ca.pem");
    let missing = missing.to_str().expect("utf8");
    let mut agent = w.spawn_agent(
        &w.config("", ""),
        &[("SSL_CERT_FILE", missing), ("SSL_CERT_DIR", missing)],
    );
    let status = agent.wait_exit(20);
    assert_eq!(status.code(), Some(1), "{}", agent.logs());
    let logs = agent.logs();
    assert!(
        logs.contains("no CA certificates found")
            && logs.contains("install the ca-certificates package"),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}
