//! `lwa-agent setup` after the stack: packaging/aws/lwa-agent.yaml deployed into a real
//! moto_server (Roles Anywhere off: moto has none; automatic rotation on), its outputs saved
//! as the aws CLI prints them, then the real binary with the three values on stdin and the
//! LWA test endpoint as lwa.token_url. The agent then serves a token from what setup wrote;
//! a second run changes nothing; a set LWA rejects writes nothing; no secret reaches
//! stdout, stderr, argv, the agent's log or the written config.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use lwa_agent_testservers::moto::Moto;
use serde_json::Value;

use crate::aws_template::{helper, template};
use crate::harness::*;

const STACK: &str = "lwa-agent-setup";
const PREFIX: &str = "/setup/lwa";
const LAST_LINE: &str = "systemctl enable --now lwa-agent.socket";

/// A world whose moto has the stack deployed and no parameter at all (setup creates them).
struct Deployed {
    w: World,
    /// The whole describe-stacks answer, as `aws cloudformation describe-stacks` prints it.
    stack_json: PathBuf,
    /// `--query 'Stacks[0].Outputs'` of it.
    outputs_json: PathBuf,
    outputs: Value,
    config: PathBuf,
}

impl Deployed {
    async fn new() -> Deployed {
        let mut w = World::without_moto().await;
        let moto = Moto::start();
        w.moto_port = moto.port;
        w.moto = Some(moto);
        let template = template();
        let stack = helper(
            &[
                "deploy",
                &w.endpoint(),
                template.to_str().expect("UTF-8 path"),
                STACK,
                &format!("ParameterPrefix={PREFIX}"),
                "AutomaticRotation=true",
            ],
            None,
        );
        assert_eq!(
            stack["status"], "CREATE_COMPLETE",
            "events: {:#}",
            stack["events"]
        );
        let described = helper(&["describe", &w.endpoint(), STACK], None);
        let outputs = described["Stacks"][0]["Outputs"].clone();
        assert!(outputs.is_array(), "{described}");
        let stack_json = w.dir.path().join("stack.json");
        let outputs_json = w.dir.path().join("outputs.json");
        std::fs::write(&stack_json, described.to_string()).expect("write stack.json");
        std::fs::write(
            &outputs_json,
            serde_json::to_string_pretty(&outputs).expect("JSON"),
        )
        .expect("write outputs.json");
        let config = w.dir.path().join("etc/lwa-agent.toml");
        Deployed {
            w,
            stack_json,
            outputs_json,
            outputs,
            config,
        }
    }

