//! Benchmark: `GET /v1/token` from a cached token over the agent's Unix socket, side by side
//! with a bare hyper HTTP-over-UDS server that returns a body of the same size (the
//! ceiling). Run with `cargo bench --bench socket`; prints throughput, p50/p99 and the
//! ratio at 1 and 64 concurrent keep-alive connections, the agent's idle RSS, and the LWA
//! and SSM call counts (which must not grow with the request rate).
//!
//! Both servers run as separate processes (the bare one is this binary re-executed), so
//! each pays the same process and scheduling costs and the load generator is shared.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use lwa_agent_testservers::lwa::{FakeLwa, Mode, Settings};
use lwa_agent_testservers::moto::Moto;

const RUN_FOR: Duration = Duration::from_secs(5);
const BARE_ENV: &str = "LWA_BENCH_BARE_SOCKET";

fn main() {
    if let Ok(socket) = std::env::var(BARE_ENV) {
        bare_server(PathBuf::from(socket));
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: both run.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

/// The ceiling: hyper on a Unix socket answering every request with a fixed body.
fn bare_server(socket: PathBuf) {
    let size: usize = std::env::var("LWA_BENCH_BODY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let body = Bytes::from(vec![b'x'; size]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind bare socket");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = Response::new(Full::new(body));
                        r.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_socket(path: &Path) {
    for _ in 0..400 {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} never listened", path.display());
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1.1 connection to `socket`.
async fn connect(socket: &Path) -> Sender {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .expect("request")
}

async fn get_once(socket: &Path, path: &str) -> (u16, String) {
    let resp = connect(socket)
        .await
        .send_request(get(path))
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

struct Figures {
    requests: u64,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// `conns` keep-alive connections each sending requests back to back for RUN_FOR.
async fn load(socket: &Path, path: &'static str, conns: usize) -> Figures {
    let deadline = Instant::now() + RUN_FOR;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let socket = socket.to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut tx = connect(&socket).await;
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let start = Instant::now();
                let resp = tx.send_request(get(path)).await.expect("send");
                assert_eq!(resp.status(), 200);
                let _ = resp.into_body().collect().await.expect("body");
                latencies.push(start.elapsed());
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    let elapsed = started.elapsed().max(RUN_FOR);
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        requests: all.len() as u64,
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn bench() {
    let dir = tempfile::tempdir().expect("temp dir");
    let moto = Moto::start();
    let lwa = FakeLwa::start(Settings {
        client_id: "bench-client".into(),
        client_secrets: vec!["bench-secret".into()],
        refresh_tokens: vec!["bench-refresh".into()],
        scopes: vec![],
        expires_in: 3600,
        mode: Mode::Normal,
        delay: Duration::ZERO,
    })
    .await
    .expect("LWA endpoint");
    seed(&moto.endpoint()).await;

    let agent_socket = dir.path().join("agent.sock");
    let config = dir.path().join("lwa-agent.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-2\"\nendpoint_url = \"{}\"\n[lwa]\ntoken_url = \"{}\"\n\
             [[credentials]]\nname = \"default\"\nclient_id_parameter = \"/b/id\"\n\
             client_secret_parameter = \"/b/secret\"\nrefresh_token_parameter = \"/b/refresh\"\n\
             [socket]\npath = \"{}\"\n[log]\nlevel = \"warn\"\nformat = \"text\"\n",
            moto.endpoint(),
            lwa.url(),
            agent_socket.display()
        ),
    )
    .expect("config");
    let agent = Proc(
        Command::new(env!("CARGO_BIN_EXE_lwa-agent"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts"),
    );
    wait_socket(&agent_socket).await;
    let (status, body) = get_once(&agent_socket, "/v1/token").await;
    assert_eq!(status, 200, "{body}");

    let bare_socket = dir.path().join("bare.sock");
    let _bare = Proc(
        Command::new(std::env::current_exe().expect("self"))
            .env(BARE_ENV, &bare_socket)
            .env("LWA_BENCH_BODY", (body.len()).to_string())
            .spawn()
            .expect("bare server starts"),
    );
    wait_socket(&bare_socket).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_kib(agent.0.id());
    let before = get_once(&agent_socket, "/metrics").await.1;

    println!(
        "GET /v1/token (cached, {} byte body) vs a bare hyper UDS server, {}s per run",
        body.len(),
        RUN_FOR.as_secs()
    );
    println!(
        "{:>5}  {:>12} {:>10} {:>10}   {:>12} {:>10} {:>10}   {:>6}",
        "conns", "agent req/s", "p50", "p99", "bare req/s", "p50", "p99", "ratio"
    );
    for conns in [1usize, 64] {
        let a = load(&agent_socket, "/v1/token", conns).await;
        let b = load(&bare_socket, "/", conns).await;
        println!(
            "{conns:>5}  {:>12.0} {:>10.1?} {:>10.1?}   {:>12.0} {:>10.1?} {:>10.1?}   {:>6.2}",
            a.per_sec,
            a.p50,
            a.p99,
            b.per_sec,
            b.p50,
            b.p99,
            a.per_sec / b.per_sec
        );
        let _ = (a.requests, b.requests);
    }
    let after = get_once(&agent_socket, "/metrics").await.1;
    let served = metric(&after, "lwa_agent_token_requests_total");
    println!(
        "agent idle RSS: {:.1} MiB; requests served: {served}; LWA exchanges: {}; SSM calls before/after the load: {}/{}",
        idle_rss as f64 / 1024.0,
        lwa.calls(),
        metric(&before, "lwa_agent_ssm_calls_total"),
        metric(&after, "lwa_agent_ssm_calls_total"),
    );
    assert_eq!(
        lwa.calls(),
        1,
        "LWA exchanges must not grow with the request rate"
    );
    drop(moto);
}

async fn seed(endpoint: &str) {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-2"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    for (name, value) in [
        ("/b/id", "bench-client"),
        ("/b/secret", "bench-secret"),
        ("/b/refresh", "bench-refresh"),
    ] {
        ssm.put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("seed");
    }
}
