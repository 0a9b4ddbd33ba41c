//! Automatic client-secret rotation (docs/automatic-rotation.md): the agent asks Amazon's
//! Application Management API for a new LWA client secret, receives it from SQS, proves
//! it at LWA, writes it to SSM as `put-secret` does, and reports once.
//!
//! Where each part is:
//! - `request.rs`: a trigger (the rotation check's age test, an expiry notification,
//!   `lwa-agent rotate`) asks Amazon: fleet marker → grantless token → rotate call
//!   (`app_management.rs`, the SP-API client).
//! - `complete.rs`: what happens when a message arrives on a rotation queue, and the whole
//!   new-secret path: match → prove → write → reload → delete → report.
//! - `listener.rs`: the daemon's long polls on the queues, and what becomes of a rotation
//!   whose secret never came.
//! - `machine.rs`: every decision, pure; `notification.rs`: the message bodies;
//!   `apps.rs`: credentials grouped by client id; `work.rs`: a message being worked on
//!   (newest receipt, kept invisible); `outbox.rs`: alerts to send again;
//!   `fleet_records.rs`: this host's reads and writes of what the fleet shares
//!   (`rotation::fleet` names them); `settle.rs`: `rotate --settle`. The SNS texts are
//!   `rotation::texts::auto`'s.
//!
//! Invariants (each has an integration test):
//! - the SQS message is deleted only after SSM holds the new secret, in every parameter
//!   any host registered for the app, and the report went out;
//! - a new-secret message is deleted without a write only when SSM holds its secret or
//!   one from a later notification; any other mismatch keeps it and asks a person;
//! - a new secret LWA rejects is never written; its message stays and a person is alerted;
//! - a message for a client id no credential uses, or one that does not parse, is left
//!   untouched, and logged by message id only;
//! - two hosts never both ask Amazon to replace the same secret (a create-only SSM marker
//!   named by the app and the secret's fingerprint), and a rotation in flight is not
//!   started again (this process's set, and the state file across processes and
//!   restarts);
//! - a report or alert that fails to publish is sent again later (reports: the message
//!   stays; alerts: the state file's outbox), and a fleet sends each once;
//! - the old and new secrets and the message bodies reach no log, error, status, metric,
//!   SNS message or argv.

pub mod app_management;
pub mod apps;
pub mod complete;
pub mod fleet_records;
pub mod listener;
pub mod machine;
pub mod notification;
pub mod outbox;
pub mod request;
pub mod settle;
pub mod work;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use secrecy::ExposeSecret;

use crate::aws::ssm::read::{self, Parameter};
use crate::config::{AutoRotationConfig, Config};
use crate::lwa::exchange::{LwaClient, Token};
use crate::rotation::fleet::{self, AppScope};
use crate::rotation::publish::{Kind, Outcome, Publisher};
use crate::rotation::Mode;
use crate::rotation::{state, texts};
use app_management::AppManagementClient;
use apps::App;

/// Messages this host receives stay hidden from other receivers this long while it looks
/// at them (SQS's default); one it works on is hidden longer with ChangeMessageVisibility.
pub const RECEIVE_VISIBILITY: std::time::Duration = std::time::Duration::from_secs(30);

/// What one queue's listener last saw, for `/v1/status`.
#[derive(Debug, Clone, Default)]
pub struct QueueState {
    pub last_receive: Option<SystemTime>,
    pub last_error: Option<String>,
    pub messages: u64,
}

pub struct Rotator {
    config: Config,
    auto: AutoRotationConfig,
    /// `rotation.fleet_lock_prefix`, which `[rotation.auto]` requires.
    prefix: String,
    pub(crate) ssm: aws_sdk_ssm::Client,
    pub(crate) sqs: aws_sdk_sqs::Client,
    lwa: Arc<LwaClient>,
    app_management: AppManagementClient,
    publisher: Publisher,
    state_dir: PathBuf,
    host: String,
    mode: Mode,
    memory: Memory,
}

