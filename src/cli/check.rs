//! `lwa-agent check [--dry-run] [--json]`: one rotation check now (what the timer runs):
//! reminders, and with `[rotation.auto]` the request for a due client secret's rotation
//! (the running agent's listener completes it when the new secret arrives).

use super::Outcome;
use crate::config::Config;
use crate::rotation::{self, Report};

pub async fn run(cfg: Config, dry_run: bool, json: bool) -> Outcome {
    let (sdk, source) = match crate::aws::connect(&cfg.aws).await {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let lwa = match crate::lwa::exchange::LwaClient::new(&cfg.lwa) {
        Ok(l) => std::sync::Arc::new(l),
        Err(e) => return Outcome::Failed(e),
    };
    let state_dir = rotation::state::directory();
    let mode = rotation::Mode::Command;
    // The timer's check asks Amazon for a new secret when one is due; the running agent's
    // listener completes it when the secret arrives.
    let auto = match rotation::auto::Rotator::new(&cfg, &sdk, lwa, state_dir.clone(), mode.clone())
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e),
    };
    let checker = rotation::Checker::new(
        &cfg,
        &sdk,
        state_dir,
        source.certificate_expiry(),
        &mode,
        auto,
    );
    let report = match checker.run(dry_run).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("rotation check failed: {e}")),
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return Outcome::Failed(format!("cannot print the report: {e}")),
        }
    } else {
        print!("{}", render(&report));
    }
    if report.failed > 0 {
        return Outcome::Failed(format!(
            "{} reminder{} could not be sent (see above); they are retried on the next check",
            report.failed,
            if report.failed == 1 { "" } else { "s" }
        ));
    }
    Outcome::Ok
}

/// The report as a table; pure for the unit test.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "rotation check at {}{}; topic {}\n{:<44} {:>7} {:>7} {:<8} ACTION\n",
        r.checked_at,
        if r.dry_run {
            " (dry run: nothing published)"
        } else {
            ""
        },
        r.topic_arn.as_deref().unwrap_or("(none: log only)"),
        "PARAMETER",
        "VERSION",
        "AGE(d)",
        "STATE"
    );
    for p in &r.parameters {
        let dash = || "-".to_string();
        out.push_str(&format!(
            "{:<44} {:>7} {:>7} {:<8} {}{}\n",
            p.name,
            p.version.map(|v| v.to_string()).unwrap_or_else(dash),
            p.age_days.map(|v| v.to_string()).unwrap_or_else(dash),
            p.state,
            match &p.auto_rotation {
                Some(a) => format!("{} [{a}]", p.action),
                None => p.action.clone(),
            },
            p.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!("{} sent, {} failed\n", r.sent, r.failed));
    out
}
