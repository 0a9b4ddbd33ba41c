//! The packages (SPEC §2, §7): what packaging/build makes, installed, upgraded, removed and
//! run the way a sysadmin and systemd would.
//!
//! tests/run runs packaging/build before `cargo test`; a missing package, or one older than
//! the sources it is made from, fails with the command that builds it. Tests that install
//! on this machine (dpkg) hold a file lock, so they never overlap (not even with another
//! checkout's suite), and purge the package when they end. CI machines are disposable and
//! run as root; the tests need root for dpkg, chroot, mknod, mount and setpriv.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use lwa_agent_testservers::pki::{self, Ca, KeyFormat, KeyKind};
use lwa_agent_testservers::rolesanywhere::{self, FakeRolesAnywhere};
use nix::fcntl::{Flock, FlockArg};

use crate::harness::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The exposure `systemd-analyze security` may give the services (SPEC §7).
const MAX_EXPOSURE: f64 = 1.5;

// ---------------------------------------------------------------------------------------
// Where things are
// ---------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory, found from the test's own agent binary (`<target>/debug/`),
/// so that CARGO_TARGET_DIR is respected without reading it.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_lwa-agent"))
        .parent()
        .and_then(Path::parent)
        .expect("the agent binary lives in <target>/<profile>/")
        .to_path_buf()
}

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
}

impl Packages {
    fn in_dir(dir: &Path, version: &str) -> Packages {
        Packages {
            deb: dir.join(format!("lwa-agent_{version}_amd64.deb")),
            rpm: dir.join(format!("lwa-agent-{version}-1.x86_64.rpm")),
        }
    }
}

/// The packages packaging/build made, checked to be newer than every file they are
/// built from.
fn packages() -> Packages {
    let p = Packages::in_dir(&target_dir().join("packages"), VERSION);
    let mut built = SystemTime::now();
    for f in [&p.deb, &p.rpm] {
        let meta = std::fs::metadata(f).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): run `packaging/build` (tests/run runs it before cargo test)",
                f.display()
            )
        });
        built = built.min(meta.modified().expect("mtime"));
    }
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for src in [
        "src",
        "systemd",
        "packaging",
        "config",
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
    ] {
        newest_file(&repo().join(src), &mut newest);
    }
    if let Some((t, path)) = newest {
        assert!(
            t <= built,
            "{} changed after the packages in {} were built: run `packaging/build`",
            path.display(),
            target_dir().join("packages").display()
        );
    }
    p
}

fn newest_file(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir").flatten() {
            newest_file(&entry.path(), newest);
        }
    } else if let Ok(t) = meta.modified() {
        if newest.as_ref().is_none_or(|(n, _)| t > *n) {
            *newest = Some((t, path.to_path_buf()));
        }
    }
}

/// The version after ours (patch + 1): the "new release" the upgrade tests install.
fn next_version() -> String {
    let mut parts: Vec<u64> = VERSION
        .split('.')
        .map(|p| p.parse().expect("numeric version"))
        .collect();
    *parts.last_mut().expect("version has parts") += 1;
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Packages of the next version from the same binary, built once per test run with
/// `PACKAGE_VERSION=… packaging/build --no-compile` (no cargo build: nothing to lock).
fn upgrade_packages() -> &'static Packages {
    static UPGRADE: OnceLock<Packages> = OnceLock::new();
    UPGRADE.get_or_init(|| {
        packages();
        let dir = target_dir().join("packages").join("upgrade-test");
        let version = next_version();
        run(Command::new(repo().join("packaging/build"))
            .arg("--no-compile")
            .env("PACKAGE_VERSION", &version)
            .env("PACKAGE_OUT_DIR", &dir)
            .env("CARGO_TARGET_DIR", target_dir()));
        Packages::in_dir(&dir, &version)
    })
}

// ---------------------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------------------

/// Runs `cmd` and returns its stdout; panics with everything it said when it fails.
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e}; run `tests/setup` (installs every tool the tests use)")
    })
}

/// A tool the tests need, or a failure naming the command that installs it.
fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run `tests/setup` (installs every tool the tests use)")
        })
}

/// dpkg, retried while another dpkg or apt holds the lock (other work on this machine).
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = output(
            Command::new(tool("dpkg"))
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("lock") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn dpkg_ok(args: &[&str]) -> String {
    let out = dpkg(args);
    assert!(
        out.status.success(),
        "dpkg {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes every trace of an installed lwa-agent package (a failed run's leftovers too).
fn purge() {
    let out = dpkg(&["--purge", "lwa-agent"]);
    assert!(
        out.status.success(),
        "dpkg --purge lwa-agent failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dpkg --install`, with the package's docs and man page included even where the image
/// excludes /usr/share/doc and /usr/share/man (slim container images do).
fn install(deb: &Path) {
    dpkg_ok(&[
        "--path-include=/usr/share/doc/lwa-agent/*",
        "--path-include=/usr/share/man/man8/lwa-agent.8.gz",
        "--install",
        deb.to_str().expect("utf8 path"),
    ]);
}

/// The package installed on this machine for the life of the value; purged afterwards.
/// Holds a lock that serializes every test that installs on the host.
struct Installed {
    _lock: Flock<File>,
}

impl Installed {
    fn new(deb: &Path) -> Installed {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/lwa-agent-package-tests.lock")
            .expect("open the package test lock");
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("lock /tmp/lwa-agent-package-tests.lock: {e}"));
        purge();
        install(deb);
        Installed { _lock: lock }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = dpkg(&["--purge", "lwa-agent"]);
    }
}

/// uid and primary gid of `user` from /etc/passwd.
fn passwd_entry(user: &str) -> Option<(u32, u32, String, String)> {
    let text = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() == 7 && f[0] == user).then(|| {
            (
                f[2].parse().expect("uid"),
                f[3].parse().expect("gid"),
                f[5].to_string(),
                f[6].to_string(),
            )
        })
    })
}

fn gid_of(group: &str) -> Option<u32> {
    lwa_agent::accounts::find_gid(
        &std::fs::read_to_string("/etc/group").expect("read /etc/group"),
        group,
    )
}

/// Asserts mode, owner and group of an installed file.
fn assert_file(path: &str, mode: u32, uid: u32, gid: u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(meta.is_file(), "{path} is not a regular file");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        mode,
        "{path}: mode {:o}, expected {mode:o}",
        meta.permissions().mode() & 0o7777
    );
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{path}: owner");
}