/// What this process remembers between a rotation's steps (lost on restart, which is
/// safe: the state file and the fleet's records in SSM hold what must survive).
#[derive(Default)]
struct Memory {
    /// Secret parameters whose rotation this process is asking Amazon for right now.
    in_flight: Mutex<HashSet<String>>,
    /// The messages this process is working on (SQS may hand one out again meanwhile).
    working: work::Working,
    /// When this host's client secret parameters were last registered with the fleet.
    registered_at: Mutex<Option<std::time::Instant>>,
    /// Ids of ignored messages already logged at warn, so a message left in the queue is
    /// not logged again every time it becomes visible.
    ignored: Mutex<HashSet<String>>,
    /// One lock per app (by a hash of the client id): two new-secret messages of one app
    /// are completed one after the other, so the second sees what the first wrote.
    app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Grantless rotation-scope tokens, by a hash of the client id: cached like any token.
    tokens: Mutex<HashMap<String, Arc<Token>>>,
    queues: Mutex<BTreeMap<String, QueueState>>,
    /// The state file's records as last read, with the file's stamp then.
    records_cache: Arc<Mutex<RecordsCache>>,
}

/// The state file's records, and the stamp of the file they were read from.
type RecordsCache = Option<(FileStamp, BTreeMap<String, state::AutoRotation>)>;

/// What changes when the state file is replaced: modification time, inode and length.
type FileStamp = (Option<SystemTime>, u64, u64);

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok(), m.ino(), m.len()))
}

/// The records, read from the state file only when its stamp changed since the last read.
/// Blocking (a stat, and sometimes a read).
fn cached_records(
    dir: &std::path::Path,
    cache: &Mutex<RecordsCache>,
) -> BTreeMap<String, state::AutoRotation> {
    let now = stamp(&dir.join(state::FILE));
    if let Ok(c) = cache.lock() {
        if let Some((seen, records)) = c.as_ref() {
            if Some(*seen) == now {
                return records.clone();
            }
        }
    }
    let records = state::load_readonly(dir).auto_rotations;
    if let (Some(seen), Ok(mut c)) = (now, cache.lock()) {
        *c = Some((seen, records.clone()));
    }
    records
}

impl Rotator {
    /// `None` when the config has no `[rotation.auto]` table, or has it switched off
    /// without a `rotation.fleet_lock_prefix` (nothing to register under, and `config
    /// check` accepts that config, so the daemon must run with it).
    pub fn new(
        config: &Config,
        sdk: &aws_config::SdkConfig,
        lwa: Arc<LwaClient>,
        state_dir: PathBuf,
        mode: Mode,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(auto) = &config.rotation.auto else {
            return Ok(None);
        };
        let Some(prefix) = config.rotation.fleet_lock_prefix.clone() else {
            if !auto.enabled {
                return Ok(None);
            }
            return Err(
                "rotation.fleet_lock_prefix is not set: [rotation.auto] needs it, so \
                        that the hosts of a fleet agree on one rotation; set it and retry"
                    .into(),
            );
        };
        let app_management = AppManagementClient::new(&auto.sp_api_endpoint, config.lwa.timeout)?;
        let publisher = Publisher::new(&config.rotation, sdk, &mode);
        Ok(Some(Arc::new(Rotator {
            config: config.clone(),
            auto: auto.clone(),
            prefix,
            ssm: aws_sdk_ssm::Client::new(sdk),
            sqs: crate::aws::sqs::client(sdk),
            lwa,
            app_management,
            host: publisher.host().to_string(),
            publisher,
            state_dir,
            mode,
            memory: Memory::default(),
        })))
    }

    pub fn auto(&self) -> &AutoRotationConfig {
        &self.auto
    }

    fn count(&self, event: &str) {
        if let Some(m) = self.mode.metrics() {
            m.auto_rotation_event(event);
        }
    }

    /// Every credential parameter, read (decrypted) from SSM now: a rotation decides on
    /// what SSM holds, never on a copy that may be minutes old.
    async fn read_values(&self) -> Result<HashMap<String, Parameter>, String> {
        self.read_named(&self.config.credential_parameters()).await
    }

    /// The parameters of `app`'s credentials, read (decrypted) from SSM now.
    async fn read_app_values(&self, app: &App) -> Result<HashMap<String, Parameter>, String> {
        let mut names: Vec<String> = Vec::new();
        for cred in app
            .credentials
            .iter()
            .filter_map(|n| self.config.credential(n))
        {
            for p in cred.parameters() {
                if !names.iter().any(|n| n == p) {
                    names.push(p.to_string());
                }
            }
        }
        self.read_named(&names).await
    }

