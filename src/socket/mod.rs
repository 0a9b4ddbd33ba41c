//! The Unix socket the ERP processes ask for tokens: how it is obtained (systemd socket
//! activation or our own bind), and the HTTP API served on it.

pub mod api;
pub mod error;
pub mod peer;
pub mod server;

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::config::{GroupSpec, SocketConfig};

// The limits that keep one bad client from hurting the others; `server` applies them.

/// More than any ERP host needs at once; each costs a task and a small buffer.
pub const MAX_CONNECTIONS: usize = 1024;
/// The API's limit on a request head (docs/clients.md), checked in
/// `api::validate_head_size`.
pub const MAX_HEAD: usize = 8 * 1024;
/// hyper's read buffer: heads between MAX_HEAD and this get a JSON `too_large`; longer ones
/// never parse and get hyper's bare 431.
pub const MAX_READ: usize = 2 * MAX_HEAD;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep-alive connections are closed (gracefully, between requests) after this long.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long shutdown waits for answers in flight.
pub const DRAIN: Duration = Duration::from_secs(5);
/// At shutdown, how long a connection that has not sent its request yet may still send
/// it. Clients write the request right after connecting, so it is normally there already.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// A listening socket, and the path to remove at shutdown when we created it.
pub struct Listener {
    pub listener: UnixListener,
    pub owned_path: Option<PathBuf>,
}

/// Takes the socket systemd passed, or binds `socket.path` with `socket.mode`/`group`.
pub fn listen(cfg: &SocketConfig) -> Result<Listener, String> {
    if let Some(listener) = crate::systemd::activated_listener()? {
        return Ok(Listener {
            listener,
            owned_path: None,
        });
    }
    let gid = match &cfg.group {
        None => None,
        Some(GroupSpec::Gid(g)) => Some(*g),
        Some(GroupSpec::Name(n)) => Some(crate::accounts::gid_of(n, Path::new("/etc/group"))?),
    };
    let listener = bind(&cfg.path, cfg.mode, gid)?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set up {}: {e}", cfg.path.display()))?;
    Ok(Listener {
        listener,
        owned_path: Some(cfg.path.clone()),
    })
}

/// Binds `path` so that the socket file is never more open than `mode`: the umask withholds
/// exactly the bits `mode` does while bind(2) creates the file. The group changes after
/// that; until then the group bits apply to the agent's own group, so there is no moment
/// when anyone outside `mode` and `group` can connect.
fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the socket directory {}: {e} (run as root, or set socket.path)",
                    dir.display()
                )
            })?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    remove_stale(path)?;
    let mask = nix::sys::stat::Mode::from_bits_truncate(!mode & 0o777);
    let previous = nix::sys::stat::umask(mask);
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(previous);
    let listener = bound.map_err(|e| format!("cannot bind the socket {}: {e}", path.display()))?;
    // bind(2) honours the umask; set the mode explicitly too, in case a filesystem does not.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
            format!(
                "cannot give the socket {} to group {gid}: {e} (the agent needs root or \
                 membership of that group)",
                path.display()
            )
        })?;
    }
    Ok(listener)
}

/// Removes a socket file left by an agent that died; refuses when one is still listening
/// or when the path is something other than a socket.
fn remove_stale(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket: move it away or set socket.path",
            path.display()
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "another lwa-agent is already listening on {}: stop it first (systemctl stop \
             lwa-agent.socket lwa-agent) or set socket.path",
            path.display()
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing a stale socket file");
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))
        }
        Err(e) => Err(format!(
            "cannot tell whether {} is in use ({e}): remove it if no agent runs",
            path.display()
        )),
    }
}
