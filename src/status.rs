//! `GET /v1/status` and `GET /metrics`: views of the agent's state with no secret in them.
//! Only names, versions, times, counts and error texts (which never carry secrets) appear.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};

use crate::agent::Agent;
use crate::metrics::Gauges;
use crate::rotation::decide::{age_of, Age};

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn age_secs(t: SystemTime, now: SystemTime) -> u64 {
    now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0)
}

/// Each credential's last automatic rotation (from the state file), when it is configured.
fn auto_records(
    agent: &Agent,
) -> std::collections::BTreeMap<String, crate::rotation::state::AutoRotation> {
    agent
        .auto_rotation
        .get()
        .map(|r| r.records())
        .unwrap_or_default()
}

pub fn build(agent: &Agent) -> Value {
    let now = Instant::now();
    let wall = SystemTime::now();
    let autos = auto_records(agent);
    let mut credentials = Map::new();
    for slot in agent.slots() {
        let s = slot.state();
        let token = s.token.as_ref().map(|t| {
            json!({
                "expires_at": rfc3339(t.expires_at_wall),
                "seconds_left": t.seconds_left(now),
                "valid": slot.cached(now).is_some(),
            })
        });
        credentials.insert(
            slot.config.name.clone(),
            json!({
                "grant": if slot.config.refresh_token_parameter.is_some() { "refresh_token" } else { "client_credentials" },
                "token": token,
                "last_refresh": s.last_refresh.map(rfc3339),
                "last_error": s.last_error,
                "failed": s.failed,
                "retry_in_seconds": s.retry_at.map(|at| at.saturating_duration_since(now).as_secs()),
                "exchanges_ok": s.exchanges_ok,
                "exchanges_failed": s.exchanges_failed,
                "auto_rotation": autos.get(&slot.config.name),
            }),
        );
    }
    let snap = agent.parameters.snapshot();
    let mut parameters = Map::new();
    let rot = &agent.config.rotation;
    for name in agent.config.credential_parameters() {
        let entry = match snap.values.get(&name) {
            Some(p) => {
                let age = p.last_modified.map(|t| age_secs(t, wall));
                let state = match age.map(|a| age_of(rot, Duration::from_secs(a))) {
                    Some(Age::Expired) => "expired",
                    Some(Age::Warn) => "warn",
                    Some(Age::Ok) => "ok",
                    None => "unknown",
                };
                json!({
                    "version": p.version,
                    "type": p.kind,
                    "last_modified": p.last_modified.map(rfc3339),
                    "age_days": age.map(|a| a / 86400),
                    "age_seconds": age,
                    "state": state,
                    "problem": snap.problems.get(&name),
                })
            }
            None => json!({
                "version": null,
                "state": "unread",
                "problem": snap.problems.get(&name).or(snap.last_error.as_ref()),
            }),
        };
        parameters.insert(name, entry);
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": agent.started.elapsed().as_secs(),
        "started_at": rfc3339(agent.started_at),
        "config": agent.config.file.display().to_string(),
        "aws": aws_status(agent),
        "ssm": {
            "last_success": snap.last_success.map(rfc3339),
            "last_error": snap.last_error,
            "calls": agent.metrics.ssm_call_count(),
        },
        "credentials": credentials,
        "parameters": parameters,
        "rotation": rotation_status(agent),
    })
}

fn rotation_status(agent: &Agent) -> Value {
    let cfg = &agent.config.rotation;
    let Ok(s) = agent.rotation.lock() else {
        return Value::Null;
    };
    json!({
        "enabled": cfg.enabled,
        "schedule": cfg.schedule,
        "topic_arn": cfg.topic_arn,
        "last_check": s.last_check.map(rfc3339),
        // The start-up look reads every parameter's age and sends nothing.
        "last_check_kind": s.last_check.map(|_| if s.last_check_was_look { "start_up_look" } else { "check" }),
        "next_check": if cfg.enabled {
            crate::rotation::schedule::next_after_now(&cfg.schedule).map(rfc3339)
        } else {
            None
        },
        "last_reminder": s.last_reminder,
        "last_error": s.last_error,
        "parameters": s.last_report.as_ref().map(|r| &r.parameters),
        "auto": agent.auto_rotation.get().map(|r| r.status()),
    })
}

fn aws_status(agent: &Agent) -> Value {
    let mut aws = agent.aws_source.status();
    if let Some(obj) = aws.as_object_mut() {
        obj.insert("region".into(), agent.config.aws.region.clone().into());
    }
    aws
}

pub fn metrics_text(agent: &Agent) -> String {
    let now = Instant::now();
    let wall = SystemTime::now();
    let token_seconds_left = agent
        .slots()
        .iter()
        .map(|s| {
            let left = s.cached(now).map(|t| t.seconds_left(now)).unwrap_or(0);
            (s.config.name.clone(), left)
        })
        .collect();
    let snap = agent.parameters.snapshot();
    let mut parameter_age_seconds: Vec<(String, u64)> = snap
        .values
        .values()
        .filter_map(|p| Some((p.name.clone(), age_secs(p.last_modified?, wall))))
        .collect();
    drop(snap);
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    };
    let (mut parameter_state, mut last_check) = (Vec::new(), None);
    if let Ok(r) = agent.rotation.lock() {
        last_check = r.last_check.and_then(unix);
        for p in r.last_report.iter().flat_map(|r| &r.parameters) {
            parameter_state.push((p.name.clone(), p.state.clone()));
            // Watched parameters that are not a credential's are aged from the report.
            if let (Some(days), false) = (
                p.age_days,
                parameter_age_seconds.iter().any(|(n, _)| n == &p.name),
            ) {
                parameter_age_seconds.push((p.name.clone(), days * 86400));
            }
        }
    }
    parameter_age_seconds.sort();
    let rot = &agent.config.rotation;
    let next_check = rot
        .enabled
        .then(|| crate::rotation::schedule::next_after_now(&rot.schedule))
        .flatten()
        .and_then(unix);
    let auto_rotations = auto_records(agent)
        .into_iter()
        .map(|(credential, r)| crate::metrics::AutoRotationGauge {
            credential,
            at: humantime::parse_rfc3339(&r.at).ok().and_then(unix),
            outcome: r.outcome,
            needs_attention: r.needs_attention,
        })
        .collect();
    agent.metrics.render(&Gauges {
        token_seconds_left,
        parameter_age_seconds,
        parameter_state,
        last_check,
        next_check,
        uptime_seconds: agent.started.elapsed().as_secs(),
        auto_rotations,
    })
}
