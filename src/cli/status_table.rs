//! `lwa-agent status`: the agent's `/v1/status` as a table a sysadmin can read at a glance.

use std::fmt::Write;
use std::path::PathBuf;

use serde_json::Value;

use super::client::get_ok;
use super::Outcome;

pub async fn status(socket: PathBuf, json: bool) -> Outcome {
    let answer = match get_ok(&socket, "/v1/status").await {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e),
    };
    if json {
        print!("{}", answer.body);
        return Outcome::Ok;
    }
    match serde_json::from_str::<Value>(&answer.body) {
        Ok(v) => {
            print!("{}", render(&v));
            Outcome::Ok
        }
        Err(e) => Outcome::Failed(format!("the agent's status is not JSON: {e}")),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders the status JSON; pure so it is unit-tested.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lwa-agent {}  up {}s  config {}",
        s(&v["version"]),
        s(&v["uptime_seconds"]),
        s(&v["config"])
    );
    let _ = writeln!(
        out,
        "AWS: region {}, credentials from {}{}",
        s(&v["aws"]["region"]),
        s(&v["aws"]["credential_source"]),
        match v["aws"]["session_expires_at"].as_str() {
            Some(e) => format!(", session expires {e}"),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "SSM: last read {}{}",
        s(&v["ssm"]["last_success"]),
        match v["ssm"]["last_error"].as_str() {
            Some(e) => format!(", last error: {e}"),
            None => String::new(),
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<6} {:<22} {:>8} {:>6}  LAST ERROR",
        "CREDENTIAL", "TOKEN", "EXPIRES", "LEFT(s)", "OK/ERR"
    );
    if let Some(creds) = v["credentials"].as_object() {
        for (name, c) in creds {
            let valid = c["token"]["valid"].as_bool().unwrap_or(false);
            let _ = writeln!(
                out,
                "{:<20} {:<6} {:<22} {:>8} {:>6}  {}",
                name,
                if valid { "valid" } else { "NONE" },
                s(&c["token"]["expires_at"]),
                s(&c["token"]["seconds_left"]),
                format!("{}/{}", s(&c["exchanges_ok"]), s(&c["exchanges_failed"])),
                s(&c["last_error"])
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<40} {:>7} {:>8} {:<8} PROBLEM",
        "PARAMETER", "VERSION", "AGE(d)", "STATE"
    );
    if let Some(params) = v["parameters"].as_object() {
        for (name, p) in params {
            let _ = writeln!(
                out,
                "{:<40} {:>7} {:>8} {:<8} {}",
                name,
                s(&p["version"]),
                s(&p["age_days"]),
                s(&p["state"]),
                s(&p["problem"])
            );
        }
    }
    if let Some(r) = v.get("rotation").filter(|r| !r.is_null()) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Rotation check: last {}{}, next {}, last reminder {}",
            s(&r["last_check"]),
            if r["last_check_kind"] == "start_up_look" {
                " (the look at start-up: ages read, nothing sent)"
            } else {
                ""
            },
            s(&r["next_check"]),
            s(&r["last_reminder"])
        );
    }
    auto_rotation(&mut out, v);
    out
}

/// Each credential's last automatic rotation, and each queue's listener.
fn auto_rotation(out: &mut String, v: &Value) {
    let Some(auto) = v["rotation"].get("auto").filter(|a| !a.is_null()) else {
        return;
    };
    let _ = writeln!(
        out,
        "Automatic rotation: {}",
        if auto["enabled"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        }
    );
    if let Some(creds) = v["credentials"].as_object() {
        for (name, c) in creds {
            let r = &c["auto_rotation"];
            if r.is_null() {
                let _ = writeln!(out, "  {name:<20} never rotated automatically");
                continue;
            }
            let _ = writeln!(
                out,
                "  {name:<20} {}{} at {} on {} (trigger {}){}{}",
                s(&r["outcome"]),
                match r["parameter_version"].as_i64() {
                    Some(v) => format!(", version {v}"),
                    None => String::new(),
                },
                s(&r["at"]),
                s(&r["host"]),
                s(&r["trigger"]),
                if r["needs_attention"].as_bool() == Some(true) {
                    ", NEEDS ATTENTION"
                } else {
                    ""
                },
                match r["error"].as_str() {
                    Some(e) => format!(": {e}"),
                    None => String::new(),
                }
            );
        }
    }
    if let Some(queues) = auto["queues"].as_object() {
        for (url, q) in queues {
            let _ = writeln!(
                out,
                "  queue {url}: last receive {}{}",
                s(&q["last_receive"]),
                match q["last_error"].as_str() {
                    Some(e) => format!(", last error: {e}"),
                    None => String::new(),
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_credentials_and_parameters() {
        let v = serde_json::json!({
            "version": "0.1.0", "uptime_seconds": 12, "config": "/etc/x.toml",
            "aws": {"region": "us-east-2", "credential_source": "default credential chain"},
            "ssm": {"last_success": "2026-01-01T00:00:00Z", "last_error": null},
            "credentials": {"default": {"token": {"valid": true, "expires_at": "2026-01-01T01:00:00Z", "seconds_left": 3500},
                "exchanges_ok": 1, "exchanges_failed": 0, "last_error": null}},
            "parameters": {"/erp/secret": {"version": 3, "age_days": 151, "state": "warn", "problem": null}}
        });
        let text = render(&v);
        assert!(text.contains("default              valid"), "{text}");
        assert!(text.contains("/erp/secret"));
        assert!(text.contains("warn"));
        assert!(text.contains("1/0"));
        assert!(!text.contains("Automatic rotation"), "only when configured");
    }

    #[test]
    fn renders_each_credentials_last_automatic_rotation() {
        let v = serde_json::json!({
            "credentials": {
                "default": {"auto_rotation": {"outcome": "failed", "parameter_version": 3,
                    "at": "2026-01-01T00:00:00Z", "host": "erp-1", "trigger": "age",
                    "needs_attention": true, "error": "LWA rejected the new secret"}},
                "eu": {"auto_rotation": null}
            },
            "rotation": {"auto": {"enabled": true, "queues": {"https://q": {"last_receive": "2026-01-01T00:00:01Z"}}}}
        });
        let text = render(&v);
        assert!(text.contains("Automatic rotation: on"), "{text}");
        assert!(
            text.contains("failed, version 3 at 2026-01-01T00:00:00Z on erp-1 (trigger age), NEEDS ATTENTION: LWA rejected"),
            "{text}"
        );
        assert!(
            text.contains("eu                   never rotated automatically"),
            "{text}"
        );
        assert!(text.contains("queue https://q: last receive 2026-01-01T00:00:01Z"));
    }
}
