//! What reminders were sent, kept in the state directory so that a restart or a crash never
//! sends the same reminder twice.
//!
//! Invariants: the file is replaced atomically (temp file, fsync, rename, fsync of the
//! directory), so a reader sees the old or the new state, never half of one; a reminder is
//! recorded only after SNS accepted it; a corrupt file is moved aside, not fatal; every
//! file here belongs to the directory's owner, whoever runs the command (`owner`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::owner::{wrong_owner, Owner};

pub const FILE: &str = "rotation-state.json";
/// flock(2)ed for the length of one check: one writer of the state per host.
pub const LOCK: &str = "rotation.lock";

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    #[serde(default)]
    pub reminders: BTreeMap<String, Sent>,
    /// Each credential's last automatic rotation (docs/automatic-rotation.md), by
    /// credential name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auto_rotations: BTreeMap<String, AutoRotation>,
    /// The automatic rotation's alerts that have not gone out yet, by their fleet claim:
    /// sent again (with growing pauses) by the daemon's housekeeping, every check and
    /// `lwa-agent rotate` until SNS took them or another host of the fleet sent them, so a
    /// failed publish or a crash loses none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outbox: BTreeMap<String, Pending>,
}

/// An alert waiting to go out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    /// What it is about (the log line's and the SNS attribute's parameter).
    pub parameter: String,
    pub message: super::texts::Message,
    /// RFC 3339: when it was first tried.
    pub since: String,
    /// How many tries failed so far.
    #[serde(default)]
    pub tries: u32,
    /// RFC 3339: not tried again before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try: Option<String>,
}

/// Where a credential's last automatic rotation stands. Kept across restarts so that a
/// rotation in flight is neither started again nor forgotten.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AutoRotation {
    /// `requesting`, `waiting_for_secret`, `rotated` or `failed`.
    pub outcome: String,
    /// What started it: `age`, `expiry_notification`, `command` or `new_secret_message`.
    pub trigger: String,
    /// The host that recorded this outcome.
    pub host: String,
    /// RFC 3339: when this outcome was recorded.
    pub at: String,
    /// When Amazon accepted the rotate call (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    /// Until when the new secret is waited for (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<String>,
    /// The client secret parameter's version: the one rotated away from while requesting
    /// and waiting, the one written once rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_version: Option<i64>,
    /// The fingerprint of the secret being replaced (`fleet::fingerprint`): names the
    /// rotation's fleet markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<String>,
    /// When the previous secret stops working (from Amazon's notification, RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_secret_expires_at: Option<String>,
    /// A new secret may exist that SSM does not hold: a person must look, and no trigger
    /// but `lwa-agent rotate` asks Amazon again.
    #[serde(default)]
    pub needs_attention: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sent {
    /// RFC 3339.
    pub sent_at: String,
    pub parameter_version: i64,
    pub period: String,
    /// Another host of the fleet sent it (its marker parameter existed).
    #[serde(default)]
    pub by_fleet: bool,
}

impl State {
    /// When this parameter was last reminded about at this version.
    pub fn last_sent(&self, parameter: &str, version: i64) -> Option<SystemTime> {
        self.reminders
            .get(parameter)
            .filter(|s| s.parameter_version == version)
            .and_then(|s| humantime::parse_rfc3339(&s.sent_at).ok())
    }

    pub fn record(&mut self, parameter: &str, version: i64, period: &str, by_fleet: bool) {
        self.reminders.insert(
            parameter.to_string(),
            Sent {
                sent_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                parameter_version: version,
                period: period.to_string(),
                by_fleet,
            },
        );
    }

    pub fn last_reminder(&self) -> Option<String> {
        self.reminders.values().map(|s| s.sent_at.clone()).max()
    }
}

/// `$STATE_DIRECTORY` (its first entry) when systemd sets it, else `/var/lib/lwa-agent`.
pub fn directory() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(v) if !v.is_empty() => {
            let text = v.to_string_lossy().into_owned();
            PathBuf::from(text.split(':').next().unwrap_or(&text))
        }
        _ => PathBuf::from("/var/lib/lwa-agent"),
    }
}

/// Loads the state; a missing file is an empty state, a corrupt one is moved aside.
pub fn load(dir: &Path) -> Result<State, String> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let owner = Owner::of_directory(dir)?;
            let file_uid = std::fs::symlink_metadata(&path)
                .map(|m| m.uid())
                .unwrap_or(0);
            return Err(wrong_owner(&path, file_uid, &owner));
        }
        Err(e) => {
            return Err(format!(
                "cannot read the rotation state {}: {e}",
                path.display()
            ))
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Ok(state),
        Err(e) => {
            let aside = dir.join(format!(
                "{FILE}.corrupt-{}",
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ));
            std::fs::rename(&path, &aside).map_err(|re| {
                format!(
                    "the rotation state {} is corrupt ({e}) and cannot be moved aside: {re}",
                    path.display()
                )
            })?;
            tracing::warn!(
                file = %path.display(),
                moved_to = %aside.display(),
                error = %e,
                "the rotation state was corrupt; moved it aside and starting afresh \
                 (a reminder may be repeated once)"
            );
            Ok(State::default())
        }
    }
}

