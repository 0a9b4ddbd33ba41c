//! The in-memory copy of the credentials' SSM parameters and the task that keeps it fresh.
//!
//! Invariants: secrets live only here (and briefly in an exchange's request); a failed read
//! never drops values that an earlier read got, so an SSM outage cannot take down tokens;
//! a newer version replaces an older one as a whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use tokio::sync::{watch, Notify};

use super::grant::{Grant, GrantKind};
use crate::aws::ssm::read::{self, Parameter};
use crate::backoff::Backoff;
use crate::config::CredentialConfig;
use crate::metrics::Metrics;

#[derive(Default)]
pub struct Snapshot {
    pub values: HashMap<String, Arc<Parameter>>,
    /// Per-parameter problems from the last read (not found, cannot decrypt).
    pub problems: HashMap<String, String>,
    /// Why the last read failed as a whole (SSM unreachable, no AWS credentials).
    pub last_error: Option<String>,
    pub last_success: Option<SystemTime>,
    /// Reads begun, numbered from 1.
    pub reads_started: u64,
    /// The number of the last read that finished (successfully or not).
    pub reads_finished: u64,
}

pub struct ParameterStore {
    names: Vec<String>,
    state: watch::Sender<Snapshot>,
    reload: Notify,
}

impl ParameterStore {
    pub fn new(names: Vec<String>) -> Arc<Self> {
        Arc::new(ParameterStore {
            names,
            state: watch::Sender::new(Snapshot::default()),
            reload: Notify::new(),
        })
    }

    pub fn snapshot(&self) -> watch::Ref<'_, Snapshot> {
        self.state.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    /// Asks the loader to read now and waits (bounded) until a read that began after this
    /// call has finished: a read already in flight may predate a rotated secret.
    pub async fn reload_now(&self, wait: Duration) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let target = rx.borrow().reads_started + 1;
        self.reload.notify_one();
        let finished =
            tokio::time::timeout(wait, rx.wait_for(|s| s.reads_finished >= target)).await;
        match finished {
            Ok(Ok(s)) => match &s.last_error {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            },
            _ => Err(format!(
                "the SSM read did not finish within {}s",
                wait.as_secs()
            )),
        }
    }

    /// Builds the LWA grant of `cred` from the current values, or says which parameter is
    /// missing and why.
    pub fn grant(&self, cred: &CredentialConfig) -> Result<(Grant, Vec<i64>), String> {
        let snap = self.state.borrow();
        let get = |name: &str| -> Result<&Arc<Parameter>, String> {
            snap.values
                .get(name)
                .ok_or_else(|| match (snap.problems.get(name), &snap.last_error) {
                    (Some(p), _) => format!("parameter {name}: {p}"),
                    (None, Some(e)) => format!("parameter {name} not read yet: {e}"),
                    (None, None) => format!("parameter {name} not read yet"),
                })
        };
        let id = get(&cred.client_id_parameter)?;
        let secret = get(&cred.client_secret_parameter)?;
        let mut versions = vec![id.version, secret.version];
        let kind = match &cred.refresh_token_parameter {
            Some(name) => {
                let rt = get(name)?;
                versions.push(rt.version);
                GrantKind::RefreshToken(clone_secret(&rt.value))
            }
            None => GrantKind::Scopes(cred.scopes.clone()),
        };
        Ok((
            Grant {
                client_id: clone_secret(&id.value),
                client_secret: clone_secret(&secret.value),
                kind,
            },
            versions,
        ))
    }

    /// Reads the parameters every `interval`, at once when asked, and with backoff after a
    /// failed read. Runs until the agent stops.
    pub async fn run(
        self: Arc<Self>,
        client: aws_sdk_ssm::Client,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            let mut read = 0;
            self.state.send_modify(|s| {
                s.reads_started += 1;
                read = s.reads_started;
            });
            let result = read::fetch(&client, &self.names).await;
            let wait = match result {
                Ok(fetched) => {
                    metrics.ssm_calls(fetched.calls, "ok");
                    backoff.reset();
                    // A missing or undecryptable parameter is looked at again within a
                    // minute, so creating it or fixing its key needs no reload.
                    let wait = if fetched.problems.is_empty() {
                        interval
                    } else {
                        interval.min(Duration::from_secs(60))
                    };
                    self.apply(fetched, read);
                    wait
                }
                Err(e) => {
                    metrics.ssm_calls(1, "error");
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot read the LWA parameters from SSM; serving what was read before"
                    );
                    self.state.send_modify(|s| {
                        s.last_error = Some(e);
                        s.reads_finished = read;
                    });
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.reload.notified() => {
                    tracing::info!("re-reading the LWA parameters from SSM on request");
                }
            }
        }
    }

    /// Loads one read's result without the background loop (for `doctor` and
    /// `put-secret`, which read once).
    pub fn load_fetched(&self, fetched: read::Fetched) {
        self.apply(fetched, 1);
    }

    fn apply(&self, fetched: read::Fetched, read: u64) {
        self.state.send_modify(|s| {
            for p in fetched.parameters {
                match s.values.get(&p.name) {
                    Some(old) if old.version == p.version => {}
                    Some(old) => tracing::info!(
                        parameter = %p.name,
                        version = p.version,
                        previous_version = old.version,
                        "parameter changed in SSM; the new version takes effect now"
                    ),
                    None => tracing::info!(
                        parameter = %p.name,
                        version = p.version,
                        "parameter read from SSM"
                    ),
                }
                s.values.insert(p.name.clone(), Arc::new(p));
            }
            s.problems.clear();
            for (name, problem) in fetched.problems {
                tracing::error!(parameter = %name, problem = %problem, "cannot use parameter");
                s.problems.insert(name, problem);
            }
            s.last_error = None;
            s.last_success = Some(SystemTime::now());
            s.reads_finished = read;
        });
    }
}

