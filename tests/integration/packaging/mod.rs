//! The packages (docs/packages.md, docs/systemd.md): what packaging/build makes, installed, upgraded, removed and
//! run the way a sysadmin and systemd would. One file per concern: the unit files as
//! written (`units`), the .deb (`deb`) and the .rpm (`rpm`) as packages, the units run by a
//! real systemd booted as PID 1 (`booted`), and the binary alone in a chroot (`chroot`).
//!
//! tests/run runs packaging/build before `cargo test`; a missing package, or one older than
//! the sources it is made from, fails with the command that builds it. Tests that install
//! on this machine (dpkg) hold a file lock, so they never overlap (not even with another
//! checkout's suite), and purge the package when they end. CI machines are disposable and
//! run as root; the tests need root for dpkg, chroot, mknod, mount and setpriv.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use lwa_agent_testservers::pki::{self, Ca, KeyFormat, KeyKind};
use lwa_agent_testservers::rolesanywhere::{self, FakeRolesAnywhere};
use nix::fcntl::{Flock, FlockArg};

use crate::harness::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The exposure `systemd-analyze security` may give the services (docs/systemd.md).
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
        "docs",
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
        let lock = host_lock();
        purge();
        install(deb);
        Installed { _lock: lock }
    }
}

/// The lock of every test that installs on this machine, or that sees its `/usr` (the rpm
/// scratch root lays an overlay over it: a .deb installed meanwhile would show through).
fn host_lock() -> Flock<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/lwa-agent-package-tests.lock")
        .expect("open the package test lock");
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock /tmp/lwa-agent-package-tests.lock: {e}"))
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

/// The process whose parent is `parent` (strace's child: chroot(1), which execs the
/// agent; unshare's child: the booted systemd).
fn child_of(parent: u32) -> i32 {
    find_child(parent).unwrap_or_else(|| panic!("no child of process {parent} found"))
}

fn find_child(parent: u32) -> Option<i32> {
    let ppid = format!("PPid:\t{parent}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            status.lines().any(|l| l == ppid).then_some(pid)
        })
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

/// Where the packages put the operator guides (`docs/*.md`): the README, the units and
/// the agent's messages point there.
fn guides() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("/usr/share/doc/lwa-agent/docs/{n}"))
        .collect();
    found.sort();
    assert!(found.len() > 5, "{found:?}");
    found
}

/// lwa-agent(8) and a page per (sub)command, as packaging/assets names them.
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

// ---------------------------------------------------------------------------------------
// systemd versions: the directive table and the units as an older systemd reads them
// ---------------------------------------------------------------------------------------

/// The oldest systemd the units support (RHEL 8).
const OLDEST_SYSTEMD: u32 = 239;

/// One row of systemd/directives.md.
struct Directive {
    name: String,
    since: u32,
    /// What a host with an older systemd does without it ("—" when none is older).
    plan: String,
}

/// The table in systemd/directives.md.
fn directives() -> Vec<Directive> {
    let path = repo().join("systemd/directives.md");
    let text = std::fs::read_to_string(&path).expect("systemd/directives.md");
    let rows: Vec<Directive> = text
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(
                cells.len() >= 4,
                "{}: a row needs 4 cells: {l}",
                path.display()
            );
            Directive {
                name: cells[0].trim_matches('`').trim_end_matches('=').to_string(),
                since: cells[1].parse().unwrap_or_else(|_| {
                    panic!("{}: `{}` is not a version", path.display(), cells[1])
                }),
                plan: cells[2].to_string(),
            }
        })
        .collect();
    assert!(rows.len() > 40, "the table has {} rows", rows.len());
    rows
}

/// The unit files the packages install (their names).
fn unit_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("systemd"))
        .expect("systemd/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            [".service", ".socket", ".timer", ".path"]
                .iter()
                .any(|x| n.ends_with(x))
        })
        .collect();
    names.sort();
    names
}

