//! Automatic client-secret rotation (docs/automatic-rotation.md), end to end and asserted
//! from outside: the agent binary against moto (SSM, KMS, SNS, SQS), the LWA test endpoint
//! and the Application Management test endpoint, which sends the new secret into moto's
//! queue as Amazon does. SNS is read back through an SQS queue subscribed to the topic.
//!
//! Every scenario runs with the default `rotate_after` (150 days), so that only the
//! trigger under test can start a rotation; the scenarios of the age trigger itself set a
//! few seconds.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::types::QueueAttributeName;
use lwa_agent_testservers::app_management::{self, AppManagement, AppSettings, ROTATION_SCOPE};

use crate::harness::*;

/// How the agent under test is configured.
struct Opts<'a> {
    /// The in-process rotation check runs every second.
    cron: bool,
    /// Reminders: when due, and how often again.
    warn_after: &'a str,
    repeat_every: &'a str,
    /// `None`: the key is left out, so the default (150 days) holds.
    rotate_after: Option<&'a str>,
    expiry_queue: bool,
    /// Another AWS endpoint (a proxy in front of moto).
    endpoint: Option<String>,
    ssm_refresh: &'a str,
    socket: Option<PathBuf>,
    /// `lwa.timeout` (the harness's is 3 s).
    lwa_timeout: Option<&'a str>,
    /// Another client secret parameter for the credential (a host of the fleet whose
    /// config names it differently).
    secret_parameter: Option<&'a str>,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            cron: true,
            warn_after: "1h",
            repeat_every: "1h",
            rotate_after: None,
            expiry_queue: false,
            endpoint: None,
            ssm_refresh: "15m",
            socket: None,
            lwa_timeout: None,
            secret_parameter: None,
        }
    }
}

struct Auto {
    w: World,
    app: AppManagement,
    new_queue: String,
    expiry_queue: String,
    topic: String,
    /// Subscribed to the topic: what the agent published.
    sns_queue: String,
    /// Everything read from `sns_queue` so far (reading deletes).
    seen: std::sync::Mutex<Vec<serde_json::Value>>,
}

const LOCKS: &str = "/erp/lwa-agent/locks";

impl Auto {
    async fn new(settings: impl FnOnce(&mut AppSettings)) -> Auto {
        let w = World::new().await;
        w.lwa.update(|s| s.scopes.push(ROTATION_SCOPE.into()));
        let new_queue = w.create_queue("lwa-new-secret").await;
        let expiry_queue = w.create_queue("lwa-secret-expiry").await;
        let (topic, sns_queue) = w.topic_with_queue("lwa-rotation").await;
        let mut s = AppSettings {
            queue_url: new_queue.clone(),
            // Tests that do not test the rate limit must not meet it twice.
            window: Duration::from_secs(3600),
            old_secret_valid_for: Duration::from_secs(3600),
            new_secret_valid: true,
            send_delay: Duration::ZERO,
            expiry_queue_url: None,
        };
        settings(&mut s);
        let app = AppManagement::start(w.lwa.clone(), s)
            .await
            .expect("Application Management test endpoint starts");
        Auto {
            w,
            app,
            new_queue,
            expiry_queue,
            topic,
            sns_queue,
            seen: std::sync::Mutex::default(),
        }
    }

    /// An agent (host-a, no cron) that reaches AWS through a proxy in front of moto, which
    /// the test can take down and which records what the agent asks.
    async fn agent_behind_proxy(&self) -> (lwa_agent_testservers::proxy::Proxy, AgentProc) {
        let moto: std::net::SocketAddr = format!("127.0.0.1:{}", self.w.moto_port)
            .parse()
            .expect("addr");
        let proxy = lwa_agent_testservers::proxy::Proxy::start(moto)
            .await
            .expect("proxy");
        let agent = self
            .agent(
                &Opts {
                    cron: false,
                    endpoint: Some(proxy.url()),
                    ..Opts::default()
                },
                "host-a",
            )
            .await;
        (proxy, agent)
    }

    fn config(&self, o: &Opts) -> String {
        let text = self.w.config_parts(&Parts {
            ssm: &format!("refresh_interval = \"{}\"", o.ssm_refresh),
            extra: &format!(
                "[rotation]\nenabled = {cron}\nschedule = \"* * * * * *\"\nwarn_after = \"{warn}\"\n\
                 expire_after = \"{expire}\"\nrepeat_every = \"{repeat}\"\ntopic_arn = \"{topic}\"\n\
                 fleet_lock_prefix = \"{LOCKS}\"\n\n[rotation.auto]\n\
                 new_secret_queue_url = \"{new}\"\n{expiry}{after}\
                 sp_api_endpoint = \"{app}\"\nwait_for_secret = \"20s\"\n",
                cron = o.cron,
                // With the default rotate_after (150 days), Amazon's real 180 days.
                expire = if o.rotate_after.is_some() { "2h" } else { "180d" },
                warn = o.warn_after,
                repeat = o.repeat_every,
                topic = self.topic,
                new = self.new_queue,
                expiry = if o.expiry_queue {
                    format!("expiry_queue_url = \"{}\"\n", self.expiry_queue)
                } else {
                    String::new()
                },
                after = o
                    .rotate_after
                    .map(|a| format!("rotate_after = \"{a}\"\n"))
                    .unwrap_or_default(),
                app = self.app.endpoint(),
            ),
            ..Parts::default()
        });
        let text = match o.lwa_timeout {
            Some(t) => text.replace("timeout = \"3s\"", &format!("timeout = \"{t}\"")),
            None => text,
        };
        let text = match o.secret_parameter {
            Some(p) => text.replace(
                &format!("client_secret_parameter = \"{SECRET_PARAM}\""),
                &format!("client_secret_parameter = \"{p}\""),
            ),
            None => text,
        };
        let text = match &o.endpoint {
            Some(e) => text.replace(
                &format!("endpoint_url = \"{}\"", self.w.endpoint()),
                &format!("endpoint_url = \"{e}\""),
            ),
            None => text,
        };
        match &o.socket {
            Some(s) => text.replace(
                &self.w.socket().display().to_string(),
                &s.display().to_string(),
            ),
            None => text,
        }
    }