    fn output(&self, key: &str) -> String {
        self.outputs
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["OutputKey"] == key)
            .and_then(|o| o["OutputValue"].as_str())
            .unwrap_or_else(|| panic!("no output {key}: {}", self.outputs))
            .to_string()
    }

    fn names(&self) -> Vec<String> {
        [
            "ClientIdParameter",
            "ClientSecretParameter",
            "RefreshTokenParameter",
        ]
        .iter()
        .map(|k| self.output(k))
        .collect()
    }

    /// Runs `lwa-agent --config <config> setup ARGS --endpoint-url <moto> --token-url
    /// <LWA>` with `stdin`; checks that no canary is in argv, stdout or stderr.
    fn setup(&self, args: &[&str], stdin: &str) -> Run {
        let mut argv: Vec<String> = vec![
            "--config".into(),
            self.config.display().to_string(),
            "setup".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend([
            "--endpoint-url".into(),
            self.w.endpoint(),
            "--token-url".into(),
            self.w.lwa.url(),
        ]);
        self.w
            .canaries
            .assert_absent("setup's argv", &argv.join(" "));
        let out = run(agent_command().args(&argv), stdin);
        self.w.canaries.assert_absent("setup's stdout", &out.stdout);
        self.w.canaries.assert_absent("setup's stderr", &out.stderr);
        out
    }

    fn good_input(&self) -> String {
        format!(
            "{CLIENT_ID}\n{}\n{}\n",
            self.w.canaries.client_secret, self.w.canaries.refresh_token
        )
    }

    /// name -> (type, key, version, decrypted value) of the three parameters that exist.
    async fn parameters(&self) -> Vec<(String, String, String, i64, String)> {
        let ssm = self.w.ssm().await;
        let got = ssm
            .get_parameters()
            .set_names(Some(self.names()))
            .with_decryption(true)
            .send()
            .await
            .expect("GetParameters");
        let described = ssm
            .describe_parameters()
            .parameter_filters(
                aws_sdk_ssm::types::ParameterStringFilter::builder()
                    .key("Name")
                    .option("Equals")
                    .set_values(Some(self.names()))
                    .build()
                    .expect("filter"),
            )
            .send()
            .await
            .expect("DescribeParameters")
            .parameters
            .unwrap_or_default();
        let mut out: Vec<_> = got
            .parameters
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let name = p.name.clone().unwrap_or_default();
                let key = described
                    .iter()
                    .find(|d| d.name.as_deref() == Some(&name))
                    .and_then(|d| d.key_id.clone())
                    .unwrap_or_default();
                (
                    name,
                    p.r#type.map(|t| t.as_str().to_string()).unwrap_or_default(),
                    key,
                    p.version,
                    p.value.unwrap_or_default(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "setup failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

fn run(cmd: &mut Command, stdin: &str) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lwa-agent runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("lwa-agent ends");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// (bytes, inode, mtime): a rewrite with equal bytes still shows.
fn snapshot(path: &Path) -> (Vec<u8>, u64, i64, i64) {
    let m = std::fs::metadata(path).expect("config exists");
    (
        std::fs::read(path).expect("read config"),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
    )
}

fn config_check(config: &Path) -> Run {
    run(
        agent_command()
            .arg("--config")
            .arg(config)
            .args(["config", "check"]),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_stores_the_values_writes_the_config_and_the_agent_serves_a_token_and_twice_changes_nothing(
) {
    let d = Deployed::new().await;
    let w = &d.w;
    let names = d.names();
    assert!(
        d.parameters().await.is_empty(),
        "the stack creates no parameter"
    );

    // --- First run: the outputs as `--query 'Stacks[0].Outputs'` prints them. ---
    let outputs = d.outputs_json.display().to_string();
    let first = d.setup(&["--outputs", &outputs], &d.good_input());
    first.assert_ok();
    assert!(first.stdout.contains("LWA accepted"), "{}", first.stdout);
    for name in &names {
        assert!(
            first
                .stdout
                .contains(&format!("{name}: created (version 1")),
            "{name}: {}",
            first.stdout
        );
    }
    assert!(
        first.stdout.contains("all checks passed"),
        "{}",
        first.stdout
    );
    assert!(
        !first.stdout.contains("Nothing changed"),
        "{}",
        first.stdout
    );
    assert_eq!(
        first.stdout.lines().last(),
        Some(LAST_LINE),
        "the last line is the one command left: {}",
        first.stdout
    );

    // The parameters: SecureStrings with the stack's key, holding exactly the values.
    let key = d.output("ParameterKeyArn");
    let params = d.parameters().await;
    let expected = |name: &str| match name {
        n if n.ends_with("clientidentifier") => CLIENT_ID.to_string(),
        n if n.ends_with("clientsecret") => w.canaries.client_secret.clone(),
        _ => w.canaries.refresh_token.clone(),
    };
    assert_eq!(
        params.len(),
        3,
        "{:?}",
        params.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    for (name, kind, key_id, version, value) in &params {
        assert_eq!(kind, "SecureString", "{name}");
        assert_eq!(key_id, &key, "{name} is encrypted with the stack's key");
        assert_eq!(*version, 1, "{name}");
        assert!(
            *value == expected(name),
            "{name} holds the value given on stdin"
        );
    }

    // The config: valid, from the outputs, no secret, the service's owner and mode.
    let text = std::fs::read_to_string(&d.config).expect("config written");
    w.canaries.assert_absent("the written config", &text);
    assert!(!text.contains(CLIENT_ID), "no value in the config");
    let check = config_check(&d.config);
    assert_eq!(
        check.code,
        Some(0),
        "config check: {}{}",
        check.stdout,
        check.stderr
    );
    let toml: toml::Value = toml::from_str(&text).expect("TOML");
    assert_eq!(toml["aws"]["region"].as_str(), Some(REGION));
    assert_eq!(
        toml["aws"]["endpoint_url"].as_str(),
        Some(w.endpoint().as_str())
    );
    assert!(
        toml["aws"].get("roles_anywhere").is_none(),
        "no Roles Anywhere in moto"
    );
    assert_eq!(
        toml["lwa"]["token_url"].as_str(),
        Some(w.lwa.url().as_str())
    );
    let cred = &toml["credentials"][0];
    assert_eq!(cred["name"].as_str(), Some("default"));
    for (field, name) in [
        "client_id_parameter",
        "client_secret_parameter",
        "refresh_token_parameter",
    ]
    .iter()
    .zip(&names)
    {
        assert_eq!(cred[field].as_str(), Some(name.as_str()), "{field}");
    }
    assert_eq!(
        toml["rotation"]["topic_arn"].as_str(),
        Some(d.output("TopicArn").as_str())
    );
    assert_eq!(
        toml["rotation"]["fleet_lock_prefix"].as_str(),
        Some(format!("{PREFIX}/fleet-lock").as_str())
    );
    let auto = &toml["rotation"]["auto"];
    assert_eq!(
        auto["enabled"].as_bool(),
        Some(false),
        "off until registered"
    );
    assert_eq!(
        auto["new_secret_queue_url"].as_str(),
        Some(d.output("NewSecretQueueUrl").as_str())
    );
    assert_eq!(
        auto["expiry_queue_url"].as_str(),
        Some(d.output("ExpiryQueueUrl").as_str())
    );
    let meta = std::fs::metadata(&d.config).expect("config");
    let group = std::fs::read_to_string("/etc/group").ok().and_then(|g| {
        g.lines()
            .find(|l| l.starts_with("lwa-agent:"))
            .and_then(|l| l.split(':').nth(2)?.parse::<u32>().ok())
    });
    match (nix::unistd::geteuid().is_root(), group) {
        (true, Some(gid)) => {
            assert_eq!(meta.mode() & 0o777, 0o640);
            assert_eq!((meta.uid(), meta.gid()), (0, gid), "root:lwa-agent");
        }
        _ => assert_eq!(meta.mode() & 0o777, 0o600),
    }

    // --- The agent serves a token from what setup wrote. ---
    let state = w.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let mut cmd = agent_command();
    cmd.env("LWA_AGENT_SOCKET__PATH", w.socket())
        .env("STATE_DIRECTORY", &state)
        .arg("--config")
        .arg(&d.config)
        .arg("run");
    let agent = AgentProc::spawn(cmd, w.socket());
    agent.wait_listening().await;
    let token = agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    let access = token.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    assert!(w.lwa.issued_for(&access).is_some(), "a token LWA issued");
    w.canaries.assert_absent("the agent's log", &agent.logs());
    drop(agent);

    // --- Second run, the whole describe-stacks answer: nothing changes. ---
    let versions = d.parameters().await;
    let before = snapshot(&d.config);
    let stack = d.stack_json.display().to_string();
    let second = d.setup(&["--outputs", &stack], &d.good_input());
    second.assert_ok();
    for name in &names {
        assert!(
            second
                .stdout
                .contains(&format!("{name}: unchanged (version 1)")),
            "{name}: {}",
            second.stdout
        );
    }
    assert!(
        second
            .stdout
            .contains(&format!("{}: unchanged", d.config.display())),
        "{}",
        second.stdout
    );
    assert!(
        second.stdout.contains("Nothing changed"),
        "{}",
        second.stdout
    );
    assert_eq!(second.stdout.lines().last(), Some(LAST_LINE));
    assert_eq!(d.parameters().await, versions, "no new parameter version");
    assert!(snapshot(&d.config) == before, "the config is untouched");

    // --- A new client secret (LWA accepts both, as after a rotation in the console):
    // updated in place once told to replace the stored one, which still works. ---
    let new_secret = format!("{}NEW", w.canaries.client_secret);
    w.lwa.update(|s| s.client_secrets.push(new_secret.clone()));
    let input = format!("{CLIENT_ID}\n{new_secret}\n{}\n", w.canaries.refresh_token);
    let third = d.setup(&["--outputs", &outputs, "--replace-secret"], &input);
    third.assert_ok();
    let secret_name = d.output("ClientSecretParameter");
    assert!(
        third.stdout.contains(&format!(
            "{secret_name}: updated (version 1 -> 2, same key {key}"
        )),
        "{}",
        third.stdout
    );
    let after = d.parameters().await;
    let secret = after.iter().find(|p| p.0 == secret_name).expect("secret");
    assert!(secret.4 == new_secret && secret.3 == 2 && secret.2 == key);
    assert!(snapshot(&d.config) == before, "the config is untouched");

    // --- An edited config is kept; --force-config replaces it and keeps it as .bak. ---
    let edited = format!("{text}\n# edited by hand\n");
    std::fs::write(&d.config, &edited).expect("edit");
    let kept = d.setup(&["--outputs", &outputs], &input);
    kept.assert_ok();
    assert!(kept.stdout.contains("kept as it is"), "{}", kept.stdout);
    assert!(kept.stdout.contains("Nothing changed"), "{}", kept.stdout);
    assert_eq!(std::fs::read_to_string(&d.config).unwrap(), edited);
    let forced = d.setup(&["--outputs", &outputs, "--force-config"], &input);
    forced.assert_ok();
    assert_eq!(std::fs::read_to_string(&d.config).unwrap(), text);
    let backup = PathBuf::from(format!("{}.bak", d.config.display()));
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), edited);
    let leftovers: Vec<String> = std::fs::read_dir(d.config.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "the config and its .bak only: {leftovers:?}"
    );
    for path in [&d.config, &backup] {
        let text = std::fs::read_to_string(path).unwrap();
        w.canaries.assert_absent(&path.display().to_string(), &text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_with_a_secret_lwa_rejects_writes_nothing() {
    let d = Deployed::new().await;
    let wrong = "amzn1.oa2-cs.v1.CANARYSECRETWRONG0000";
    let input = format!("{CLIENT_ID}\n{wrong}\n{}\n", d.w.canaries.refresh_token);
    let outputs = d.outputs_json.display().to_string();
    let out = d.setup(&["--outputs", &outputs], &input);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("invalid_client") && out.stderr.contains("nothing was written"),
        "LWA's reason, and that nothing was written: {}",
        out.stderr
    );
    assert!(!out.stdout.contains(LAST_LINE), "{}", out.stdout);
    assert!(d.parameters().await.is_empty(), "no parameter was created");
    assert!(!d.config.exists(), "no config was written");
    assert!(d.w.lwa.calls() >= 1, "the values were sent to LWA");

    // A run with the right values afterwards just works.
    d.setup(&["--outputs", &outputs], &d.good_input())
        .assert_ok();
    assert_eq!(d.parameters().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_never_puts_back_an_older_secret_unless_told() {
    let d = Deployed::new().await;
    let outputs = d.outputs_json.display().to_string();
    d.setup(&["--outputs", &outputs], &d.good_input())
        .assert_ok();
    // An automatic rotation (or put-secret) stored a newer secret since; LWA accepts both
    // during the old one's 7-day overlap.
    let secret_parameter = d.output("ClientSecretParameter");
    let newer = format!("{}-NEWER", d.w.canaries.client_secret);
    d.w.lwa.update(|s| s.client_secrets.push(newer.clone()));
    d.w.put(&secret_parameter, &newer).await;
    let before = d.parameters().await;

    // The old secret, typed again from someone's notes: refused, nothing written.
    let out = d.setup(&["--outputs", &outputs], &d.good_input());
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    for needle in [
        secret_parameter.as_str(),
        "LWA still accepts it",
        "nothing was written",
        "--replace-secret",
    ] {
        assert!(
            out.stderr.contains(needle),
            "{needle} missing from {}",
            out.stderr
        );
    }
    assert_eq!(d.parameters().await, before, "SSM unchanged");
    assert!(!out.stderr.contains(&newer) && !out.stdout.contains(&newer));

    // Told so, setup stores the typed one.
    d.setup(
        &["--outputs", &outputs, "--replace-secret"],
        &d.good_input(),
    )
    .assert_ok();
    let after = d.parameters().await;
    let stored = after
        .iter()
        .find(|p| p.0 == secret_parameter)
        .expect("the client secret");
    assert_eq!(stored.4, d.w.canaries.client_secret);

    // A stored secret that LWA no longer accepts is replaced without the flag.
    let dead = format!("{}-DEAD", d.w.canaries.client_secret);
    d.w.put(&secret_parameter, &dead).await;
    d.setup(&["--outputs", &outputs], &d.good_input())
        .assert_ok();
    assert_eq!(
        d.w.read(&secret_parameter).await.0,
        d.w.canaries.client_secret,
        "the dead secret was replaced by the typed one"
    );
}

/// Usage errors (exit 2) come before any secret is read or anything is written.
#[test]
fn setup_refuses_bad_outputs_and_input_with_exit_2_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("lwa-agent.toml");
    let partial = dir.path().join("partial.json");
    std::fs::write(
        &partial,
        r#"[{"OutputKey": "Region", "OutputValue": "us-east-2"}]"#,
    )
    .unwrap();
    let full = dir.path().join("full.json");
    std::fs::write(
        &full,
        serde_json::json!([
            {"OutputKey": "Region", "OutputValue": "us-east-2"},
            {"OutputKey": "ClientIdParameter", "OutputValue": "/a/id"},
            {"OutputKey": "ClientSecretParameter", "OutputValue": "/a/secret"},
            {"OutputKey": "RefreshTokenParameter", "OutputValue": "/a/refresh"},
            {"OutputKey": "ParameterKeyArn", "OutputValue": "alias/a"},
        ])
        .to_string(),
    )
    .unwrap();
    let setup = |args: &[&str], stdin: &str| {
        run(
            agent_command()
                .arg("--config")
                .arg(&config)
                .arg("setup")
                .args(args),
            stdin,
        )
    };
    let cases: Vec<(Vec<&str>, &str, &[&str])> = vec![
        (
            vec!["--outputs", "-"],
            "x\ny\nz\n",
            &["stdin carries the secrets"],
        ),
        (
            vec!["--outputs", "/nonexistent/outputs.json"],
            "",
            &["cannot read the stack's outputs", "describe-stacks"],
        ),
        (
            vec!["--outputs", partial.to_str().unwrap()],
            "",
            &[
                "ClientIdParameter (or --client-id-parameter)",
                "ParameterKeyArn (or --key-id)",
            ],
        ),
        (
            vec!["--outputs", full.to_str().unwrap(), "--auto-rotation"],
            "",
            &["AutomaticRotation=true"],
        ),
        (
            vec![
                "--outputs",
                full.to_str().unwrap(),
                "--endpoint-url",
                "not a url",
            ],
            "",
            &["aws.endpoint_url", "nothing was done"],
        ),
        (
            vec!["--outputs", full.to_str().unwrap()],
            "amzn1.application-oa2-client.x\nCANARYSECRETtwo-lines-only\n",
            &["2 lines, not 3"],
        ),
    ];
    for (args, stdin, expected) in cases {
        let out = setup(&args, stdin);
        assert_eq!(out.code, Some(2), "{args:?}: {}{}", out.stdout, out.stderr);
        for e in expected {
            assert!(out.stderr.contains(e), "{args:?}: {e} in {}", out.stderr);
        }
        assert!(
            !out.stderr.contains("CANARY") && !out.stdout.contains("CANARY"),
            "{args:?}: no value echoed"
        );
        assert!(!config.exists(), "{args:?}: no config written");
    }
}

/// Setup writes with an administrator's credentials: without any, it says so (and whose
/// are needed) after LWA accepted the values, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_without_aws_credentials_says_whose_are_needed_and_writes_nothing() {
    let w = World::without_moto().await;
    let config = w.dir.path().join("lwa-agent.toml");
    let input = format!(
        "{CLIENT_ID}\n{}\n{}\n",
        w.canaries.client_secret, w.canaries.refresh_token
    );
    let mut cmd = agent_command();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .arg("--config")
        .arg(&config)
        .args([
            "setup",
            "--region",
            REGION,
            "--client-id-parameter",
            ID_PARAM,
            "--client-secret-parameter",
            SECRET_PARAM,
            "--refresh-token-parameter",
            REFRESH_PARAM,
            "--key-id",
            "alias/lwa-agent",
            "--endpoint-url",
            &w.endpoint(),
            "--token-url",
            &w.lwa.url(),
        ]);
    let out = run(&mut cmd, &input);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("LWA accepted"), "{}", out.stdout);
    for expected in [
        "no AWS credentials",
        "nothing was written",
        "administrator's credentials",
    ] {
        assert!(out.stderr.contains(expected), "{expected}: {}", out.stderr);
    }
    w.canaries.assert_absent("stdout", &out.stdout);
    w.canaries.assert_absent("stderr", &out.stderr);
    assert!(!config.exists());
}
