//! Who may read what: the socket's own mode and group, and per-credential allow lists
//! checked against SO_PEERCRED, exercised with a second uid via setpriv.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use crate::harness::*;

const NOBODY: u32 = 65534;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_created_root_only_by_default() {
    let w = World::new().await;
    let agent = w.agent(&w.config("", "")).await;
    let meta = std::fs::metadata(&agent.socket).expect("socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
}

/// Runs `lwa-agent token NAME` as uid/gid 65534 through setpriv.
fn token_as_nobody(socket: &std::path::Path, name: &str) -> std::process::Output {
    let setpriv = which("setpriv");
    Command::new(setpriv)
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            env!("CARGO_BIN_EXE_lwa-agent").into(),
            "token".into(),
            name.into(),
            "--socket".into(),
        ])
        .arg(socket)
        .env_clear()
        .output()
        .expect("setpriv runs")
}

pub fn which(tool: &str) -> std::path::PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"] {
        let p = std::path::Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed: run `tests/setup` (installs util-linux, systemd, curl)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_admit_listed_peers_and_refuse_others() {
    let w = World::new().await;
    // nobody must be able to reach the socket to be refused by the allow list.
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let shared = format!(
        "[[credentials]]\nname = \"shared\"\nclient_id_parameter = \"{ID_PARAM}\"\n\
         client_secret_parameter = \"{SECRET_PARAM}\"\nrefresh_token_parameter = \"{REFRESH_PARAM}\"\n\
         allow_gids = [{NOBODY}]\n"
    );
    let config = w.config_parts(&Parts {
        credential: "allow_uids = [0]",
        socket: &format!("mode = \"0660\"\ngroup = {NOBODY}"),
        extra: &shared,
        ..Parts::default()
    });
    let agent = w.agent(&config).await;
    agent.wait_for("/v1/health", 20, |r| r.status == 200).await;
    let meta = std::fs::metadata(&agent.socket).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), NOBODY);

    let allowed = token_as_nobody(&agent.socket, "shared");
    assert!(
        allowed.status.success(),
        "nobody may read `shared`: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).starts_with("Atza|"));

    let refused = token_as_nobody(&agent.socket, "default");
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("403") && err.contains("uid 65534") && err.contains("allow_uids"),
        "{err}"
    );

    // Root is always allowed.
    assert_eq!(agent.get("/v1/token/default").await.status, 200);
    let metrics = agent.get("/metrics").await.body;
    assert!(
        metrics.contains("lwa_agent_token_requests_total{credential=\"default\",code=\"403\"} 1"),
        "{metrics}"
    );
}