/// The store's parts of `/v1/status` and `/metrics`: what was read, never a value.
impl ParameterStore {
    /// The `ssm` section: the last read, its error, and how many calls were made.
    pub fn ssm_status(&self, calls: u64) -> serde_json::Value {
        let snap = self.snapshot();
        serde_json::json!({
            "last_success": snap.last_success.map(rfc3339),
            "last_error": snap.last_error,
            "calls": calls,
        })
    }

    /// Each parameter's entry: version, type and age, or why it is not read.
    pub fn parameter_status(&self, now: SystemTime) -> serde_json::Map<String, serde_json::Value> {
        let snap = self.snapshot();
        self.names
            .iter()
            .map(|name| {
                let entry = match snap.values.get(name) {
                    Some(p) => {
                        let age = p.last_modified.map(|t| age_secs(t, now));
                        serde_json::json!({
                            "version": p.version,
                            "type": p.kind,
                            "last_modified": p.last_modified.map(rfc3339),
                            "age_days": age.map(|a| a / 86400),
                            "age_seconds": age,
                            "problem": snap.problems.get(name),
                        })
                    }
                    None => serde_json::json!({
                        "version": null,
                        "state": "unread",
                        "problem": snap.problems.get(name).or(snap.last_error.as_ref()),
                    }),
                };
                (name.clone(), entry)
            })
            .collect()
    }

    /// (name, seconds since its last change) of every parameter read.
    pub fn ages(&self, now: SystemTime) -> Vec<(String, u64)> {
        let snap = self.snapshot();
        snap.values
            .values()
            .filter_map(|p| Some((p.name.clone(), age_secs(p.last_modified?, now))))
            .collect()
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn age_secs(t: SystemTime, now: SystemTime) -> u64 {
    now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0)
}

fn clone_secret(s: &SecretString) -> SecretString {
    use secrecy::ExposeSecret;
    SecretString::from(s.expose_secret())
}
