//! Bad requests get an error or a closed connection, and never stop the agent serving.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

async fn ready_agent(w: &World) -> AgentProc {
    let agent = w.agent(&w.config("", "")).await;
    agent.wait_for("/v1/token", 20, |r| r.status == 200).await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_credentials_and_methods_get_json_errors() {
    let w = World::new().await;
    let agent = ready_agent(&w).await;

    let r = agent.get("/v1/token/nope").await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"], "not_found");
    assert!(
        v["message"].as_str().expect("m").contains("default"),
        "names the configured ones"
    );

    let r = agent.get("/v2/anything").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, "not_found".into())
    );

    for (method, path) in [
        ("POST", "/v1/token"),
        ("DELETE", "/v1/token/default"),
        ("PUT", "/v1/health"),
    ] {
        let r = request(&agent.socket, method, path, &[("Content-Length", "0")]).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.json()["error"], "method_not_allowed");
        assert!(r.header("allow").is_some());
    }
    let r = request(&agent.socket, "GET", "/v1/reload", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_bodied_requests_are_refused() {
    let w = World::new().await;
    let agent = ready_agent(&w).await;

    // Not HTTP at all.
    let answer = raw(&agent.socket, b"\x16\x03\x01\x00garbage\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // A head over 8 KiB: a JSON too_large.
    let big = format!(
        "GET /v1/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let r = parse(&raw(&agent.socket, big.as_bytes()).await).expect("an answer");
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "too_large");
    // Far over: hyper refuses it before parsing, still with a 431.
    let huge = format!(
        "GET /v1/token HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let answer = raw(&agent.socket, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // A body on GET.
    let r = request(
        &agent.socket,
        "GET",
        "/v1/token",
        &[("Content-Length", "5")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    let chunked = raw(
        &agent.socket,
        b"GET /v1/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 400"), "{chunked:?}");

    // After all that, still serving.
    assert_eq!(agent.get("/v1/token").await.status, 200);
    w.canaries.assert_absent("logs", &agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_others_are_served_meanwhile() {
    let w = World::new().await;
    let agent = ready_agent(&w).await;
    let mut slow = tokio::net::UnixStream::connect(&agent.socket)
        .await
        .expect("connect");
    slow.write_all(b"GET /v1/token HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial head");
    let started = Instant::now();
    // Others are served while the slow head is pending.
    for _ in 0..20 {
        assert_eq!(agent.get("/v1/token").await.status, 200);
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the slow connection was not closed within 10s"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "closed after {waited:?}, expected about 5s"
    );
    assert_eq!(agent.get("/v1/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_serve_many_requests() {
    let w = World::new().await;
    let agent = ready_agent(&w).await;
    let mut s = tokio::net::UnixStream::connect(&agent.socket)
        .await
        .expect("connect");
    let mut buf = vec![0u8; 4096];
    for _ in 0..50 {
        s.write_all(b"GET /v1/token HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        let n = s.read(&mut buf).await.expect("read");
        assert!(std::str::from_utf8(&buf[..n])
            .expect("utf8")
            .starts_with("HTTP/1.1 200"));
    }
    assert_eq!(w.lwa.calls(), 1);
}
