//! `lwa-agent rotate --credential NAME [--dry-run | --settle ssm|message]`: one automatic
//! rotation now (docs/automatic-rotation.md), whatever the secret's age: ask Amazon for a
//! new client secret, receive it from the new-secret queue, prove it at LWA, write it to
//! SSM, reload the running agent. A dry run asks nothing and writes nothing; it says what
//! would be done. `--settle` asks nothing of Amazon either: it records a person's decision
//! about a conflict and completes the waiting message accordingly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::Method;

use super::client::{error_message, request};
use super::Outcome;
use crate::config::Config;
use crate::lwa::exchange::LwaClient;
use crate::rotation::auto::listener::{Awaited, Waited};
use crate::rotation::auto::machine::Trigger;
use crate::rotation::auto::request::{Requested, Target};
use crate::rotation::auto::settle::Settle;
use crate::rotation::auto::Rotator;
use crate::rotation::{state, Mode};

pub async fn run(
    cfg: Config,
    credential: String,
    dry_run: bool,
    settle: Option<Settle>,
    socket: Option<PathBuf>,
) -> Outcome {
    if cfg.credential(&credential).is_none() {
        let names: Vec<&str> = cfg.credentials.iter().map(|c| c.name.as_str()).collect();
        return Outcome::Usage(format!(
            "no credential named `{credential}` in {}: use one of {}",
            cfg.file.display(),
            names.join(", ")
        ));
    }
    if cfg.rotation.auto.is_none() {
        return Outcome::Usage(format!(
            "automatic rotation is not configured in {}: add a [rotation.auto] table (the \
             example config has one; the guide is docs/automatic-rotation.md)",
            cfg.file.display()
        ));
    }
    if cfg.rotation.fleet_lock_prefix.is_none() {
        return Outcome::Usage(
            "rotation.fleet_lock_prefix is not set: a rotation takes a fleet marker under it \
             so that no two hosts ask Amazon for a new secret; set it and retry"
                .into(),
        );
    }
    let (sdk, _) = match crate::aws::connect(&cfg.aws).await {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let lwa = match LwaClient::new(&cfg.lwa) {
        Ok(l) => Arc::new(l),
        Err(e) => return Outcome::Failed(e),
    };
    let rotator = match Rotator::new(&cfg, &sdk, lwa, state::directory(), Mode::Command) {
        Ok(Some(r)) => r,
        Ok(None) => return Outcome::Usage("automatic rotation is not configured".into()),
        Err(e) => return Outcome::Failed(e),
    };
    let started = SystemTime::now();
    // Other hosts that complete a rotation write this host's parameters too (a dry run
    // writes nothing, this included).
    if !dry_run {
        rotator.register().await;
    }
    if let Some(how) = settle {
        return settle_conflict(&rotator, &credential, how, started, socket, &cfg).await;
    }
    let result = match rotator
        .trigger(Target::Credential(&credential), Trigger::Command, dry_run)
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("cannot start the rotation: {e}")),
    };
    let wait = rotator.auto().wait_for_secret;
    let until = match result {
        Requested::Would(plan) => {
            println!("Dry run for credential `{credential}`: nothing is asked or written.");
            println!("It {plan}.");
            return Outcome::Ok;
        }
        Requested::Skipped(skip) => {
            return Outcome::Failed(format!("credential `{credential}` was not rotated: {skip}"))
        }
        Requested::Failed(e) => {
            return Outcome::Failed(format!(
                "Amazon was not asked for a new secret, or refused; nothing changed: {e}"
            ))
        }
        Requested::Started => SystemTime::now() + wait,
        Requested::Requested { wait_until } => {
            println!(
                "Amazon accepted the rotation request; waiting up to {} for the new secret on {}.",
                humantime::format_duration(wait),
                rotator.auto().new_secret_queue_url
            );
            wait_until
        }
        Requested::OtherHost(holder) => {
            if marker_is_stale(&holder, wait) {
                return Outcome::Failed(format!(
                    "a rotation of this secret version was already requested ({holder}) and never \
                     completed. Nothing was asked of Amazon now. If no new-secret message is \
                     waiting in {queue}, delete that marker (under rotation.fleet_lock_prefix, \
                     see `lwa-agent rotate --dry-run`) and run this command again",
                    queue = rotator.auto().new_secret_queue_url
                ));
            }
            println!(
                "Another host already asked Amazon for a new secret ({holder}); waiting for it."
            );
            SystemTime::now() + wait
        }
    };
    let record = match rotator
        .receive_until(&credential, Awaited::Rotation, started, until)
        .await
    {
        Waited::Done(r) => r,
        Waited::TimedOut(e) | Waited::Failed(e) => {
            return Outcome::Failed(format!("the rotation did not complete: {e}"))
        }
    };
    println!(
        "Rotated: the new client secret is in SSM (version {}); the old one keeps working until {}.",
        record
            .parameter_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into()),
        record.old_secret_expires_at.as_deref().unwrap_or("Amazon expires it")
    );
    reload(socket.unwrap_or_else(|| cfg.socket.path.clone())).await;
    Outcome::Ok
}

