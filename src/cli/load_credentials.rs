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

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Outcome;

use crate::config::COPIES_DIRECTORY_VARIABLE as DIRECTORY_VARIABLE;

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
    // Opened once, then checked and read through that handle: the file checked is the
    // file copied. (The source may be a symlink, as renewal tools keep them.)
    let source = match std::fs::File::open(&pair.source) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(what(e, "read", &pair.source)),
    };
    let meta = source
        .metadata()
        .map_err(|e| what(e, "read", &pair.source))?;
    if !meta.is_file() || meta.len() > MAX_SIZE {
        return Err(format!(
            "{} for credential {} is not a regular file of at most 1 MiB",
            pair.source.display(),
            pair.id
        ));
    }
    let mut data = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    std::io::Read::take(&source, MAX_SIZE)
        .read_to_end(&mut data)
        .map_err(|e| what(e, "read", &pair.source))?;
    // The directory systemd made for the service user (RuntimeDirectoryMode=0700): its
    // owner gets the copy. Anything else (a symlink, a directory others can enter, such
    // as /etc after a wrong variable) is refused: root writes secrets nowhere else.
    let owner = std::fs::symlink_metadata(dir).map_err(|e| what(e, "use", dir))?;
    if !owner.is_dir() || owner.mode() & 0o077 != 0 {
        return Err(format!(
            "${DIRECTORY_VARIABLE} ({}) is not a directory private to its owner (mode 0700): \
             it should be the unit's RuntimeDirectory=; nothing was copied there",
            dir.display()
        ));
    }
    let target = dir.join(&pair.id);
    let partial = dir.join(format!(".{}.partial", pair.id));
    let _ = std::fs::remove_file(&partial);
    let written = write_private(&partial, &data, &owner)
        .map_err(|(e, doing)| what(e, doing, &partial))
        .and_then(|()| {
            std::fs::rename(&partial, &target).map_err(|e| what(e, "rename into", &target))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written?;
    Ok(true)
}

/// A new 0400 file at `path` with `data`, owned by `owner`'s owner, never through a link.
fn write_private(
    path: &Path,
    data: &[u8],
    owner: &std::fs::Metadata,
) -> Result<(), (std::io::Error, &'static str)> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| (e, "create"))?;
    std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid()))
        .map_err(|e| (e, "give to the service user"))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| (e, "write"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
        // As systemd makes it (RuntimeDirectoryMode=0700).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
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
        // A directory others can enter (a wrong variable pointing at /etc, say) is refused.
        let open = tempfile::tempdir().expect("tmp");
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let refused = copy(&pair, open.path()).expect_err("refused");
        assert!(refused.contains("0700"), "{refused}");
        assert!(std::fs::read_dir(open.path())
            .expect("dir")
            .next()
            .is_none());
    }
}