/// A unit file's text as systemd `version` reads it: every line whose directive is newer
/// is left out, which is what that systemd does with it ("Unknown lvalue … ignoring");
/// and, below 252, the syscall groups of `SystemCallFilter=` are what they hold in that
/// version (tests/vectors/systemd), not what the running 252 would make of the names.
fn unit_as(text: &str, version: u32) -> String {
    let table = directives();
    let since = |key: &str| {
        table
            .iter()
            .find(|d| d.name == key)
            .map(|d| d.since)
            .unwrap_or_else(|| panic!("{key}= is not in systemd/directives.md"))
    };
    let list = (version < 252).then(|| {
        let path = repo().join(format!("tests/vectors/systemd/v{version}-allowed.txt"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    });
    let mut out = String::new();
    let mut filter_written = false;
    for line in text.lines() {
        let t = line.trim();
        let key = (!t.starts_with('#') && !t.starts_with('['))
            .then(|| t.split_once('=').map(|(k, _)| k.trim()))
            .flatten();
        match key {
            Some(k) if since(k) > version => continue,
            Some("SystemCallFilter") if list.is_some() => {
                if !filter_written {
                    out.push_str(&format!(
                        "SystemCallFilter={}\n",
                        list.as_deref().unwrap_or("")
                    ));
                    filter_written = true;
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

const UNITS: [&str; 5] = [
    "lwa-agent.socket",
    "lwa-agent.service",
    "lwa-agent-check.service",
    "lwa-agent-doctor.service",
    "lwa-agent-check.timer",
];

// ---------------------------------------------------------------------------------------
// IAM Roles Anywhere, the way the packaged units pass it
// ---------------------------------------------------------------------------------------

/// A host identity and the project's verifying Roles Anywhere endpoint, which trusts its
/// root: a leaf under an intermediate (so the chain file is used too), or, as from a CA
/// that issues leaf certificates directly, a leaf of the root with no chain.
struct RolesAnywhereHost {
    files: pki::Files,
    endpoint: FakeRolesAnywhere,
    /// Issues the host's certificates (a renewal too).
    issuer: Ca,
    /// The issuer's own certificate goes into the chain file (it is an intermediate).
    chained: bool,
    /// The current leaf, for a renewal that keeps its key.
    leaf: pki::Leaf,
    /// The root the endpoint trusts (the trust anchor's certificate, `ca.pem`).
    root_pem: String,
}

impl RolesAnywhereHost {
    async fn new(dir: &Path) -> RolesAnywhereHost {
        Self::start(dir, true).await
    }

    /// No intermediate: no chain.pem on the host.
    async fn without_chain(dir: &Path) -> RolesAnywhereHost {
        Self::start(dir, false).await
    }

    async fn start(dir: &Path, chained: bool) -> RolesAnywhereHost {
        let root = Ca::root("lwa-agent packaging root");
        let endpoint = FakeRolesAnywhere::start(rolesanywhere::Settings::trusting(root.der()))
            .await
            .expect("Roles Anywhere endpoint starts");
        let root_pem = root.pem();
        let issuer = if chained {
            root.intermediate("lwa-agent packaging intermediate")
        } else {
            root
        };
        let leaf = issuer.issue(KeyKind::Rsa2048);
        let chain: Vec<&Ca> = if chained { vec![&issuer] } else { vec![] };
        let files = pki::write(dir, "host", &leaf, &chain, KeyFormat::Pkcs8);
        assert_eq!(files.chain.is_some(), chained);
        RolesAnywhereHost {
            files,
            endpoint,
            issuer,
            chained,
            leaf,
            root_pem,
        }
    }

    /// A renewed certificate and key for the same host, from the same CA (`name` makes the
    /// files' names).
    fn renew(&self, dir: &Path) -> pki::Files {
        self.renew_named(dir, "renewed")
    }

    fn renew_named(&self, dir: &Path, name: &str) -> pki::Files {
        let leaf = self.issuer.issue(KeyKind::Rsa2048);
        self.write(dir, name, &leaf)
    }

    /// A renewed certificate for the same key.
    fn reissue(&self, dir: &Path, name: &str) -> pki::Files {
        // A serial of its own: by default the serial follows the key.
        let opts = pki::LeafOptions {
            serial: Some(fastrand::u64(1..).to_be_bytes().to_vec()),
            ..pki::LeafOptions::default()
        };
        let leaf = self.issuer.reissue(&self.leaf, &opts);
        self.write(dir, name, &leaf)
    }

    fn write(&self, dir: &Path, name: &str, leaf: &pki::Leaf) -> pki::Files {
        let chain: Vec<&Ca> = if self.chained {
            vec![&self.issuer]
        } else {
            vec![]
        };
        pki::write(dir, name, leaf, &chain, KeyFormat::Pkcs8)
    }

    /// The files under the names the units' LoadCredential= lines give them.
    fn credentials(&self) -> Vec<(&'static str, &'static str, PathBuf)> {
        let mut all = vec![
            ("rolesanywhere-cert", "cert.pem", self.files.cert.clone()),
            ("rolesanywhere-key", "key.pem", self.files.key.clone()),
        ];
        if let Some(chain) = &self.files.chain {
            all.push(("rolesanywhere-chain", "chain.pem", chain.clone()));
        }
        all
    }

    /// `[aws.roles_anywhere]` as the example config and the README write it: every file
    /// from systemd's credentials directory (`%d/`).
    fn section(&self) -> String {
        format!(
            "[aws.roles_anywhere]\n\
             certificate = \"%d/rolesanywhere-cert\"\n\
             private_key = \"%d/rolesanywhere-key\"\n\
             {chain}\
             trust_anchor_arn = \"arn:aws:rolesanywhere:us-east-2:111122223333:trust-anchor/ta\"\n\
             profile_arn = \"arn:aws:rolesanywhere:us-east-2:111122223333:profile/profile\"\n\
             role_arn = \"arn:aws:iam::111122223333:role/lwa-agent\"\n\
             endpoint_url = \"{}\"\n",
            self.endpoint.url(),
            chain = if self.chained {
                "certificate_chain = \"%d/rolesanywhere-chain\"\n"
            } else {
                ""
            },
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

    /// The serial of the certificate the last verified request was signed with.
    fn last_serial(&self) -> Option<String> {
        self.endpoint
            .received()
            .iter()
            .rev()
            .find_map(|r| r.verified.as_ref().map(|v| v.serial.clone()))
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

/// How a renewal puts the new files in place.
#[derive(Debug, Clone, Copy)]
enum Renewal {
    /// Prepared elsewhere on the same file system, then renamed over the old ones.
    RenameOver,
    /// Copied over the old ones, in place (same inode).
    CopyInPlace,
    /// A renewal tool's way: each written beside its old one, then renamed over it.
    WriteThenRename,
}

impl PkiDir {
    /// Puts `files` in place `how`: the certificate first, then the key (unless
    /// `key` is false: a renewal that keeps the key, or one half done).
    fn renew(files: &pki::Files, how: Renewal, key: bool) {
        let staging = Path::new("/etc/lwa-agent/.staging");
        let mut pairs = vec![(&files.cert, "cert.pem")];
        if key {
            pairs.push((&files.key, "key.pem"));
        }
        for (source, name) in pairs {
            let dest = Path::new(Self::DIR).join(name);
            match how {
                Renewal::RenameOver => {
                    std::fs::create_dir_all(staging).expect("staging dir");
                    let tmp = staging.join(name);
                    std::fs::copy(source, &tmp).expect("stage");
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                        .expect("chmod");
                    std::fs::rename(&tmp, &dest).expect("rename over");
                }
                Renewal::CopyInPlace => {
                    std::fs::copy(source, &dest).expect("copy in place");
                }
                Renewal::WriteThenRename => {
                    let tmp = Path::new(Self::DIR).join(format!(".{name}.new"));
                    std::fs::copy(source, &tmp).expect("write beside");
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                        .expect("chmod");
                    std::fs::rename(&tmp, &dest).expect("rename into place");
                }
            }
        }
        let _ = std::fs::remove_dir(staging);
    }

    /// Installs renewed files the way an operator should: each written beside its old
    /// one and renamed over it, the certificate first, then the key.
    fn replace(files: &pki::Files) {
        for (source, name) in [(&files.cert, "cert.pem"), (&files.key, "key.pem")] {
            let dest = Path::new(Self::DIR).join(name);
            let tmp = Path::new(Self::DIR).join(format!(".{name}.new"));
            std::fs::copy(source, &tmp).expect("copy the renewed file");
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            std::fs::rename(&tmp, &dest).expect("rename into place");
        }
    }
}

impl Drop for PkiDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Self::DIR);
    }
}

mod booted;
mod chroot;
mod deb;
mod guide;
mod rpm;
mod units;
