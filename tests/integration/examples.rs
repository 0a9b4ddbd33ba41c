//! The client examples in the README (tests/examples/) run against a real agent, so they
//! cannot rot.

use std::path::Path;
use std::process::Command;

use crate::harness::*;
use crate::peers::which;

fn run(mut cmd: Command, socket: &Path) -> String {
    let out = cmd
        .env("LWA_AGENT_SOCKET", socket)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples"))
        .output()
        .expect("example runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_python_java_and_node_examples_print_the_token() {
    let w = World::new().await;
    let agent = w.agent(&w.config("", "")).await;
    let token = agent
        .wait_for("/v1/token", 20, |r| r.status == 200)
        .await
        .json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let venv_python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv_python.exists(),
        "run tests/setup to create .venv (httpx for client.py)"
    );

    let mut curl = Command::new("sh");
    curl.arg("curl.sh");
    let mut python = Command::new(venv_python);
    python.arg("client.py");
    let mut java = Command::new(which("java"));
    java.arg("Client.java");
    let mut node = Command::new(which("node"));
    node.arg("client.js");
    for cmd in [curl, python, java, node] {
        assert_eq!(run(cmd, &agent.socket), token);
    }
}
