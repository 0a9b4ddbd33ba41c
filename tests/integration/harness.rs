//! The test world: a real moto_server, the LWA test endpoint, SSM seeded through the AWS
//! SDK, and the agent binary as a child process on a temp socket.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use lwa_agent_testservers::lwa::{FakeLwa, Mode, Settings};
use lwa_agent_testservers::moto::Moto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const CLIENT_ID: &str = "amzn1.application-oa2-client.test0123456789";
pub const REGION: &str = "us-east-2";

/// Canary secrets: unique per world, so a leak is unmistakable wherever it shows up.
pub struct Canaries {
    pub client_secret: String,
    pub refresh_token: String,
}

impl Canaries {
    fn new() -> Self {
        let n = fastrand::u64(..);
        Canaries {
            client_secret: format!("amzn1.oa2-cs.v1.CANARYSECRET{n:016x}"),
            refresh_token: format!("Atzr|CANARYREFRESH{n:016x}"),
        }
    }

    /// Panics if `text` (named `what`) contains a secret.
    pub fn assert_absent(&self, what: &str, text: &str) {
        for secret in [&self.client_secret, &self.refresh_token] {
            assert!(
                !text.contains(secret.as_str()),
                "{what} contains a secret canary"
            );
        }
        assert!(
            !text.contains("CANARYSECRET") && !text.contains("CANARYREFRESH"),
            "{what} contains part of a secret canary"
        );
    }
}

/// Text added to sections of the generated config.
#[derive(Default)]
pub struct Parts<'a> {
    pub lwa: &'a str,
    pub ssm: &'a str,
    pub credential: &'a str,
    pub socket: &'a str,
    pub extra: &'a str,
}

pub struct World {
    pub moto: Option<Moto>,
    pub moto_port: u16,
    pub lwa: FakeLwa,
    pub dir: tempfile::TempDir,
    pub canaries: Canaries,
}

pub const ID_PARAM: &str = "/erp/lwa/clientidentifier";
pub const SECRET_PARAM: &str = "/erp/lwa/clientsecret";
pub const REFRESH_PARAM: &str = "/erp/lwa/refreshtoken";

impl World {
    /// moto running and seeded with one credential; LWA accepting it.
    pub async fn new() -> World {
        let mut world = Self::without_moto().await;
        // A port of its own choosing: moto retries on another if a test server took it.
        let moto = Moto::start();
        world.moto_port = moto.port;
        world.moto = Some(moto);
        world.seed().await;
        world
    }

    /// Nothing listens on the moto port yet (SSM unreachable).
    pub async fn without_moto() -> World {
        let canaries = Canaries::new();
        let lwa = FakeLwa::start(Settings {
            client_id: CLIENT_ID.into(),
            client_secrets: vec![canaries.client_secret.clone()],
            refresh_tokens: vec![canaries.refresh_token.clone()],
            scopes: vec!["sellingpartnerapi::notifications".into()],
            expires_in: 3600,
            mode: Mode::Normal,
            delay: Duration::ZERO,
        })
        .await
        .expect("LWA test endpoint starts");
        World {
            moto: None,
            moto_port: lwa_agent_testservers::moto::free_port(),
            lwa,
            dir: tempfile::tempdir().expect("temp dir"),
            canaries,
        }
    }

    pub async fn start_moto(mut self) -> World {
        self.moto = Some(Moto::start_on(self.moto_port));
        self.seed().await;
        self
    }

