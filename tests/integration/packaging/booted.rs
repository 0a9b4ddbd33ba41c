//! The packaged units under a real systemd booted as PID 1 (docs/testing.md): the .deb installed
//! on this machine, systemd 252 booted in a private pid + mount namespace with its own
//! tmpfs /tmp and /run, driven with `nsenter … systemctl`. Socket activation, the sandbox
//! (seccomp, no capabilities, ProtectSystem=…), LoadCredential=, the watchdog, the timer
//! and journald are the real ones.
//!
//! The booted systemd shares this machine's file system (so the host's dpkg installs
//! into it) and network (so moto and the LWA endpoint on 127.0.0.1 are reachable), but
//! not its /run: the agent's socket is reached through `/proc/<pid>/root/run/…`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

/// A systemd booted as PID 1 of a new pid + mount namespace, killed when dropped.
pub(super) struct Booted {
    unshare: std::process::Child,
    /// systemd's pid as this machine sees it.
    pid: i32,
}

/// Private /tmp first: at boot systemd-tmpfiles empties /tmp, and this machine's /tmp
/// (the tests' own files, a running build) must survive. Private /run: the booted
/// systemd's sockets, units in /run/systemd/system and the journal stay its own; the
/// journal is volatile (in that /run), so this machine's /var/log/journal neither grows
/// nor answers for an earlier boot. Then / is made shared again, inside the namespace
/// only (the mounts are new peer groups after `--make-rprivate`): systemd expects shared
/// propagation, and without it LoadCredential='s credentials directory, mounted in a
/// child namespace, never reaches the service.
const BOOT: &str = "mount --make-rprivate / && mount -t tmpfs tmpfs /tmp && \
                    mount -t tmpfs tmpfs /run && mkdir -p /run/lock \
                    /run/systemd/journald.conf.d && \
                    printf '[Journal]\\nStorage=volatile\\n' \
                    > /run/systemd/journald.conf.d/volatile.conf && \
                    mount --make-rshared / && \
                    exec /lib/systemd/systemd --system --unit=multi-user.target";

/// The agent's log line when a reload (SIGHUP) starts.
const RELOADED: &str = "SIGHUP: re-reading the parameters from SSM";

