//! The .deb: lintian, install, upgrade keeping the admin's config, purge, unit verification.

use super::*;

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
        ("/lib/systemd/system/lwa-agent-doctor.service", 0o644),
        ("/lib/systemd/system/lwa-agent-check.timer", 0o644),
        ("/lib/systemd/system/lwa-agent-pki.path", 0o644),
        ("/lib/systemd/system/lwa-agent-pki.service", 0o644),
        ("/usr/lib/sysusers.d/lwa-agent.conf", 0o644),
        ("/usr/share/bash-completion/completions/lwa-agent", 0o644),
        ("/usr/share/zsh/vendor-completions/_lwa-agent", 0o644),
        ("/usr/share/fish/vendor_completions.d/lwa-agent.fish", 0o644),
        ("/usr/share/doc/lwa-agent/README.md", 0o644),
        ("/usr/share/doc/lwa-agent/lwa-agent.toml", 0o644),
        ("/usr/share/doc/lwa-agent/copyright", 0o644),
        ("/usr/share/doc/lwa-agent/changelog.gz", 0o644),
        ("/usr/share/lwa-agent/lwa-agent.yaml", 0o644),
    ] {
        assert_file(path, mode, 0, 0);
    }
    let pages = man_pages();
    assert!(pages.len() > 5, "{pages:?}");
    for page in pages.iter().chain(&guides()) {
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
    // TLS trusts the system's CA store: the package must pull it in.
    let depends = run(Command::new(tool("dpkg-query")).args([
        "--showformat=${Depends}",
        "--show",
        "lwa-agent",
    ]));
    assert!(depends.contains("ca-certificates"), "{depends}");

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
    // The certificate watcher too: a renewed certificate needs no person.
    let wants = Path::new("/etc/systemd/system/paths.target.wants/lwa-agent-pki.path");
    assert!(
        std::fs::read_link(wants).is_ok_and(|t| t.ends_with("lwa-agent-pki.path")),
        "the certificate watcher is not enabled"
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
        "lwa-agent-pki.path",
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
    for gone in [
        "/etc/lwa-agent",
        "/var/lib/lwa-agent",
        "/run/lwa-agent",
        "/usr/share/lwa-agent",
    ] {
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

/// The .deb installs with Debian 11's dpkg 1.20, which reads no zstd: every member is xz.
/// Its maintainer scripts are POSIX sh (dash parses them).
#[test]
fn the_deb_is_readable_by_dpkg_1_20() {
    let p = packages();
    let members = run(Command::new(tool("ar")).arg("t").arg(&p.deb));
    let members: Vec<&str> = members.lines().collect();
    assert_eq!(
        members,
        ["debian-binary", "control.tar.xz", "data.tar.xz"],
        "dpkg 1.20 reads gzip and xz, never zstd"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = repo().join("packaging/debian").join(script);
        run(Command::new(tool("dash")).arg("-n").arg(&path));
        let text = std::fs::read_to_string(&path).expect("script");
        assert!(text.starts_with("#!/bin/sh\n"), "{script}");
    }
}