/// Every path under `dir` whose name contains `needle`.
fn find_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().contains(needle) {
            found.push(path.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(find_named(&path, needle));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// Unit files
// ---------------------------------------------------------------------------------------

/// A unit file: section → key → values in file order (keys such as LoadCredential= repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(path: &Path) -> Unit {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut unit = Unit::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let line = format!("{pending}{line}");
        pending.clear();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not a setting: {line}", path.display()));
        unit.entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    unit
}

fn values<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a [String] {
    unit.get(section)
        .and_then(|s| s.get(key))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn one<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    match values(unit, section, key) {
        [v] => v,
        other => panic!("[{section}] {key}= should be set once, found {other:?}"),
    }
}

/// lwa-agent(8) and a page per (sub)command, as generate-assets names them.
fn man_pages() -> Vec<String> {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        let name = cmd.get_display_name().unwrap_or(cmd.get_name());
        out.push(format!("/usr/share/man/man8/{name}.8.gz"));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out);
        }
    }
    let mut cmd = lwa_agent::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    walk(&cmd, &mut pages);
    pages
}

const UNITS: [&str; 4] = [
    "lwa-agent.socket",
    "lwa-agent.service",
    "lwa-agent-check.service",
    "lwa-agent-check.timer",
];

// ---------------------------------------------------------------------------------------
// IAM Roles Anywhere, the way the packaged units pass it
// ---------------------------------------------------------------------------------------

/// A host identity (a leaf under an intermediate, so the chain file is used too) and the
/// project's verifying Roles Anywhere endpoint, which trusts its root.
struct RolesAnywhereHost {
    files: pki::Files,
    endpoint: FakeRolesAnywhere,
}

impl RolesAnywhereHost {
    async fn new(dir: &Path) -> RolesAnywhereHost {
        let root = Ca::root("lwa-agent packaging root");
        let intermediate = root.intermediate("lwa-agent packaging intermediate");
        let leaf = intermediate.issue(KeyKind::Rsa2048);
        let files = pki::write(dir, "host", &leaf, &[&intermediate], KeyFormat::Pkcs8);
        assert!(files.chain.is_some(), "the test identity has a chain");
        let endpoint = FakeRolesAnywhere::start(rolesanywhere::Settings::trusting(root.der()))
            .await
            .expect("Roles Anywhere endpoint starts");
        RolesAnywhereHost { files, endpoint }
    }

    /// The files under the names the units' LoadCredential= lines give them.
    fn credentials(&self) -> [(&'static str, &'static str, PathBuf); 3] {
        [
            ("rolesanywhere-cert", "cert.pem", self.files.cert.clone()),
            ("rolesanywhere-key", "key.pem", self.files.key.clone()),
            (
                "rolesanywhere-chain",
                "chain.pem",
                self.files.chain.clone().expect("chain"),
            ),
        ]
    }

    /// `[aws.roles_anywhere]` as the example config and the README write it: every file
    /// from systemd's credentials directory (`%d/`).
    fn section(&self) -> String {
        format!(
            "[aws.roles_anywhere]\n\
             certificate = \"%d/rolesanywhere-cert\"\n\
             private_key = \"%d/rolesanywhere-key\"\n\
             certificate_chain = \"%d/rolesanywhere-chain\"\n\
             trust_anchor_arn = \"arn:aws:rolesanywhere:us-east-2:111122223333:trust-anchor/ta\"\n\
             profile_arn = \"arn:aws:rolesanywhere:us-east-2:111122223333:profile/profile\"\n\
             role_arn = \"arn:aws:iam::111122223333:role/lwa-agent\"\n\
             endpoint_url = \"{}\"\n",
            self.endpoint.url()
        )
    }

    /// Sessions were issued, and every request carried a signature the endpoint verified.
    fn assert_used(&self) {
        assert!(
            !self.endpoint.issued().is_empty(),
            "no Roles Anywhere session was created"
        );
        self.endpoint.assert_all_verified();
    }
}

/// The host's files where the units' LoadCredential= lines read them
/// (/etc/lwa-agent/pki, 0700 root, the key 0600), removed again when dropped.
struct PkiDir;

impl PkiDir {
    const DIR: &'static str = "/etc/lwa-agent/pki";

    fn install(host: &RolesAnywhereHost) -> PkiDir {
        std::fs::create_dir_all(Self::DIR).expect("mkdir /etc/lwa-agent/pki");
        std::fs::set_permissions(Self::DIR, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        for (_, name, source) in host.credentials() {
            let dest = Path::new(Self::DIR).join(name);
            std::fs::copy(&source, &dest).expect("copy to /etc/lwa-agent/pki");
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        PkiDir
    }
}

impl Drop for PkiDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Self::DIR);
    }
}

// ---------------------------------------------------------------------------------------
// Tests: the units
// ---------------------------------------------------------------------------------------

/// The hardening rating cannot regress: both services stay at or below 1.5, and none of
/// the settings the agent's design rules out creeps in.
#[test]
fn services_are_rated_at_most_1_5_by_systemd_analyze_security() {
    let analyze = tool("systemd-analyze");
    for service in ["lwa-agent.service", "lwa-agent-check.service"] {
        let path = repo().join("systemd").join(service);
        let out = run(Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path));
        let line = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
        let figure: f64 = line
            .split(':')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
        assert!(
            figure <= MAX_EXPOSURE,
            "{service}: exposure {figure} > {MAX_EXPOSURE}:\n{out}"
        );

        let unit = parse_unit(&path);
        // SO_PEERCRED allow lists need the peers' real uids: no user namespace.
        assert!(
            values(&unit, "Service", "PrivateUsers").is_empty(),
            "{service}: PrivateUsers= would map every peer to nobody"
        );
        assert_eq!(one(&unit, "Service", "User"), "lwa-agent");
        assert_eq!(one(&unit, "Service", "CapabilityBoundingSet"), "");
        assert_eq!(one(&unit, "Service", "ProtectSystem"), "strict");
        assert_eq!(one(&unit, "Service", "StateDirectory"), "lwa-agent");
    }
}