    /// Starts an agent (trace logs) with its own state directory.
    async fn agent(&self, o: &Opts<'_>, name: &str) -> AgentProc {
        let config = self.config(o);
        let path = self.w.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &config).expect("config");
        let state = self.w.dir.path().join(format!("{name}-state"));
        let mut cmd = agent_command();
        cmd.env("RUST_LOG", "trace")
            .env("STATE_DIRECTORY", &state)
            .arg("--config")
            .arg(&path)
            .arg("run");
        let socket = o.socket.clone().unwrap_or_else(|| self.w.socket());
        let agent = AgentProc::spawn(cmd, socket);
        agent.wait_listening().await;
        agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
        agent
    }

    /// The client secret in SSM: (value, version).
    async fn secret(&self) -> (String, i64) {
        self.w.read(SECRET_PARAM).await
    }

    /// Waits until SSM holds version `version` of the client secret; returns its value.
    async fn wait_for_version(&self, version: i64, secs: u64, agents: &[&AgentProc]) -> String {
        eventually(
            secs,
            || async {
                let (value, v) = self.secret().await;
                (v >= version).then_some(value)
            },
            || {
                let logs: Vec<String> = agents.iter().map(|a| a.logs()).collect();
                format!(
                    "SSM never got version {version} in {secs}s (calls: {:?})\nlogs:\n{}",
                    self.app.calls(),
                    logs.join("\n-----\n")
                )
            },
        )
        .await
    }

    /// Messages in a queue, visible or not.
    async fn depth(&self, queue: &str) -> u64 {
        let sqs = aws_sdk_sqs::Client::new(&self.w.sdk().await);
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|k| attrs.get(k)?.parse::<u64>().ok())
        .sum()
    }

    async fn wait_depth(&self, queue: &str, want: u64, secs: u64) {
        eventually(
            secs,
            || async { (self.depth(queue).await == want).then_some(()) },
            || format!("{queue} does not hold {want} messages after {secs}s"),
        )
        .await
    }

    /// Waits until `agent` serves a token LWA issued for `secret`.
    async fn wait_serving_with(&self, agent: &AgentProc, secret: &str, secs: u64) {
        eventually(
            secs,
            || async {
                let r = agent.get("/v1/token").await;
                let token = r.json()["access_token"].as_str().unwrap_or("").to_string();
                self.w
                    .lwa
                    .issued_for(&token)
                    .filter(|i| r.status == 200 && i.client_secret == secret)
            },
            || {
                format!(
                    "the agent never served a token made with the new secret\nlogs:\n{}",
                    agent.logs()
                )
            },
        )
        .await;
    }

    /// SNS messages whose subject contains `needle`, waiting for `at_least`.
    async fn published(&self, needle: &str, at_least: usize, secs: u64) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.w.messages(&self.sns_queue, 0, 1).await;
            let found: Vec<serde_json::Value> = {
                let mut all = self.seen.lock().expect("seen");
                all.extend(got);
                all.iter()
                    .filter(|m| m["Subject"].as_str().unwrap_or("").contains(needle))
                    .cloned()
                    .collect()
            };
            if found.len() >= at_least || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The one SNS message whose subject contains `needle`: waits up to `secs` for it,
    /// then 3 s more for a second one, which fails the test (as one element, to index).
    async fn published_once(&self, needle: &str, secs: u64) -> Vec<serde_json::Value> {
        let first = self.published(needle, 1, secs).await;
        assert!(
            !first.is_empty(),
            "nothing published with {needle:?} in {secs} s"
        );
        let all = self.published(needle, 2, 3).await;
        assert_eq!(
            all.len(),
            1,
            "{needle:?} published more than once: {all:#?}"
        );
        all
    }

    /// An agent that only listens (no cron): messages are what moves it.
    async fn listener(&self, name: &str) -> AgentProc {
        self.agent(
            &Opts {
                cron: false,
                ..Opts::default()
            },
            name,
        )
        .await
    }

    /// Neither the canaries nor the new secret `new` are in `text`.
    fn assert_secrets_absent(&self, what: &str, text: &str, new: &str) {
        self.w.canaries.assert_absent(what, text);
        assert!(!text.contains(new), "{what} contains the new secret");
    }

    /// The one accepted rotate call's new secret.
    fn new_secret(&self) -> String {
        let accepted = self.app.accepted();
        assert_eq!(accepted.len(), 1, "exactly one rotate call: {accepted:?}");
        accepted[0].new_secret.clone().expect("a new secret")
    }

    /// A second socket in the world's directory.
    fn socket(&self, name: &str) -> PathBuf {
        self.w.dir.path().join(format!("{name}.sock"))
    }

    fn lwa_agent(&self, config: &str, args: &[&str], state: &Path) -> Output {
        let path = self
            .w
            .dir
            .path()
            .join(format!("cli-{}.toml", fastrand::u32(..)));
        std::fs::write(&path, config).expect("config");
        agent_command()
            .env("RUST_LOG", "trace")
            .env("STATE_DIRECTORY", state)
            .arg("--config")
            .arg(&path)
            .args(args)
            .output()
            .expect("lwa-agent runs")
    }
}

impl World {
    pub async fn create_queue(&self, name: &str) -> String {
        aws_sdk_sqs::Client::new(&self.sdk().await)
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url")
    }
}

/// GETs /v1/token every 50 ms until stopped; counts answers other than 200.
fn hammer(agent: Arc<AgentProc>) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<usize>) {
    let stop = Arc::new(AtomicUsize::new(0));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut failures = 0;
        while flag.load(Ordering::Relaxed) == 0 {
            if agent.get("/v1/token").await.status != 200 {
                failures += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        failures
    });
    (stop, task)
}

