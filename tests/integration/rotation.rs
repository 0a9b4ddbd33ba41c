//! The rotation check: parameter ages from moto, SNS reminders read back through an SQS
//! queue subscribed to the topic, the state file, the fleet lock, and put-secret.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use aws_sdk_ssm::types::{ParameterTier, ParameterType};

use crate::harness::*;

/// Parameters become due 2 s after they were written; expiry is an hour away.
fn rotation(topic: &str, extra: &str) -> String {
    format!(
        "[rotation]\nwarn_after = \"2s\"\nexpire_after = \"1h\"\nrepeat_every = \"1h\"\n\
         topic_arn = \"{topic}\"\n{extra}\n"
    )
}

fn check(w: &World, config: &str, state: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    let path = w
        .dir
        .path()
        .join(format!("check-{}.toml", fastrand::u32(..)));
    std::fs::write(&path, config).expect("config");
    let out = agent_command()
        .env("STATE_DIRECTORY", state)
        .arg("--config")
        .arg(&path)
        .arg("check")
        .arg("--json")
        .args(args)
        .output()
        .expect("check runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, report)
}

fn actions(report: &serde_json::Value) -> Vec<(String, String)> {
    report["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("no report: {report}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn all(report: &serde_json::Value, action: &str) -> bool {
    actions(report).iter().all(|(_, a)| a == action)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_parameters_get_one_reminder_each_and_never_twice() {
    let w = World::new().await;
    let (topic, queue) = w.topic_with_queue("rotation").await;
    let config = w.config("", &rotation(&topic, ""));
    let state = w.dir.path().join("state");

    // Just written: not due yet.
    let (out, report) = check(&w, &config, &state, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all(&report, "none"), "{report}");
    assert_eq!(report["parameters"][0]["state"], "ok");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (out, report) = check(&w, &config, &state, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all(&report, "sent"), "{report}");
    assert_eq!(report["sent"], 3);
    assert_eq!(report["parameters"][1]["state"], "warn");

    let messages = w.messages(&queue, 3, 10).await;
    assert_eq!(
        messages.len(),
        3,
        "one message per due parameter: {messages:#?}"
    );
    let secret = messages
        .iter()
        .find(|m| {
            m["Message"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("{SECRET_PARAM} (version 1)"))
        })
        .expect("a reminder about the client secret");
    let subject = secret["Subject"].as_str().expect("subject");
    assert!(
        subject.len() <= 100 && subject.contains(SECRET_PARAM),
        "{subject}"
    );
    let body = secret["Message"].as_str().expect("body");
    for needle in [
        "expires in",
        "Host:",
        "Seller Central",
        "lwa-agent put-secret --credential default --field client_secret",
    ] {
        assert!(body.contains(needle), "{needle:?} missing from\n{body}");
    }
    assert_eq!(secret["MessageAttributes"]["severity"]["Value"], "warning");
    assert_eq!(
        secret["MessageAttributes"]["parameter"]["Value"],
        SECRET_PARAM
    );
    for m in &messages {
        w.canaries.assert_absent("an SNS message", &m.to_string());
    }

    // Same state directory (a restart, or the next day's timer): nothing new.
    let (out, report) = check(&w, &config, &state, &[]);
    assert!(out.status.success());
    assert!(all(&report, "reminded_recently"), "{report}");
    assert!(w.messages(&queue, 1, 2).await.is_empty(), "no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_publishes_nothing_and_writes_no_state() {
    let w = World::new().await;
    let (topic, queue) = w.topic_with_queue("dry").await;
    let state = w.dir.path().join("state");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (out, report) = check(
        &w,
        &w.config("", &rotation(&topic, "")),
        &state,
        &["--dry-run"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all(&report, "would_send"), "{report}");
    assert_eq!(report["dry_run"], true);
    assert!(w.messages(&queue, 1, 2).await.is_empty());
    assert!(!state.exists(), "a dry run changes no state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_change_notification_policy_means_eventbridge_covers_it() {
    let w = World::new().await;
    let ssm = w.ssm().await;
    ssm.put_parameter()
        .name(SECRET_PARAM)
        .value(&w.canaries.client_secret)
        .r#type(ParameterType::SecureString)
        .tier(ParameterTier::Advanced)
        .policies(r#"[{"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"150","Unit":"Days"}}]"#)
        .overwrite(true)
        .send()
        .await
        .expect("policy");
    let (topic, queue) = w.topic_with_queue("policy").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let state = w.dir.path().join("state");
    let (_, report) = check(&w, &w.config("", &rotation(&topic, "")), &state, &[]);
    let acts = actions(&report);
    assert!(
        acts.contains(&(
            SECRET_PARAM.to_string(),
            "covered_by_eventbridge".to_string()
        )),
        "{acts:?}"
    );
    assert_eq!(report["sent"], 2);
    assert_eq!(w.messages(&queue, 2, 10).await.len(), 2);

    // Not honoured: the policy does not stop the reminder.
    let state2 = w.dir.path().join("state2");
    let (_, report) = check(
        &w,
        &w.config("", &rotation(&topic, "honor_parameter_policies = false")),
        &state2,
        &[],
    );
    assert_eq!(report["sent"], 3, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_every_reminds_again_after_the_window_and_corrupt_state_is_survived() {
    let w = World::new().await;
    let (topic, queue) = w.topic_with_queue("repeat").await;
    let config = w.config(
        "",
        &rotation(&topic, "").replace("repeat_every = \"1h\"", "repeat_every = \"3s\""),
    );
    let state = w.dir.path().join("state");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, first) = check(&w, &config, &state, &[]);
    assert_eq!(first["sent"], 3, "{first}");
    let (_, again) = check(&w, &config, &state, &[]);
    assert!(all(&again, "reminded_recently"), "{again}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (_, later) = check(&w, &config, &state, &[]);
    assert_eq!(later["sent"], 3, "after repeat_every: {later}");
    assert_eq!(w.messages(&queue, 6, 10).await.len(), 6);

    // A corrupt state file is moved aside with a warning, and the check still works.
    std::fs::write(state.join("rotation-state.json"), b"\x00garbage").expect("corrupt");
    let (out, report) = check(&w, &config, &state, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"));
    assert_eq!(report["sent"], 3);
    let aside = std::fs::read_dir(&state)
        .expect("state dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains("corrupt"))
        })
        .count();
    assert_eq!(aside, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sharing_a_lock_prefix_sends_one_reminder() {
    let w = World::new().await;
    let (topic, queue) = w.topic_with_queue("fleet").await;
    let config = w.config(
        "",
        &rotation(&topic, "fleet_lock_prefix = \"/erp/lwa-agent/reminders\""),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Two hosts (two state directories) checking at the same moment.
    let (a, b) = (w.dir.path().join("host-a"), w.dir.path().join("host-b"));
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| check(&w, &config, &a, &[]).1);
        let tb = s.spawn(|| check(&w, &config, &b, &[]).1);
        (ta.join().expect("a"), tb.join().expect("b"))
    });
    let sent = ra["sent"].as_u64().unwrap_or(0) + rb["sent"].as_u64().unwrap_or(0);
    assert_eq!(
        sent, 3,
        "one reminder per parameter across the fleet:\n{ra}\n{rb}"
    );
    assert_eq!(w.messages(&queue, 3, 10).await.len(), 3);
    // The other host's: sent, or (its claim still pending at that moment) being sent,
    // which is not recorded, so the next check looks again.
    let elsewhere = actions(&ra)
        .into_iter()
        .chain(actions(&rb))
        .filter(|(_, a)| a == "sent_by_other_host" || a == "sending_by_other_host")
        .count();
    assert_eq!(elsewhere, 3);
    // And neither sends again: the next check finds every claim sent.
    let (_, again) = check(&w, &config, &b, &[]);
    assert!(
        actions(&again)
            .iter()
            .all(|(_, a)| a == "reminded_recently" || a == "sent_by_other_host"),
        "{again}"
    );
    let (_, third) = check(&w, &config, &b, &[]);
    assert!(all(&third, "reminded_recently"), "{third}");
    assert_eq!(
        w.messages(&queue, 1, 2).await.len(),
        0,
        "nothing more was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sns_failure_is_reported_and_retried_on_the_next_run() {
    let w = World::new().await;
    let missing = "arn:aws:sns:us-east-2:123456789012:not-yet";
    let state = w.dir.path().join("state");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let config = w.config("", &rotation(missing, ""));
    let (out, report) = check(&w, &config, &state, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(all(&report, "failed"), "{report}");
    let error = report["parameters"][0]["error"].as_str().expect("error");
    assert!(error.contains("topic does not exist"), "{error}");

    // The topic appears; the next run sends what failed.
    let (topic, queue) = w.topic_with_queue("not-yet").await;
    assert_eq!(topic, missing);
    let (out, report) = check(&w, &config, &state, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["sent"], 3);
    assert_eq!(w.messages(&queue, 3, 10).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_the_check_on_its_cron_schedule() {
    let w = World::new().await;
    let (topic, queue) = w.topic_with_queue("cron").await;
    let state = w.dir.path().join("state");
    let state_str = state.to_str().expect("utf8").to_string();
    let config = w.config(
        "",
        &rotation(
            &topic,
            "schedule = \"*/2 * * * * *\"\nparameters = [\"/erp/other\"]",
        ),
    );
    w.put("/erp/other", "not-a-secret").await;
    let agent = w.spawn_agent(&config, &[("STATE_DIRECTORY", &state_str)]);
    agent.wait_listening().await;
    let status = agent
        .wait_for("/v1/status", 20, |r| {
            r.json()["rotation"]["last_reminder"].is_string()
        })
        .await
        .json();
    let rot = &status["rotation"];
    assert!(
        rot["next_check"].is_string() && rot["last_check"].is_string(),
        "{rot}"
    );
    assert_eq!(
        w.messages(&queue, 4, 10).await.len(),
        4,
        "3 credential parameters + 1 extra"
    );
    // Later runs do not repeat within repeat_every.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(w.messages(&queue, 1, 1).await.is_empty());
    let metrics = agent.get("/metrics").await.body;
    for line in [
        "lwa_agent_reminders_total{result=\"sent\"} 4",
        "lwa_agent_parameter_state{parameter=\"/erp/other\",state=\"warn\"} 1",
        "lwa_agent_rotation_next_check_timestamp_seconds ",
        "lwa_agent_parameter_age_seconds{parameter=\"/erp/other\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    w.canaries.assert_absent("logs", &agent.logs());
}

fn put_secret(w: &World, config: &Path, value: &str, field: &str) -> Output {
    let mut child = agent_command()
        .env("RUST_LOG", "trace")
        .arg("--config")
        .arg(config)
        .args(["put-secret", "--credential", "default", "--field", field])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("put-secret runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{value}\n").as_bytes())
        .expect("write stdin");
    let _ = w;
    child.wait_with_output().expect("put-secret finishes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_secret_proves_writes_reloads_and_switches_the_running_agent() {
    let w = World::new().await;
    let agent = std::sync::Arc::new(w.agent(&w.config("", "")).await);
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    let config = w.dir.path().join("lwa-agent.toml");

    // A value LWA rejects is not written.
    let out = put_secret(&w, &config, "amzn1.oa2-cs.v1.WRONG", "client_secret");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(w.read(SECRET_PARAM).await.1, 1);

    // A value LWA accepts (the new secret, as after "generate new secret" in Seller Central).
    let new_secret = format!("{}-NEW", w.canaries.client_secret);
    w.lwa.update(|s| s.client_secrets.push(new_secret.clone()));
    let hammer = {
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut failures = 0;
            for _ in 0..200 {
                if agent.get("/v1/token").await.status != 200 {
                    failures += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        })
    };
    let out = put_secret(&w, &config, &new_secret, "client_secret");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("now serves tokens for `default` from version 2"),
        "{stdout}"
    );
    w.canaries.assert_absent(
        "put-secret output",
        &format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    );
    assert_eq!(w.read(SECRET_PARAM).await, (new_secret.clone(), 2));
    let last = w.lwa.received().into_iter().last().expect("an exchange");
    assert_eq!(
        last.form["client_secret"], new_secret,
        "the agent now uses the new secret"
    );
    assert_eq!(
        hammer.await.expect("hammer"),
        0,
        "no failed request during the switch"
    );
    w.canaries.assert_absent("logs", &agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_secret_keeps_lasting_policies_and_drops_the_old_secrets_dated_ones() {
    let w = World::new().await;
    // The old secret's parameter expires at a fixed date and warns before; it also
    // watches for no change. Sent again with the new value, the expiry would delete it.
    w.ssm()
        .await
        .put_parameter()
        .name(SECRET_PARAM)
        .value(&w.canaries.client_secret)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .tier(aws_sdk_ssm::types::ParameterTier::Advanced)
        .overwrite(true)
        .policies(
            r#"[{"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2030-12-02T21:34:33.000Z"}},
                {"Type":"ExpirationNotification","Version":"1.0","Attributes":{"Before":"15","Unit":"Days"}},
                {"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"150","Unit":"Days"}}]"#,
        )
        .send()
        .await
        .expect("policies");
    let config = w.write_config(&w.config("", ""));
    let new_secret = format!("{}-NEW", w.canaries.client_secret);
    w.lwa.update(|s| s.client_secrets.push(new_secret.clone()));
    let out = put_secret(&w, &config, &new_secret, "client_secret");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "Dropped the parameter policy Expiration (its date belonged to the old secret",
        "Dropped the parameter policy ExpirationNotification (",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from {stdout}");
    }
    assert!(!stdout.contains("NoChangeNotification"), "{stdout}");
    assert_eq!(w.read(SECRET_PARAM).await, (new_secret, 3));
    let described = w
        .ssm()
        .await
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Name")
                .option("Equals")
                .values(SECRET_PARAM)
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("describe");
    let p = &described.parameters()[0];
    let texts: Vec<String> = p
        .policies()
        .iter()
        .map(|pol| pol.policy_text().unwrap_or_default().to_string())
        .collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("NoChangeNotification"), "{texts:?}");
    assert_eq!(
        p.tier().map(|t| t.as_str()),
        Some("Advanced"),
        "the tier is kept"
    );
}

/// `enabled = false` is how docs/automatic-rotation.md says to switch automatic rotation
/// off, and `config check` needs no fleet prefix then: the daemon and `check` must run with
/// such a config, reminders included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_rotation_switched_off_without_a_fleet_prefix_still_runs() {
    let w = World::new().await;
    let (topic, _queue) = w.topic_with_queue("rotation").await;
    let config = w.config(
        "",
        &format!(
            "{}[rotation.auto]\nenabled = false\nrotate_after = \"30m\"\n",
            rotation(&topic, "")
        ),
    );
    assert!(!config.contains("fleet_lock_prefix"), "{config}");
    let state = w.dir.path().join("state");
    let (out, report) = check(&w, &config, &state, &[]);
    assert!(
        out.status.success(),
        "check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all(&report, "none"), "{report}");
    let agent = w.agent(&config).await;
    assert_eq!(agent.get("/v1/token").await.status, 200, "{}", agent.logs());
    let status = agent.get("/v1/status").await.json();
    assert!(
        status["credentials"]["default"]["auto_rotation"].is_null(),
        "{status}"
    );
}
