//! Serving tokens: the answer formats, single flight, rotation, outages.

use std::sync::Arc;
use std::time::Duration;

use lwa_agent_testservers::lwa::Mode;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_token_as_json_and_as_text() {
    let w = World::new().await;
    let agent = w.agent(&w.config("", "")).await;
    let r = agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    let v = r.json();
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["credential"], "default");
    let token = v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    assert!(token.starts_with("Atza|test-token-"), "{token}");
    let left = v["expires_in"].as_u64().expect("expires_in");
    assert!((3500..=3600).contains(&left), "{left}");
    let at = v["expires_at"].as_str().expect("expires_at");
    assert!(at.ends_with('Z') && at.len() == 20, "RFC 3339 UTC: {at}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let named = agent.get("/v1/token/default").await;
    assert_eq!(named.json()["access_token"], token.as_str());

    let text = request(
        &agent.socket,
        "GET",
        "/v1/token",
        &[("Accept", "text/plain")],
    )
    .await;
    assert_eq!(text.status, 200);
    assert_eq!(text.body, format!("{token}\n"));
    assert!(text
        .header("content-type")
        .expect("type")
        .starts_with("text/plain"));

    // What LWA received: a form-encoded refresh_token grant with the SSM values.
    let got = w.lwa.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].content_type, "application/x-www-form-urlencoded");
    assert_eq!(got[0].form["grant_type"], "refresh_token");
    assert_eq!(got[0].form["client_id"], CLIENT_ID);
    assert_eq!(got[0].form["client_secret"], w.canaries.client_secret);
    assert_eq!(got[0].form["refresh_token"], w.canaries.refresh_token);

    let health = agent.get("/v1/health").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, "ready".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grantless_credentials_use_client_credentials_with_scopes() {
    let w = World::new().await;
    let config = format!(
        "{}\n[[credentials]]\nname = \"notifications\"\nclient_id_parameter = \"{ID_PARAM}\"\n\
         client_secret_parameter = \"{SECRET_PARAM}\"\nscopes = [\"sellingpartnerapi::notifications\"]\n",
        w.config("", "")
    );
    let agent = w.agent(&config).await;
    let r = agent
        .wait_for("/v1/token/notifications", 20, |r| r.status == 200)
        .await;
    assert_eq!(r.json()["credential"], "notifications");
    let grantless: Vec<_> = w
        .lwa
        .received()
        .into_iter()
        .filter(|r| r.form.get("grant_type").map(String::as_str) == Some("client_credentials"))
        .collect();
    assert_eq!(grantless.len(), 1);
    assert_eq!(
        grantless[0].form["scope"],
        "sellingpartnerapi::notifications"
    );
    assert!(!grantless[0].form.contains_key("refresh_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_on_a_cold_cache_cause_one_exchange() {
    let w = World::new().await;
    w.lwa.update(|s| s.delay = Duration::from_millis(1500));
    let agent = Arc::new(w.spawn_agent(&w.config("", ""), &[]));
    agent.wait_listening().await;
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let socket = agent.socket.clone();
        tasks.push(tokio::spawn(async move {
            request(&socket, "GET", "/v1/token", &[]).await
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.insert(
            r.json()["access_token"]
                .as_str()
                .expect("token")
                .to_string(),
        );
    }
    assert_eq!(tokens.len(), 1, "every request got the same token");
    assert_eq!(w.lwa.calls(), 1, "one exchange for 500 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_rotated_in_ssm_is_picked_up_without_a_failed_request() {
    let w = World::new().await;
    // Short-lived tokens so the refresh (with the old, now revoked, secret) comes soon.
    w.lwa.update(|s| s.expires_in = 30);
    let agent = w
        .agent(&w.config("refresh_before_expiry = \"15s\"", ""))
        .await;
    let first = agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    let first_token = first.json()["access_token"].clone();

    // Rotate: a new secret in SSM, and LWA stops accepting the old one at once (harsher
    // than LWA's 7-day overlap).
    let new_secret = format!("{}-ROTATED", w.canaries.client_secret);
    w.put(SECRET_PARAM, &new_secret).await;
    w.lwa
        .update(|s| s.client_secrets = vec![new_secret.clone()]);

    let mut last = first_token.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while last == first_token {
        assert!(
            std::time::Instant::now() < deadline,
            "token never refreshed; logs:\n{}",
            agent.logs()
        );
        let r = agent.get("/v1/token").await;
        assert_eq!(
            r.status, 200,
            "a request failed during rotation: {}",
            r.body
        );
        last = r.json()["access_token"].clone();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = w.lwa.received();
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![200, 401, 200],
        "old secret refused, then the new one used"
    );
    assert_eq!(got[2].form["client_secret"], new_secret);
    assert!(agent.logs().contains("re-reading the parameters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_is_served_through_an_lwa_outage_and_then_503() {
    let w = World::new().await;
    w.lwa.update(|s| s.expires_in = 30);
    let agent = w
        .agent(&w.config("refresh_before_expiry = \"25s\"", ""))
        .await;
    let first = agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    let token = first.json()["access_token"].clone();
    w.lwa.update(|s| s.mode = Mode::Fail(503));
    // Refresh starts at 15s and fails; the token stays usable until 10s before expiry.
    tokio::time::sleep(Duration::from_secs(17)).await;
    let during = agent.get("/v1/token").await;
    assert_eq!(during.status, 200, "{}", during.body);
    assert_eq!(during.json()["access_token"], token);
    assert!(w.lwa.calls() >= 2, "the agent kept trying");

    let after = agent.wait_for("/v1/token", 20, |r| r.status == 503).await;
    let v = after.json();
    assert_eq!(v["error"], "unavailable");
    assert!(v["message"].as_str().expect("message").contains("HTTP 503"));
    let retry: u64 = after
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let health = agent.get("/v1/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "degraded");

    // LWA back: the agent recovers on its own.
    w.lwa.update(|s| s.mode = Mode::Normal);
    agent.wait_for("/v1/token", 70, |r| r.status == 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_hangs_are_retried_with_backoff() {
    let w = World::new().await;
    w.lwa.update(|s| s.mode = Mode::Fail(429));
    let agent = w.agent(&w.config("", "")).await;
    let r = agent.wait_for("/v1/token", 10, |r| r.status == 503).await;
    assert!(r.json()["message"]
        .as_str()
        .expect("m")
        .contains("throttling"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = w.lwa.calls();
    assert!(
        (2..=5).contains(&calls),
        "backoff, not a busy loop: {calls} calls in ~3s"
    );
    w.lwa.update(|s| s.mode = Mode::Hang);
    let r = agent.wait_for("/v1/status", 30, |r| {
        r.json()["credentials"]["default"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out"))
    });
    r.await;
    w.lwa.update(|s| s.mode = Mode::Normal);
    agent.wait_for("/v1/token", 70, |r| r.status == 200).await;
    let metrics = agent.get("/metrics").await.body;
    for result in ["throttled", "unreachable", "ok"] {
        assert!(
            metrics.contains(&format!("credential=\"default\",result=\"{result}\"")),
            "{result} missing from\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_mark_the_credential_failed_after_one_reread() {
    let w = World::new().await;
    w.lwa
        .update(|s| s.refresh_tokens = vec!["something-else".into()]);
    let agent = w.agent(&w.config("", "")).await;
    let r = agent.wait_for("/v1/token", 20, |r| r.status == 503).await;
    assert!(r.json()["message"]
        .as_str()
        .expect("m")
        .contains("invalid_grant"));
    let status = agent
        .wait_for("/v1/status", 10, |r| {
            r.json()["credentials"]["default"]["failed"] == true
        })
        .await
        .json();
    assert_eq!(status["credentials"]["default"]["exchanges_failed"], 1);
    // One exchange, one re-read of SSM, one retry: then it waits instead of hammering.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.lwa.calls(), 2);
    let metrics = agent.get("/metrics").await.body;
    assert!(
        metrics.contains(
            "lwa_agent_lwa_exchanges_total{credential=\"default\",result=\"auth_error\"} 1"
        ),
        "{metrics}"
    );
    // Fixing the parameter in SSM and reloading brings it back.
    w.lwa.update(|s| {
        s.refresh_tokens
            .push(w.canaries.refresh_token.clone() + "-new")
    });
    w.put(REFRESH_PARAM, &(w.canaries.refresh_token.clone() + "-new"))
        .await;
    let reload = request(&agent.socket, "POST", "/v1/reload", &[]).await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    agent.wait_for("/v1/token", 70, |r| r.status == 200).await;
    w.canaries.assert_absent("agent logs", &agent.logs());
}