/// SPEC §7's settings are where they belong.
#[test]
fn units_carry_the_settings_the_spec_names() {
    let dir = repo().join("systemd");
    let socket = parse_unit(&dir.join("lwa-agent.socket"));
    assert_eq!(
        one(&socket, "Socket", "ListenStream"),
        "/run/lwa-agent/lwa-agent.sock"
    );
    assert_eq!(one(&socket, "Socket", "SocketMode"), "0600");
    assert_eq!(one(&socket, "Socket", "SocketUser"), "root");
    assert_eq!(one(&socket, "Socket", "SocketGroup"), "root");
    assert_eq!(one(&socket, "Install", "WantedBy"), "sockets.target");

    let service = parse_unit(&dir.join("lwa-agent.service"));
    assert_eq!(one(&service, "Service", "Type"), "notify");
    assert_eq!(
        one(&service, "Service", "ExecStart"),
        "/usr/bin/lwa-agent run"
    );
    assert_eq!(one(&service, "Service", "ExecReload"), "kill -HUP $MAINPID");
    assert_eq!(one(&service, "Service", "Restart"), "on-failure");
    assert!(!one(&service, "Service", "WatchdogSec").is_empty());
    let loaded: BTreeSet<&str> = values(&service, "Service", "LoadCredential")
        .iter()
        .filter_map(|v| v.split_once(':').map(|(id, _)| id))
        .collect();
    let defaults: BTreeSet<&str> = values(&service, "Service", "SetCredential")
        .iter()
        .filter_map(|v| v.split_once(':').map(|(id, _)| id))
        .collect();
    assert_eq!(
        loaded,
        BTreeSet::from([
            "rolesanywhere-cert",
            "rolesanywhere-key",
            "rolesanywhere-chain"
        ])
    );
    // A fallback for each, so a host without Roles Anywhere still starts.
    assert_eq!(loaded, defaults);

    let timer = parse_unit(&dir.join("lwa-agent-check.timer"));
    assert_eq!(one(&timer, "Timer", "OnCalendar"), "daily");
    assert_eq!(one(&timer, "Timer", "Persistent"), "true");
    assert!(!one(&timer, "Timer", "RandomizedDelaySec").is_empty());
    let check = parse_unit(&dir.join("lwa-agent-check.service"));
    assert_eq!(
        one(&check, "Service", "ExecStart"),
        "/usr/bin/lwa-agent check"
    );
}

// ---------------------------------------------------------------------------------------
// Tests: the .deb
// ---------------------------------------------------------------------------------------