/// Replaces the state file atomically.
pub fn save(dir: &Path, state: &State) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| {
        format!(
            "cannot {what} the rotation state in {}: {e}: check that the state directory exists \
             and belongs to the agent's user",
            dir.display()
        )
    };
    let owner = Owner::of_directory(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp-{}", std::process::id()));
    let text = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| fail("write", e))?;
        // Before the rename: the file is never visible with the wrong owner.
        if let Err(e) = owner.adopt(&f, &tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        f.write_all(&text).map_err(|e| fail("write", e))?;
        f.sync_all().map_err(|e| fail("sync", e))?;
    }
    std::fs::rename(&tmp, dir.join(FILE)).map_err(|e| fail("replace", e))?;
    // The rename is durable only once the directory entry is on disk.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Takes the state directory's lock for one check, without waiting: a check already
/// running elsewhere means this one has nothing to add.
pub fn lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let owner = Owner::of_directory(dir)?;
    let path = dir.join(LOCK);
    // Root gives back what an older root run left as root's, the state file included,
    // before anything is read; for anyone else this names what is wrong, in case the
    // file cannot be opened below.
    let problem = owner.check(&path).err();
    if let Err(e) = owner.check(&dir.join(FILE)) {
        tracing::warn!(error = %e, "the rotation state has the wrong owner");
    }
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(f) => {
            owner.adopt(&f, &path)?;
            f
        }
        // flock(2) needs no write access: a lock file this user may only read still
        // serves, so a wrong owner alone does not stop the check.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => std::fs::File::open(&path)
            .map_err(|_| {
                problem.unwrap_or_else(|| format!("cannot open {}: {e}", path.display()))
            })?,
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        format!(
            "another rotation check is running on this host ({} is locked: {e}); if both the \
             agent's cron and lwa-agent-check.timer are on, keep only one",
            path.display()
        )
    })
}

/// Loads the state, lets `change` edit it, and saves it, under an exclusive lock on the
/// state directory itself, so that the agent's tasks, `lwa-agent check` and
/// `lwa-agent rotate` never lose each other's records. The lock is held only for this
/// read-modify-write (no awaits inside), so waiting for it is brief. The directory is
/// locked rather than a lock file, so no new file is created in it.
pub fn update<T>(dir: &Path, change: impl FnOnce(&mut State) -> T) -> Result<T, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
    let handle = std::fs::File::open(dir)
        .map_err(|e| format!("cannot open the state directory {}: {e}", dir.display()))?;
    let _locked = nix::fcntl::Flock::lock(handle, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock the state directory {}: {e}", dir.display()))?;
    let mut state = load(dir)?;
    let out = change(&mut state);
    save(dir, &state)?;
    Ok(out)
}

/// [`update`] on tokio's blocking pool. The daemon runs on one thread, and the flock may
/// wait for another process's write and its fsync: no socket answer may wait behind it.
pub async fn update_off_runtime<T: Send + 'static>(
    dir: &Path,
    change: impl FnOnce(&mut State) -> T + Send + 'static,
) -> Result<T, String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || update(&dir, change))
        .await
        .unwrap_or_else(|e| Err(format!("the state file update did not finish: {e}")))
}

/// Loads the state for a dry run: never moves or writes anything.
pub fn load_readonly(dir: &Path) -> State {
    std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_ignores_other_versions() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = State::default();
        s.record("/p", 3, "v3-p0", false);
        save(dir.path(), &s).expect("save");
        let loaded = load(dir.path()).expect("load");
        assert_eq!(loaded, s);
        assert!(loaded.last_sent("/p", 3).is_some());
        assert!(
            loaded.last_sent("/p", 4).is_none(),
            "a new version starts afresh"
        );
        assert!(loaded.last_sent("/q", 3).is_none());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from(FILE)],
            "no temp file left"
        );
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(FILE), b"{not json").expect("write");
        let s = load(dir.path()).expect("not fatal");
        assert_eq!(s, State::default());
        assert!(!dir.path().join(FILE).exists());
        let aside = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().contains("corrupt"))
                    .unwrap_or(false)
            })
            .count();
        assert_eq!(aside, 1);
    }

    #[test]
    fn updates_keep_other_records_and_old_files_still_load() {
        let dir = tempfile::tempdir().expect("tmp");
        // A file written before automatic rotation existed.
        std::fs::write(
            dir.path().join(FILE),
            br#"{"reminders":{"/p":{"sent_at":"2026-01-01T00:00:00Z","parameter_version":1,"period":"v1-p0"}}}"#,
        )
        .expect("write");
        update(dir.path(), |s| {
            s.auto_rotations.insert(
                "default".into(),
                AutoRotation {
                    outcome: "rotated".into(),
                    parameter_version: Some(2),
                    ..AutoRotation::default()
                },
            )
        })
        .expect("update");
        update(dir.path(), |s| s.record("/q", 1, "v1-p0", false)).expect("update");
        let s = load(dir.path()).expect("load");
        assert_eq!(s.reminders.len(), 2);
        assert_eq!(s.auto_rotations["default"].parameter_version, Some(2));
    }

    #[test]
    fn a_missing_file_is_an_empty_state() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(load(dir.path()).expect("load"), State::default());
    }
}
