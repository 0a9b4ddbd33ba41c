//! LWA access tokens: the exchange with the token endpoint, and one cache slot per
//! credential with a background refresher.
//!
//! Single flight by construction: the refresher task is the *only* code that calls LWA for
//! a credential. Requests never exchange; they read the slot and, on a cold or expired
//! token, wait for the refresher's next result. So the LWA call count depends on token
//! lifetimes and failures, never on the request rate.

pub mod app_management;
pub mod exchange;
pub mod served;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::CredentialConfig;
use crate::metrics::Metrics;
use crate::parameters::{ParameterStore, Snapshot};
use exchange::{ExchangeError, LwaClient, Token};
use served::Served;

/// A token with less life than this is not handed out: the caller could not use it.
pub const MIN_LIFETIME: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct TokenState {
    pub token: Option<Arc<Token>>,
    /// The refresher is exchanging (or about to): waiting callers will get its result.
    pub fetching: bool,
    pub last_error: Option<String>,
    /// LWA rejected the credentials even after a parameter re-read.
    pub failed: bool,
    pub retry_at: Option<Instant>,
    pub last_refresh: Option<SystemTime>,
    pub exchanges_ok: u64,
    pub exchanges_failed: u64,
}

impl TokenState {
    fn usable(&self, now: Instant) -> Option<&Arc<Token>> {
        self.token
            .as_ref()
            .filter(|t| t.expires_at > now + MIN_LIFETIME)
    }
}

/// Why a token cannot be served right now, and when to ask again.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub reason: String,
    pub retry_after: Duration,
}

pub struct CredentialSlot {
    pub config: CredentialConfig,
    state: watch::Sender<TokenState>,
    /// The current token as the socket serves it. Invariant: stored before the same token
    /// enters `state`, so whoever sees a usable token in `state` finds it here too. Read
    /// without a lock or a shared reference count on every request.
    served: ArcSwapOption<Served>,
}

impl CredentialSlot {
    pub fn new(config: CredentialConfig) -> Arc<Self> {
        Arc::new(CredentialSlot {
            config,
            state: watch::Sender::new(TokenState {
                fetching: true,
                ..TokenState::default()
            }),
            served: ArcSwapOption::empty(),
        })
    }