/// lintian finds no errors and no warnings beyond the overrides shipped in the package
/// (packaging/debian/lintian-overrides says why each is there).
#[test]
fn lintian_finds_no_errors_or_warnings_in_the_deb() {
    let p = packages();
    let out = output(
        Command::new(tool("lintian"))
            .args(["--tag-display-limit", "0", "--fail-on", "error,warning"])
            .arg(&p.deb),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(
        complaints.is_empty() && out.status.success(),
        "lintian ({}):\n{text}",
        out.status
    );
}

/// The whole life of the .deb on this machine: install (files, modes, user, conffile,
/// socket enabled but not started), upgrade to a newer package with an edited config,
/// remove (units stopped and masked, config and state kept), purge (nothing left).
#[test]
fn deb_installs_upgrades_keeping_the_edited_config_and_purges_without_a_trace() {
    let p = packages();
    let up = upgrade_packages();
    let installed = Installed::new(&p.deb);

    // The user, from the sysusers.d file: a system account without a shell.
    let (uid, gid, home, shell) =
        passwd_entry("lwa-agent").expect("postinst created the lwa-agent user");
    assert!(
        uid < 1000 && uid > 0,
        "lwa-agent has uid {uid}: not a system user"
    );
    assert_eq!(gid_of("lwa-agent"), Some(gid), "lwa-agent's primary group");
    assert_eq!((home.as_str(), shell.as_str()), ("/", "/usr/sbin/nologin"));

    for (path, mode) in [
        ("/usr/bin/lwa-agent", 0o755),
        ("/lib/systemd/system/lwa-agent.socket", 0o644),
        ("/lib/systemd/system/lwa-agent.service", 0o644),
        ("/lib/systemd/system/lwa-agent-check.service", 0o644),
        ("/lib/systemd/system/lwa-agent-check.timer", 0o644),
        ("/usr/lib/sysusers.d/lwa-agent.conf", 0o644),
        ("/usr/share/bash-completion/completions/lwa-agent", 0o644),
        ("/usr/share/zsh/vendor-completions/_lwa-agent", 0o644),
        ("/usr/share/fish/vendor_completions.d/lwa-agent.fish", 0o644),
        ("/usr/share/doc/lwa-agent/README.md", 0o644),
        ("/usr/share/doc/lwa-agent/lwa-agent.toml", 0o644),
        ("/usr/share/doc/lwa-agent/copyright", 0o644),
        ("/usr/share/doc/lwa-agent/changelog.gz", 0o644),
    ] {
        assert_file(path, mode, 0, 0);
    }
    let pages = man_pages();
    assert!(pages.len() > 5, "{pages:?}");
    for page in &pages {
        assert_file(page, 0o644, 0, 0);
    }
    // The config: readable by the service's group, nobody else.
    assert_file("/etc/lwa-agent/lwa-agent.toml", 0o640, 0, gid);
    assert_eq!(
        std::fs::read_to_string("/etc/lwa-agent/lwa-agent.toml").expect("config"),
        std::fs::read_to_string(repo().join("config/lwa-agent.toml")).expect("example")
    );
    let conffiles = run(Command::new(tool("dpkg-query")).args([
        "--showformat=${Conffiles}",
        "--show",
        "lwa-agent",
    ]));
    assert!(
        conffiles.contains("/etc/lwa-agent/lwa-agent.toml"),
        "not a conffile: {conffiles:?}"
    );

    // The binary on the PATH is the static one and knows its version.
    let version = run(Command::new("/usr/bin/lwa-agent").arg("--version"));
    assert_eq!(version.trim(), format!("lwa-agent {VERSION}"));
    let file = run(Command::new(tool("file"))
        .arg("-b")
        .arg("/usr/bin/lwa-agent"));
    assert!(file.contains("static"), "not static: {file}");
    // The service user can read its config and finds it valid.
    let check = run(Command::new(tool("setpriv"))
        .args([
            "--reuid=lwa-agent",
            "--regid=lwa-agent",
            "--init-groups",
            "/usr/bin/lwa-agent",
            "config",
            "check",
        ])
        .env_clear());
    assert!(check.contains("OK"), "{check}");
    // The man page is lwa-agent(8) with the sysadmin's sections.
    let man = run(Command::new(tool("zcat")).arg("/usr/share/man/man8/lwa-agent.8.gz"));
    assert!(man.contains(".TH lwa-agent 8"), "{man}");
    for section in ["SYNOPSIS", "SUBCOMMANDS", "FILES", "EXIT STATUS"] {
        assert!(man.contains(section), "man page lacks {section}");
    }

    // Enabled, not started: the socket is wanted by sockets.target, nothing else is on.
    let wants = Path::new("/etc/systemd/system/sockets.target.wants/lwa-agent.socket");
    assert!(
        std::fs::read_link(wants).is_ok_and(|t| t.ends_with("lwa-agent.socket")),
        "the socket is not enabled"
    );
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/lwa-agent.service").exists());
    assert!(!Path::new("/etc/systemd/system/timers.target.wants/lwa-agent-check.timer").exists());
    assert!(!Path::new("/run/lwa-agent/lwa-agent.sock").exists());

    // Upgrade with an edited config and some state: both survive.
    let edit = "\n# edited by the sysadmin before the upgrade\n";
    let mut config = std::fs::read_to_string("/etc/lwa-agent/lwa-agent.toml").expect("config");
    config.push_str(edit);
    std::fs::write("/etc/lwa-agent/lwa-agent.toml", &config).expect("edit config");
    std::fs::create_dir_all("/var/lib/lwa-agent").expect("state dir");
    std::fs::write("/var/lib/lwa-agent/rotation-state.json", "{}").expect("state");
    install(&up.deb);
    let now = run(Command::new(tool("dpkg-query")).args([
        "--showformat=${Version}",
        "--show",
        "lwa-agent",
    ]));
    assert_eq!(now, next_version());
    assert_eq!(
        std::fs::read_to_string("/etc/lwa-agent/lwa-agent.toml").expect("config"),
        config,
        "the upgrade replaced the edited config"
    );
    assert!(!Path::new("/etc/lwa-agent/lwa-agent.toml.dpkg-new").exists());
    assert_file("/etc/lwa-agent/lwa-agent.toml", 0o640, 0, gid);
    assert!(Path::new("/var/lib/lwa-agent/rotation-state.json").exists());
    assert!(
        std::fs::read_link(wants).is_ok(),
        "the upgrade disabled the socket"
    );

    // Remove: program and units gone, the units masked (nothing can start them), config
    // and state kept for a reinstall.
    dpkg_ok(&["--remove", "lwa-agent"]);
    for gone in [
        "/usr/bin/lwa-agent",
        "/lib/systemd/system/lwa-agent.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} survived removal");
    }
    for unit in [
        "lwa-agent.socket",
        "lwa-agent.service",
        "lwa-agent-check.timer",
    ] {
        let link = Path::new("/etc/systemd/system").join(unit);
        assert_eq!(
            std::fs::read_link(&link).ok(),
            Some(PathBuf::from("/dev/null")),
            "{unit} is not masked after removal"
        );
    }
    assert!(Path::new("/etc/lwa-agent/lwa-agent.toml").exists());
    assert!(Path::new("/var/lib/lwa-agent/rotation-state.json").exists());

    // Purge: nothing of the package is left anywhere (the lock is still held, so no
    // other test installs it meanwhile).
    dpkg_ok(&["--purge", "lwa-agent"]);
    for gone in ["/etc/lwa-agent", "/var/lib/lwa-agent", "/run/lwa-agent"] {
        assert!(!Path::new(gone).exists(), "{gone} survived the purge");
    }
    for dir in [
        "/etc",
        "/var/lib/systemd",
        "/var/lib/dpkg/info",
        "/usr/bin",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/usr/lib/sysusers.d",
        "/usr/share/doc",
        "/usr/share/man/man8",
        "/usr/share/bash-completion",
        "/usr/share/zsh",
        "/usr/share/fish",
        "/usr/share/lintian/overrides",
    ] {
        let left = find_named(Path::new(dir), "lwa-agent");
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    let overrides = run(Command::new(tool("dpkg-statoverride")).arg("--list"));
    assert!(!overrides.contains("lwa-agent"), "{overrides}");
    let status = output(Command::new(tool("dpkg-query")).args(["--show", "lwa-agent"]));
    assert!(!status.status.success(), "dpkg still knows the package");
    // The system user stays, as Debian policy asks: files may still carry its uid.
    assert!(passwd_entry("lwa-agent").is_some());
    drop(installed);
}

/// `systemd-analyze verify` accepts all four units as installed, with the binary, the
/// `kill` of ExecReload= and the man page of Documentation= in place.
#[test]
fn installed_units_pass_systemd_analyze_verify() {
    let p = packages();
    let _installed = Installed::new(&p.deb);
    let paths: Vec<PathBuf> = UNITS
        .iter()
        .map(|u| Path::new("/lib/systemd/system").join(u))
        .collect();
    let out = output(
        Command::new(tool("systemd-analyze"))
            .arg("verify")
            .args(&paths),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        out.status
    );
}

// ---------------------------------------------------------------------------------------
// Tests: the .rpm
// ---------------------------------------------------------------------------------------

/// The .rpm holds the same files as the .deb, at the RPM distributions' paths, with the
/// config as %config(noreplace) 0640 root:lwa-agent, and needs no shared library.
#[test]
fn rpm_lists_the_expected_files_modes_and_scriptlets() {
    let p = packages();
    let rpm = tool("rpm");
    let q = |args: &[&str]| run(Command::new(&rpm).args(args).arg(&p.rpm));
    assert_eq!(
        q(&["-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}"]),
        format!("lwa-agent {VERSION} 1 x86_64")
    );

    // `rpm -qlvp`: mode, links, owner, group, size, date, path.
    let listing = q(&["-qlvp"]);
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let path = f.last().expect("path").to_string();
        files.insert(path, (f[0].to_string(), f[2].to_string(), f[3].to_string()));
    }
    let expected = [
        ("/usr/bin/lwa-agent", "-rwxr-xr-x", "root"),
        (
            "/usr/lib/systemd/system/lwa-agent.socket",
            "-rw-r--r--",
            "root",
        ),
        (
            "/usr/lib/systemd/system/lwa-agent.service",
            "-rw-r--r--",
            "root",
        ),
        (
            "/usr/lib/systemd/system/lwa-agent-check.service",
            "-rw-r--r--",
            "root",
        ),
        (
            "/usr/lib/systemd/system/lwa-agent-check.timer",
            "-rw-r--r--",
            "root",
        ),
        ("/usr/lib/sysusers.d/lwa-agent.conf", "-rw-r--r--", "root"),
        // rpm -qlv cuts group names to 8 characters.
        ("/etc/lwa-agent/lwa-agent.toml", "-rw-r-----", "lwa-agen"),
        (
            "/usr/share/bash-completion/completions/lwa-agent",
            "-rw-r--r--",
            "root",
        ),
        (
            "/usr/share/zsh/site-functions/_lwa-agent",
            "-rw-r--r--",
            "root",
        ),
        (
            "/usr/share/fish/vendor_completions.d/lwa-agent.fish",
            "-rw-r--r--",
            "root",
        ),
        ("/usr/share/doc/lwa-agent/README.md", "-rw-r--r--", "root"),
        (
            "/usr/share/doc/lwa-agent/lwa-agent.toml",
            "-rw-r--r--",
            "root",
        ),
    ];
    let pages = man_pages();
    let mut expected: Vec<(&str, &str, &str)> = expected.to_vec();
    expected.extend(pages.iter().map(|p| (p.as_str(), "-rw-r--r--", "root")));
    let want: BTreeSet<&str> = expected.iter().map(|(p, _, _)| *p).collect();
    let have: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(have, want, "rpm -qlvp:\n{listing}");
    for (path, mode, group) in expected {
        let (m, owner, g) = &files[path];
        assert_eq!(
            (m.as_str(), owner.as_str(), g.as_str()),
            (mode, "root", group),
            "{path}"
        );
    }
    // c = %config, n = noreplace: an edited config survives upgrades.
    let flags = q(&["-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]"]);
    assert!(
        flags
            .lines()
            .any(|l| l == "cn /etc/lwa-agent/lwa-agent.toml"),
        "{flags}"
    );
    let requires = q(&["-qp", "--requires"]);
    assert!(
        !requires.contains(".so"),
        "the static binary needs a library: {requires}"
    );
    // ExecReload= runs kill.
    assert!(
        requires.lines().any(|l| l.trim() == "/usr/bin/kill"),
        "{requires}"
    );
    let scripts = q(&["-qp", "--scripts"]);
    for (scriptlet, needle) in [
        ("preinstall", "systemd-sysusers"),
        ("postinstall", "enable lwa-agent.socket"),
        ("preuninstall", "disable"),
        ("postuninstall", "try-restart lwa-agent.service"),
    ] {
        assert!(
            scripts.contains(&format!("{scriptlet} scriptlet")) && scripts.contains(needle),
            "{scriptlet} should contain {needle}:\n{scripts}"
        );
    }
}