    pub async fn seed(&self) {
        self.put(ID_PARAM, CLIENT_ID).await;
        self.put(SECRET_PARAM, &self.canaries.client_secret).await;
        self.put(REFRESH_PARAM, &self.canaries.refresh_token).await;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.moto_port)
    }

    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk().await)
    }

    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            // The SDK crates are built without a default HTTPS client: the agent's own.
            .http_client(lwa_agent::net::aws_http_client())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await
    }

    /// Creates or overwrites a SecureString; returns its new version.
    pub async fn put(&self, name: &str, value: &str) -> i64 {
        self.ssm()
            .await
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "seeding {name}: {}",
                    aws_sdk_ssm::error::DisplayErrorContext(e)
                )
            })
            .version
    }

    /// A parameter's decrypted value and version, as SSM holds it now.
    pub async fn read(&self, name: &str) -> (String, i64) {
        let p = self
            .ssm()
            .await
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "reading {name}: {}",
                    aws_sdk_ssm::error::DisplayErrorContext(e)
                )
            })
            .parameter
            .unwrap_or_else(|| panic!("SSM answered no parameter for {name}"));
        (p.value.unwrap_or_default(), p.version)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// A config for this world; `lwa_extra` goes into [lwa], `extra` at the end (more
    /// tables, e.g. [[credentials]] or [rotation]).
    pub fn config(&self, lwa_extra: &str, extra: &str) -> String {
        self.config_parts(&Parts {
            lwa: lwa_extra,
            extra,
            ..Parts::default()
        })
    }

    pub fn config_parts(&self, p: &Parts) -> String {
        format!(
            r#"
[aws]
region = "{REGION}"
endpoint_url = "{endpoint}"

[lwa]
token_url = "{lwa}"
timeout = "3s"
{lwa_extra}

[ssm]
{ssm_extra}

[[credentials]]
name = "default"
client_id_parameter = "{ID_PARAM}"
client_secret_parameter = "{SECRET_PARAM}"
refresh_token_parameter = "{REFRESH_PARAM}"
{credential_extra}

[socket]
path = "{socket}"
{socket_extra}

[log]
level = "info,lwa_agent=debug"
format = "text"
{extra}
"#,
            endpoint = self.endpoint(),
            lwa = self.lwa.url(),
            socket = self.socket().display(),
            lwa_extra = p.lwa,
            ssm_extra = p.ssm,
            credential_extra = p.credential,
            socket_extra = p.socket,
            extra = p.extra,
        )
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("lwa-agent.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts the agent with `config` and waits until its socket answers.
    pub async fn agent(&self, config: &str) -> AgentProc {
        let agent = self.spawn_agent(config, &[]);
        agent.wait_listening().await;
        agent
    }

    pub fn spawn_agent(&self, config: &str, env: &[(&str, &str)]) -> AgentProc {
        let path = self.write_config(config);
        let mut cmd = agent_command();
        cmd.arg("--config").arg(&path).arg("run");
        for (k, v) in env {
            cmd.env(k, v);
        }
        AgentProc::spawn(cmd, self.socket())
    }
}

/// The agent binary with a clean environment: static AWS test keys, no instance metadata
/// lookups (nothing may leave loopback), no inherited LWA_AGENT_* overrides.
/// Asks `check` every 200 ms until it answers `Some`, for at most `secs`, then fails with
/// `why()`, which says what was seen instead. Every wait of the tests is one of these.
pub async fn eventually<T, Fut>(
    secs: u64,
    mut check: impl FnMut() -> Fut,
    why: impl FnOnce() -> String,
) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        if Instant::now() >= deadline {
            panic!("{}", why());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn agent_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lwa-agent"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    cmd
}

pub struct AgentProc {
    pub child: Child,
    pub socket: PathBuf,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Reads stderr until EOF; joined after exit so that `logs()` is complete.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl AgentProc {
    pub fn spawn(mut cmd: Command, socket: PathBuf) -> AgentProc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("agent binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("log lock").extend_from_slice(&buf[..n]);
            }
        });
        AgentProc {
            child,
            socket,
            stderr,
            reader: Some(reader),
        }
    }

    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("log lock")).into_owned()
    }

    /// Waits until the agent's log has `needle`; returns the log then.
    pub async fn wait_log(&self, needle: &str, secs: u64) -> String {
        eventually(
            secs,
            || async { Some(self.logs()).filter(|l| l.contains(needle)) },
            || format!("no `{needle}` in the log in {secs}s:\n{}", self.logs()),
        )
        .await
    }

    pub async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "agent never listened on {}; logs:\n{}",
            self.socket.display(),
            self.logs()
        );
    }

    pub async fn get(&self, path: &str) -> Resp {
        request(&self.socket, "GET", path, &[]).await
    }

    /// Polls `path` until `done` holds, or panics with the agent's logs.
    pub async fn wait_for(&self, path: &str, secs: u64, done: impl Fn(&Resp) -> bool) -> Resp {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.get(path).await;
            if done(&r) {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "GET {path} never got there in {secs}s; last: {} {}\nlogs:\n{}",
                    r.status,
                    r.body,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal the agent");
    }

    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() > deadline {
                panic!("agent did not exit in {secs}s; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
pub async fn request(socket: &Path, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let raw = raw(socket, head.as_bytes()).await;
    parse(&raw).unwrap_or_else(|| panic!("unparsable answer to {method} {path}: {raw:?}"))
}

/// Sends `bytes` and returns whatever comes back before the agent closes.
pub async fn raw(socket: &Path, bytes: &[u8]) -> String {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.write_all(bytes).await.expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(raw: &str) -> Option<Resp> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: body.to_string(),
    })
}

impl World {
    /// An SNS topic with an SQS queue subscribed, so the test can read what was published.
    pub async fn topic_with_queue(&self, name: &str) -> (String, String) {
        let sdk = self.sdk().await;
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let topic = sns
            .create_topic()
            .name(name)
            .send()
            .await
            .expect("create topic")
            .topic_arn
            .expect("topic arn");
        let queue = sqs
            .create_queue()
            .queue_name(format!("{name}-q"))
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .expect("queue arn");
        sns.subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(arn)
            .send()
            .await
            .expect("subscribe");
        (topic, queue)
    }

    /// Every SNS envelope in the queue, waiting until `at_least` arrived (or `secs` passed)
    /// and then once more briefly, so that extra messages are seen too.
    pub async fn messages(
        &self,
        queue: &str,
        at_least: usize,
        secs: u64,
    ) -> Vec<serde_json::Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk().await);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut extra_round = false;
        loop {
            let out = sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            for m in out.messages.unwrap_or_default() {
                got.push(serde_json::from_str(m.body().unwrap_or("{}")).expect("SNS envelope"));
                if let Some(h) = m.receipt_handle() {
                    let _ = sqs
                        .delete_message()
                        .queue_url(queue)
                        .receipt_handle(h)
                        .send()
                        .await;
                }
            }
            if got.len() >= at_least {
                if extra_round {
                    return got;
                }
                extra_round = true;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
