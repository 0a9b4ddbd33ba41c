//! LWA access tokens: the exchange with the token endpoint, and one cache slot per
//! credential with a background refresher.
//!
//! Single flight by construction: the refresher task is the *only* code that calls LWA for
//! a credential. Requests never exchange; they read the slot and, on a cold or expired
//! token, wait for the refresher's next result. So the LWA call count depends on token
//! lifetimes and failures, never on the request rate.

pub mod exchange;
pub mod grant;
pub mod parameters;
pub mod served;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{CredentialConfig, LwaConfig};
use crate::metrics::Metrics;
use exchange::{ExchangeError, LwaClient, Token, MIN_LIFETIME};
use parameters::{ParameterStore, Snapshot};
use served::Served;

/// When the refresher exchanges, and how long waiting callers give it: all derived from
/// `[lwa]` here, in one place.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Refresh this long before expiry: early enough that the exchange (up to
    /// `lwa.timeout`) ends before the token drops below [`MIN_LIFETIME`].
    pub refresh_before: Duration,
    /// How long a refresher waits for the SSM re-read after LWA rejected the credentials.
    pub reload_wait: Duration,
    /// How long a request waits for an exchange in flight before it gets a 503.
    pub request_wait: Duration,
}

impl Timing {
    pub fn of(cfg: &LwaConfig) -> Timing {
        Timing {
            refresh_before: cfg.refresh_before_expiry.max(MIN_LIFETIME + cfg.timeout),
            reload_wait: cfg.timeout + Duration::from_secs(10),
            request_wait: cfg.timeout + Duration::from_secs(2),
        }
    }
}

/// The refresher's own state: how its exchanges went. The token itself is not here: it
/// is the slot's `current` answer.
#[derive(Default)]
pub struct RefreshState {
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

/// Why a token cannot be served right now, and when to ask again.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub reason: String,
    pub retry_after: Duration,
}

pub struct CredentialSlot {
    pub config: CredentialConfig,
    /// The current token, in the form the socket serves it: the only copy. Read without a
    /// lock or a shared reference count on every request.
    current: ArcSwapOption<Served>,
    /// Invariant: the refresher stores a new token in `current` before it marks the
    /// exchange done here, so whoever wakes on a change here finds the token there.
    refresh: watch::Sender<RefreshState>,
}

impl CredentialSlot {
    pub fn new(config: CredentialConfig) -> Arc<Self> {
        Arc::new(CredentialSlot {
            config,
            current: ArcSwapOption::empty(),
            refresh: watch::Sender::new(RefreshState {
                fetching: true,
                ..RefreshState::default()
            }),
        })
    }

    pub fn refresh_state(&self) -> watch::Ref<'_, RefreshState> {
        self.refresh.borrow()
    }

    /// The current token if it may still be handed out.
    pub fn current(&self, now: Instant) -> Option<Arc<Served>> {
        self.current.load_full().filter(|s| s.usable(now))
    }

    /// The hot path: `f` on the current token if it may still be handed out, without
    /// touching its reference count.
    pub fn with_current<R>(&self, now: Instant, f: impl FnOnce(&Served) -> R) -> Option<R> {
        let current = self.current.load();
        current.as_deref().filter(|s| s.usable(now)).map(f)
    }

    /// A usable token, waiting up to `wait` for an exchange in flight.
    pub async fn get(&self, wait: Duration) -> Result<Arc<Served>, Unavailable> {
        if let Some(t) = self.current(Instant::now()) {
            return Ok(t);
        }
        let mut rx = self.refresh.subscribe();
        let _ = tokio::time::timeout(
            wait,
            rx.wait_for(|s| !s.fetching || self.current(Instant::now()).is_some()),
        )
        .await;
        let now = Instant::now();
        if let Some(t) = self.current(now) {
            return Ok(t);
        }
        let s = self.refresh.borrow();
        let retry_after = s
            .retry_at
            .map(|at| at.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        let had_one = self.current.load().is_some();
        Err(Unavailable {
            reason: match (&s.last_error, had_one) {
                (Some(e), _) => e.clone(),
                (None, true) => {
                    "the cached token has expired and its refresh with LWA is in progress".into()
                }
                (None, false) => {
                    "no access token yet: the first exchange with LWA is in progress".into()
                }
            },
            retry_after,
        })
    }

    /// This credential's entry in `/v1/status`: its token (never the token itself) and
    /// how its exchanges went.
    pub fn status(&self, now: Instant) -> serde_json::Value {
        let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let token = self.current.load_full().map(|t| {
            serde_json::json!({
                "expires_at": rfc3339(t.expires_at_wall),
                "seconds_left": t.seconds_left(now),
                "valid": t.usable(now),
            })
        });
        let s = self.refresh.borrow();
        let grant = if self.config.refresh_token_parameter.is_some() {
            "refresh_token"
        } else {
            "client_credentials"
        };
        serde_json::json!({
            "grant": grant,
            "token": token,
            "last_refresh": s.last_refresh.map(rfc3339),
            "last_error": s.last_error,
            "failed": s.failed,
            "retry_in_seconds": s.retry_at.map(|at| at.saturating_duration_since(now).as_secs()),
            "exchanges_ok": s.exchanges_ok,
            "exchanges_failed": s.exchanges_failed,
        })
    }

    /// Keeps this credential's token fresh until the agent stops.
    pub async fn run(
        self: Arc<Self>,
        lwa: Arc<LwaClient>,
        params: Arc<ParameterStore>,
        timing: Timing,
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
            self.refresh.send_modify(|s| s.fetching = true);
            let outcome = self.refresh_once(&lwa, &params, timing.reload_wait).await;
            let now = Instant::now();
            match outcome {
                Ok((token, used)) => {
                    metrics.exchange(&name, "ok");
                    transient.reset();
                    rejected.reset();
                    let lifetime = token.expires_at.saturating_duration_since(now);
                    let next = lifetime.saturating_sub(timing.refresh_before.min(lifetime / 2));
                    tracing::info!(
                        credential = %name,
                        expires_in = lifetime.as_secs(),
                        "access token refreshed"
                    );
                    // Before `refresh`: see the invariant there. The exchange's copy of the
                    // token is dropped (and wiped) here.
                    self.current
                        .store(Some(Arc::new(Served::new(&token, &self.config.name))));
                    drop(token);
                    self.refresh.send_modify(|s| {
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
                    let serving = self.current(now).is_some();
                    tracing::error!(
                        credential = %name,
                        error = %message,
                        retry_in_ms = delay.as_millis() as u64,
                        still_serving_cached_token = serving,
                        "cannot refresh the access token"
                    );
                    self.refresh.send_modify(|s| {
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