    /// `names`, read (decrypted) from SSM now, by name.
    async fn read_named(&self, names: &[String]) -> Result<HashMap<String, Parameter>, String> {
        let fetched = read::fetch(&self.ssm, names).await?;
        Ok(fetched
            .parameters
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect())
    }

    /// The app `client_id` belongs to, found from the client ids alone: the daemon's
    /// in-memory copy of the parameters when it holds every client id, else the client-id
    /// parameters read from SSM. Invariant: turning away a message for another app
    /// decrypts no client secret or refresh token.
    async fn app_of(&self, client_id: &str) -> Result<Option<App>, String> {
        if let Some(params) = self.mode.params() {
            let known = {
                let snap = params.snapshot();
                let complete = self
                    .config
                    .credentials
                    .iter()
                    .all(|c| snap.values.contains_key(&c.client_id_parameter));
                complete.then(|| {
                    apps::group(&self.config, |p| {
                        snap.values.get(p).map(|v| v.value.expose_secret())
                    })
                    .0
                })
            };
            if let Some(apps) = known {
                return Ok(apps.into_iter().find(|a| a.is(client_id)));
            }
        }
        let values = self.read_named(&self.client_id_parameters()).await?;
        Ok(self.apps(&values).into_iter().find(|a| a.is(client_id)))
    }

    fn apps(&self, values: &HashMap<String, Parameter>) -> Vec<App> {
        apps::group(&self.config, |p| {
            values.get(p).map(|v| v.value.expose_secret())
        })
        .0
    }

    /// This host's record of the app's last automatic rotation (its first credential's).
    async fn record_of(&self, app: &App) -> Option<state::AutoRotation> {
        let first = app.credentials.first()?;
        self.records_now().await.get(first).cloned()
    }

