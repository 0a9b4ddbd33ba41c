//! Benchmark: the agent's footprint and its hot path, every figure of the README's
//! Performance table in one run (`cargo bench --bench socket`):
//!
//! * the size of the static release binary (packaging/build's, when it has been built);
//! * start → READY=1, read from a real `NOTIFY_SOCKET`;
//! * RSS and threads after READY with one credential, and again after the load;
//! * `GET /v1/token` from a cached token over the agent's Unix socket, side by side with a
//!   bare hyper HTTP-over-UDS server that returns a body of the same size (the ceiling):
//!   throughput, p50/p99 and the ratio at 1 and 64 concurrent keep-alive connections;
//! * the LWA and SSM call counts, which must not grow with the request rate.
//!
//! Both servers run as separate processes built with the same profile (the bare one is
//! this binary re-executed), so each pays the same process and scheduling costs, and the
//! load generator is shared. Each load runs twice, alternating, and the better run counts:
//! on a 2-core machine one run can lose a core to something else.

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

/// A line of `/proc/<pid>/<file>` as a number (the first number after `key`).
fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// What the kernel counts against the process, and where it goes.
struct Memory {
    rss_kib: u64,
    anon_kib: u64,
    threads: u64,
}

fn memory(pid: u32) -> Memory {
    Memory {
        rss_kib: proc_field(pid, "status", "VmRSS:"),
        anon_kib: proc_field(pid, "smaps_rollup", "Anonymous:"),
        threads: proc_field(pid, "status", "Threads:"),
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB ({:.1} MiB anonymous, {:.1} MiB mapped from the binary), {} threads",
            self.rss_kib as f64 / 1024.0,
            self.anon_kib as f64 / 1024.0,
            self.rss_kib.saturating_sub(self.anon_kib) as f64 / 1024.0,
            self.threads
        )
    }
}

/// The static binary packaging/build makes (what the packages ship), if it exists.
fn static_binary() -> Option<(PathBuf, u64)> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("x86_64-unknown-linux-gnu/release/lwa-agent");
    let size = std::fs::metadata(&path).ok()?.len();
    Some((path, size))
}

