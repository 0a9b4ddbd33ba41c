//! `lwa-agent run`: start-up order, signals and shutdown (docs/how-it-works.md): the
//! token core, the rotation beside it, and the socket, wired together here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::agent::{About, Agent};
use crate::config::Config;
use crate::lwa::exchange::LwaClient;
use crate::lwa::parameters::ParameterStore;
use crate::lwa::{self, CredentialSlot};
use crate::metrics::Metrics;
use crate::rotation::service::Rotation;
use crate::{aws, socket, systemd};

/// How long start-up waits for the first tokens before declaring READY anyway; later
/// requests get 503 + Retry-After until the tokens arrive.
const FIRST_TOKENS_WAIT: Duration = Duration::from_secs(20);

pub async fn run(config: Config) -> Result<(), String> {
    // Handlers first: a SIGTERM at any point from here on is a clean stop (exit 0).
    let mut signals = Signals::install()?;
    // The socket first: a second agent must fail before it touches AWS, and with socket
    // activation clients already queue on it.
    let bound = socket::listen(&config.socket)?;
    let listener = tokio::net::UnixListener::from_std(bound.listener)
        .map_err(|e| format!("cannot use the socket: {e}"))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.file.display(),
        socket = %bound
            .owned_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "passed by systemd".into()),
        credentials = config.credentials.len(),
        "lwa-agent starting"
    );

    let (sdk, aws_source) = aws::connect(&config.aws).await?;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let names: Vec<&str> = config.credentials.iter().map(|c| c.name.as_str()).collect();
    let metrics = Arc::new(Metrics::new(names));
    let params = ParameterStore::new(config.credential_parameters());
    let lwa = Arc::new(LwaClient::new(&config.lwa)?);
    let timing = lwa::Timing::of(&config.lwa);

    tokio::spawn(
        params
            .clone()
            .run(ssm, config.ssm.refresh_interval, metrics.clone()),
    );
    let slots: Vec<Arc<CredentialSlot>> = config
        .credentials
        .iter()
        .map(|c| CredentialSlot::new(c.clone()))
        .collect();
    for slot in &slots {
        tokio::spawn(
            slot.clone()
                .run(lwa.clone(), params.clone(), timing, metrics.clone()),
        );
    }
    let certificate_expiry = aws_source.certificate_expiry();
    let about = About::now(config.file.clone(), config.aws.region.clone(), aws_source);
    // Beside the token core: the rotation check and the automatic rotation, which the
    // core knows only as a view for status and metrics.
    let rotation = Rotation::start(
        &config,
        &sdk,
        lwa,
        params.clone(),
        metrics.clone(),
        certificate_expiry,
    )
    .await?;
    let agent = Arc::new(Agent::new(
        about,
        params,
        slots,
        metrics,
        timing.request_wait,
        vec![rotation],
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(socket::server::serve(listener, agent.clone(), shutdown_rx));

    let stopped_early = tokio::select! {
        _ = wait_for_first_tokens(&agent) => false,
        _ = signals.stop() => true,
    };
    if !stopped_early {
        systemd::ready(&agent.summary());
        tracing::info!(status = %agent.summary(), "lwa-agent ready");
        if let Some(interval) = systemd::watchdog_interval() {
            tokio::spawn(systemd::watchdog(interval));
        }
        tokio::spawn(report_status(agent.clone()));
        while let Signal::Reload = signals.next().await {
            tracing::info!("SIGHUP: re-reading the parameters from SSM");
            systemd::reloading();
            // In a task, so that a SIGTERM during a slow reload still stops at once.
            let agent = agent.clone();
            tokio::spawn(async move {
                if let Err(e) = agent.parameters().reload_now(Duration::from_secs(30)).await {
                    tracing::warn!(error = %e, "reload on SIGHUP failed; keeping what was read before");
                }
                systemd::ready(&agent.summary());
            });
        }
    }

    tracing::info!("stopping: no new connections, finishing answers in flight");
    systemd::stopping();
    let _ = shutdown_tx.send(true);
    let _ = server.await;
    if let Some(path) = &bound.owned_path {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("lwa-agent stopped");
    Ok(())
}

async fn wait_for_first_tokens(agent: &Agent) {
    let deadline = Instant::now() + FIRST_TOKENS_WAIT;
    for slot in agent.slots() {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = slot.get(left).await;
    }
}

enum Signal {
    Reload,
    Stop,
}

/// SIGHUP reloads; SIGTERM and SIGINT stop.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, String> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot handle {name}: {e}"))
        };
        Ok(Signals {
            hup: install(SignalKind::hangup(), "SIGHUP")?,
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
        }
    }

    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Keeps systemd's STATUS= line current.
async fn report_status(agent: Arc<Agent>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = agent.summary();
        if now != last {
            systemd::status(&now);
            last = now;
        }
    }
}
