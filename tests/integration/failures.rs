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