/// A scratch root for `rpm --root`: /usr is an overlay of this machine's /usr (so the
/// scriptlets find /bin/sh, systemd-sysusers and systemctl), everything else is empty.
struct ScratchRoot {
    root: PathBuf,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl ScratchRoot {
    fn new() -> ScratchRoot {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        for d in ["usr", "etc/systemd/system", "dev", "var/tmp", "tmp"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        for d in ["upper", "work"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        for link in ["bin", "sbin", "lib", "lib64"] {
            std::os::unix::fs::symlink(format!("usr/{link}"), root.join(link)).expect("symlink");
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
        for f in ["etc/shadow", "etc/gshadow"] {
            std::fs::write(root.join(f), "").expect("shadow");
        }
        mknod_null(&root.join("dev/null"));
        let mut scratch = ScratchRoot {
            root,
            mounted: false,
            _dir: dir,
        };
        let opts = format!(
            "lowerdir=/usr,upperdir={},workdir={}",
            scratch._dir.path().join("upper").display(),
            scratch._dir.path().join("work").display()
        );
        run(Command::new(tool("mount"))
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(scratch.root.join("usr")));
        scratch.mounted = true;
        scratch
    }

    fn rpm(&self, args: &[&str]) -> String {
        run(Command::new(tool("rpm"))
            .arg("--root")
            .arg(&self.root)
            .args(args))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(self.root.join("usr"))
                .status();
        }
    }
}

fn mknod_null(path: &Path) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap_or_else(|e| panic!("mknod {} (needs root): {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
}

/// The .rpm in a scratch root with its scriptlets: %pre creates the user before the config
/// is unpacked for its group, %post enables the socket, an upgrade keeps the edited
/// config, and erasing disables the socket and removes the files (rpm keeps the edited
/// config as .rpmsave).
#[test]
fn rpm_installs_upgrades_and_erases_in_a_scratch_root() {
    let p = packages();
    let up = upgrade_packages();
    let r = ScratchRoot::new();
    r.rpm(&["--initdb"]);
    r.rpm(&["--nodeps", "-i", p.rpm.to_str().expect("utf8")]);
    assert_eq!(
        r.rpm(&["-q", "lwa-agent"]).trim(),
        format!("lwa-agent-{VERSION}-1.x86_64")
    );

    let passwd = std::fs::read_to_string(r.path("/etc/passwd")).expect("passwd");
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("lwa-agent:"))
        .unwrap_or_else(|| panic!("%pre created no user:\n{passwd}"))
        .split(':')
        .collect();
    let gid: u32 = user[3].parse().expect("gid");
    let config = r.path("/etc/lwa-agent/lwa-agent.toml");
    let meta = std::fs::metadata(&config).expect("config installed");
    assert_eq!(
        (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 0, gid),
        "config mode and owner"
    );
    let binary = std::fs::metadata(r.path("/usr/bin/lwa-agent")).expect("binary");
    assert_eq!(binary.permissions().mode() & 0o7777, 0o755);
    assert!(r
        .path("/usr/lib/systemd/system/lwa-agent.service")
        .is_file());
    let wants = r.path("/etc/systemd/system/sockets.target.wants/lwa-agent.socket");
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "%post did not enable the socket"
    );

    let mut edited = std::fs::read_to_string(&config).expect("config");
    edited.push_str("\n# edited before the upgrade\n");
    std::fs::write(&config, &edited).expect("edit");
    r.rpm(&["--nodeps", "-U", up.rpm.to_str().expect("utf8")]);
    assert_eq!(
        r.rpm(&["-q", "lwa-agent"]).trim(),
        format!("lwa-agent-{}-1.x86_64", next_version())
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), edited);
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "the upgrade disabled the socket"
    );

