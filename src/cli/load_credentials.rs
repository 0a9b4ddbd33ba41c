//! `lwa-agent load-credentials ID:PATH…`: the credential hand-off for systemd before 247,
//! which knows no `LoadCredential=` (RHEL 8 runs 239). The packaged units run it as root
//! (`ExecStartPre=+`) with the same `ID:PATH` pairs as their `LoadCredential=` lines; it
//! copies each file into `$LWA_CREDENTIALS_DIRECTORY`, the unit's `RuntimeDirectory=`,
//! which systemd created for the service user alone and removes when the service stops.
//! The agent then resolves `%d/ID` there (`config::resolve_credential_path`), so one config
//! serves every systemd version (docs/systemd.md, "Older systemd").
//!
//! Invariants: on systemd 247 and later (`$CREDENTIALS_DIRECTORY` is set) it does nothing,
//! so `LoadCredential=` stays the mechanism; the files stay root-only on disk and each copy
//! is created mode 0400 and owned by the directory's owner before a byte is written, then
//! renamed into place, so no other user ever reads it; a missing source file is skipped (as
//! `SetCredential=`'s fallback does), any other read error fails the start, as
//! `LoadCredential=` does.
//!
//! Written by hand: no crate does this (it is a few file operations).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Outcome;

/// Where the packaged units point the copies to (and the agent looks for them).
pub const DIRECTORY_VARIABLE: &str = "LWA_CREDENTIALS_DIRECTORY";

/// The largest credential `LoadCredential=` accepts (systemd's `CREDENTIAL_SIZE_MAX`).
const MAX_SIZE: u64 = 1024 * 1024;

/// One `ID:PATH` pair, as in `LoadCredential=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    id: String,
    source: PathBuf,
}

impl std::str::FromStr for Pair {
    type Err = String;
    fn from_str(s: &str) -> Result<Pair, String> {
        let (id, source) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not ID:PATH (as in LoadCredential=)"))?;
        let valid_id = !id.is_empty()
            && id != "."
            && id != ".."
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_id {
            return Err(format!(
                "`{id}` is not a credential ID (letters, digits, `-`, `_` and `.`)"
            ));
        }
        if !source.starts_with('/') {
            return Err(format!("`{source}` is not an absolute path"));
        }
        Ok(Pair {
            id: id.to_string(),
            source: PathBuf::from(source),
        })
    }
}

pub fn run(pairs: Vec<Pair>) -> Outcome {
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_some_and(|d| !d.is_empty()) {
        println!(
            "systemd passes the credentials itself ($CREDENTIALS_DIRECTORY, LoadCredential=): \
             nothing to copy"
        );
        return Outcome::Ok;
    }
    let Some(dir) = std::env::var_os(DIRECTORY_VARIABLE).filter(|d| !d.is_empty()) else {
        return Outcome::Usage(format!(
            "${DIRECTORY_VARIABLE} is not set: this command is run by the packaged units \
             (ExecStartPre=+) on systemd before 247, which set it to their \
             RuntimeDirectory="
        ));
    };
    let dir = PathBuf::from(dir);
    for pair in &pairs {
        match copy(pair, &dir) {
            Ok(true) => println!("{}: copied from {}", pair.id, pair.source.display()),
            Ok(false) => println!(
                "{}: {} is not there; skipped",
                pair.id,
                pair.source.display()
            ),
            Err(e) => return Outcome::Failed(e),
        }
    }
    Outcome::Ok
}

/// Copies one credential; `Ok(false)` when its source does not exist.
fn copy(pair: &Pair, dir: &Path) -> Result<bool, String> {
    let what = |e: std::io::Error, doing: &str, path: &Path| {
        format!(
            "cannot {doing} {} for credential {} ({e}); the service does not start without it: \
             fix the file (root-only, readable by root) or remove it",
            path.display(),
            pair.id
        )
    };
    let meta = match std::fs::metadata(&pair.source) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(what(e, "read", &pair.source)),
    };
    if !meta.is_file() || meta.len() > MAX_SIZE {
        return Err(format!(
            "{} for credential {} is not a regular file of at most 1 MiB",
            pair.source.display(),
            pair.id
        ));
    }
    let data = zeroize::Zeroizing::new(
        std::fs::read(&pair.source).map_err(|e| what(e, "read", &pair.source))?,
    );
    // The directory systemd made for the service user: its owner gets the copy.
    let owner = std::fs::metadata(dir).map_err(|e| what(e, "use", dir))?;
    let target = dir.join(&pair.id);
    let partial = dir.join(format!(".{}.partial", pair.id));
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&partial)
        .map_err(|e| what(e, "create", &partial))?;
    std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid()))
        .map_err(|e| what(e, "give to the service user", &partial))?;
    file.write_all(&data)
        .and_then(|()| file.sync_all())
        .map_err(|e| what(e, "write", &partial))?;
    std::fs::rename(&partial, &target).map_err(|e| what(e, "rename into", &target))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_load_credential_syntax() {
        let p: Pair = "rolesanywhere-cert:/etc/lwa-agent/pki/cert.pem"
            .parse()
            .expect("valid");
        assert_eq!(p.id, "rolesanywhere-cert");
        for bad in ["nocolon", ":/x", "a/b:/x", "..:/x", "id:relative"] {
            assert!(bad.parse::<Pair>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_copy_is_private_to_the_directorys_owner_and_a_missing_source_is_skipped() {
        let src = tempfile::tempdir().expect("tmp");
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(src.path().join("key.pem"), "KEY").expect("write");
        let pair = Pair {
            id: "rolesanywhere-key".into(),
            source: src.path().join("key.pem"),
        };
        assert_eq!(copy(&pair, dir.path()), Ok(true));
        let copied = dir.path().join("rolesanywhere-key");
        assert_eq!(std::fs::read_to_string(&copied).expect("read"), "KEY");
        let meta = std::fs::metadata(&copied).expect("meta");
        assert_eq!(meta.mode() & 0o777, 0o400);
        let owner = std::fs::metadata(dir.path()).expect("dir");
        assert_eq!((meta.uid(), meta.gid()), (owner.uid(), owner.gid()));
        // Again (a restart): replaced, not refused.
        assert_eq!(copy(&pair, dir.path()), Ok(true));
        let missing = Pair {
            id: "rolesanywhere-chain".into(),
            source: src.path().join("chain.pem"),
        };
        assert_eq!(copy(&missing, dir.path()), Ok(false));
        assert!(!dir.path().join("rolesanywhere-chain").exists());
        let directory = Pair {
            id: "x".into(),
            source: src.path().to_path_buf(),
        };
        assert!(copy(&directory, dir.path()).is_err());
    }
}
