//! Static means self-contained at run time: the packaged binary alone in a chroot.

use super::*;

// ---------------------------------------------------------------------------------------
// Tests: static means self-contained at run time
// ---------------------------------------------------------------------------------------

/// The packaged binary in an otherwise empty chroot: only /etc/hosts, /etc/resolv.conf,
/// /etc/group, the CA bundle, an /etc/nsswitch.conf that names sss and resolve, /dev/null, /dev/random,
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
    // TLS trusts the system's CA store, which the package depends on (ca-certificates);
    // without one the agent refuses to start and says so.
    std::fs::create_dir_all(root.join("etc/ssl/certs")).expect("mkdir");
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        root.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .expect("copy the CA bundle (apt-get install ca-certificates)");
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
    // Linux 4.18 (RHEL 8): every call the agent makes is older than it, or has a fallback
    // that takes ENOSYS (the booted suite runs the units with every newer call refused).
    let newer = std::fs::read_to_string(repo().join("tests/vectors/systemd/post-4.18.txt"))
        .expect("post-4.18.txt");
    let with_fallback = [
        // glibc's pthread_create: clone3, then clone on ENOSYS.
        "clone3",
    ];
    for call in newer.split_whitespace() {
        assert!(
            !used.contains(call) || with_fallback.contains(&call),
            "the agent calls {call}, which Linux 4.18 lacks, and no fallback is known for it"
        );
    }
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
