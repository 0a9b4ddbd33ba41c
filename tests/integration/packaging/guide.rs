//! docs/from-nothing-to-a-token.md, run as written: its commands are read from the guide
//! itself and run in order (deploy the stack with the aws CLI, save its outputs, the host's
//! certificate, `lwa-agent setup`, enable the socket, fetch a token, doctor as the
//! service), against moto, the LWA test endpoint and the Roles Anywhere test endpoint,
//! with the package installed under the booted systemd.
//!
//! Where this differs from a real site, it says so at the spot: the endpoints are
//! loopback test servers (`AWS_ENDPOINT_URL` for the aws CLI, `--endpoint-url` and
//! `--token-url` for setup, `AWS_ENDPOINT_URL_ROLESANYWHERE` for the agent), the
//! administrator's credentials are moto's test keys instead of a profile, and moto's
//! `deploy` leaves the stack's outputs `null`.

use lwa_agent_testservers::moto::Moto;

use super::booted::Booted;
use super::*;

/// The guide's shell blocks (```sh … ```), in order.
fn shell_blocks(guide: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in guide.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The one block that starts with `start`.
fn block<'a>(blocks: &'a [String], start: &str) -> &'a str {
    let found: Vec<&String> = blocks.iter().filter(|b| b.starts_with(start)).collect();
    assert_eq!(
        found.len(),
        1,
        "the guide has one block that starts with `{start}`"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_from_nothing_to_a_token_runs_as_written() {
    let guide =
        std::fs::read_to_string(repo().join("docs/from-nothing-to-a-token.md")).expect("the guide");
    let blocks = shell_blocks(&guide);
    let p = packages();
    let _installed = Installed::new(&p.deb);
    let mut w = World::without_moto().await;
    let moto = Moto::start();
    w.moto_port = moto.port;
    w.moto = Some(moto);
    let ra = RolesAnywhereHost::new(w.dir.path()).await;
    // The administrator's workstation: ca.pem is the CA of the host certificates.
    let desk = w.dir.path().join("workstation");
    std::fs::create_dir_all(&desk).expect("mkdir");
    std::fs::write(desk.join("ca.pem"), &ra.root_pem).expect("ca.pem");
    let aws_cli = repo().join(".venv-awscli/bin");
    assert!(
        aws_cli.join("aws").exists(),
        "the aws CLI is missing: run tests/setup (it creates .venv-awscli)"
    );
    let sh = |script: &str| {
        let out = Command::new("sh")
            .args(["-ec", script])
            .current_dir(&desk)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    aws_cli.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            // Not the guide's: moto instead of AWS, and its test keys.
            .env("AWS_ENDPOINT_URL", w.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("sh runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{script}\n{text}");
        text
    };

    // 1. Deploy the stack, exactly as the guide says (the template the package installed).
    let deploy = block(&blocks, "aws cloudformation deploy");
    assert!(deploy.contains("/usr/share/lwa-agent/lwa-agent.yaml"));
    sh(deploy);

    // 3. Save its outputs, as the guide says.
    let describe = block(&blocks, "aws cloudformation describe-stacks");
    sh(describe);
    let outputs = desk.join("lwa-agent-outputs.json");
    let saved = std::fs::read_to_string(&outputs).expect("the outputs file");
    if saved.trim() == "null" {
        // moto: its change-set path (what `deploy` uses) leaves a stack without outputs.
        // setup names that plainly; the closest commands then give them: the same stack
        // made with create-stack.
        let out = agent_command()
            .args(["setup", "--outputs"])
            .arg(&outputs)
            .stdin(Stdio::null())
            .output()
            .expect("setup runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("the stack has no outputs yet"), "{err}");
        // The deploy block's --parameter-overrides as create-stack's --parameters (a JSON
        // file: the CA certificate's PEM does not fit the shorthand syntax).
        let overrides = deploy
            .split("--parameter-overrides")
            .nth(1)
            .expect("the guide's deploy has --parameter-overrides");
        let parameters: Vec<serde_json::Value> = overrides
            .lines()
            .map(|l| l.trim().trim_end_matches('\\').trim())
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                let v = v.trim_matches('"');
                let v = if v == "$(cat ca.pem)" {
                    ra.root_pem.clone()
                } else {
                    v.to_string()
                };
                serde_json::json!({"ParameterKey": k, "ParameterValue": v})
            })
            .collect();
        assert!(parameters.len() >= 4, "{parameters:?}");
        std::fs::write(
            desk.join("parameters.json"),
            serde_json::to_string(&parameters).expect("json"),
        )
        .expect("parameters.json");
        let create = "aws cloudformation create-stack --region us-east-2 --stack-name lwa-agent \\
            --template-body file:///usr/share/lwa-agent/lwa-agent.yaml \\
            --capabilities CAPABILITY_IAM --parameters file://parameters.json";
        sh("aws cloudformation delete-stack --region us-east-2 --stack-name lwa-agent");
        sh(create);
        sh("aws cloudformation wait stack-create-complete --region us-east-2 --stack-name lwa-agent");
        sh(describe);
    }
    let saved = std::fs::read_to_string(&outputs).expect("the outputs file");
    assert!(saved.contains("ClientSecretParameter"), "{saved}");
    if !saved.contains("TrustAnchorArn") {
        // moto: it creates no Roles Anywhere resources, so the trust anchor and profile
        // outputs AWS would give are missing; they are added as AWS would name them (the
        // Roles Anywhere stand-in trusts ca.pem's CA whatever the ARNs).
        let mut list: Vec<serde_json::Value> =
            serde_json::from_str(&saved).expect("the outputs' JSON");
        for (key, value) in [
            (
                "TrustAnchorArn",
                "arn:aws:rolesanywhere:us-east-2:123456789012:trust-anchor/moto",
            ),
            (
                "ProfileArn",
                "arn:aws:rolesanywhere:us-east-2:123456789012:profile/moto",
            ),
        ] {
            list.push(serde_json::json!({"OutputKey": key, "OutputValue": value}));
        }
        std::fs::write(&outputs, serde_json::to_string_pretty(&list).expect("json"))
            .expect("outputs");
    }

    // 2. The host's certificate where the units load it.
    let _pki = PkiDir::install(&ra);

    // 3. setup, as root, with the three values on stdin.
    let setup_line = block(&blocks, "sudo AWS_PROFILE=");
    assert!(
        setup_line.contains("lwa-agent setup --outputs lwa-agent-outputs.json"),
        "{setup_line}"
    );
    let mut setup = agent_command();
    setup
        .current_dir(&desk)
        .args(["setup", "--outputs", "lwa-agent-outputs.json"])
        // Not the guide's: the loopback stand-ins for AWS, LWA and Roles Anywhere.
        .args(["--endpoint-url", &w.endpoint(), "--token-url", &w.lwa.url()])
        .env("AWS_ENDPOINT_URL_ROLESANYWHERE", ra.endpoint.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = setup.spawn().expect("setup runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(
            stdin,
            "{CLIENT_ID}\n{}\n{}",
            w.canaries.client_secret, w.canaries.refresh_token
        )
        .expect("values");
    }
    let out = child.wait_with_output().expect("setup ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("The service will take its AWS credentials from IAM Roles Anywhere"),
        "{said}"
    );
    w.canaries.assert_absent("setup's output", &said);

    // 4. Enable the socket, fetch a token, prove what the service has: each command as the
    // guide writes it (without its `sudo`: the test is root), inside the booted systemd.
    let sd = Booted::boot();
    let here = format!(
        "[Service]\nEnvironment=AWS_ENDPOINT_URL_ROLESANYWHERE={}\n",
        ra.endpoint.url()
    );
    for unit in ["lwa-agent.service", "lwa-agent-doctor.service"] {
        sd.drop_in(unit, "test-endpoints", &here);
    }
    let in_booted = |line: &str| {
        let line = line.trim().trim_start_matches("sudo ");
        let out = output(sd.command("sh").args(["-c", line]));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{line}\n{text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            sd.journal(&["-n", "60"])
        );
        text
    };
    in_booted(block(
        &blocks,
        "sudo systemctl enable --now lwa-agent.socket",
    ));
    let answer = in_booted(block(&blocks, "sudo curl --unix-socket"));
    let token: serde_json::Value = serde_json::from_str(&answer).expect("a JSON answer");
    assert!(
        token["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("Atza|")),
        "{answer}"
    );
    ra.assert_used();
    let doctor = in_booted(block(&blocks, "sudo lwa-agent doctor --as-service"));
    assert!(
        doctor.contains("ok    AWS credential source: IAM Roles Anywhere")
            && doctor.contains("all checks passed"),
        "{doctor}"
    );
    w.canaries
        .assert_absent("the journal", &sd.journal(&["-u", "lwa-agent*"]));
}