fn cmdline(agent: &AgentProc) -> String {
    std::fs::read(format!("/proc/{}/cmdline", agent.child.id()))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_secret_is_rotated_end_to_end_without_a_failed_request() {
    let a = Auto::new(|_| {}).await;
    let opts = Opts {
        rotate_after: Some("3s"),
        ..Opts::default()
    };
    let agent = Arc::new(a.agent(&opts, "host-a").await);
    let (stop, hammer) = hammer(agent.clone());

    // The secret becomes older than rotate_after (3 s); the check asks Amazon, the
    // listener receives the new secret, proves it, writes it and reloads.
    let written = a.wait_for_version(2, 60, &[&agent]).await;
    let new = a.new_secret();
    assert_eq!(written, new, "SSM holds the secret Amazon made");
    a.wait_serving_with(&agent, &new, 30).await;
    stop.store(1, Ordering::Relaxed);
    assert_eq!(hammer.await.expect("hammer"), 0, "no failed token request");

    // Status, metrics and the status command show it, before the new version is itself
    // older than rotate_after (3 s) and the next rotation's record replaces this one.
    let status = agent
        .wait_for("/v1/status", 20, |r| {
            r.json()["credentials"]["default"]["auto_rotation"]["outcome"] == "rotated"
        })
        .await;
    let rec = &status.json()["credentials"]["default"]["auto_rotation"];
    assert_eq!(rec["parameter_version"], 2, "{rec}");
    assert_eq!(rec["trigger"], "age", "{rec}");
    let metrics = agent.get("/metrics").await.body;
    for line in [
        "lwa_agent_auto_rotation_outcome{credential=\"default\",outcome=\"rotated\"} 1",
        "lwa_agent_auto_rotation_needs_attention{credential=\"default\"} 0",
        "lwa_agent_auto_rotation_events_total{event=\"rotated\"} 1",
        "lwa_agent_auto_rotation_events_total{event=\"rotate_call_ok\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let out = agent_command()
        .args(["status", "--socket"])
        .arg(&agent.socket)
        .output()
        .expect("status runs");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.contains("Automatic rotation") && table.contains("rotated"),
        "{table}"
    );

    // LWA saw the new secret (the proof and the refresh).
    assert!(a
        .w
        .lwa
        .received()
        .iter()
        .any(|r| r.form.get("client_secret") == Some(&new) && r.status == 200));
    // The message is deleted, once SSM holds the secret.
    a.wait_depth(&a.new_queue, 0, 10).await;

    // One report, naming the parameter, its new version and the old secret's expiry.
    let reports = a.published_once("automatically", 20).await;
    let body = reports[0]["Message"].as_str().expect("body");
    let subject = reports[0]["Subject"].as_str().expect("subject");
    assert!(
        subject.contains(SECRET_PARAM) && subject.contains("version 2"),
        "{subject}"
    );
    assert!(
        body.contains(&format!("{SECRET_PARAM} (now version 2)"))
            && body.contains("Old secret:    keeps working until 20"),
        "{body}"
    );

    // The canaries, old and new, appear nowhere else.
    for (what, text) in [
        ("logs at trace", agent.logs()),
        ("status", status.body.clone()),
        ("metrics", metrics),
        ("status command", table),
        ("argv", cmdline(&agent)),
        ("SNS", format!("{reports:?}")),
    ] {
        a.assert_secrets_absent(what, &text, &new);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_notice_rotates_a_freshly_stored_secret_once_across_two_hosts() {
    // Amazon also announces the replaced secret's 7-day clock after the rotation, on the
    // expiry queue, as it may.
    let a = Auto::new(|_| {}).await;
    let expiry_queue = a.expiry_queue.clone();
    a.app.update(|s| s.expiry_queue_url = Some(expiry_queue));
    // The secret was just stored (as `setup` does), so it is 0 days old in SSM; the
    // default rotate_after is 150 days. The check runs every second and finds nothing
    // due: only the notice can start a rotation.
    let opts = |socket: Option<PathBuf>| Opts {
        expiry_queue: true,
        socket,
        ..Opts::default()
    };
    let mut host_a = a.agent(&opts(None), "host-a").await;
    let mut host_b = a.agent(&opts(Some(a.socket("b"))), "host-b").await;
    for h in [&host_a, &host_b] {
        h.wait_log("rotation check", 20).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        a.app.calls().is_empty(),
        "the checks start nothing for a secret younger than rotate_after"
    );
    a.send_expiry().await;
    let written = a.wait_for_version(2, 60, &[&host_a, &host_b]).await;
    assert_eq!(written, a.new_secret(), "exactly one rotate call");
    // Amazon's notice about the replaced secret arrives and is consumed: no second call.
    a.wait_depth(&a.new_queue, 0, 20).await;
    a.wait_depth(&a.expiry_queue, 0, 60).await;
    // The host that took the notice records the rotation as the notice's.
    let hosts = [&host_a, &host_b];
    eventually(
        20,
        || async {
            for h in hosts {
                let rec =
                    &h.get("/v1/status").await.json()["credentials"]["default"]["auto_rotation"];
                if rec["trigger"] == "expiry_notification" && rec["outcome"] == "rotated" {
                    return Some(());
                }
            }
            None
        },
        || "no host recorded the rotation as the expiry notice's".to_string(),
    )
    .await;

    // The same notice again, once to each host alone: neither asks Amazon again.
    let old_expiry = a.app.accepted()[0]
        .old_secret_expires
        .expect("the old secret's expiry");
    let replaced = app_management::expiry_notification(CLIENT_ID, old_expiry);
    for round in 0..2 {
        let (stop, listen) = if round == 0 {
            (&mut host_b, &host_a)
        } else {
            (&mut host_a, &host_b)
        };
        stop.signal(nix::sys::signal::Signal::SIGTERM);
        stop.wait_exit(15);
        let id = app_management::send_to_queue(&a.expiry_queue, &replaced)
            .await
            .expect("send");
        // The stopped host's last long poll may still take it (SQS, and moto, finish a
        // receive whose client is gone): then it reappears after 30 s.
        wait_log_line(listen, "about a secret already replaced", &id, 90).await;
        a.wait_depth(&a.expiry_queue, 0, 30).await;
        if round == 0 {
            *stop = a.agent(&opts(Some(a.socket("b"))), "host-b").await;
        }
    }
    // A notice Amazon published before the new secret was written is about the old one.
    let written_at = a.secret_written_at().await;
    let before = app_management::expiry_notification_published(
        CLIENT_ID,
        SystemTime::now() + Duration::from_secs(7 * 86400),
        written_at - Duration::from_secs(60),
    );
    let id = app_management::send_to_queue(&a.expiry_queue, &before)
        .await
        .expect("send");
    wait_log_line(&host_b, "about a secret already replaced", &id, 90).await;
    assert_eq!(a.app.calls().len(), 1, "{:?}", a.app.calls());
    assert_eq!(a.secret().await.1, 2);
    assert!(
        a.published("ALERT", 1, 2).await.is_empty(),
        "nobody is asked to act"
    );
    for h in [&host_a, &host_b] {
        a.w.canaries.assert_absent("logs", &h.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_command_dry_run_does_nothing_and_the_real_run_rotates() {
    let a = Auto::new(|_| {}).await;
    let state = a.w.dir.path().join("state");
    // Not due for 150 days: the command runs anyway.
    let config = a.config(&Opts::default());
    let out = a.lwa_agent(
        &config,
        &["rotate", "--credential", "default", "--dry-run"],
        &state,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "Dry run for credential `default`",
        LOCKS,
        "(free)",
        "/applications/2023-11-30/clientSecret",
        SECRET_PARAM,
        "version 1 now",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from {stdout}");
    }
    assert!(a.app.calls().is_empty(), "a dry run asks nothing");
    assert_eq!(a.secret().await.1, 1);
    assert!(
        !state.join("rotation-state.json").exists(),
        "a dry run records nothing"
    );
    let markers =
        a.w.ssm()
            .await
            .get_parameters_by_path()
            .path(LOCKS)
            .recursive(true)
            .send()
            .await
            .expect("markers");
    assert!(
        markers.parameters.unwrap_or_default().is_empty(),
        "no marker taken"
    );

    let out = a.lwa_agent(&config, &["rotate", "--credential", "nope"], &state);
    assert_eq!(out.status.code(), Some(2));

    // The real thing, with no agent running: the command receives the secret itself.
    let out = a.lwa_agent(&config, &["rotate", "--credential", "default"], &state);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Rotated") && stdout.contains("version 2"),
        "{stdout}"
    );
    let new = a.new_secret();
    assert_eq!(a.secret().await, (new.clone(), 2));
    a.wait_depth(&a.new_queue, 0, 10).await;
    for text in [&stdout, &stderr] {
        a.w.canaries.assert_absent("rotate output", text);
        assert!(!text.contains(&new));
    }
    // The next dry run is about the new version.
    let again = a.lwa_agent(
        &config,
        &["rotate", "--credential", "default", "--dry-run"],
        &state,
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("version 2 now"));

    // The parameter deleted and created again with a fresh secret: version 1 once more,
    // and a marker named by the parameter's version would be taken already. Named by the
    // app and the secret, it is free.
    let ssm = a.w.ssm().await;
    ssm.delete_parameter()
        .name(SECRET_PARAM)
        .send()
        .await
        .expect("delete");
    a.w.put(SECRET_PARAM, &new).await;
    assert_eq!(a.secret().await.1, 1);
    let fresh = a.lwa_agent(
        &config,
        &["rotate", "--credential", "default", "--dry-run"],
        &state,
    );
    let stdout = String::from_utf8_lossy(&fresh.stdout).into_owned();
    assert!(
        stdout.contains("version 1 now") && stdout.contains("(free)"),
        "{stdout}"
    );
}

/// The client secret parameter of a second ERP (a test system) that uses the same app.
const TEST_SECRET_PARAM: &str = "/erp/test/lwa/clientsecret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_with_differently_named_parameters_make_one_call_and_both_get_the_secret() {
    let a = Auto::new(|_| {}).await;
    // Host B keeps the same app's secret in a parameter of its own.
    a.w.put(TEST_SECRET_PARAM, &a.w.canaries.client_secret)
        .await;
    let opts = |socket: Option<PathBuf>, secret: Option<&'static str>| Opts {
        expiry_queue: true,
        ssm_refresh: "2s",
        socket,
        secret_parameter: secret,
        ..Opts::default()
    };
    let (host_a, host_b) = (
        a.agent(&opts(None, None), "host-a").await,
        a.agent(
            &opts(Some(a.socket("b")), Some(TEST_SECRET_PARAM)),
            "host-b",
        )
        .await,
    );
    a.send_expiry().await;
    let written = a.wait_for_version(2, 60, &[&host_a, &host_b]).await;
    let new = a.new_secret();
    assert_eq!(written, new);
    // Whichever host completed the message wrote both hosts' parameters.
    eventually(
        30,
        || async { (a.w.read(TEST_SECRET_PARAM).await.0 == new).then_some(()) },
        || {
            format!(
                "{TEST_SECRET_PARAM} never got the new secret\nA:\n{}\nB:\n{}",
                host_a.logs(),
                host_b.logs()
            )
        },
    )
    .await;
    a.wait_serving_with(&host_a, &new, 30).await;
    a.wait_serving_with(&host_b, &new, 30).await;
    assert_eq!(
        a.app.calls().len(),
        1,
        "one call, fleet-wide: {:?}",
        a.app.calls()
    );
    a.wait_depth(&a.new_queue, 0, 10).await;
    let reports = a.published_once("automatically", 10).await;
    let body = reports[0]["Message"].as_str().expect("body");
    assert!(
        body.contains(SECRET_PARAM) && body.contains(TEST_SECRET_PARAM),
        "the report names both parameters: {body}"
    );
    for h in [&host_a, &host_b] {
        a.w.canaries.assert_absent("logs", &h.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_host_completes_when_the_rotating_host_is_killed() {
    // The secret reaches the queue 5 s after the 204: host A is dead by then.
    let a = Auto::new(|s| s.send_delay = KILL_WINDOW).await;
    // Host A alone reads the expiry queue, so it is the one that asks.
    let mut host_a = a
        .agent(
            &Opts {
                expiry_queue: true,
                ..Opts::default()
            },
            "host-a",
        )
        .await;
    // Host B never starts a rotation (no cron, no expiry queue), but listens.
    let host_b = a
        .agent(
            &Opts {
                cron: false,
                ssm_refresh: "2s",
                socket: Some(a.socket("b")),
                ..Opts::default()
            },
            "host-b",
        )
        .await;
    a.send_expiry().await;
    let accepted = wait_accepted(&a, &host_a).await;
    host_a.signal(nix::sys::signal::Signal::SIGKILL);
    host_a.wait_exit(10);
    assert!(
        accepted.elapsed() < KILL_WINDOW,
        "host A was killed only {:?} after the 204, when the secret may have been sent",
        accepted.elapsed()
    );
    let written = a.wait_for_version(2, 90, &[&host_b]).await;
    let new = a.new_secret();
    assert_eq!(written, new);
    assert_eq!(a.app.calls().len(), 1, "one call: {:?}", a.app.calls());
    a.wait_serving_with(&host_b, &new, 30).await;
    a.wait_depth(&a.new_queue, 0, 10).await;
    // Host B wrote it, for a rotation it never asked for; host A never did.
    let status = host_b
        .wait_for("/v1/status", 20, |r| {
            r.json()["credentials"]["default"]["auto_rotation"]["outcome"] == "rotated"
        })
        .await;
    let rec = &status.json()["credentials"]["default"]["auto_rotation"];
    assert_eq!(rec["trigger"], "new_secret_message", "{rec}");
    assert_eq!(rec["parameter_version"], 2, "{rec}");
    assert!(host_b.logs().contains(WROTE), "{}", host_b.logs());
    let a_logs = host_a.logs();
    assert!(
        a_logs.contains(ASKED) && !a_logs.contains(WROTE),
        "host A asked and did not write:\n{a_logs}"
    );
    a.w.canaries.assert_absent("logs", &host_b.logs());
}

/// The log line of a host that asks Amazon for a new secret.
const ASKED: &str = "automatic rotation: asking Amazon for a new client secret";

/// The log line of a host that writes a new secret.
const WROTE: &str = "automatic rotation: new client secret written to SSM";

/// How long after the 204 the test endpoint sends the secret in the kill tests: the
/// rotating host is killed well within it.
const KILL_WINDOW: Duration = Duration::from_secs(5);

/// Waits for Amazon's 204; returns when it came.
async fn wait_accepted(a: &Auto, agent: &AgentProc) -> Instant {
    eventually(
        30,
        || async { a.app.accepted().first().map(|call| call.at) },
        || format!("no rotate call:\n{}", agent.logs()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_completes_what_it_asked_for_before_it_was_killed() {
    let a = Auto::new(|s| s.send_delay = KILL_WINDOW).await;
    let opts = Opts {
        expiry_queue: true,
        ..Opts::default()
    };
    let mut first = a.agent(&opts, "host-a").await;
    a.send_expiry().await;
    let accepted = wait_accepted(&a, &first).await;
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(10);
    assert!(
        accepted.elapsed() < KILL_WINDOW,
        "killed only {:?} after the 204",
        accepted.elapsed()
    );
    // Same host, same state directory: it neither asks again nor forgets.
    let again = a.agent(&opts, "host-a").await;
    let written = a.wait_for_version(2, 90, &[&again]).await;
    let new = a.new_secret();
    assert_eq!(written, new);
    a.wait_serving_with(&again, &new, 30).await;
    a.wait_depth(&a.new_queue, 0, 10).await;
    // Every call counts: a second one would be a 429 inside the test endpoint's window.
    assert_eq!(a.app.calls().len(), 1, "{:?}", a.app.calls());
    // The restarted agent wrote it, completing the rotation its first life asked for.
    let status = again
        .wait_for("/v1/status", 20, |r| {
            r.json()["credentials"]["default"]["auto_rotation"]["outcome"] == "rotated"
        })
        .await;
    let rec = &status.json()["credentials"]["default"]["auto_rotation"];
    // The notice's when the first life recorded its request before the kill; when the
    // kill came first, the restarted agent finds the fleet's claim held (so it does not
    // ask again, even when the notice comes back to it) and completes the rotation from
    // the message alone.
    assert!(
        rec["trigger"] == "expiry_notification" || rec["trigger"] == "new_secret_message",
        "{rec}"
    );
    assert_eq!(rec["outcome"], "rotated", "{rec}");
    assert!(again.logs().contains(WROTE), "{}", again.logs());
    let first_logs = first.logs();
    assert!(
        first_logs.contains(ASKED) && !first_logs.contains(WROTE),
        "the first life asked and did not write:\n{first_logs}"
    );
    a.w.canaries.assert_absent("logs", &again.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_secret_lwa_rejects_is_not_written_and_a_person_is_alerted() {
    let a = Auto::new(|s| s.new_secret_valid = false).await;
    // Reminders are due at once and repeat every 4 s: first they say the rotation is on
    // its way, then that it failed.
    let agent = a
        .agent(
            &Opts {
                warn_after: "1s",
                repeat_every: "4s",
                rotate_after: Some("3s"),
                ..Opts::default()
            },
            "host-a",
        )
        .await;
    let on_its_way = a
        .published(&format!("{SECRET_PARAM}: automatic rotation"), 1, 30)
        .await;
    assert!(
        !on_its_way.is_empty(),
        "no 'on its way' reminder:\n{}",
        agent.logs()
    );
    let text = on_its_way[0]["Message"].as_str().expect("body");
    assert!(
        text.contains("Nothing to do") && !text.contains("put-secret"),
        "asks no one to act: {text}"
    );
    let alerts = a.published_once("ALERT", 60).await;
    let body = alerts[0]["Message"].as_str().expect("body");
    assert!(
        body.contains(SECRET_PARAM) && body.contains("nothing was written"),
        "{body}"
    );
    assert_eq!(
        a.secret().await,
        (a.w.canaries.client_secret.clone(), 1),
        "not written"
    );
    assert_eq!(a.depth(&a.new_queue).await, 1, "the message stays");
    let status = agent
        .wait_for("/v1/status", 10, |r| {
            r.json()["credentials"]["default"]["auto_rotation"]["outcome"] == "failed"
        })
        .await;
    let rec = &status.json()["credentials"]["default"]["auto_rotation"];
    assert_eq!(rec["needs_attention"], true, "{rec}");
    // The checks go on every second; none asks Amazon again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.app.calls().len(), 1, "{:?}", a.app.calls());
    assert!(agent
        .get("/metrics")
        .await
        .body
        .contains("lwa_agent_auto_rotation_needs_attention{credential=\"default\"} 1"));
    // The reminder now asks a person, saying why.
    let by_hand = a
        .published("by hand: automatic rotation failed", 1, 30)
        .await;
    assert!(
        !by_hand.is_empty(),
        "no 'by hand' reminder:\n{}",
        agent.logs()
    );
    let text = by_hand[0]["Message"].as_str().expect("body");
    assert!(
        text.starts_with("THE AUTOMATIC ROTATION OF") && text.contains("put-secret"),
        "{text}"
    );
    let new = a.app.accepted()[0].new_secret.clone().expect("secret");
    for (what, text) in [
        ("logs", agent.logs()),
        ("status", status.body.clone()),
        ("alert", format!("{alerts:?}")),
        ("reminders", format!("{on_its_way:?}{by_hand:?}")),
    ] {
        a.assert_secrets_absent(what, &text, &new);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_while_sqs_is_unreachable_is_not_lost() {
    let a = Auto::new(|_| {}).await;
    let (proxy, agent) = a.agent_behind_proxy().await;
    proxy.set_up(false);
    // Amazon delivers a new secret while the agent cannot reach AWS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let new = a.send_rotated().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        agent.get("/v1/token").await.status,
        200,
        "tokens keep coming"
    );
    assert_eq!(
        a.depth(&a.new_queue).await,
        1,
        "the message waits in the queue"
    );
    proxy.set_up(true);
    let written = a.wait_for_version(2, 90, &[&agent]).await;
    assert_eq!(written, new);
    a.wait_serving_with(&agent, &new, 30).await;
    a.wait_depth(&a.new_queue, 0, 10).await;
    let metrics = agent.get("/metrics").await.body;
    assert!(metrics.contains("lwa_agent_auto_rotation_events_total{event=\"receive_error\"}"));
    a.w.canaries.assert_absent("logs", &agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_client_messages_are_left_in_the_queue() {
    let a = Auto::new(|_| {}).await;
    let agent = a.listener("host-a").await;
    let malformed = app_management::send_to_queue(
        &a.new_queue,
        &format!("not a notification {}", a.w.canaries.client_secret),
    )
    .await
    .expect("send");
    let other_app = a.send_other_app().await;
    // A good message after them is still completed.
    let new = a.send_rotated().await;
    assert_eq!(a.wait_for_version(2, 60, &[&agent]).await, new);
    agent.wait_log(&malformed, 30).await;
    agent.wait_log(&other_app, 30).await;
    a.wait_depth(&a.new_queue, 2, 10).await;
    let logs = agent.logs();
    assert!(logs.contains("left untouched"), "{logs}");
    assert!(
        !logs.contains("not a notification"),
        "a body reached the log"
    );
    assert!(!logs.contains("someone-else"), "a body reached the log");
    a.w.canaries.assert_absent("logs", &logs);
    assert!(a.app.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_makes_the_agent_wait_a_minute_before_calling_again() {
    let a = Auto::new(|s| s.window = Duration::from_secs(60)).await;
    // Someone rotated a moment ago: the agent's first call meets the rate limit.
    a.app.mark_called_now();
    let opts = Opts {
        expiry_queue: true,
        ..Opts::default()
    };
    let agent = a.agent(&opts, "host-a").await;
    a.send_expiry().await;
    let written = a.wait_for_version(2, 150, &[&agent]).await;
    let calls = a.app.calls();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 204],
        "{calls:?}"
    );
    let waited = calls[1].at.duration_since(calls[0].at);
    assert!(waited >= Duration::from_secs(60), "waited only {waited:?}");
    assert_eq!(written, a.new_secret());
    let metrics = agent.get("/metrics").await.body;
    assert!(
        metrics.contains("lwa_agent_auto_rotation_events_total{event=\"rotate_call_throttled\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_and_doctor_cover_automatic_rotation() {
    let a = Auto::new(|_| {}).await;
    let state = a.w.dir.path().join("state");
    let good = a.config(&Opts {
        rotate_after: Some("3s"),
        ..Opts::default()
    });
    let out = a.lwa_agent(&good, &["config", "check"], &state);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rotate_after is 3s, under a day"),
        "{stdout}"
    );

    let bad = good
        .replace("rotate_after = \"3s\"", "rotate_after = \"3h\"")
        .replace(&format!("fleet_lock_prefix = \"{LOCKS}\"\n"), "");
    let out = a.lwa_agent(&bad, &["config", "check"], &state);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`rotation.auto.rotate_after`")
            && err.contains("expire_after")
            && err.contains("`rotation.fleet_lock_prefix`"),
        "{err}"
    );
    let typo = good.replace("wait_for_secret", "wait_for_secrett");
    let out = a.lwa_agent(&typo, &["config", "check"], &state);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wait_for_secrett"));

    let out = a.lwa_agent(&good, &["doctor"], &state);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!("SQS queue {}", a.new_queue))
            && stdout.contains("ok    LWA rotation scope for `default`'s app"),
        "{stdout}"
    );
    // A dead-letter queue behind the new-secret queue would take secrets away.
    let dlq = a.w.create_queue("lwa-new-secret-dlq").await;
    let sqs = aws_sdk_sqs::Client::new(&a.w.sdk().await);
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes
        .and_then(|m| m.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    sqs.set_queue_attributes()
        .queue_url(&a.new_queue)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 100}).to_string(),
        )
        .send()
        .await
        .expect("redrive policy");
    let out = a.lwa_agent(&good, &["doctor"], &state);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!("WARN  SQS queue {}", a.new_queue))
            && stdout.contains("redrive policy")
            && stdout.contains("RedrivePolicy="),
        "{stdout}"
    );

    let missing = good.replace(&a.new_queue, &format!("{}-missing", a.new_queue));
    let out = a.lwa_agent(&missing, &["doctor"], &state);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("FAIL  SQS queue {}-missing", a.new_queue)),
        "{stdout}"
    );
    a.w.canaries.assert_absent("doctor", &stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_stays_until_ssm_holds_the_new_secret() {
    let a = Auto::new(|_| {}).await;
    let agent = a.listener("host-a").await;
    // The write will fail: the parameter is gone (a cached token keeps being served).
    a.w.ssm()
        .await
        .delete_parameter()
        .name(SECRET_PARAM)
        .send()
        .await
        .expect("delete");
    a.send_rotated().await;
    agent.wait_log("the message stays in the queue", 30).await;
    assert_eq!(
        a.depth(&a.new_queue).await,
        1,
        "not deleted: SSM does not hold it"
    );
    assert_eq!(agent.get("/v1/token").await.status, 200);
    a.w.canaries.assert_absent("logs", &agent.logs());
}

impl Auto {
    /// When SSM last wrote the client secret.
    async fn secret_written_at(&self) -> SystemTime {
        let p = self
            .w
            .ssm()
            .await
            .get_parameter()
            .name(SECRET_PARAM)
            .send()
            .await
            .expect("get")
            .parameter
            .expect("parameter");
        p.last_modified_date
            .and_then(|d| SystemTime::try_from(d).ok())
            .expect("LastModifiedDate")
    }

    /// Sends a new-secret message for this app now, with a new secret LWA accepts, as
    /// Amazon does after a rotation; returns the new secret.
    async fn send_rotated(&self) -> String {
        let new = format!("{}-ROTATED", self.w.canaries.client_secret);
        self.send_new_secret(&new, SystemTime::now()).await;
        new
    }

    /// Sends Amazon's notice that this app's secret expires in 7 days; returns the
    /// message id.
    async fn send_expiry(&self) -> String {
        app_management::send_to_queue(
            &self.expiry_queue,
            &app_management::expiry_notification(
                CLIENT_ID,
                SystemTime::now() + Duration::from_secs(7 * 86400),
            ),
        )
        .await
        .expect("send")
    }

    /// Sends a new-secret message for an app no credential uses; returns the message id.
    async fn send_other_app(&self) -> String {
        app_management::send_to_queue(
            &self.new_queue,
            &app_management::new_secret_notification(
                "amzn1.application-oa2-client.someone-else",
                "amzn1.oa2-cs.v1.CANARYSECRETOTHERAPP",
                SystemTime::now(),
                SystemTime::now(),
            ),
        )
        .await
        .expect("send")
    }

    /// Sends a new-secret message for this app, as Amazon would have published it at
    /// `published`, with a secret LWA accepts. Returns the message id.
    async fn send_new_secret(&self, secret: &str, published: SystemTime) -> String {
        let s = secret.to_string();
        self.w.lwa.update(|l| l.client_secrets.push(s));
        app_management::send_to_queue(
            &self.new_queue,
            &app_management::new_secret_notification_published(
                CLIENT_ID,
                secret,
                published + Duration::from_secs(180 * 86400),
                published + Duration::from_secs(7 * 86400),
                published,
            ),
        )
        .await
        .expect("send")
    }
}

/// Waits until the agent's log has `needle` on a line that names `message_id`.
async fn wait_log_line(agent: &AgentProc, needle: &str, message_id: &str, secs: u64) {
    eventually(
        secs,
        || async {
            let logs = agent.logs();
            logs.lines()
                .any(|l| l.contains(needle) && l.contains(message_id))
                .then_some(())
        },
        || format!("no `{needle}` for {message_id}:\n{}", agent.logs()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_new_secret_message_never_overwrites_a_newer_secret() {
    let a = Auto::new(|_| {}).await;
    let agent = a.listener("host-a").await;
    let seeded = a.secret_written_at().await;
    let canary = a.w.canaries.client_secret.clone();

    // A message Amazon published before SSM got its current secret, which was stored by
    // hand (no record says it came from a later notification; LWA accepts both, as it does
    // for days). Which is newer cannot be told, and the message may be the only copy of
    // its secret: nothing is written, it stays, and one alert asks a person, who keeps
    // what SSM holds.
    let ancient = format!("{canary}-ANCIENT");
    let id = a
        .send_new_secret(&ancient, seeded - Duration::from_secs(600))
        .await;
    wait_log_line(&agent, CONFLICT, &id, 30).await;
    assert_eq!(a.depth(&a.new_queue).await, 1, "the message stays");
    assert_eq!(a.secret().await, (canary.clone(), 1), "not written");
    let out = a.lwa_agent(
        &a.config(&Opts {
            cron: false,
            ..Opts::default()
        }),
        &["rotate", "--credential", "default", "--settle", "ssm"],
        &a.w.dir.path().join("host-a-state"),
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    a.wait_depth(&a.new_queue, 0, 90).await;
    assert_eq!(a.secret().await, (canary.clone(), 1), "SSM kept its secret");
    a.published_once("ALERT", 5).await;

    // Two rotations: the older message is completed only after the newer one was
    // published (it was stuck, say). SSM's write time is then later than the newer
    // message's publish time, and still the newer secret must win.
    // (Both are published after the decision above, which dated SSM's secret then.)
    let older = format!("{canary}-OLDER");
    let newer = format!("{canary}-NEWER");
    let t0 = SystemTime::now() + Duration::from_secs(1);
    while SystemTime::now() < t0 + Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.send_new_secret(&older, t0 + Duration::from_secs(1)).await;
    assert_eq!(a.wait_for_version(2, 60, &[&agent]).await, older);
    a.wait_depth(&a.new_queue, 0, 10).await;
    a.send_new_secret(&newer, t0 + Duration::from_secs(2)).await;
    assert_eq!(a.wait_for_version(3, 60, &[&agent]).await, newer);
    a.wait_depth(&a.new_queue, 0, 10).await;

    // The older message again (SQS delivers at least once): stale, SSM keeps the newer.
    let again = a.send_new_secret(&older, t0 + Duration::from_secs(1)).await;
    wait_log_line(&agent, "stale new-secret message", &again, 30).await;
    a.wait_depth(&a.new_queue, 0, 10).await;
    assert_eq!(a.secret().await, (newer.clone(), 3));
    a.wait_serving_with(&agent, &newer, 30).await;
    let metrics = agent.get("/metrics").await.body;
    assert!(
        metrics.contains("lwa_agent_auto_rotation_events_total{event=\"message_stale\"} 2"),
        "{metrics}"
    );
    a.w.canaries.assert_absent("logs", &agent.logs());
}

/// The log line of a new-secret message that meets a secret someone else stored after it.
const CONFLICT: &str = "a new secret meets a secret someone else stored after it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_for_one_app_at_once_end_with_the_newer_secret() {
    let a = Auto::new(|_| {}).await;
    let (proxy, agent) = a.agent_behind_proxy().await;
    // Both wait in the queue, so that the agent receives them together and works on them
    // at the same time.
    proxy.set_up(false);
    let seeded = a.secret_written_at().await;
    let canary = a.w.canaries.client_secret.clone();
    let (older, newer) = (format!("{canary}-OLDER"), format!("{canary}-NEWER"));
    while SystemTime::now() < seeded + Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.send_new_secret(&older, seeded + Duration::from_secs(1))
        .await;
    a.send_new_secret(&newer, seeded + Duration::from_secs(2))
        .await;
    proxy.set_up(true);
    a.wait_depth(&a.new_queue, 0, 90).await;
    let (value, version) = a.secret().await;
    assert_eq!(
        value, newer,
        "SSM ends with the newer secret (version {version})"
    );
    a.wait_serving_with(&agent, &newer, 30).await;
    a.w.canaries.assert_absent("logs", &agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_ssm_refuses_alerts_and_completes_once_the_cause_is_fixed() {
    let a = Auto::new(|_| {}).await;
    // SSM refuses a new version, as AWS does: the parameter has 100 versions and the
    // oldest carries a label (ParameterMaxVersionLimitExceeded).
    let ssm = a.w.ssm().await;
    ssm.label_parameter_version()
        .name(SECRET_PARAM)
        .parameter_version(1)
        .labels("pinned")
        .send()
        .await
        .expect("label");
    for _ in 2..=100 {
        a.w.put(SECRET_PARAM, &a.w.canaries.client_secret).await;
    }
    let state = a.w.dir.path().join("host-a-state");
    let opts = Opts {
        cron: false,
        ..Opts::default()
    };
    let config = a.config(&opts);

    // `lwa-agent rotate` asks, receives, proves, and cannot write: it ends at once (it
    // does not wait out its deadline, nor spin after it) and says why.
    let started = Instant::now();
    let out = a.lwa_agent(&config, &["rotate", "--credential", "default"], &state);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("cannot write the new secret from message")
            && stderr.contains("ParameterMaxVersionLimitExceeded"),
        "{stderr}"
    );
    let new = a.new_secret();
    assert_eq!(a.secret().await.1, 100, "not written");
    assert_eq!(a.depth(&a.new_queue).await, 1, "the message stays");
    let recorded: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.join("rotation-state.json")).expect("state file"),
    )
    .expect("state json");
    let rec = &recorded["auto_rotations"]["default"];
    assert_eq!(rec["outcome"], "failed", "{rec}");
    assert_eq!(rec["needs_attention"], true, "{rec}");
    assert_eq!(rec["parameter_version"], 100, "{rec}");

    // One alert for the message, naming the queue and when the queue drops it.
    let alerts = a.published_once("ALERT", 30).await;
    let body = alerts[0]["Message"].as_str().expect("body");
    for needle in [
        "could not be written to SSM",
        a.new_queue.as_str(),
        "before the queue's retention (4days) runs out at 20",
        "ParameterMaxVersionLimitExceeded",
    ] {
        assert!(body.contains(needle), "{needle} missing from {body}");
    }

    // Fixed: the label leaves the oldest version. The agent completes the message when
    // it reappears, and the rotation no longer needs attention.
    ssm.unlabel_parameter_version()
        .name(SECRET_PARAM)
        .parameter_version(1)
        .labels("pinned")
        .send()
        .await
        .expect("unlabel");
    let agent = a.agent(&opts, "host-a").await;
    assert_eq!(a.wait_for_version(101, 90, &[&agent]).await, new);
    a.wait_depth(&a.new_queue, 0, 10).await;
    let status = agent
        .wait_for("/v1/status", 20, |r| {
            r.json()["credentials"]["default"]["auto_rotation"]["outcome"] == "rotated"
        })
        .await;
    let rec = &status.json()["credentials"]["default"]["auto_rotation"];
    assert_eq!(rec["needs_attention"], false, "{rec}");
    a.published_once("ALERT", 3).await;
    for (what, text) in [
        ("rotate output", format!("{stdout}{stderr}")),
        ("alert", format!("{alerts:?}")),
        ("logs", agent.logs()),
    ] {
        a.assert_secrets_absent(what, &text, &new);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_another_app_costs_no_secret_decryption() {
    let a = Auto::new(|_| {}).await;
    let (proxy, agent) = a.agent_behind_proxy().await;
    // The agent has read its parameters; from now on, what it asks AWS is recorded.
    let _ = proxy.take_sent();
    let id = a.send_other_app().await;
    wait_log_line(&agent, "left untouched", &id, 30).await;
    let sent = proxy.take_sent();
    assert!(
        sent.contains("ReceiveMessage"),
        "the proxy saw the agent's receives"
    );
    // The client ids come from the agent's own copy: no SSM read, so no secret decrypted.
    assert!(
        !sent.contains("GetParameter"),
        "SSM was read for a message of another app:\n{sent}"
    );
    assert_eq!(a.depth(&a.new_queue).await, 1, "left in the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_is_not_taken_for_a_bad_new_secret() {
    let a = Auto::new(|_| {}).await;
    let agent = a.listener("host-a").await;
    // The refresh token is revoked: LWA answers invalid_grant, whatever the secret.
    let revoked = a.w.canaries.refresh_token.clone();
    a.w.lwa
        .update(|s| s.refresh_tokens.retain(|t| *t != revoked));
    let new = format!("{}-ROTATED", a.w.canaries.client_secret);
    a.send_new_secret(&new, SystemTime::now()).await;
    // The new secret is proved with the rotation scope instead, and written.
    assert_eq!(a.wait_for_version(2, 60, &[&agent]).await, new);
    a.wait_depth(&a.new_queue, 0, 10).await;
    let logs = agent.logs();
    assert!(
        logs.contains("LWA refused the refresh token, not the new secret")
            && logs.contains(REFRESH_PARAM),
        "{logs}"
    );
    assert!(
        a.published("ALERT", 1, 2).await.is_empty(),
        "no alert about the secret"
    );
    a.w.canaries.assert_absent("logs", &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_put_back_after_amazon_sent_a_new_one_keeps_the_message_until_a_person_settles() {
    let a = Auto::new(|_| {}).await;
    let (proxy, agent) = a.agent_behind_proxy().await;
    let canary = a.w.canaries.client_secret.clone();
    let state = a.w.dir.path().join("host-a-state");
    let config = a.config(&Opts {
        cron: false,
        ..Opts::default()
    });
    // Nothing to settle yet: refused, and nothing recorded.
    let out = a.lwa_agent(
        &config,
        &["rotate", "--credential", "default", "--settle", "ssm"],
        &state,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no conflict is recorded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Amazon sends a new secret while the agent cannot reach AWS…
    proxy.set_up(false);
    let new = format!("{canary}-NEW");
    let id = a.send_new_secret(&new, SystemTime::now()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // …and someone puts the old secret back by hand afterwards (a put-secret from old
    // notes): SSM holds version 2, stored after Amazon sent the new one.
    a.w.put(SECRET_PARAM, &canary).await;
    proxy.set_up(true);

    wait_log_line(&agent, CONFLICT, &id, 60).await;
    let alerts = a.published_once("ALERT", 30).await;
    let body = alerts[0]["Message"].as_str().expect("body");
    for needle in [
        id.as_str(),
        &format!("{SECRET_PARAM} version 2"),
        "--settle ssm",
        "--settle message",
    ] {
        assert!(body.contains(needle), "{needle} missing from {body}");
    }
    assert_eq!(a.secret().await, (canary.clone(), 2), "nothing written");
    assert_eq!(a.depth(&a.new_queue).await, 1, "the message is kept");
    let status = agent
        .wait_for("/v1/status", 10, |r| {
            r.json()["credentials"]["default"]["auto_rotation"]["outcome"] == "conflict"
        })
        .await;
    let rec = &status.json()["credentials"]["default"]["auto_rotation"];
    assert_eq!(rec["needs_attention"], true, "{rec}");

    // A person says Amazon's secret is the right one: it is proved and written.
    let out = a.lwa_agent(
        &config,
        &["rotate", "--credential", "default", "--settle", "message"],
        &state,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(a.wait_for_version(3, 90, &[&agent]).await, new);
    a.wait_depth(&a.new_queue, 0, 30).await;
    a.wait_serving_with(&agent, &new, 30).await;
    a.published_once("ALERT", 3).await;
    assert!(a.app.calls().is_empty(), "settling asks nothing of Amazon");
    for (what, text) in [
        ("logs", agent.logs()),
        ("settle output", format!("{stdout}{stderr}")),
        ("alert", format!("{alerts:?}")),
    ] {
        a.assert_secrets_absent(what, &text, &new);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_slower_than_the_visibility_timeout_is_one_worker_one_write_one_report() {
    let a = Auto::new(|_| {}).await;
    let opts = |socket: Option<PathBuf>| Opts {
        cron: false,
        lwa_timeout: Some("90s"),
        socket,
        ..Opts::default()
    };
    let host_a = a.agent(&opts(None), "host-a").await;
    let host_b = a.agent(&opts(Some(a.socket("b"))), "host-b").await;
    // LWA answers only after 40 s: the proof outlasts SQS's 30 s visibility.
    a.w.lwa.update(|s| s.delay = Duration::from_secs(40));
    let new = format!("{}-ROTATED", a.w.canaries.client_secret);
    let id = a.send_new_secret(&new, SystemTime::now()).await;
    assert_eq!(a.wait_for_version(2, 120, &[&host_a, &host_b]).await, new);
    a.w.lwa.update(|s| s.delay = Duration::ZERO);
    a.wait_depth(&a.new_queue, 0, 60).await;
    let arrived = "automatic rotation: a new client secret arrived";
    let logs = format!("{}\n{}", host_a.logs(), host_b.logs());
    let worked: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(arrived) && l.contains(&id))
        .collect();
    assert_eq!(worked.len(), 1, "one host worked on it:\n{logs}");
    assert_eq!(
        logs.lines().filter(|l| l.contains(WROTE)).count(),
        1,
        "one write:\n{logs}"
    );
    assert_eq!(a.secret().await.1, 2);
    a.published_once("automatically", 20).await;
    a.w.canaries.assert_absent("logs", &logs);
}

impl Auto {
    /// Deletes the SNS topic: publishing fails (NotFound) until [`Auto::topic_up`].
    async fn topic_down(&self) {
        aws_sdk_sns::Client::new(&self.w.sdk().await)
            .delete_topic()
            .topic_arn(&self.topic)
            .send()
            .await
            .expect("delete topic");
    }

    /// The topic again, under the same ARN, delivering to the same test queue.
    async fn topic_up(&self) {
        let sdk = self.w.sdk().await;
        let sns = aws_sdk_sns::Client::new(&sdk);
        let arn = sns
            .create_topic()
            .name("lwa-rotation")
            .send()
            .await
            .expect("create topic")
            .topic_arn
            .expect("arn");
        assert_eq!(arn, self.topic);
        let queue_arn = aws_sdk_sqs::Client::new(&sdk)
            .get_queue_attributes()
            .queue_url(&self.sns_queue)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("attributes")
            .attributes
            .and_then(|m| m.get(&QueueAttributeName::QueueArn).cloned())
            .expect("queue arn");
        sns.subscribe()
            .topic_arn(&self.topic)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .expect("subscribe");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_cannot_be_published_goes_out_later_and_a_dead_hosts_claim_is_taken_over() {
    let a = Auto::new(|_| {}).await;
    let agent = a.listener("host-a").await;
    // SNS refuses (the topic is gone) when the new secret is written.
    a.topic_down().await;
    let new = format!("{}-ROTATED", a.w.canaries.client_secret);
    let id = a.send_new_secret(&new, SystemTime::now()).await;
    assert_eq!(a.wait_for_version(2, 60, &[&agent]).await, new);
    wait_log_line(&agent, "not completed now", &id, 30).await;
    assert_eq!(
        a.depth(&a.new_queue).await,
        1,
        "the message stays until its report went out"
    );
    // SNS is back: the report goes out when the message reappears, once.
    a.topic_up().await;
    a.wait_depth(&a.new_queue, 0, 90).await;
    a.published_once("automatically (version 2)", 20).await;
    assert_eq!(a.secret().await.1, 2, "written once");

    // A host killed between taking the report's claim and publishing left the claim
    // pending and the message in the queue. After the claim's lease, the next host to
    // complete the message takes it over and reports.
    let newer = format!("{}-ROTATED-AGAIN", a.w.canaries.client_secret);
    let claim = lwa_agent::rotation::fleet::AppScope::new(LOCKS, CLIENT_ID).report(
        &lwa_agent::rotation::fleet::fingerprint(&secrecy::SecretString::from(newer.clone())),
    );
    let dead = SystemTime::now() - Duration::from_secs(600);
    let ssm = a.w.ssm().await;
    ssm.put_parameter()
        .name(&claim)
        .value(lwa_agent::rotation::fleet::Claim::pending(
            "host-dead",
            dead,
        ))
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect("claim");
    a.send_new_secret(&newer, SystemTime::now()).await;
    assert_eq!(a.wait_for_version(3, 60, &[&agent]).await, newer);
    a.wait_depth(&a.new_queue, 0, 60).await;
    a.published_once("automatically (version 3)", 20).await;
    let taken = ssm
        .get_parameter()
        .name(format!("{claim}.2"))
        .send()
        .await
        .expect("the takeover's claim")
        .parameter
        .and_then(|p| p.value)
        .unwrap_or_default();
    assert!(taken.starts_with("sent "), "{taken}");
    a.w.canaries.assert_absent("logs", &agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_rotations_alert_that_cannot_be_published_goes_out_later() {
    // Amazon accepts, but the new secret never reaches the queue in time.
    let a = Auto::new(|s| s.send_delay = Duration::from_secs(3600)).await;
    let state = a.w.dir.path().join("host-a-state");
    let agent = a
        .agent(
            &Opts {
                cron: false,
                expiry_queue: true,
                ..Opts::default()
            },
            "host-a",
        )
        .await;
    a.topic_down().await;
    a.send_expiry().await;
    // wait_for_secret is 20 s; then the alert, which SNS refuses, waits in the outbox.
    agent.wait_log("it stays in the outbox", 90).await;
    let outbox = || -> serde_json::Value {
        let text = std::fs::read(state.join("rotation-state.json")).expect("state file");
        serde_json::from_slice::<serde_json::Value>(&text).expect("json")["outbox"].clone()
    };
    assert!(
        outbox().as_object().is_some_and(|o| o.len() == 1),
        "{}",
        outbox()
    );
    // The same round tries the outbox once more at once (and fails); the topic comes back
    // after that, so that no publish falls between its creation and its subscription.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.topic_up().await;
    let alerts = a.published_once("ALERT", 60).await;
    let body = alerts[0]["Message"].as_str().expect("body");
    assert!(body.contains("no new secret arrived"), "{body}");
    eventually(
        30,
        || async { outbox().is_null().then_some(()) },
        || format!("the outbox keeps {}", outbox()),
    )
    .await;
    assert_eq!(a.app.calls().len(), 1, "{:?}", a.app.calls());
    assert_eq!(a.published("ALERT", 2, 3).await.len(), 1, "one alert");
}
