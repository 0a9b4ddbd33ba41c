//! The status document and the metrics as the socket serves them: every section and field
//! docs/clients.md promises, whichever part of the agent (the token core, or the rotation
//! beside it) puts it there.

use std::collections::BTreeSet;

use crate::harness::*;

/// The keys of a JSON object, sorted.
fn keys(v: &serde_json::Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_and_the_metrics_have_every_part() {
    let w = World::new().await;
    let agent = w.agent(&w.config("", "")).await;
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    // The start-up look (a dry run of the rotation check) fills in the rotation's part.
    let status = agent
        .wait_for("/v1/status", 20, |r| {
            r.json()["rotation"]["last_check_kind"] == "start_up_look"
        })
        .await
        .json();

    assert_eq!(
        keys(&status),
        set(&[
            "version",
            "uptime_seconds",
            "started_at",
            "config",
            "aws",
            "ssm",
            "credentials",
            "parameters",
            "rotation",
        ])
    );
    assert_eq!(
        keys(&status["ssm"]),
        set(&["last_success", "last_error", "calls"])
    );
    assert_eq!(status["aws"]["region"], REGION, "{}", status["aws"]);

    let credential = &status["credentials"]["default"];
    assert_eq!(
        keys(credential),
        set(&[
            "grant",
            "token",
            "last_refresh",
            "last_error",
            "failed",
            "retry_in_seconds",
            "exchanges_ok",
            "exchanges_failed",
            "auto_rotation",
        ])
    );
    assert_eq!(credential["grant"], "refresh_token");
    assert_eq!(
        keys(&credential["token"]),
        set(&["expires_at", "seconds_left", "valid"])
    );
    assert_eq!(credential["token"]["valid"], true);
    // No automatic rotation configured: the field is there, and null.
    assert!(credential["auto_rotation"].is_null(), "{credential}");

    for name in [ID_PARAM, SECRET_PARAM, REFRESH_PARAM] {
        let p = &status["parameters"][name];
        assert_eq!(
            keys(p),
            set(&[
                "version",
                "type",
                "last_modified",
                "age_days",
                "age_seconds",
                "state",
                "problem",
            ]),
            "{name}"
        );
        assert_eq!(p["type"], "SecureString", "{name}");
        // Just written: well inside warn_after.
        assert_eq!(p["state"], "ok", "{name}");
    }

    let rotation = &status["rotation"];
    assert_eq!(
        keys(rotation),
        set(&[
            "enabled",
            "schedule",
            "topic_arn",
            "last_check",
            "last_check_kind",
            "next_check",
            "last_reminder",
            "last_error",
            "parameters",
            "auto",
        ])
    );
    assert_eq!(rotation["enabled"], true);
    assert!(rotation["next_check"].is_string(), "{rotation}");
    assert!(rotation["auto"].is_null(), "{rotation}");
    assert_eq!(
        rotation["parameters"].as_array().map(Vec::len),
        Some(3),
        "{rotation}"
    );

    let metrics = agent.get("/metrics").await.body;
    for family in [
        "lwa_agent_token_seconds_left{credential=\"default\"}",
        "lwa_agent_token_requests_total{credential=\"default\",code=\"200\"}",
        "lwa_agent_lwa_exchanges_total{credential=\"default\",result=\"ok\"}",
        "lwa_agent_ssm_calls_total",
        "lwa_agent_uptime_seconds",
        &format!("lwa_agent_parameter_age_seconds{{parameter=\"{SECRET_PARAM}\"}}"),
        &format!("lwa_agent_parameter_state{{parameter=\"{SECRET_PARAM}\",state=\"ok\"}} 1"),
        "lwa_agent_rotation_last_check_timestamp_seconds",
        "lwa_agent_rotation_next_check_timestamp_seconds",
    ] {
        assert!(metrics.contains(family), "no {family} in:\n{metrics}");
    }
}
