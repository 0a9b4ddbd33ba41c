//! Start-up, systemd integration, signals and shutdown.

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;
use crate::peers::which;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_systemd_ready_status_and_watchdog() {
    let w = World::new().await;
    let notify_path = w.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind NOTIFY_SOCKET");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let notify_str = notify_path.to_str().expect("utf8 path").to_string();
    let agent = w.spawn_agent(
        &w.config("", ""),
        &[("NOTIFY_SOCKET", &notify_str), ("WATCHDOG_USEC", "1000000")],
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let n = notify.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no sd_notify message ({e}); got {messages:?}; logs:\n{}",
                agent.logs()
            )
        });
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        let ready = messages.iter().any(|m| m.lines().any(|l| l == "READY=1"));
        let pets = messages.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
        if ready && pets >= 2 {
            break;
        }
    }
    let ready = messages
        .iter()
        .find(|m| m.contains("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {messages:?}"));
    assert!(ready.contains("STATUS=1/1 tokens ready"), "{ready}");
    // READY comes after the first token, so the first request is served from the cache.
    assert_eq!(w.lwa.issued(), 1);
    assert!(
        messages.iter().filter(|m| m.trim() == "WATCHDOG=1").count() >= 2,
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_socket_passed_by_systemd() {
    let w = World::new().await;
    let config_path = w.write_config(&w.config("", ""));
    // The agent must not bind this path itself: make socket.path point elsewhere.
    let text = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace("agent.sock", "unused.sock");
    std::fs::write(&config_path, text).expect("config");
    let mut cmd = Command::new(which("systemd-socket-activate"));
    cmd.arg("-l")
        .arg(w.socket())
        .arg("-E")
        .arg("AWS_ACCESS_KEY_ID=testing")
        .arg("-E")
        .arg("AWS_SECRET_ACCESS_KEY=testing")
        .arg("-E")
        .arg("AWS_EC2_METADATA_DISABLED=true")
        .arg(env!("CARGO_BIN_EXE_lwa-agent"))
        .arg("--config")
        .arg(&config_path)
        .arg("run");
    let agent = AgentProc::spawn(cmd, w.socket());
    agent.wait_listening().await;
    // The first connection starts the agent, which then serves it.
    let r = agent.wait_for("/v1/token", 30, |r| r.status == 200).await;
    assert_eq!(r.json()["credential"], "default");
    assert!(
        !w.dir.path().join("unused.sock").exists(),
        "bound its own socket"
    );
    assert!(
        agent.logs().contains("passed by systemd"),
        "{}",
        agent.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_parameters_and_sigterm_exits_cleanly() {
    let w = World::new().await;
    let mut agent = w.agent(&w.config("", "")).await;
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    let v1 = agent.get("/v1/status").await.json();
    assert_eq!(v1["parameters"][SECRET_PARAM]["version"], 1);

    let version = w.put(SECRET_PARAM, &w.canaries.client_secret).await;
    assert_eq!(version, 2);
    agent.signal(Signal::SIGHUP);
    agent
        .wait_for("/v1/status", 10, |r| {
            r.json()["parameters"][SECRET_PARAM]["version"] == 2
        })
        .await;
    assert!(agent.logs().contains("SIGHUP"));

    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(10);
    assert_eq!(status.code(), Some(0), "logs:\n{}", agent.logs());
    assert!(!agent.socket.exists(), "the socket file is removed on exit");
    assert!(agent.logs().contains("lwa-agent stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_but_a_live_agent_is_not() {
    let w = World::new().await;
    // A socket file nobody listens on, as a crashed agent leaves behind.
    drop(UnixListener::bind(w.socket()).expect("stale socket"));
    assert!(w.socket().exists());
    let agent = w.agent(&w.config("", "")).await;
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    assert!(agent.logs().contains("stale socket"));

    let mut second = w.spawn_agent(&w.config("", ""), &[]);
    let status = second.wait_exit(10);
    assert_eq!(status.code(), Some(1));
    assert!(
        second
            .logs()
            .contains("another lwa-agent is already listening"),
        "{}",
        second.logs()
    );
    // The first agent is untouched.
    assert_eq!(agent.get("/v1/token").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_answers_in_flight() {
    let w = World::new().await;
    // A slow first exchange keeps the first request in flight.
    w.lwa.update(|s| s.delay = Duration::from_millis(2500));
    let mut agent = w.spawn_agent(&w.config("", ""), &[]);
    agent.wait_listening().await;
    let socket = agent.socket.clone();
    let in_flight = tokio::spawn(async move { request(&socket, "GET", "/v1/token", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.signal(Signal::SIGTERM);
    let answer = in_flight.await.expect("request task");
    assert_eq!(
        answer.status, 200,
        "the request in flight was answered: {}",
        answer.body
    );
    assert_eq!(
        agent.wait_exit(15).code(),
        Some(0),
        "logs:\n{}",
        agent.logs()
    );
}