    /// Records an outcome for every credential of the app. A failure to record is logged,
    /// not fatal: the rotation itself is what must not be lost. The state file is locked,
    /// written and fsynced on a blocking thread, never on the runtime's.
    async fn record(
        &self,
        credentials: &[String],
        change: impl Fn(&mut state::AutoRotation) + Send + 'static,
    ) {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let (dir, host, credentials) = (
            self.state_dir.clone(),
            self.host.clone(),
            credentials.to_vec(),
        );
        let result = state::update_off_runtime(&dir, move |s| {
            for c in &credentials {
                let r = s.auto_rotations.entry(c.clone()).or_default();
                change(r);
                r.host = host.clone();
                r.at = now.clone();
            }
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record the automatic rotation in the state file");
        }
    }

    /// Records a failure that needs a person (`error` says what and why).
    async fn record_failed(&self, credentials: &[String], error: String) {
        self.record(credentials, move |r| {
            r.outcome = machine::outcome::FAILED.into();
            r.needs_attention = true;
            r.error = Some(error.clone());
        })
        .await;
    }

    /// Every credential's last automatic rotation on this host. The state file is read
    /// again only when it changed (it is replaced as a whole on every write, by this or
    /// another process of the host).
    pub fn records(&self) -> BTreeMap<String, state::AutoRotation> {
        cached_records(&self.state_dir, &self.memory.records_cache)
    }

    /// The same, from a blocking thread: for the async paths (the listener asks every
    /// round).
    async fn records_now(&self) -> BTreeMap<String, state::AutoRotation> {
        let (dir, cache) = (self.state_dir.clone(), self.memory.records_cache.clone());
        tokio::task::spawn_blocking(move || cached_records(&dir, &cache))
            .await
            .unwrap_or_default()
    }

    /// The lock that serialises the completions of `app`'s new-secret messages.
    fn app_lock(&self, app: &App) -> Arc<tokio::sync::Mutex<()>> {
        let key = fleet::hash(app.client_id.expose_secret());
        match self.memory.app_locks.lock() {
            Ok(mut locks) => locks.entry(key).or_default().clone(),
            // A poisoned map is still the map: a panic elsewhere must not stop
            // completions.
            Err(poisoned) => poisoned.into_inner().entry(key).or_default().clone(),
        }
    }

    /// The grantless token with the rotation scope, reused while it has life left.
    async fn grantless_token(
        &self,
        app: &App,
        values: &HashMap<String, Parameter>,
    ) -> Result<Arc<Token>, String> {
        let key = fleet::hash(app.client_id.expose_secret());
        let now = std::time::Instant::now();
        if let Ok(tokens) = self.memory.tokens.lock() {
            if let Some(t) = tokens.get(&key).filter(|t| t.usable(now)) {
                return Ok(t.clone());
            }
        }
        let secret = values
            .get(app.key_parameter())
            .ok_or_else(|| format!("{} could not be read from SSM", app.key_parameter()))?;
        let grant = app.grant(&secret.value, apps::rotation_scope());
        let token = Arc::new(self.lwa.exchange(&grant).await.map_err(|e| e.to_string())?);
        if let Ok(mut tokens) = self.memory.tokens.lock() {
            tokens.insert(key, token.clone());
        }
        Ok(token)
    }

    /// The fleet's names for `app`.
    fn scope(&self, app: &App) -> AppScope {
        AppScope::new(&self.prefix, app.client_id.expose_secret())
    }

    /// Publishes one message about `parameter`, once per fleet (the claim `marker`).
    async fn publish(&self, parameter: &str, marker: &str, msg: &texts::Message) -> Outcome {
        self.publisher
            .deliver(Kind::AutoRotation, parameter, Some(marker), msg)
            .await
    }

    fn note_queue(&self, queue: &str, result: Result<usize, &str>) {
        if let Ok(mut q) = self.memory.queues.lock() {
            let s = q.entry(queue.to_string()).or_default();
            match result {
                Ok(n) => {
                    s.last_receive = Some(SystemTime::now());
                    s.last_error = None;
                    s.messages += n as u64;
                }
                Err(e) => s.last_error = Some(e.to_string()),
            }
        }
    }

    /// The `auto` object of `/v1/status`'s rotation section: the configuration and each
    /// queue's listener.
    pub fn status(&self) -> serde_json::Value {
        let auto = self.auto();
        let queues: serde_json::Map<String, serde_json::Value> = self
            .memory
            .queues
            .lock()
            .map(|q| {
                q.iter()
                    .map(|(url, s)| {
                        (
                            url.clone(),
                            serde_json::json!({
                                "last_receive": s.last_receive.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                                "last_error": s.last_error,
                                "messages": s.messages,
                            }),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({
            "enabled": auto.enabled,
            "rotate_after_seconds": auto.rotate_after.as_secs(),
            "new_secret_queue_url": auto.new_secret_queue_url,
            "expiry_queue_url": auto.expiry_queue_url,
            "sp_api_endpoint": auto.sp_api_endpoint,
            "queues": queues,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_state(dir: &std::path::Path, outcome: &str) {
        let mut s = state::State::default();
        s.auto_rotations.insert(
            "default".into(),
            state::AutoRotation {
                outcome: outcome.into(),
                ..state::AutoRotation::default()
            },
        );
        state::save(dir, &s).expect("save");
    }

    #[test]
    fn the_state_file_is_read_again_only_when_it_changed() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = Mutex::default();
        assert!(cached_records(dir.path(), &cache).is_empty(), "no file yet");
        write_state(dir.path(), "waiting_for_secret");
        assert_eq!(
            cached_records(dir.path(), &cache)["default"].outcome,
            "waiting_for_secret"
        );
        // Same file, same length, same time: served from the cache, not read again.
        let path = dir.path().join(state::FILE);
        let before = std::fs::metadata(&path).expect("stat");
        let text = std::fs::read_to_string(&path).expect("read");
        let same_length = text.replace("waiting_for_secret", "WAITING_FOR_SECRET");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut &f, same_length.as_bytes()).expect("write");
        f.set_modified(before.modified().expect("mtime"))
            .expect("set mtime");
        drop(f);
        assert_eq!(
            cached_records(dir.path(), &cache)["default"].outcome,
            "waiting_for_secret"
        );
        // Replaced, as every writer does: read again.
        write_state(dir.path(), "rotated");
        assert_eq!(
            cached_records(dir.path(), &cache)["default"].outcome,
            "rotated"
        );
    }
}
