//! Who owns the files in the state directory, whoever runs the command.
//!
//! The service runs as `lwa-agent` and owns `/var/lib/lwa-agent` (StateDirectory=). A
//! sysadmin runs `sudo lwa-agent check` (or `rotate`, `put-secret`) as root. If root
//! created `rotation.lock` or the state file as itself, the sandboxed service could no
//! longer open them and every later check would fail.
//!
//! Decision: commands run by root create every state file *as the directory's owner*
//! (fchown right after create, before the file is renamed into place) and give back
//! files an older run left owned by someone else. Not "ask the daemon over the socket":
//! the timer's check runs without a daemon, and the flock already keeps one writer.
//! Not "drop to the owner's uid": the Roles Anywhere key under /etc/lwa-agent/pki is
//! root-only, so a root run must keep its privileges to read it.
//!
//! Invariant: after any command, every file the agent keeps in the state directory
//! belongs to the directory's owner; a file that cannot be given back (the command does
//! not run as root) is named with the exact command that repairs it.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Uid};

/// The state directory's owner, and whether this process may give files to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Root may chown; anyone else can only create files as itself.
    can_chown: bool,
}

/// The service's user, from the packages' sysusers.d file.
pub const SERVICE_USER: &str = "lwa-agent";

impl Owner {
    /// Creates the directory if needed and returns its owner. A directory root creates
    /// for the first time goes to the service user (when it exists), mode 0700, as
    /// systemd's StateDirectory= would make it.
    pub fn of_directory(dir: &Path) -> Result<Owner, String> {
        let euid = nix::unistd::geteuid().as_raw();
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the state directory {}: {e}: create it (the service does \
                     so at its first start) or run the command as root",
                    dir.display()
                )
            })?;
            if euid == 0 {
                if let Some((uid, gid)) =
                    crate::accounts::user_ids(SERVICE_USER, Path::new(crate::accounts::PASSWD))
                {
                    chown(dir, uid, gid)?;
                    set_mode(dir, 0o700)?;
                }
            }
        }
        let meta = std::fs::metadata(dir)
            .map_err(|e| format!("cannot read the state directory {}: {e}", dir.display()))?;
        Ok(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
            can_chown: euid == 0,
        })
    }

    /// Gives a file this process just created to the directory's owner.
    pub fn adopt(&self, file: &File, path: &Path) -> Result<(), String> {
        if !self.can_chown {
            return Ok(());
        }
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if meta.uid() == self.uid && meta.gid() == self.gid {
            return Ok(());
        }
        nix::unistd::fchown(
            file,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )
        .map_err(|e| {
            format!(
                "cannot give {} to the state directory's owner (uid {}): {e}",
                path.display(),
                self.uid
            )
        })
    }

    /// Makes sure an existing file in the directory belongs to its owner: root gives it
    /// back; anyone else gets an error naming the file and the command that repairs it.
    /// A missing file is fine (it is created later, as the owner).
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if meta.uid() == self.uid && meta.gid() == self.gid {
            return Ok(());
        }
        if self.can_chown && meta.file_type().is_file() {
            chown(path, self.uid, self.gid)?;
            tracing::warn!(
                file = %path.display(),
                from_uid = meta.uid(),
                to_uid = self.uid,
                "gave a state file back to the state directory's owner (an earlier command \
                 run as root had left it as root's)"
            );
            return Ok(());
        }
        if meta.uid() == nix::unistd::geteuid().as_raw() {
            // Ours already (the group differs): we can still use it.
            return Ok(());
        }
        Err(wrong_owner(path, meta.uid(), self))
    }
}

/// The message for a file this process cannot use or repair.
pub fn wrong_owner(path: &Path, file_uid: u32, owner: &Owner) -> String {
    let dir = path.parent().unwrap_or(path);
    format!(
        "{} belongs to uid {file_uid}, not to the state directory's owner (uid {}), so the \
         service cannot use it: repair it with `sudo chown -R {}:{} {}` (or run `sudo \
         lwa-agent check` once, which gives it back)",
        path.display(),
        owner.uid,
        owner.uid,
        owner.gid,
        dir.display()
    )
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| {
        format!(
            "cannot give {} to uid {uid}: {e}: run `sudo chown -R {uid}:{gid} {}`",
            path.display(),
            path.display()
        )
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root only (the suite runs as root, like CI): a directory given to another uid, as
    /// StateDirectory= gives it to lwa-agent.
    fn foreign_dir() -> (tempfile::TempDir, u32, u32) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests need root (chown): run the suite as root, as CI does"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let (uid, gid) = (54321, 54322);
        chown(dir.path(), uid, gid).expect("chown");
        (dir, uid, gid)
    }

    #[test]
    fn root_creates_files_as_the_directory_owner() {
        let (dir, uid, gid) = foreign_dir();
        let owner = Owner::of_directory(dir.path()).expect("owner");
        assert_eq!((owner.uid, owner.gid), (uid, gid));
        let path = dir.path().join("f");
        let file = File::create(&path).expect("create");
        owner.adopt(&file, &path).expect("adopt");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    }

    #[test]
    fn root_gives_back_a_file_an_earlier_root_run_left() {
        let (dir, uid, gid) = foreign_dir();
        let path = dir.path().join("rotation.lock");
        std::fs::write(&path, b"").expect("write");
        assert_eq!(std::fs::metadata(&path).expect("meta").uid(), 0);
        let owner = Owner::of_directory(dir.path()).expect("owner");
        owner.check(&path).expect("repaired");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    }

    #[test]
    fn a_non_root_process_names_the_file_and_the_repair() {
        let (dir, uid, gid) = foreign_dir();
        let path = dir.path().join("rotation-state.json");
        std::fs::write(&path, b"{}").expect("write");
        // Neither this process's nor the directory owner's (as root's file is to the
        // service user).
        chown(&path, 54323, 54323).expect("chown");
        let owner = Owner {
            uid,
            gid,
            can_chown: false,
        };
        let e = owner
            .check(&path)
            .expect_err("root's file, and we cannot chown");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(
            e.contains(&format!(
                "sudo chown -R {uid}:{gid} {}",
                dir.path().display()
            )),
            "{e}"
        );
        assert!(owner.check(&dir.path().join("missing")).is_ok());
    }
}