/// The agent under test: `LWA_BENCH_AGENT`, else the static binary when it is at least
/// as new as this bench's own build of the agent (the packages' binary is what hosts run;
/// it maps no shared libraries), else that build (glibc linked dynamically).
fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LWA_BENCH_AGENT") {
        return PathBuf::from(path);
    }
    let built = PathBuf::from(env!("CARGO_BIN_EXE_lwa-agent"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match static_binary() {
        Some((path, _)) if modified(&path) >= modified(&built) => path,
        _ => built,
    }
}

/// Starts the agent with a real `NOTIFY_SOCKET` and returns it with the time from spawn to
/// READY=1.
fn start_agent(binary: &Path, config: &Path, notify: &Path) -> (Proc, Duration) {
    let _ = std::fs::remove_file(notify);
    let listener = std::os::unix::net::UnixDatagram::bind(notify).expect("notify socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = Instant::now();
    let agent = Proc(
        Command::new(binary)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NOTIFY_SOCKET", notify)
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts"),
    );
    let mut buf = [0u8; 4096];
    loop {
        let n = listener.recv(&mut buf).expect("READY=1 within 20 s");
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            return (agent, started.elapsed());
        }
    }
}

/// The better of two runs of each server, alternating agent and bare.
async fn compare(agent: &Path, bare: &Path, conns: usize) -> (Figures, Figures) {
    let mut best: Option<(Figures, Figures)> = None;
    for _ in 0..2 {
        let a = load(agent, "/v1/token", conns).await;
        let b = load(bare, "/", conns).await;
        best = Some(match best {
            None => (a, b),
            Some((ba, bb)) => (
                if a.per_sec > ba.per_sec { a } else { ba },
                if b.per_sec > bb.per_sec { b } else { bb },
            ),
        });
    }
    best.expect("two runs")
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

    // READY time: a few starts, each to READY=1 and stopped again; the last one stays.
    let binary = agent_binary();
    println!("agent under test: {}", binary.display());
    let notify = dir.path().join("notify.sock");
    let mut ready_times = Vec::new();
    let mut agent = None;
    for _ in 0..5 {
        drop(agent.take());
        let (a, took) = start_agent(&binary, &config, &notify);
        ready_times.push(took);
        agent = Some(a);
    }
    let agent = agent.expect("an agent");
    ready_times.sort();
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
    let idle = memory(agent.0.id());
    let before = get_once(&agent_socket, "/metrics").await.1;
    let lwa_before = lwa.calls();

    println!(
        "GET /v1/token (cached, {} byte body) vs a bare hyper UDS server, {}s per run, best of 2",
        body.len(),
        RUN_FOR.as_secs()
    );
    println!(
        "{:>5}  {:>12} {:>10} {:>10}   {:>12} {:>10} {:>10}   {:>6}",
        "conns", "agent req/s", "p50", "p99", "bare req/s", "p50", "p99", "ratio"
    );
    let mut rows = Vec::new();
    for conns in [1usize, 64] {
        let (a, b) = compare(&agent_socket, &bare_socket, conns).await;
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
        rows.push((conns, a, b));
    }
    let loaded = memory(agent.0.id());
    let after = get_once(&agent_socket, "/metrics").await.1;
    let served = metric(&after, "lwa_agent_token_requests_total");
    let (ssm_before, ssm_after) = (
        metric(&before, "lwa_agent_ssm_calls_total"),
        metric(&after, "lwa_agent_ssm_calls_total"),
    );
    println!("agent after READY: {idle}");
    println!("agent after the load: {loaded}");
    println!(
        "requests served: {served}; LWA exchanges before/after the load: {lwa_before}/{}; SSM calls before/after the load: {ssm_before}/{ssm_after}",
        lwa.calls(),
    );

    // The README's table (docs: README.md, Performance).
    let size = match static_binary() {
        Some((_, bytes)) => format!("{bytes} bytes ({:.1} MiB)", bytes as f64 / 1048576.0),
        None => "not built: run packaging/build first".to_string(),
    };
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    println!();
    println!("| figure | measured |");
    println!("|---|---|");
    println!("| stripped static binary (packaging/build) | {size} |");
    println!(
        "| idle RSS, one credential, after READY | {}, {} threads |",
        mib(idle.rss_kib),
        idle.threads
    );
    println!(
        "| RSS after {} requests | {} |",
        served,
        mib(loaded.rss_kib)
    );
    println!(
        "| start → READY=1 (local endpoints, {} starts) | {:.0?} median, {:.0?} max |",
        ready_times.len(),
        ready_times[ready_times.len() / 2],
        ready_times[ready_times.len() - 1]
    );
    for (conns, a, b) in &rows {
        println!(
            "| cached `GET /v1/token`, {conns} connection{} | {:.2}× the bare server's throughput ({:.0} vs {:.0} req/s), p99 {:.2?} vs {:.2?} |",
            if *conns == 1 { "" } else { "s" },
            a.per_sec / b.per_sec,
            a.per_sec,
            b.per_sec,
            a.p99,
            b.p99
        );
    }
    println!("| crypto back ends linked | aws-lc-rs only (tests/integration/footprint.rs) |");
    println!(
        "| LWA / SSM calls during the load | {} / {} |",
        lwa.calls() - lwa_before,
        ssm_after.saturating_sub(ssm_before)
    );

    assert_eq!(
        ssm_after, ssm_before,
        "SSM calls must not grow with the request rate"
    );
    assert_eq!(
        lwa.calls(),
        lwa_before,
        "LWA exchanges must not grow with the request rate"
    );
    drop(moto);
}

async fn seed(endpoint: &str) {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(lwa_agent::net::aws_http_client())
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
