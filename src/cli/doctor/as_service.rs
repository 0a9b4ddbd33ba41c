//! `lwa-agent doctor --as-service`: runs the checks in lwa-agent-doctor.service (the
//! service's user, credentials, environment and sandbox) and prints what they found.
//! `systemctl` and `journalctl` do the work; this only reads their answers.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cli::Outcome;

/// The unit that runs `lwa-agent doctor` as the service would.
const UNIT: &str = "lwa-agent-doctor.service";

/// How long the report may take to reach the journal after the unit has finished: journald
/// reads the unit's output stream on its own schedule, so `systemctl start` returning does
/// not mean the lines are readable yet.
const JOURNAL_GRACE: Duration = Duration::from_secs(10);

pub fn as_service() -> Outcome {
    // Lines from this second on: `@seconds` is the one form of --since every systemd
    // since 239 reads the same way. (The unit's InvocationID cannot pick the run: a
    // finished oneshot is unloaded, and its id with it.)
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let started = Command::new("systemctl").args(["start", UNIT]).status();
    let started = match started {
        Ok(s) => s.success(),
        Err(e) => {
            return Outcome::Failed(format!(
                "cannot run systemctl ({e}): --as-service needs systemd and the installed \
                 package; run it as root on a host where lwa-agent is installed"
            ))
        }
    };
    match read_report(since) {
        Ok(text) => print!("{text}"),
        Err(why) => {
            return Outcome::Failed(format!(
                "cannot read {UNIT}'s output ({why}): see `journalctl -u {UNIT}`"
            ))
        }
    }
    if started {
        Outcome::Ok
    } else {
        Outcome::Failed(format!(
            "the checks failed as the service runs (see above; `systemctl status {UNIT}` and \
             `journalctl -u {UNIT}` have the rest)"
        ))
    }
}

/// The run's own lines (`_SYSTEMD_UNIT=`: its processes' output, not systemd's messages
/// about it), once its last line is in the journal, or what is there when the grace is
/// over, with a note.
fn read_report(since: u64) -> Result<String, String> {
    let deadline = Instant::now() + JOURNAL_GRACE;
    loop {
        let out = Command::new("journalctl")
            .arg(format!("_SYSTEMD_UNIT={UNIT}"))
            .arg(format!("--since=@{since}"))
            .args(["-o", "cat", "--no-pager"])
            .output()
            .map_err(|e| format!("cannot run journalctl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if is_complete(&text) {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            return Ok(format!(
                "{text}(the journal has no more of this run yet: `journalctl -u {UNIT}` may \
                 show the rest)\n"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the report holds a line that doctor prints only when it is done: its verdict
/// on success, or the command's closing error. That error may run over several lines (a
/// config's problems, one per line), written at once, so it need not be the last line.
fn is_complete(text: &str) -> bool {
    text.lines()
        .any(|l| l == "all checks passed" || l.starts_with("lwa-agent: "))
}

#[cfg(test)]
mod tests {
    use super::is_complete;

    #[test]
    fn a_report_is_complete_only_with_its_closing_line() {
        assert!(!is_complete(""));
        assert!(!is_complete(
            "ok    config: /etc/lwa-agent/lwa-agent.toml\n"
        ));
        assert!(is_complete("ok    a: b\nall checks passed\n"));
        assert!(is_complete(
            "lwa-agent: invalid configuration:\n  aws.region: is required\n"
        ));
        assert!(is_complete(
            "FAIL  a: b\nlwa-agent: 1 check failed (see above)\n"
        ));
        assert!(is_complete(
            "lwa-agent: cannot read /etc/lwa-agent/lwa-agent.toml\n"
        ));
    }
}