    pub fn state(&self) -> watch::Ref<'_, TokenState> {
        self.state.borrow()
    }

    /// The hot path: a read lock and an `Arc` clone.
    pub fn cached(&self, now: Instant) -> Option<Arc<Token>> {
        self.state.borrow().usable(now).cloned()
    }

    /// The hot path: `f` on the served form of a usable token, if there is one.
    pub fn with_served<R>(&self, now: Instant, f: impl FnOnce(&Served) -> R) -> Option<R> {
        let served = self.served.load();
        served.as_deref().filter(|s| s.usable(now)).map(f)
    }

    /// A usable token, waiting up to `wait` for an exchange in flight.
    pub async fn get(&self, wait: Duration) -> Result<Arc<Served>, Unavailable> {
        let usable = |now| self.served.load_full().filter(|s| s.usable(now));
        if let Some(t) = usable(Instant::now()) {
            return Ok(t);
        }
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(
            wait,
            rx.wait_for(|s| s.usable(Instant::now()).is_some() || !s.fetching),
        )
        .await;
        let now = Instant::now();
        if let Some(t) = usable(now) {
            return Ok(t);
        }
        let s = self.state.borrow();
        let retry_after = s
            .retry_at
            .map(|at| at.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        Err(Unavailable {
            reason: match (&s.last_error, &s.token) {
                (Some(e), _) => e.clone(),
                (None, Some(_)) => {
                    "the cached token has expired and its refresh with LWA is in progress".into()
                }
                (None, None) => {
                    "no access token yet: the first exchange with LWA is in progress".into()
                }
            },
            retry_after,
        })
    }

    /// Keeps this credential's token fresh until the agent stops.
    pub async fn run(
        self: Arc<Self>,
        lwa: Arc<LwaClient>,
        params: Arc<ParameterStore>,
        refresh_before: Duration,
        reload_wait: Duration,
        metrics: Arc<Metrics>,
    ) {
        let name = self.config.name.clone();
        let mut transient = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        // Rejected credentials will not start working by retrying quickly: the refresher
        // also wakes at once when the parameters change.
        let mut rejected = Backoff::new(Duration::from_secs(30), Duration::from_secs(900));
        let mut params_rx = params.subscribe();
        // The first exchange needs the first SSM read; until it is done, requests wait
        // (the slot starts as `fetching`) rather than get a "not read yet" 503.
        let _ = params_rx.wait_for(|s| s.reads_finished > 0).await;
        loop {
            self.state.send_modify(|s| s.fetching = true);
            let outcome = self.refresh_once(&lwa, &params, reload_wait).await;
            let now = Instant::now();
            match outcome {
                Ok((token, used)) => {
                    metrics.exchange(&name, "ok");
                    transient.reset();
                    rejected.reset();
                    let lifetime = token.expires_at.saturating_duration_since(now);
                    let next = lifetime.saturating_sub(refresh_before.min(lifetime / 2));
                    tracing::info!(
                        credential = %name,
                        expires_in = lifetime.as_secs(),
                        "access token refreshed"
                    );
                    // Before `state`: see the invariant on `served`.
                    self.served
                        .store(Some(Arc::new(Served::new(&token, &self.config.name))));
                    self.state.send_modify(|s| {
                        s.token = Some(Arc::new(token));
                        s.fetching = false;
                        s.failed = false;
                        s.last_error = None;
                        s.retry_at = None;
                        s.last_refresh = Some(SystemTime::now());
                        s.exchanges_ok += 1;
                    });
                    // Sleep until the refresh point, or exchange at once when one of this
                    // credential's parameters gets a new version (a rotated secret, or
                    // `put-secret`), so the served token always comes from the newest one.
                    let config = &self.config;
                    tokio::select! {
                        _ = tokio::time::sleep(next.max(Duration::from_secs(1))) => {}
                        _ = params_rx.wait_for(|s| fingerprint(s, config) != used) => {
                            tracing::info!(credential = %name, "parameters changed in SSM; exchanging with the new version");
                        }
                    }
                }
                Err(failure) => {
                    let (message, delay, failed) = match &failure {
                        Failure::Parameters(m) => (m.clone(), transient.next_delay(), false),
                        Failure::Exchange(e) => {
                            metrics.exchange(&name, e.kind());
                            let delay = match e {
                                ExchangeError::Throttled {
                                    retry_after: Some(after),
                                } => (*after).max(transient.next_delay()),
                                ExchangeError::Auth { .. } | ExchangeError::Rejected { .. } => {
                                    rejected.next_delay()
                                }
                                _ => transient.next_delay(),
                            };
                            (e.to_string(), delay, e.is_auth())
                        }
                    };
                    let serving = self.state.borrow().usable(now).is_some();
                    tracing::error!(
                        credential = %name,
                        error = %message,
                        retry_in_ms = delay.as_millis() as u64,
                        still_serving_cached_token = serving,
                        "cannot refresh the access token"
                    );
                    self.state.send_modify(|s| {
                        s.fetching = false;
                        s.failed = failed;
                        s.last_error = Some(message);
                        s.retry_at = Some(now + delay);
                        if matches!(failure, Failure::Exchange(_)) {
                            s.exchanges_failed += 1;
                        }
                    });
                    // Try again after the backoff, or as soon as this credential's
                    // parameters change (a fixed or rotated secret, a created parameter).
                    let seen = fingerprint(&params_rx.borrow_and_update(), &self.config);
                    let config = &self.config;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = params_rx.wait_for(|s| fingerprint(s, config) != seen) => {}
                    }
                }
            }
        }
    }

    async fn refresh_once(
        &self,
        lwa: &LwaClient,
        params: &ParameterStore,
        reload_wait: Duration,
    ) -> Result<(Token, Vec<Option<i64>>), Failure> {
        let (grant, versions) = params.grant(&self.config).map_err(Failure::Parameters)?;
        let used = |v: Vec<i64>| v.into_iter().map(Some).collect::<Vec<_>>();
        match lwa.exchange(&grant).await {
            Err(e) if e.is_auth() => {
                tracing::warn!(
                    credential = %self.config.name,
                    error = %e,
                    "LWA rejected the credentials; re-reading the parameters from SSM and \
                     retrying once (the client secret may have been rotated)"
                );
                if let Err(reload) = params.reload_now(reload_wait).await {
                    tracing::warn!(error = %reload, "parameter re-read failed");
                }
                let (grant, versions) = params.grant(&self.config).map_err(Failure::Parameters)?;
                let token = lwa.exchange(&grant).await.map_err(Failure::Exchange)?;
                Ok((token, used(versions)))
            }
            Ok(token) => Ok((token, used(versions))),
            Err(e) => Err(Failure::Exchange(e)),
        }
    }
}

enum Failure {
    Parameters(String),
    Exchange(ExchangeError),
}

/// The versions of a credential's parameters (None = not read), to notice a change.
fn fingerprint(snap: &Snapshot, cred: &CredentialConfig) -> Vec<Option<i64>> {
    cred.parameters()
        .map(|p| snap.values.get(p).map(|v| v.version))
        .collect()
}