    r.rpm(&["--nodeps", "-e", "lwa-agent"]);
    assert!(
        std::fs::symlink_metadata(&wants).is_err(),
        "erase left the socket enabled"
    );
    assert!(!r.path("/usr/bin/lwa-agent").exists());
    assert!(!r.path("/usr/share/doc/lwa-agent").exists());
    let left: Vec<String> = std::fs::read_dir(r.path("/etc/lwa-agent"))
        .expect("the edited config stays as .rpmsave")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["lwa-agent.toml.rpmsave"]);
}

// ---------------------------------------------------------------------------------------
// Tests: the packaged units drive the packaged binary
// ---------------------------------------------------------------------------------------

/// What systemd would set up for a service from its unit file, done by hand: the state
/// and credentials directories, the user, the umask, and the command line.
struct ServiceSetup {
    uid: u32,
    gid: u32,
    state: PathBuf,
    credentials: PathBuf,
    umask: String,
    exec_start: Vec<String>,
}

fn setup_like_systemd(unit: &Unit, base: &Path, name: &str) -> ServiceSetup {
    let user = one(unit, "Service", "User");
    assert_eq!(one(unit, "Service", "Group"), user);
    let (uid, gid, _, _) = passwd_entry(user).unwrap_or_else(|| panic!("no user {user}"));

    // StateDirectory=: /var/lib/<name>, owned by the user, StateDirectoryMode=.
    let state = base
        .join("state")
        .join(one(unit, "Service", "StateDirectory"));
    std::fs::create_dir_all(&state).expect("state dir");
    let mode = u32::from_str_radix(one(unit, "Service", "StateDirectoryMode"), 8).expect("mode");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).expect("chmod");
    chown(&state, uid, gid);

    // LoadCredential=ID:PATH, with SetCredential=ID:VALUE as the fallback for a missing
    // file; a private read-only directory the user can read.
    let credentials = base.join("credentials").join(name);
    std::fs::create_dir_all(&credentials).expect("credentials dir");
    let defaults: BTreeMap<&str, &str> = values(unit, "Service", "SetCredential")
        .iter()
        .filter_map(|v| v.split_once(':'))
        .collect();
    for spec in values(unit, "Service", "LoadCredential") {
        let (id, source) = spec.split_once(':').expect("ID:PATH");
        let data = match std::fs::read(source) {
            Ok(d) => d,
            Err(_) => defaults
                .get(id)
                .unwrap_or_else(|| panic!("{source} is missing and {id} has no SetCredential="))
                .as_bytes()
                .to_vec(),
        };
        let path = credentials.join(id);
        std::fs::write(&path, data).expect("credential");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        chown(&path, uid, gid);
    }
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    chown(&credentials, uid, gid);

    ServiceSetup {
        uid,
        gid,
        state,
        credentials,
        umask: one(unit, "Service", "UMask").to_string(),
        exec_start: one(unit, "Service", "ExecStart")
            .split_whitespace()
            .map(String::from)
            .collect(),
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

impl ServiceSetup {
    /// `argv` as the service's user, with no capabilities and no new privileges, under the
    /// unit's umask (CapabilityBoundingSet=, NoNewPrivileges=, UMask=).
    fn as_service_user(&self, argv: &[String]) -> Vec<String> {
        let mut v = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            r#"umask "$0" && exec "$@""#.into(),
            self.umask.clone(),
            tool("setpriv").display().to_string(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--init-groups".into(),
            "--no-new-privs".into(),
            "--inh-caps=-all".into(),
            "--bounding-set=-all".into(),
            "--".into(),
        ];
        v.extend(argv.iter().cloned());
        v
    }

    fn environment(&self) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/".into()),
            ("USER".into(), "lwa-agent".into()),
            ("STATE_DIRECTORY".into(), self.state.display().to_string()),
            (
                "CREDENTIALS_DIRECTORY".into(),
                self.credentials.display().to_string(),
            ),
            // No AWS keys: the credentials come from Roles Anywhere. Instance metadata is
            // off so that nothing could ever leave loopback.
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }
}

