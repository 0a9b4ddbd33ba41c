//! The .rpm: its contents and scriptlets, and its lifecycle in a scratch root.

use super::*;

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
            "/usr/lib/systemd/system/lwa-agent-doctor.service",
            "-rw-r--r--",
            "root",
        ),
        (
            "/usr/lib/systemd/system/lwa-agent-check.timer",
            "-rw-r--r--",
            "root",
        ),
        (
            "/usr/lib/systemd/system/lwa-agent-pki.path",
            "-rw-r--r--",
            "root",
        ),
        (
            "/usr/lib/systemd/system/lwa-agent-pki.service",
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
        ("/usr/share/lwa-agent/lwa-agent.yaml", "-rw-r--r--", "root"),
    ];
    let pages = man_pages();
    let guides = guides();
    let mut expected: Vec<(&str, &str, &str)> = expected.to_vec();
    expected.extend(pages.iter().map(|p| (p.as_str(), "-rw-r--r--", "root")));
    expected.extend(guides.iter().map(|p| (p.as_str(), "-rw-r--r--", "root")));
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
    // ExecReload= runs kill; TLS trusts the system's CA store.
    for needed in ["/usr/bin/kill", "ca-certificates"] {
        assert!(
            requires.lines().any(|l| l.trim() == needed),
            "{needed} missing from {requires}"
        );
    }
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
    // The scratch root's /usr is an overlay over this machine's: no .deb test may install
    // meanwhile, or its files would show through (and "erase removed it" would fail).
    let _host = super::host_lock();
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
    assert!(!r.path("/usr/share/lwa-agent").exists());
    let left: Vec<String> = std::fs::read_dir(r.path("/etc/lwa-agent"))
        .expect("the edited config stays as .rpmsave")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["lwa-agent.toml.rpmsave"]);
}

/// What rpm 4.14 (RHEL 8, SLES 15) provides of `rpmlib()`: a package that needs anything
/// else does not install there. From rpm's `lib/rpmds.c` at the tag rpm-4.14.0-release
/// (`rpmlibProvides`).
const RPM_4_14_RPMLIB: &[(&str, &str)] = &[
    ("VersionedDependencies", "3.0.3-1"),
    ("CompressedFileNames", "3.0.4-1"),
    ("PayloadIsBzip2", "3.0.5-1"),
    ("PayloadIsXz", "5.2-1"),
    ("PayloadIsLzma", "4.4.2-1"),
    ("PayloadFilesHavePrefix", "4.0-1"),
    ("ExplicitPackageProvide", "4.0-1"),
    ("HeaderLoadSortsTags", "4.0.1-1"),
    ("ScriptletInterpreterArgs", "4.0.3-1"),
    ("PartialHardlinkSets", "4.0.4-1"),
    ("ConcurrentAccess", "4.1-1"),
    ("BuiltinLuaScripts", "4.2.2-1"),
    ("FileDigests", "4.6.0-1"),
    ("FileCaps", "4.6.1-1"),
    ("ScriptletExpansion", "4.9.0-1"),
    ("TildeInVersions", "4.10.0-1"),
    ("LargeFiles", "4.12.0-1"),
    ("RichDependencies", "4.12.0-1"),
];

/// `3.0.4-1` as numbers, for comparing rpmlib versions.
fn rpm_version(v: &str) -> Vec<u64> {
    v.split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The .rpm installs with rpm 4.14: an xz payload (zstd only came to RHEL 8.2 and SLES 15
/// SP2), and only `rpmlib()` features 4.14 provides, at versions it provides.
#[test]
fn the_rpm_is_readable_by_rpm_4_14() {
    let p = packages();
    let q = |args: &[&str]| run(Command::new(tool("rpm")).args(args).arg(&p.rpm));
    assert_eq!(
        q(&["-qp", "--qf", "%{PAYLOADCOMPRESSOR} %{PAYLOADFORMAT}"]).trim(),
        "xz cpio"
    );
    let requires = q(&["-qp", "--requires"]);
    let rpmlib: Vec<&str> = requires
        .lines()
        .filter(|l| l.starts_with("rpmlib("))
        .collect();
    assert!(!rpmlib.is_empty(), "{requires}");
    for line in rpmlib {
        let (feature, needed) = line
            .strip_prefix("rpmlib(")
            .and_then(|rest| rest.split_once(')'))
            .map(|(f, rest)| (f, rest.trim().trim_start_matches("<=").trim()))
            .unwrap_or_else(|| panic!("cannot read {line}"));
        let provided = RPM_4_14_RPMLIB
            .iter()
            .find(|(f, _)| *f == feature)
            .unwrap_or_else(|| panic!("{line}: rpm 4.14 has no rpmlib({feature})"));
        assert!(
            rpm_version(needed) <= rpm_version(provided.1),
            "{line}: rpm 4.14 provides {}",
            provided.1
        );
    }
}

/// Every scriptlet is POSIX sh that calls only systemctl, systemd-sysusers and POSIX
/// utilities, so dnf and zypper run it alike; dash (a POSIX shell without extensions)
/// parses each.
#[test]
fn rpm_scriptlets_use_only_posix_sh_systemctl_and_systemd_sysusers() {
    let allowed = [
        "systemctl",
        "systemd-sysusers",
        "echo",
        "exit",
        "command",
        "rm",
        "rmdir",
        "[",
        "test",
        ":",
        "true",
    ];
    let dir = repo().join("packaging/rpm");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("packaging/rpm").flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).expect("scriptlet");
        run(Command::new(tool("dash")).arg("-n").arg(&path));
        for word in command_words(&text) {
            assert!(
                allowed.contains(&word.as_str()),
                "{}: `{word}` is not POSIX sh, systemctl or systemd-sysusers",
                path.display()
            );
        }
        for bashism in [
            "[[",
            "function ",
            "local ",
            "source ",
            "$'",
            "<<<",
            "==",
            "&>",
        ] {
            assert!(!text.contains(bashism), "{}: {bashism}", path.display());
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "pre, post, preun, postun");
}

/// The command words of a shell script: the first word of each simple command (after
/// `if`, `then`, `&&`, `|`, `;` and the like). Enough for the project's own scriptlets.
fn command_words(script: &str) -> BTreeSet<String> {
    let keywords = [
        "if", "then", "else", "elif", "fi", "do", "done", "for", "while", "!",
    ];
    let mut words = BTreeSet::new();
    // Continuation lines joined; redirections to a descriptor are not `&` lists.
    let joined = script
        .replace("\\\n", " ")
        .replace("2>&1", "")
        .replace(">&2", "");
    for line in joined.lines() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        for part in line.split(['|', ';', '&']) {
            let mut tokens = part.split_whitespace();
            let first = loop {
                match tokens.next() {
                    Some(t) if keywords.contains(&t) => continue,
                    other => break other,
                }
            };
            if let Some(w) = first {
                // A continuation line's arguments and quoted text are not commands.
                if !w.starts_with(['-', '\'', '"', '$', '/']) && !w.contains('=') {
                    words.insert(w.to_string());
                }
            }
        }
    }
    words
}