impl Booted {
    pub(super) fn boot() -> Booted {
        let mut unshare = Command::new(tool("unshare"))
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "sh",
                "-c",
                BOOT,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare starts (util-linux: run tests/setup)");
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = loop {
            let child = find_child(unshare.id());
            if let Some(pid) = child {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    break pid;
                }
            }
            if Instant::now() >= deadline {
                // Nothing may outlive the test: a systemd that comes up late would stay.
                if let Some(pid) = child {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = unshare.kill();
                let _ = unshare.wait();
                panic!("systemd did not start under unshare within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let booted = Booted { unshare, pid };
        // Boot is over at "running", or "degraded" when some unrelated unit of this
        // machine failed. Until systemd listens, systemctl cannot connect: poll.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = booted.systemctl(&["is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the booted systemd is {state:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        booted.permit_service_starts();
        booted
    }

    /// This machine's image has a /usr/sbin/policy-rc.d that refuses every service start
    /// (a container convention), so the maintainer scripts' deb-systemd-invoke would do
    /// nothing. A real host has none: inside the booted systemd's mount namespace only,
    /// one that allows everything is mounted over it.
    fn permit_service_starts(&self) {
        if Path::new("/usr/sbin/policy-rc.d").exists() {
            self.sh(
                "printf '#!/bin/sh\\nexit 0\\n' > /run/policy-rc.d && chmod 755 /run/policy-rc.d \
                 && mount --bind /run/policy-rc.d /usr/sbin/policy-rc.d",
            );
        }
    }

    /// A command inside every namespace of the booted systemd.
    pub(super) fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(tool("nsenter"));
        cmd.args(["-t", &self.pid.to_string(), "-a", program]);
        cmd
    }

    fn sh(&self, script: &str) -> String {
        run(self.command("sh").args(["-c", script]))
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        output(self.command("systemctl").args(args))
    }

    fn systemctl_ok(&self, args: &[&str]) -> String {
        run(self.command("systemctl").args(args))
    }

    /// One property of a unit (`systemctl show -P`).
    fn show(&self, unit: &str, property: &str) -> String {
        self.systemctl_ok(&["show", "-P", property, unit])
            .trim()
            .to_string()
    }

    fn main_pid(&self) -> u32 {
        self.show("lwa-agent.service", "MainPID")
            .parse()
            .expect("MainPID is a number")
    }

    /// /proc/<pid>/status of a process of the booted systemd (`pid` as it sees it).
    fn proc_status(&self, pid: u32) -> String {
        let path = format!("/proc/{}/root/proc/{pid}/status", self.pid);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Waits up to `secs` for `done`, naming `what` on failure.
    fn wait(&self, what: &str, secs: u64, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.journal(&["-u", "lwa-agent*", "-u", "init.scope", "-n", "60"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The check service as the sandboxed user, with the service's credentials: it
    /// succeeds and logs its rotation check.
    fn check_service_succeeds(&self) {
        let started = self.systemctl(&["start", "lwa-agent-check.service"]);
        let journal = || self.journal(&["-u", "lwa-agent-check.service"]);
        assert!(started.status.success(), "{started:?}\n{}", journal());
        assert_eq!(
            self.show("lwa-agent-check.service", "Result"),
            "success",
            "{}",
            journal()
        );
        // journald may write the line a moment after the unit ends.
        self.wait("the check's line in the journal", 10, || {
            journal().contains("rotation check at")
        });
    }

    /// `lwa-agent doctor --as-service`: the checks inside lwa-agent-doctor.service, as the
    /// service's user with its credentials. Returns what it printed, having passed.
    fn doctor_as_service(&self) -> String {
        let out = output(
            self.command("/usr/bin/lwa-agent")
                .args(["doctor", "--as-service"]),
        );
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && said.contains("all checks passed"),
            "{:?}: {said}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.journal(&["-n", "60"])
        );
        said
    }

    /// Every unit that runs the binary has no core file limit, as systemd applied it.
    fn assert_no_core_dumps(&self) {
        for unit in [
            "lwa-agent.service",
            "lwa-agent-check.service",
            "lwa-agent-doctor.service",
            "lwa-agent-pki.service",
        ] {
            assert_eq!(self.show(unit, "LimitCORE"), "0", "{unit}: LimitCORE=0");
        }
    }

    /// systemctl reload: ExecReload= signals the agent, which re-reads and stays up (the
    /// same main PID) and serves a token afterwards.
    async fn reload_keeps_serving(&self) {
        let pid = self.main_pid();
        let reloads = || {
            self.journal(&["-u", "lwa-agent.service"])
                .matches(RELOADED)
                .count()
        };
        let before = reloads();
        self.systemctl_ok(&["reload", "lwa-agent.service"]);
        self.wait("the reload in the journal", 20, || reloads() > before);
        let journal = self.journal(&["-u", "lwa-agent.service"]);
        assert!(!journal.contains("reload on SIGHUP failed"), "{journal}");
        assert_eq!(self.main_pid(), pid, "a reload is not a restart");
        assert_eq!(token(&self.socket()).await, Ok(200));
    }

    /// Waits until lwa-agent.service is active again under a main PID other than `old`.
    fn wait_restarted(&self, what: &str, old: u32) {
        self.wait(what, 30, || {
            let now = self.main_pid();
            now != 0 && now != old && self.show("lwa-agent.service", "ActiveState") == "active"
        });
    }

    /// The watchdog: a stopped (wedged) agent is killed and restarted. WatchdogSec= is
    /// shortened by a drop-in only so the test does not wait 30 s.
    fn wait_watchdog_restart(&self) {
        self.drop_in(
            "lwa-agent.service",
            "watchdog",
            "[Service]\nWatchdogSec=3s\n",
        );
        self.systemctl_ok(&["restart", "lwa-agent.service"]);
        let pid = self.main_pid();
        let restarts = || -> u32 {
            self.show("lwa-agent.service", "NRestarts")
                .parse()
                .unwrap_or(0)
        };
        let before = restarts();
        self.sh(&format!("kill -STOP {pid}"));
        self.wait("the watchdog restart", 40, || {
            restarts() > before && self.show("lwa-agent.service", "ActiveState") == "active"
        });
    }

    pub(super) fn journal(&self, args: &[&str]) -> String {
        let mut cmd = self.command("journalctl");
        // This boot's journal only (see BOOT).
        cmd.args([
            "--no-pager",
            "-D",
            "/run/log/journal",
            "-o",
            "short-precise",
        ])
        .args(args);
        String::from_utf8_lossy(&output(&mut cmd).stdout).into_owned()
    }

    /// The agent's socket as lwa-agent.socket created it in the booted systemd's /run.
    fn socket(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/run/lwa-agent/lwa-agent.sock",
            self.pid
        ))
    }

    /// A drop-in in the booted systemd's /run (gone with it), then daemon-reload.
    pub(super) fn drop_in(&self, unit: &str, name: &str, text: &str) {
        let dir = PathBuf::from(format!(
            "/proc/{}/root/run/systemd/system/{unit}.d",
            self.pid
        ));
        std::fs::create_dir_all(&dir).expect("drop-in dir");
        std::fs::write(dir.join(format!("{name}.conf")), text).expect("drop-in");
        self.systemctl_ok(&["daemon-reload"]);
    }

    /// `dpkg --install` of `deb` inside the booted systemd's mount namespace. The package
    /// is copied into that namespace's /run first: this machine's /tmp (where a checkout
    /// and its target directory may live) is not visible there.
    fn install_deb(&self, deb: &Path) {
        let inside = "/run/lwa-agent-test.deb";
        std::fs::copy(deb, format!("/proc/{}/root{inside}", self.pid))
            .unwrap_or_else(|e| panic!("copy {} into the namespace: {e}", deb.display()));
        self.dpkg(&["--install", inside]);
    }

    /// dpkg inside the booted systemd's mount namespace, so the maintainer scripts see
    /// it running (/run/systemd/system) and talk to it.
    fn dpkg(&self, args: &[&str]) -> String {
        run(self
            .command("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    }

    /// Journal lines of the agent's units that show the sandbox refusing something.
    fn sandbox_refusals(&self) -> Vec<String> {
        self.journal(&[
            "-u",
            "lwa-agent.service",
            "-u",
            "lwa-agent-check.service",
            "-u",
            "lwa-agent-doctor.service",
            "-u",
            "lwa-agent-pki.service",
        ])
        .lines()
        .filter(|l| {
            l.contains("SIGSYS")
                || l.contains("Function not implemented")
                || l.contains("Operation not permitted")
                || l.contains("Permission denied")
                || l.contains("status=31/SYS")
        })
        .map(String::from)
        .collect()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // PID 1 of the namespace: killing it kills everything it started.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.unshare.wait();
    }
}

/// One token request on a new connection; `Err` says what went wrong.
async fn token(socket: &Path) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /v1/token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer in 30 s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    parse(&text)
        .map(|r| r.status)
        .ok_or_else(|| format!("unparsable answer {text:?}"))
}

/// Clients asking for tokens in a loop until stopped; counts what failed.
struct ClientLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ClientLoop {
    fn start(socket: PathBuf, clients: usize) -> ClientLoop {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failures, socket) =
                    (stop.clone(), ok.clone(), failures.clone(), socket.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match token(&socket).await {
                            Ok(200) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(code) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("status {code}")),
                            Err(e) => failures.lock().expect("lock").push(e),
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        ClientLoop {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    /// Stops the clients; panics unless every request got a token.
    async fn finish(self, what: &str) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("client task");
        }
        let failures = self.failures.lock().expect("lock").clone();
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(
            failures.is_empty(),
            "{} of {} token requests failed across {what}: {:?}",
            failures.len(),
            failures.len() as u64 + ok,
            &failures[..failures.len().min(10)]
        );
        assert!(ok > 0, "no token request succeeded across {what}");
        ok
    }
}

/// The config the sysadmin writes, for this test world: the journal as the log (no
/// `format`, so JOURNAL_STREAM chooses it) and `extra` (e.g. Roles Anywhere).
fn installed_config(w: &World, extra: &str) -> String {
    w.config("", extra).replace("format = \"text\"\n", "")
}

/// Static AWS keys the way a site without Roles Anywhere gives them to the service: a
/// root-only /etc/lwa-agent/aws-credentials that the units hand over (LoadCredential=, or
/// `load-credentials` before systemd 247) and the config names. Removed when dropped.
struct StaticKeys;

impl StaticKeys {
    const FILE: &'static str = "/etc/lwa-agent/aws-credentials";

    fn install() -> StaticKeys {
        std::fs::write(
            Self::FILE,
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
        )
        .expect("write the credentials file");
        std::fs::set_permissions(Self::FILE, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        StaticKeys
    }

    /// `installed_config` whose AWS credentials are the file's.
    fn config(w: &World, extra: &str) -> String {
        let region = format!("region = \"{REGION}\"\n");
        installed_config(w, extra).replacen(
            &region,
            &format!("{region}credentials_file = \"%d/aws-credentials\"\n"),
            1,
        )
    }
}

impl Drop for StaticKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Self::FILE);
    }
}

/// The whole life of the package with Roles Anywhere, under a real systemd: the socket
/// enabled by the package is listening at boot; the first request starts the service
/// (Type=notify: READY=1 and STATUS=); the certificate, key and chain come from the
/// root-only /etc/lwa-agent/pki through LoadCredential=; reload; the journal's fields;
/// the watchdog restarts a stopped agent; a renewed certificate restarts it through
/// lwa-agent-pki.path and an upgrade restarts it with zero failed requests; remove and
/// purge with systemd running. Nothing in the sandbox is refused along the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packaged_units_under_a_real_systemd() {
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let p = packages();
    let upgrade = upgrade_packages();
    let _installed = Installed::new(&p.deb);
    let w = World::new().await;
    let ra = RolesAnywhereHost::new(w.dir.path()).await;
    let _pki = PkiDir::install(&ra);
    // Reminders to a topic and the automatic rotation's listener on, so their SNS, SSM and
    // SQS calls (long polls) run inside the sandbox too. The secret is young: nothing is
    // rotated.
    let (topic, _) = w.topic_with_queue("lwa-rotation").await;
    let queue = w.create_queue("lwa-new-secret").await;
    let rotation = format!(
        "{}\n[rotation]\ntopic_arn = \"{topic}\"\nfleet_lock_prefix = \"/erp/lwa-agent/locks\"\n\n\
         [rotation.auto]\nenabled = true\nnew_secret_queue_url = \"{queue}\"\n\
         rotate_after = \"150d\"\nsp_api_endpoint = \"http://127.0.0.1:9\"\n",
        ra.section()
    );
    std::fs::write(
        "/etc/lwa-agent/lwa-agent.toml",
        installed_config(&w, &rotation),
    )
    .expect("write config");

    step("boot");
    let sd = Booted::boot();
    // Boot: the package enabled the socket, so it listens; nothing started the agent yet.
    assert_eq!(sd.show("lwa-agent.socket", "ActiveState"), "active");
    assert_eq!(sd.show("lwa-agent.service", "ActiveState"), "inactive");
    assert_eq!(sd.show("lwa-agent-pki.path", "ActiveState"), "active");

    step("first request");
    // The first request starts the service and gets a token once it is READY.
    let first = token(&sd.socket()).await;
    assert_eq!(first, Ok(200), "{}", sd.journal(&["-n", "80"]));
    assert_eq!(sd.show("lwa-agent.service", "ActiveState"), "active");
    assert_eq!(w.lwa.issued(), 1);
    let status_text = sd.show("lwa-agent.service", "StatusText");
    assert!(
        status_text.contains("tokens ready"),
        "STATUS=: {status_text:?}"
    );
    // Roles Anywhere with the files LoadCredential= passed from the root-only directory.
    ra.assert_used();
    let status = request(&sd.socket(), "GET", "/v1/status", &[]).await.json();
    assert_eq!(
        status["aws"]["credential_source"], "IAM Roles Anywhere",
        "{status}"
    );

    let pid = sd.main_pid();
    let proc_status = sd.proc_status(pid);
    assert!(
        proc_status.contains("\nCapEff:\t0000000000000000"),
        "{proc_status}"
    );
    assert!(
        proc_status.contains("\nSeccomp:\t2"),
        "seccomp filter on: {proc_status}"
    );
    assert!(proc_status.contains("\nNoNewPrivs:\t1"), "{proc_status}");

    step("reload");
    sd.reload_keeps_serving().await;

    step("journal fields");
    // Journal fields under plain names (docs/systemd.md): what the README tells sysadmins to type.
    let by_field = sd.journal(&["-u", "lwa-agent.service", "CREDENTIAL=default"]);
    assert!(
        by_field.contains("lwa-agent"),
        "journalctl -u lwa-agent CREDENTIAL=default found nothing:\n{}",
        sd.journal(&["-u", "lwa-agent.service", "-o", "verbose", "-n", "5"])
    );
    let json = sd.journal(&["-u", "lwa-agent.service", "-o", "json"]);
    assert!(!json.contains("\"F_"), "no prefixed fields: {json}");

    step("check service");
    sd.check_service_succeeds();

    // The rotation listener long-polls the queue (20 s waits) from inside the sandbox.
    let mut polled = false;
    for _ in 0..300 {
        let status = request(&sd.socket(), "GET", "/v1/status", &[]).await.json();
        if status["rotation"]["auto"]["queues"][&queue]["last_receive"].is_string() {
            polled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(polled, "the rotation listener never received from {queue}");

    step("renewal");
    // A renewed certificate: the path unit restarts the agent; clients queue meanwhile.
    let clients = ClientLoop::start(sd.socket(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let renewed = RolesAnywhereHost::renew(&ra, w.dir.path());
    PkiDir::replace(&renewed);
    sd.wait_restarted("the agent restarted for the new certificate", pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    clients.finish("a certificate renewal").await;
    let pid = sd.main_pid();

    step("upgrade");
    // An upgrade while clients ask for tokens: the socket stays open, the new binary
    // serves, and no request fails.
    let clients = ClientLoop::start(sd.socket(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sd.install_deb(&upgrade.deb);
    sd.wait_restarted("the agent restarted by the upgrade", pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    clients.finish("the package upgrade").await;

    step("watchdog");
    sd.wait_watchdog_restart();
    assert!(
        sd.journal(&["-u", "lwa-agent.service"])
            .contains("Watchdog timeout"),
        "the restart came from the watchdog"
    );
    assert_eq!(token(&sd.socket()).await, Ok(200));

    step("remove");
    // Remove with systemd running: everything stops and stays masked; purge removes the
    // state and every unit state.
    sd.dpkg(&["--remove", "lwa-agent"]);
    for unit in [
        "lwa-agent.socket",
        "lwa-agent.service",
        "lwa-agent-pki.path",
    ] {
        assert_eq!(
            sd.show(unit, "ActiveState"),
            "inactive",
            "{unit} after remove"
        );
    }
    assert!(!sd.socket().exists(), "the socket file is gone");
    sd.dpkg(&["--purge", "lwa-agent"]);
    assert!(
        !Path::new("/var/lib/lwa-agent").exists(),
        "purge removes the state"
    );
    let enabled = sd.systemctl(&["is-enabled", "lwa-agent.socket"]);
    assert!(!enabled.status.success(), "no unit state survives purge");
    // Nothing the agent or the check did, from start to stop, was refused by the sandbox.
    let refused = sd.sandbox_refusals();
    assert!(refused.is_empty(), "the sandbox refused: {refused:#?}");
    w.canaries.assert_absent(
        "the journal",
        &sd.journal(&["-u", "lwa-agent.service", "-u", "lwa-agent-check.service"]),
    );
}

/// Without Roles Anywhere files the SetCredential= fallbacks let the units start; a
/// `sudo lwa-agent check` leaves the state usable by the sandboxed check service (and
/// gives back files an older version left as root's); the timer is listed; an invalid
/// config stops the agent with exit 2 and no restart loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_commands_fallback_credentials_timer_and_invalid_config_under_a_real_systemd() {
    let p = packages();
    let _installed = Installed::new(&p.deb);
    let w = World::new().await;
    let _ = std::fs::remove_dir_all(PkiDir::DIR);
    let _keys = StaticKeys::install();
    std::fs::write("/etc/lwa-agent/lwa-agent.toml", StaticKeys::config(&w, ""))
        .expect("write config");
    let sd = Booted::boot();

    // No certificate, key or chain: LoadCredential= falls back, the agent starts.
    assert_eq!(token(&sd.socket()).await, Ok(200));

    // Memory that holds secrets stays in the process: no core file limit, and the agent
    // is not dumpable, so another process of its own user can read neither its memory
    // nor its environment (/proc/<pid>/mem and environ belong to root).
    let pid = sd.main_pid();
    let limits = std::fs::read_to_string(format!("/proc/{}/root/proc/{pid}/limits", sd.pid))
        .expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("the core limit");
    assert!(
        core.split_whitespace().skip(4).take(2).all(|v| v == "0"),
        "LimitCORE=0: {core}"
    );
    for file in ["environ", "mem"] {
        let out = output(sd.command("setpriv").args([
            "--reuid=lwa-agent",
            "--regid=lwa-agent",
            "--clear-groups",
            "--",
            "cat",
            &format!("/proc/{pid}/{file}"),
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Permission denied"),
            "the lwa-agent user opened /proc/{pid}/{file}: {err}"
        );
    }
    // Owned by root: the kernel's mark of a non-dumpable process (a dumpable one's files
    // belong to its own user, whatever ptrace_scope says).
    let environ =
        std::fs::metadata(format!("/proc/{}/root/proc/{pid}/environ", sd.pid)).expect("environ");
    assert_eq!(environ.uid(), 0, "/proc/{pid}/environ belongs to root");
    // A crash leaves a journal line, not the secrets on disk: the kernel dumps no core
    // (systemd says code=killed, where a core would make it code=dumped, and a
    // systemd-coredump host would list it in coredumpctl).
    // Rust's runtime catches the first SIGSEGV (its stack-overflow handler), finds no
    // overflow and puts the default action back: the second one kills.
    sd.sh(&format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do kill -SEGV {pid} 2>/dev/null || exit 0; sleep 0.2; done"
    ));
    sd.wait_restarted("the agent's restart after SIGSEGV", pid);
    let said = sd.journal(&["-u", "lwa-agent.service"]);
    assert!(
        said.contains("code=killed, status=11/SEGV") && !said.contains("code=dumped"),
        "{said}"
    );
    for dir in ["/", "/var/lib/lwa-agent", "/etc/lwa-agent"] {
        let cores: Vec<_> = std::fs::read_dir(format!("/proc/{}/root{dir}", sd.pid))
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("core"))
            .map(|e| e.path())
            .collect();
        assert!(cores.is_empty(), "core files: {cores:?}");
    }
    assert_eq!(token(&sd.socket()).await, Ok(200));

    // An older version's root run left root-owned, root-only state behind…
    let state = Path::new("/var/lib/lwa-agent");
    sd.systemctl_ok(&["start", "lwa-agent-check.service"]);
    let (uid, gid, _, _) = passwd_entry("lwa-agent").expect("the package made the user");
    assert!(
        state.join("rotation.lock").exists(),
        "the check service took its lock"
    );
    std::fs::write(state.join("rotation-state.json"), "{}").expect("state file");
    for f in ["rotation.lock", "rotation-state.json"] {
        let path = state.join(f);
        std::os::unix::fs::chown(&path, Some(0), Some(0)).expect("chown");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // …which the sandboxed service cannot use, and says exactly how to repair.
    let failed = sd.systemctl(&["start", "lwa-agent-check.service"]);
    assert!(
        !failed.status.success(),
        "a root-only state must not pass silently"
    );
    let said = sd.journal(&["-u", "lwa-agent-check.service"]);
    assert!(
        said.contains(&format!("sudo chown -R {uid}:{gid} /var/lib/lwa-agent")),
        "{said}"
    );
    // The sysadmin runs the check as root, as the README shows: it gives the files back
    // and creates nothing as root.
    let mut check = agent_command();
    check
        .arg("--config")
        .arg("/etc/lwa-agent/lwa-agent.toml")
        .arg("check")
        .env("STATE_DIRECTORY", state);
    let out = run(&mut check);
    assert!(out.contains("rotation check at"), "{out}");
    for entry in std::fs::read_dir(state).expect("state dir").flatten() {
        let meta = entry.metadata().expect("meta");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "{} belongs to the service user",
            entry.path().display()
        );
    }
    sd.systemctl_ok(&["start", "lwa-agent-check.service"]);
    assert_eq!(sd.show("lwa-agent-check.service", "Result"), "success");

    // The timer, for sites that prefer it to the in-process cron.
    sd.systemctl_ok(&["enable", "--now", "lwa-agent-check.timer"]);
    let timers = sd.systemctl_ok(&["list-timers", "--all", "--no-pager"]);
    assert!(timers.contains("lwa-agent-check.timer"), "{timers}");

    // An invalid config: exit 2, and RestartPreventExitStatus=2 stops the loop.
    std::fs::write(
        "/etc/lwa-agent/lwa-agent.toml",
        StaticKeys::config(&w, "[nonsense]\nkey = 1\n"),
    )
    .expect("write config");
    let _ = sd.systemctl(&["restart", "lwa-agent.service"]);
    sd.wait("the agent to fail on the config", 20, || {
        sd.show("lwa-agent.service", "ActiveState") == "failed"
    });
    assert_eq!(sd.show("lwa-agent.service", "ExecMainStatus"), "2");
    // Longer than RestartSec=5s: a restart would have happened by now.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(sd.show("lwa-agent.service", "ActiveState"), "failed");
    assert_eq!(sd.show("lwa-agent.service", "NRestarts"), "0");
    let said = sd.journal(&["-u", "lwa-agent.service"]);
    assert!(
        said.contains("nonsense"),
        "the journal names the bad key:\n{said}"
    );

    let refused = sd.sandbox_refusals();
    let unexpected: Vec<&String> = refused
        .iter()
        // The root-only state above was refused on purpose.
        .filter(|l| !l.contains("/var/lib/lwa-agent"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the sandbox refused: {unexpected:#?}"
    );
    w.canaries.assert_absent(
        "the journal",
        &sd.journal(&["-u", "lwa-agent.service", "-u", "lwa-agent-check.service"]),
    );
}

// ---------------------------------------------------------------------------------------
// Every supported systemd: the units as 239, 247 and 249 read them
// ---------------------------------------------------------------------------------------

/// The installed units as systemd `version` reads them (`unit_as`), before boot.
fn read_units_as(version: u32) {
    for name in unit_files() {
        let path = Path::new("/lib/systemd/system").join(&name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::fs::write(&path, unit_as(&text, version)).expect("rewrite the installed unit");
    }
}

/// A drop-in that answers every system call added after Linux 4.18 with ENOSYS (the unit's
/// `SystemCallErrorNumber=`), as a 4.18 kernel does.
fn kernel_4_18() -> String {
    let path = repo().join("tests/vectors/systemd/post-4.18.txt");
    let names = std::fs::read_to_string(&path).expect("post-4.18.txt");
    let names: Vec<&str> = names.split_whitespace().collect();
    assert!(names.contains(&"clone3") && names.contains(&"close_range"));
    format!("[Service]\nSystemCallFilter=~{}\n", names.join(" "))
}

/// The package's life under a systemd that reads the units as `version` does: the token
/// over socket activation with the Roles Anywhere files handed over (by LoadCredential=,
/// or before 247 by `load-credentials`), reload, the check service, a certificate renewal
/// through the path unit with no failed request, the watchdog, stop (no copy of the key
/// left), and purge. With `old_kernel`, every call newer than Linux 4.18 answers ENOSYS.
async fn the_package_as_an_older_systemd_runs_it(version: u32, old_kernel: bool) {
    let t0 = Instant::now();
    let step = |what: &str| {
        eprintln!(
            "[systemd {version}] [{:6.1}s] {what}",
            t0.elapsed().as_secs_f64()
        )
    };
    let p = packages();
    let _installed = Installed::new(&p.deb);
    read_units_as(version);
    let w = World::new().await;
    // The oldest runs without chain.pem (a CA that issues leaf certificates directly), the
    // others with one: the path unit must see a renewal either way.
    let chained = version != OLDEST_SYSTEMD;
    let ra = if chained {
        RolesAnywhereHost::new(w.dir.path()).await
    } else {
        RolesAnywhereHost::without_chain(w.dir.path()).await
    };
    let pki = PkiDir::install(&ra);
    std::fs::write(
        "/etc/lwa-agent/lwa-agent.toml",
        installed_config(&w, &ra.section()),
    )
    .expect("write config");
    let sd = Booted::boot();
    sd.assert_no_core_dumps();
    if old_kernel {
        for unit in [
            "lwa-agent.service",
            "lwa-agent-check.service",
            "lwa-agent-doctor.service",
        ] {
            sd.drop_in(unit, "kernel-4-18", &kernel_4_18());
        }
    }

    step("token over socket activation, Roles Anywhere");
    assert_eq!(
        token(&sd.socket()).await,
        Ok(200),
        "{}",
        sd.journal(&["-n", "80"])
    );
    ra.assert_used();
    let status = request(&sd.socket(), "GET", "/v1/status", &[]).await.json();
    assert_eq!(
        status["aws"]["credential_source"], "IAM Roles Anywhere",
        "{status}"
    );
    let copies = PathBuf::from(format!("/proc/{}/root/run/lwa-agent-credentials", sd.pid));
    let (uid, _, _, _) = passwd_entry("lwa-agent").expect("the package made the user");
    if version < 247 {
        // The hand-off: 0400 copies for the service user alone, in a 0700 directory.
        let dir = std::fs::metadata(&copies).expect("the runtime directory");
        assert_eq!((dir.uid(), dir.mode() & 0o777), (uid, 0o700));
        for id in ["rolesanywhere-cert", "rolesanywhere-key"] {
            let meta = std::fs::metadata(copies.join(id)).expect("a copy");
            assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o400), "{id}");
        }
        assert_eq!(copies.join("rolesanywhere-chain").exists(), chained);
    }
    // From 247 LoadCredential= hands the files over. Whether `load-credentials` also copies
    // them is not asserted: the real 247-251 give credentials to the first ExecStart= only
    // (see lwa-agent-pki.service), so there it copies (a second copy, as private, removed
    // the same way), while this simulation runs on 252, which gives them to ExecStartPre=.
    // The key stays root-only on disk.
    let key = std::fs::metadata(Path::new(PkiDir::DIR).join("key.pem")).expect("key");
    assert_eq!((key.uid(), key.mode() & 0o777), (0, 0o600));

    step("reload");
    sd.reload_keeps_serving().await;

    step("check service");
    sd.check_service_succeeds();

    step("doctor as the service");
    let said = sd.doctor_as_service();
    assert!(said.contains("Roles Anywhere CreateSession"), "{said}");
    w.canaries.assert_absent("doctor as the service", &said);

    step("certificate renewal");
    let half = ra.renew_named(w.dir.path(), "half");
    half_done_renewal_restarts_nothing(&sd, &half).await;
    restarts_once(&sd, &ra, "the key after the certificate", || {
        PkiDir::renew(&half, Renewal::RenameOver, true)
    })
    .await;
    let renewed = ra.renew(w.dir.path());
    restarts_once(&sd, &ra, "a renewal tool's write-then-rename", || {
        PkiDir::renew(&renewed, Renewal::WriteThenRename, true)
    })
    .await;

    step("watchdog");
    sd.wait_watchdog_restart();
    assert_eq!(token(&sd.socket()).await, Ok(200));

    step("stop");
    sd.systemctl_ok(&["stop", "lwa-agent.service"]);
    assert!(!copies.exists(), "a copy of the key outlived the service");

    if version == OLDEST_SYSTEMD {
        step("no Roles Anywhere files at all");
        drop(pki);
        let _keys = StaticKeys::install();
        std::fs::write("/etc/lwa-agent/lwa-agent.toml", StaticKeys::config(&w, ""))
            .expect("write config");
        assert_eq!(
            token(&sd.socket()).await,
            Ok(200),
            "{}",
            sd.journal(&["-n", "60"])
        );
        let status = request(&sd.socket(), "GET", "/v1/status", &[]).await.json();
        assert_eq!(
            status["aws"]["credential_source"], "credentials file",
            "{status}"
        );
        // The check service takes the same keys by the same hand-off.
        sd.check_service_succeeds();
    }

    step("purge");
    sd.dpkg(&["--purge", "lwa-agent"]);
    assert_eq!(sd.show("lwa-agent.socket", "ActiveState"), "inactive");
    assert!(!Path::new("/var/lib/lwa-agent").exists());
    let refused = sd.sandbox_refusals();
    assert!(refused.is_empty(), "the sandbox refused: {refused:#?}");
    w.canaries.assert_absent(
        "the journal",
        &sd.journal(&["-u", "lwa-agent.service", "-u", "lwa-agent-check.service"]),
    );
    step("done");
}

/// RHEL 8: systemd 239 on a 4.18 kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_as_systemd_239_on_a_4_18_kernel_runs_it() {
    the_package_as_an_older_systemd_runs_it(239, true).await;
}

/// Debian 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_as_systemd_247_runs_it() {
    the_package_as_an_older_systemd_runs_it(247, false).await;
}

/// SLES 15 SP4/SP5, Ubuntu 22.04.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_as_systemd_249_runs_it() {
    the_package_as_an_older_systemd_runs_it(249, false).await;
}

/// A renewed certificate restarts the agent exactly once however it is written, with a
/// chain and without one (the watch on a missing chain.pem used to lose the renewal), and
/// a half-done renewal (the certificate, not yet its key) restarts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewal_restarts_the_agent_once_however_it_is_written() {
    let p = packages();
    let _installed = Installed::new(&p.deb);
    let w = World::new().await;
    for chained in [true, false] {
        let ra = if chained {
            RolesAnywhereHost::new(w.dir.path()).await
        } else {
            RolesAnywhereHost::without_chain(w.dir.path()).await
        };
        let _pki = PkiDir::install(&ra);
        assert_eq!(Path::new(PkiDir::DIR).join("chain.pem").exists(), chained);
        std::fs::write(
            "/etc/lwa-agent/lwa-agent.toml",
            installed_config(&w, &ra.section()),
        )
        .expect("write config");
        let sd = Booted::boot();
        assert_eq!(
            token(&sd.socket()).await,
            Ok(200),
            "{}",
            sd.journal(&["-n", "60"])
        );
        // The certificate alone first: it is reissued for the key installed at the start.
        let cases = [
            (
                "rename-over of the certificate alone (same key)",
                Renewal::RenameOver,
                false,
                true,
            ),
            (
                "rename-over of both files",
                Renewal::RenameOver,
                true,
                false,
            ),
            ("a copy in place", Renewal::CopyInPlace, true, false),
            (
                "a renewal tool's write-then-rename",
                Renewal::WriteThenRename,
                true,
                false,
            ),
        ];
        for (i, (what, how, key, same_key)) in cases.into_iter().enumerate() {
            let what = format!(
                "{what}, {}",
                if chained {
                    "with chain.pem"
                } else {
                    "no chain.pem"
                }
            );
            let files = if same_key {
                ra.reissue(w.dir.path(), &format!("case{i}"))
            } else {
                ra.renew_named(w.dir.path(), &format!("case{i}"))
            };
            restarts_once(&sd, &ra, &what, || PkiDir::renew(&files, how, key)).await;
        }
        let files = ra.renew_named(w.dir.path(), "half");
        half_done_renewal_restarts_nothing(&sd, &files).await;
        // The key follows: now it restarts, once.
        restarts_once(&sd, &ra, "the key after the certificate", || {
            PkiDir::renew(&files, Renewal::RenameOver, true)
        })
        .await;
        sd.systemctl_ok(&["stop", "lwa-agent.service", "lwa-agent.socket"]);
    }
}

/// Half done: the new certificate, its key not yet. The check fails; nothing restarts and
/// no request fails.
async fn half_done_renewal_restarts_nothing(sd: &Booted, files: &pki::Files) {
    let pid = sd.main_pid();
    let clients = ClientLoop::start(sd.socket(), 2);
    PkiDir::renew(files, Renewal::RenameOver, false);
    sd.wait("the check of the half-done renewal", 20, || {
        sd.show("lwa-agent-pki.service", "Result") == "exit-code"
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sd.main_pid(),
        pid,
        "a half-done renewal restarted the agent"
    );
    clients.finish("a half-done renewal").await;
}

/// Runs `renew` while clients ask for tokens; the agent restarts exactly once, no request
/// fails, and the restarted agent signs with the new certificate.
async fn restarts_once(sd: &Booted, ra: &RolesAnywhereHost, what: &str, renew: impl FnOnce()) {
    let before = sd.main_pid();
    let serial_before = ra.last_serial();
    let clients = ClientLoop::start(sd.socket(), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    renew();
    sd.wait(&format!("the restart for {what}"), 30, || {
        let now = sd.main_pid();
        now != 0 && now != before && sd.show("lwa-agent.service", "ActiveState") == "active"
    });
    let after = sd.main_pid();
    // Longer than the path unit's settle and check: a second restart would show by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sd.main_pid(), after, "{what}: the agent restarted twice");
    clients.finish(what).await;
    assert_eq!(token(&sd.socket()).await, Ok(200));
    assert_ne!(
        ra.last_serial(),
        serial_before,
        "{what}: the old certificate still signs"
    );
}

/// An AWS-hosted ERP: the service takes the EC2 instance role from instance metadata
/// (IMDSv2; here the project's stand-in on 127.0.0.1, which a drop-in names), with no
/// Roles Anywhere and no keys; and `lwa-agent doctor --as-service` proves it from inside
/// the service's sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_takes_an_ec2_instance_role_and_doctor_as_the_service_proves_it() {
    let p = packages();
    let _installed = Installed::new(&p.deb);
    let w = World::new().await;
    let imds = lwa_agent_testservers::aws_identity::AwsIdentity::start(
        lwa_agent_testservers::aws_identity::Settings {
            sso_token: String::new(),
            sso_account_id: String::new(),
            sso_role_name: String::new(),
        },
    )
    .await
    .expect("instance metadata");
    let _ = std::fs::remove_dir_all(PkiDir::DIR);
    std::fs::write("/etc/lwa-agent/lwa-agent.toml", installed_config(&w, ""))
        .expect("write config");
    let sd = Booted::boot();
    // On EC2 the SDK finds 169.254.169.254 by itself; only the test names another address.
    let here = format!(
        "[Service]\nEnvironment=AWS_EC2_METADATA_SERVICE_ENDPOINT={}/\n",
        imds.url()
    );
    for unit in ["lwa-agent.service", "lwa-agent-doctor.service"] {
        sd.drop_in(unit, "imds", &here);
    }
    assert_eq!(
        token(&sd.socket()).await,
        Ok(200),
        "{}",
        sd.journal(&["-n", "60"])
    );
    assert!(imds.instance_role_used(), "{:?}", imds.calls());

    let said = sd.doctor_as_service();
    assert!(
        said.contains(
            "ok    AWS credential source: the standard chain: the EC2 instance role (instance metadata)"
        ) && !said.contains("WARN"),
        "{said}"
    );
    w.canaries.assert_absent("doctor as the service", &said);
}