/// The installed units start the installed binary the way systemd would: socket
/// activation from lwa-agent.socket's ListenStream= (through systemd-socket-activate),
/// User=lwa-agent without capabilities, StateDirectory= and LoadCredential= (the Roles
/// Anywhere certificate, key and chain from /etc/lwa-agent/pki), NOTIFY_SOCKET and
/// WATCHDOG_USEC from WatchdogSec=. The agent reads the 0640 config through its group,
/// becomes READY, serves a token through the socket, reloads on ExecReload= run as its
/// own user, and stops cleanly; lwa-agent-check.service's command runs a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_units_start_the_packaged_agent_by_socket_activation() {
    let p = packages();
    let _installed = Installed::new(&p.deb);
    let w = World::new().await;
    let units = Path::new("/lib/systemd/system");
    let socket_unit = parse_unit(&units.join("lwa-agent.socket"));
    let service = parse_unit(&units.join("lwa-agent.service"));
    assert_eq!(one(&service, "Service", "Type"), "notify");
    assert_eq!(
        one(&socket_unit, "Socket", "ListenStream"),
        "/run/lwa-agent/lwa-agent.sock"
    );

    // The sysadmin's steps: the host's certificate, key and chain in /etc/lwa-agent/pki
    // (root only), and the installed config pointed at this world with Roles Anywhere
    // (same file, same 0640 root:lwa-agent; only its contents change).
    let ra = RolesAnywhereHost::new(w.dir.path()).await;
    let _pki = PkiDir::install(&ra);
    std::fs::write("/etc/lwa-agent/lwa-agent.toml", w.config("", &ra.section()))
        .expect("write config");

    // Everything the service user must reach sits in a directory it can traverse.
    let base = w.dir.path();
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let setup = setup_like_systemd(&service, base, "lwa-agent.service");

    let notify_path = base.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind NOTIFY_SOCKET");
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let watchdog = humantime::parse_duration(one(&service, "Service", "WatchdogSec"))
        .expect("WatchdogSec= is a duration");

    // The socket: systemd-socket-activate stands in for lwa-agent.socket (same kind of
    // socket, a temp path); SocketMode= as the socket unit sets it.
    let socket = base.join("lwa-agent.sock");
    let mut cmd = Command::new(tool("systemd-socket-activate"));
    cmd.env_clear().arg("--listen").arg(&socket);
    let mut env = setup.environment();
    env.push(("NOTIFY_SOCKET".into(), notify_path.display().to_string()));
    env.push(("WATCHDOG_USEC".into(), watchdog.as_micros().to_string()));
    for (k, v) in &env {
        cmd.arg(format!("--setenv={k}={v}"));
    }
    cmd.args(setup.as_service_user(&setup.exec_start));
    let mut agent = AgentProc::spawn(cmd, socket.clone());
    agent.wait_listening().await;
    let mode = u32::from_str_radix(one(&socket_unit, "Socket", "SocketMode"), 8).expect("mode");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode)).expect("chmod");

    let r = agent.wait_for("/v1/token", 30, |r| r.status == 200).await;
    assert_eq!(r.json()["credential"], "default");
    assert_eq!(w.lwa.issued(), 1);
    let logs = agent.logs();
    assert!(logs.contains("passed by systemd"), "{logs}");
    // AWS access through the certificate systemd passed from /etc/lwa-agent/pki.
    let status = agent.get("/v1/status").await.json();
    assert_eq!(
        status["aws"]["credential_source"], "IAM Roles Anywhere",
        "{status}"
    );
    ra.assert_used();

    // READY=1 with a status line, sent by the process running as lwa-agent.
    let messages = notifications(&notify, |m| m.iter().any(|m| m.contains("READY=1")));
    assert!(
        messages
            .iter()
            .any(|m| m.contains("READY=1") && m.contains("STATUS=")),
        "{messages:?}"
    );
    let pid = agent.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:")[0], setup.uid.to_string(), "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");

    // ExecReload=kill -HUP $MAINPID, as the service's user (systemd runs it so).
    let reload: Vec<String> = one(&service, "Service", "ExecReload")
        .replace("$MAINPID", &pid.to_string())
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut argv = reload.clone();
    argv[0] = tool(&reload[0]).display().to_string();
    let argv = setup.as_service_user(&argv);
    run(Command::new(&argv[0]).args(&argv[1..]).env_clear());
    let messages = notifications(&notify, |m| m.iter().any(|m| m.contains("RELOADING=1")));
    assert!(!messages.is_empty());
    wait_for_log(&agent, "SIGHUP").await;

    // lwa-agent-check.service: its command, as the same user, with the same state dir.
    let check_unit = parse_unit(&units.join("lwa-agent-check.service"));
    let check = setup_like_systemd(&check_unit, base, "lwa-agent-check.service");
    let argv = check.as_service_user(&check.exec_start);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear();
    for (k, v) in check.environment() {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert!(out.contains("rotation check at"), "{out}");

    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.wait_exit(15).code(), Some(0), "{}", agent.logs());
    w.canaries
        .assert_absent("the packaged agent's log", &agent.logs());
}

/// Waits up to 20 s for `needle` in the agent's log.
async fn wait_for_log(agent: &AgentProc, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the agent's log:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// sd_notify messages received until `done` holds (or the read times out).
fn notifications(sock: &UnixDatagram, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => panic!("no more sd_notify messages ({e}); got {got:?}"),
        }
    }
    got
}

// ---------------------------------------------------------------------------------------
// Tests: static means self-contained at run time
// ---------------------------------------------------------------------------------------