/// `--settle`: records the decision, then completes the waiting message itself if it
/// comes within `wait_for_secret` (a running agent may hold it for a few minutes; then
/// that agent applies the decision).
async fn settle_conflict(
    rotator: &Arc<Rotator>,
    credential: &str,
    how: Settle,
    started: SystemTime,
    socket: Option<PathBuf>,
    cfg: &Config,
) -> Outcome {
    let (parameter, version) = match rotator.settle(credential, how).await {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(format!("the decision could not be recorded: {e}")),
    };
    let wait = rotator.auto().wait_for_secret;
    let (awaited, decided) = match how {
        Settle::Ssm => (
            Awaited::KeptSsm,
            format!("{parameter} version {version} is the current secret; the waiting message is deleted"),
        ),
        Settle::Message => (
            Awaited::TookMessage,
            format!("the waiting message's secret replaces {parameter} version {version} once LWA accepts it"),
        ),
    };
    println!("Recorded for the fleet: {decided}.");
    println!(
        "Waiting up to {} for the message on {}.",
        humantime::format_duration(wait),
        rotator.auto().new_secret_queue_url
    );
    match rotator
        .receive_until(credential, awaited, started, started + wait)
        .await
    {
        Waited::Done(r) => {
            match how {
                Settle::Ssm => {
                    println!("Settled: the message is deleted; SSM keeps version {version}.")
                }
                Settle::Message => {
                    println!(
                        "Settled: the message's secret is in SSM (version {}).",
                        r.parameter_version
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "?".into())
                    );
                    reload(socket.unwrap_or_else(|| cfg.socket.path.clone())).await;
                }
            }
            Outcome::Ok
        }
        Waited::TimedOut(_) => {
            println!(
                "The message did not reach this command in time (a running agent may hold it). \
                 The decision stands: whichever agent looks at the message next applies it, \
                 within a few minutes. `lwa-agent status` shows when it is done."
            );
            Outcome::Ok
        }
        Waited::Failed(e) => Outcome::Failed(format!("the conflict was not settled: {e}")),
    }
}

/// A marker value is "<host> <RFC 3339 time> <trigger>"; older than the wait means that
/// request's secret never came (or was completed long ago, and the version would differ).
fn marker_is_stale(holder: &str, wait: Duration) -> bool {
    holder
        .split_whitespace()
        .nth(1)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > wait)
}

/// Reloads the running agent, best effort: it also picks the new version up within
/// ssm.refresh_interval.
async fn reload(socket: PathBuf) {
    match request(&socket, Method::POST, "/v1/reload").await {
        Ok(a) if a.status == 200 => println!("The running agent reloaded its parameters."),
        Ok(a) => println!(
            "The running agent's reload failed ({}): {}; it picks the new version up within \
             ssm.refresh_interval",
            a.status,
            error_message(&a)
        ),
        Err(e) => println!(
            "The agent was not reloaded ({e}). It picks the new version up within \
             ssm.refresh_interval, or run: systemctl reload lwa-agent"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_older_than_the_wait_are_stale() {
        let now = humantime::format_rfc3339_seconds(SystemTime::now());
        let old = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600));
        let wait = Duration::from_secs(900);
        assert!(!marker_is_stale(&format!("host-a {now} age"), wait));
        assert!(marker_is_stale(&format!("host-a {old} age"), wait));
        assert!(!marker_is_stale("garbage", wait));
    }
}