/// The packaged binary in an otherwise empty chroot: only /etc/hosts, /etc/resolv.conf,
/// /etc/group, an /etc/nsswitch.conf that names sss and resolve, /dev/null, /dev/random,
/// /dev/urandom, the config and the Roles Anywhere credentials. No HOME, no libc, no NSS
/// modules. It reaches Roles Anywhere (reqwest), moto (the AWS SDK) and the LWA endpoint
/// by the name `localhost`, serves a token, reloads and stops; strace shows it never opens nsswitch.conf, a libnss_* module or /etc/passwd,
/// connects nowhere but loopback, and makes only system calls the unit's
/// SystemCallFilter= allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packaged_binary_runs_alone_in_a_chroot_without_nss() {
    let p = packages();
    let w = World::new().await;
    let base = w.dir.path();
    let extracted = base.join("deb");
    run(Command::new(tool("dpkg-deb"))
        .arg("--extract")
        .arg(&p.deb)
        .arg(&extracted));

    let root = base.join("root");
    for d in [
        "etc/lwa-agent",
        "usr/bin",
        "dev",
        "run",
        "var/lib/lwa-agent",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy(
        extracted.join("usr/bin/lwa-agent"),
        root.join("usr/bin/lwa-agent"),
    )
    .expect("copy the packaged binary");
    std::fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )
    .expect("hosts");
    // Queries would go to loopback, where nothing answers: the names must come from hosts.
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv");
    std::fs::write(root.join("etc/group"), "root:x:0:\nlwa-agent:x:990:\n").expect("group");
    // What an SSSD / systemd-resolved host has: a static binary that used NSS would load
    // these modules (built for another glibc) and break.
    std::fs::write(
        root.join("etc/nsswitch.conf"),
        "passwd: files sss systemd\ngroup: files sss systemd\n\
         hosts: files resolve [!UNAVAIL=return] myhostname dns\n",
    )
    .expect("nsswitch");
    for (name, minor) in [("null", 3), ("random", 8), ("urandom", 9)] {
        let path = root.join("dev").join(name);
        nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, minor),
        )
        .unwrap_or_else(|e| panic!("mknod {} (needs root): {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    }
    // AWS credentials through Roles Anywhere, from the certificate, key and chain in a
    // credentials directory as systemd's LoadCredential= would pass them.
    let ra = RolesAnywhereHost::new(base).await;
    let credentials = root.join("run/credentials/lwa-agent.service");
    std::fs::create_dir_all(&credentials).expect("mkdir credentials");
    for (id, _, source) in ra.credentials() {
        std::fs::copy(&source, credentials.join(id)).expect("copy credential");
    }
    // The world's config, with every endpoint (moto, LWA, Roles Anywhere) by name and the
    // socket inside the chroot.
    let config = w
        .config("", &ra.section())
        .replace("127.0.0.1", "localhost")
        .replace(&w.socket().display().to_string(), "/run/lwa-agent.sock");
    assert!(config.contains("http://localhost:"), "{config}");
    std::fs::write(root.join("etc/lwa-agent/lwa-agent.toml"), config).expect("config");

    let trace = base.join("strace.out");
    let mut cmd = Command::new(tool("strace"));
    cmd.env_clear()
        .env("STATE_DIRECTORY", "/var/lib/lwa-agent")
        .env(
            "CREDENTIALS_DIRECTORY",
            "/run/credentials/lwa-agent.service",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(tool("chroot"))
        .arg(&root)
        .args([
            "/usr/bin/lwa-agent",
            "--config",
            "/etc/lwa-agent/lwa-agent.toml",
            "run",
        ]);
    let mut agent = AgentProc::spawn(cmd, root.join("run/lwa-agent.sock"));
    agent.wait_listening().await;
    let r = agent.wait_for("/v1/token", 60, |r| r.status == 200).await;
    assert_eq!(r.json()["credential"], "default");
    assert_eq!(agent.get("/v1/health").await.status, 200);
    let status = agent.get("/v1/status").await.json();
    assert_eq!(
        status["aws"]["credential_source"], "IAM Roles Anywhere",
        "{status}"
    );
    ra.assert_used();
    // A token can be served before the start-up finishes; systemd reloads only after
    // READY=1, which comes with this log line.
    wait_for_log(&agent, "lwa-agent ready").await;
    // Signals go to the agent itself (strace's child), not to strace.
    let agent_pid = nix::unistd::Pid::from_raw(child_of(agent.child.id()));
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    wait_for_log(&agent, "SIGHUP").await;
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = agent.wait_exit(30);
    let logs = agent.logs();
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("lwa-agent stopped"), "{logs}");
    w.canaries.assert_absent("the chroot agent's log", &logs);

    // Only what happened after chroot(1) exec'd the agent counts: chroot itself is a
    // dynamic program of this machine.
    let text = std::fs::read_to_string(&trace).expect("strace output");
    let start = text
        .lines()
        .position(|l| l.contains("execve(\"/usr/bin/lwa-agent\"") && l.contains("= 0"))
        .unwrap_or_else(|| panic!("no execve of the agent in the trace:\n{text}"));
    let lines: Vec<&str> = text.lines().skip(start + 1).collect();
    let path_calls = [
        "open",
        "openat",
        "openat2",
        "stat",
        "lstat",
        "newfstatat",
        "statx",
        "access",
        "faccessat",
        "faccessat2",
        "readlink",
        "readlinkat",
        "execve",
    ];
    for line in &lines {
        let call = syscall_name(line);
        if call.as_deref().is_some_and(|c| path_calls.contains(&c)) {
            for forbidden in [
                "nsswitch.conf",
                "libnss_",
                "/etc/passwd",
                "ld.so",
                "libc.so",
            ] {
                assert!(
                    !line.contains(forbidden),
                    "the agent touched {forbidden}: {line}"
                );
            }
        }
        if call.as_deref() == Some("connect") && line.contains("AF_INET") {
            assert!(
                line.contains("127.0.0.1") || line.contains("::1"),
                "a connection beyond loopback: {line}"
            );
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("/etc/hosts")),
        "the agent never read /etc/hosts: did it resolve `localhost` at all?"
    );

    let used = syscalls(&lines);
    assert!(
        ["openat", "connect", "accept4", "epoll_wait"]
            .iter()
            .all(|c| used.contains(*c)),
        "the trace does not show the agent at work: {used:?}"
    );
    let allowed = allowed_syscalls(&parse_unit(&repo().join("systemd/lwa-agent.service")));
    // The filter really filters: privileged and resource-control calls are out.
    for refused in ["mount", "setuid", "setrlimit", "reboot", "chroot"] {
        assert!(
            !allowed.contains(refused),
            "SystemCallFilter= allows {refused}"
        );
    }
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "the agent makes system calls lwa-agent.service's SystemCallFilter= refuses: \
         {refused:?}"
    );
}

/// The process whose parent is `parent` (strace's child: chroot(1), which execs the
/// agent in the same process).
fn child_of(parent: u32) -> i32 {
    let ppid = format!("PPid:\t{parent}");
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if status.lines().any(|l| l == ppid) {
            return pid;
        }
    }
    panic!("no child of strace ({parent}) found");
}

/// The system call of one strace line (`PID name(...`, `PID <... name resumed>...`).
fn syscall_name(line: &str) -> Option<String> {
    let rest = line.split_once(char::is_whitespace)?.1.trim_start();
    let rest = rest.strip_prefix("<... ").unwrap_or(rest);
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let follows = rest[name.len()..].chars().next();
    (!name.is_empty() && matches!(follows, Some('(') | Some(' '))).then_some(name)
}

fn syscalls(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().filter_map(|l| syscall_name(l)).collect()
}

/// What SystemCallFilter= lets through: the allow-list entries minus the `~` entries,
/// with every @group expanded by `systemd-analyze syscall-filter`.
fn allowed_syscalls(unit: &Unit) -> BTreeSet<String> {
    let listing = run(Command::new(tool("systemd-analyze")).arg("syscall-filter"));
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in listing.lines() {
        let t = line.trim();
        if line.starts_with('@') {
            current = Some(t.to_string());
            groups.entry(t.to_string()).or_default();
        } else if t.is_empty() {
            current = None;
        } else if !t.starts_with('#') {
            if let Some(g) = &current {
                groups.get_mut(g).expect("group").push(t.to_string());
            }
        }
    }
    fn expand(item: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        match groups.get(item) {
            Some(members) if item.starts_with('@') => {
                for m in members {
                    expand(m, groups, out);
                }
            }
            None if item.starts_with('@') => panic!("unknown syscall group {item}"),
            _ => {
                out.insert(item.to_string());
            }
        }
    }
    let (mut allow, mut deny) = (BTreeSet::new(), BTreeSet::new());
    for value in values(unit, "Service", "SystemCallFilter") {
        let (set, items) = match value.strip_prefix('~') {
            Some(rest) => (&mut deny, rest),
            None => (&mut allow, value.as_str()),
        };
        for item in items.split_whitespace() {
            expand(item, &groups, set);
        }
    }
    assert!(!allow.is_empty(), "SystemCallFilter= has no allow list");
    allow.difference(&deny).cloned().collect()
}
