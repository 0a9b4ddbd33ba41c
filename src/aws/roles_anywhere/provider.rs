//! The AWS credentials provider backed by IAM Roles Anywhere: one cached session, refreshed
//! in the background well before it expires, with one CreateSession in flight at a time
//! and capped exponential backoff after failures.
//!
//! Every AWS client the agent builds asks this provider (through the SDK's own cache), so a
//! failure here shows up as failed SSM reads: tokens answer 503 once the cached ones run
//! out, and `/v1/status` carries the reason in `aws.last_error`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;
use serde_json::{json, Value};

use super::pki::{self, CertificateInfo, Identity};
use super::session::{self, ErrorKind, Session};
use crate::backoff::Backoff;
use crate::config::RolesAnywhereConfig;

/// Credentials this close to expiry are not handed out any more.
const MIN_VALIDITY: Duration = Duration::from_secs(5);
/// The background task re-checks at least this often, so a changed wall clock cannot make
/// it oversleep a refresh.
const MAX_SLEEP: Duration = Duration::from_secs(300);

/// When to replace a session: at 80% of its lifetime or 5 minutes before it expires,
/// whichever comes first, but never before half of it has passed (a very short session
/// would otherwise be refreshed in a loop).
pub fn refresh_at(received: SystemTime, expires: SystemTime) -> SystemTime {
    let lifetime = expires.duration_since(received).unwrap_or(Duration::ZERO);
    let at_80 = lifetime.mul_f64(0.8);
    let five_before = lifetime.saturating_sub(Duration::from_secs(300));
    received + at_80.min(five_before).max(lifetime / 2)
}

#[derive(Clone)]
pub struct RolesAnywhereProvider {
    inner: Arc<Inner>,
}

struct Inner {
    config: RolesAnywhereConfig,
    region: String,
    url: reqwest::Url,
    identity: Identity,
    http: reqwest::Client,
    state: Mutex<State>,
    /// Held while a CreateSession is in flight: concurrent callers queue here and then find
    /// the session the first one got.
    flight: tokio::sync::Mutex<()>,
}

struct State {
    session: Option<Session>,
    refresh_at: Option<SystemTime>,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    retry_at: Option<SystemTime>,
    backoff: Backoff,
    sessions_created: u64,
    failures: u64,
}

impl fmt::Debug for RolesAnywhereProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolesAnywhereProvider")
            .field("role_arn", &self.inner.config.role_arn)
            .field("endpoint", &self.inner.url.as_str())
            .field("identity", &self.inner.identity)
            .finish()
    }
}

/// The region Roles Anywhere is called in: the trust anchor's (its resources are regional),
/// else `aws.region`.
fn region_of(cfg: &RolesAnywhereConfig, aws_region: &str) -> String {
    cfg.trust_anchor_arn
        .split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .unwrap_or(aws_region)
        .to_string()
}

/// The endpoint: the config's, else `AWS_ENDPOINT_URL_ROLESANYWHERE` (the AWS SDKs'
/// service-specific endpoint variable, which this hand-written client honours like the
/// SDK's clients do theirs), else the region's.
fn sessions_url(cfg: &RolesAnywhereConfig, region: &str) -> Result<reqwest::Url, String> {
    let base = cfg
        .endpoint_url
        .clone()
        .or_else(|| {
            std::env::var("AWS_ENDPOINT_URL_ROLESANYWHERE")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| format!("https://rolesanywhere.{region}.amazonaws.com"));
    let mut url = reqwest::Url::parse(&base)
        .map_err(|e| format!("aws.roles_anywhere.endpoint_url `{base}` is not a URL ({e})"))?;
    url.path_segments_mut()
        .map_err(|_| format!("aws.roles_anywhere.endpoint_url `{base}` cannot take a path"))?
        .pop_if_empty()
        .push("sessions");
    Ok(url)
}

impl RolesAnywhereProvider {
    /// Reads and checks the certificate and key and prepares the client; does not call AWS.
    pub fn new(cfg: &RolesAnywhereConfig, aws_region: &str) -> Result<Self, String> {
        let identity = pki::load(cfg, SystemTime::now()).map_err(|problems| {
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        Self::with_identity(cfg, aws_region, identity)
    }

    pub fn with_identity(
        cfg: &RolesAnywhereConfig,
        aws_region: &str,
        identity: Identity,
    ) -> Result<Self, String> {
        let region = region_of(cfg, aws_region);
        let url = sessions_url(cfg, &region)?;
        let http = crate::net::build_client(
            crate::net::client_builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10)),
            "Roles Anywhere",
        )?;
        Ok(RolesAnywhereProvider {
            inner: Arc::new(Inner {
                config: cfg.clone(),
                region,
                url,
                identity,
                http,
                state: Mutex::new(State {
                    session: None,
                    refresh_at: None,
                    last_success: None,
                    last_error: None,
                    retry_at: None,
                    backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(120)),
                    sessions_created: 0,
                    failures: 0,
                }),
                flight: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Starts the background refresher: the first session now, then each one before the
    /// last expires, and retries with backoff. It stops when the provider is dropped.
    pub fn start(&self) {
        let now = SystemTime::now();
        let cert = &self.inner.identity.certificate;
        if let Some(warning) = cert.expiry_warning(now) {
            tracing::warn!(
                certificate = %self.inner.identity.certificate_file.display(),
                subject = %cert.subject,
                serial = %cert.serial,
                "{warning}"
            );
        }
        tracing::info!(
            endpoint = %self.inner.url,
            role = %self.inner.config.role_arn,
            subject = %cert.subject,
            serial = %cert.serial,
            not_after = %humantime::format_rfc3339_seconds(cert.not_after),
            "AWS credentials from IAM Roles Anywhere"
        );
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let wait = {
                    let Some(inner) = weak.upgrade() else { return };
                    let provider = RolesAnywhereProvider { inner };
                    provider.refresh_if_due().await;
                    provider.next_wake(SystemTime::now())
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Shorter retry delays, so that tests of the failure paths finish quickly.
    #[cfg(test)]
    pub(crate) fn set_backoff(&self, backoff: Backoff) {
        self.state().backoff = backoff;
    }

    pub fn certificate(&self) -> &CertificateInfo {
        &self.inner.identity.certificate
    }

    pub fn config(&self) -> &RolesAnywhereConfig {
        &self.inner.config
    }

    pub fn endpoint(&self) -> &reqwest::Url {
        &self.inner.url
    }

    /// When the current session expires, if there is one.
    pub fn session_expires_at(&self) -> Option<SystemTime> {
        self.state().session.as_ref().map(|s| s.expires_at)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent (every update
        // is a plain assignment), so a poisoned lock is used as is.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached credentials while they need no refresh yet.
    fn fresh(&self, now: SystemTime) -> Option<Credentials> {
        let st = self.state();
        match (&st.session, st.refresh_at) {
            (Some(s), Some(at)) if now < at => Some(s.credentials.clone()),
            _ => None,
        }
    }

    /// The cached credentials while they are still valid, refresh due or not.
    fn usable(st: &State, now: SystemTime) -> Option<Credentials> {
        st.session
            .as_ref()
            .filter(|s| s.expires_at > now + MIN_VALIDITY)
            .map(|s| s.credentials.clone())
    }

    /// The credentials for an AWS call: cached, or from a CreateSession that this call
    /// starts or joins. Inside a backoff window after a failure it answers at once (still
    /// valid credentials, else the last error) instead of calling AWS again.
    pub async fn credentials(&self) -> Result<Credentials, String> {
        if let Some(c) = self.fresh(SystemTime::now()) {
            return Ok(c);
        }
        let _flight = self.inner.flight.lock().await;
        let now = SystemTime::now();
        if let Some(c) = self.fresh(now) {
            return Ok(c);
        }
        {
            let st = self.state();
            if matches!(st.retry_at, Some(at) if now < at) {
                return Self::usable(&st, now).ok_or_else(|| {
                    st.last_error
                        .clone()
                        .unwrap_or_else(|| "IAM Roles Anywhere has no session yet".into())
                });
            }
        }
        self.refresh_locked().await
    }

    async fn refresh_if_due(&self) {
        let _flight = self.inner.flight.lock().await;
        let now = SystemTime::now();
        if self.fresh(now).is_some() || matches!(self.state().retry_at, Some(at) if now < at) {
            return;
        }
        let _ = self.refresh_locked().await;
    }

    /// Calls CreateSession; the caller holds `flight`.
    async fn refresh_locked(&self) -> Result<Credentials, String> {
        let inner = &self.inner;
        let result = session::create(
            &inner.http,
            &inner.url,
            &inner.region,
            &inner.config,
            &inner.identity,
        )
        .await;
        let now = SystemTime::now();
        let mut st = self.state();
        match result {
            Ok(session) => {
                let recovered = st.last_error.is_some();
                let at = refresh_at(session.received_at, session.expires_at);
                tracing::info!(
                    expires_at = %humantime::format_rfc3339_seconds(session.expires_at),
                    refresh_at = %humantime::format_rfc3339_seconds(at),
                    recovered,
                    "IAM Roles Anywhere session created"
                );
                let credentials = session.credentials.clone();
                st.session = Some(session);
                st.refresh_at = Some(at);
                st.last_success = Some(now);
                st.last_error = None;
                st.retry_at = None;
                st.backoff.reset();
                st.sessions_created += 1;
                Ok(credentials)
            }
            Err(e) => {
                let mut delay = st.backoff.next_delay();
                if let Some(after) = e.retry_after {
                    delay = delay.max(after.min(Duration::from_secs(300)));
                }
                let still_valid = Self::usable(&st, now);
                let valid_until = st
                    .session
                    .as_ref()
                    .filter(|_| still_valid.is_some())
                    .map(|s| humantime::format_rfc3339_seconds(s.expires_at).to_string());
                let retry_in_ms = delay.as_millis() as u64;
                match e.kind {
                    ErrorKind::Throttled | ErrorKind::Unavailable => tracing::warn!(
                        error = %e,
                        retry_in_ms,
                        current_session_valid_until = valid_until.as_deref().unwrap_or("none"),
                        "IAM Roles Anywhere CreateSession failed; retrying with backoff"
                    ),
                    ErrorKind::Denied | ErrorKind::Invalid | ErrorKind::Local => tracing::error!(
                        error = %e,
                        retry_in_ms,
                        current_session_valid_until = valid_until.as_deref().unwrap_or("none"),
                        "IAM Roles Anywhere refused CreateSession: no AWS credentials until this \
                         is fixed (SSM reads fail, tokens answer 503 once cached ones expire); \
                         retrying with backoff"
                    ),
                }
                st.last_error = Some(e.message.clone());
                st.retry_at = Some(now + delay);
                st.failures += 1;
                still_valid.ok_or(e.message)
            }
        }
    }

    /// How long the background task sleeps: until the refresh point or the retry time.
    fn next_wake(&self, now: SystemTime) -> Duration {
        let st = self.state();
        let target = match (st.retry_at, st.refresh_at) {
            (Some(retry), _) => Some(retry),
            (None, Some(refresh)) => Some(refresh),
            (None, None) => None,
        };
        target
            .and_then(|t| t.duration_since(now).ok())
            .unwrap_or(Duration::from_millis(200))
            .clamp(Duration::from_millis(200), MAX_SLEEP)
    }

    /// The `aws` object of `/v1/status` (the region is added by the caller).
    pub fn status(&self) -> Value {
        let now = SystemTime::now();
        let rfc = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let cert = &self.inner.identity.certificate;
        let st = self.state();
        let mut v = json!({
            "credential_source": session::PROVIDER_NAME,
            "session_expires_at": st.session.as_ref().map(|s| rfc(s.expires_at)),
            "session_refresh_at": st.refresh_at.map(rfc),
            "last_success": st.last_success.map(rfc),
            "last_error": st.last_error,
            "retry_in_seconds": st.retry_at.map(|t| t.duration_since(now).map(|d| d.as_secs()).unwrap_or(0)),
            "sessions_created": st.sessions_created,
            "session_failures": st.failures,
            "endpoint": self.inner.url.as_str(),
            "roles_anywhere_region": self.inner.region,
            "role_arn": self.inner.config.role_arn,
            "profile_arn": self.inner.config.profile_arn,
            "trust_anchor_arn": self.inner.config.trust_anchor_arn,
            "certificate_subject": cert.subject,
            "certificate_issuer": cert.issuer,
            "certificate_serial": cert.serial,
            "certificate_not_after": rfc(cert.not_after),
            "certificate_expires_in_days": cert.expires_in_days(now),
        });
        if let Some(warning) = cert.expiry_warning(now) {
            v["warning"] = warning.into();
        }
        v
    }
}

/// A Roles Anywhere failure as the SDK sees it.
#[derive(Debug)]
struct ProviderError(String);

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProviderError {}

impl ProvideCredentials for RolesAnywhereProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(|e| CredentialsError::provider_error(ProviderError(e)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn refresh_comes_at_80_percent_or_5_minutes_before_but_not_in_the_first_half() {
        // 1 h: 80% (48 min) comes before 55 min.
        assert_eq!(refresh_at(at(0), at(3600)), at(2880));
        // 15 min: 5 minutes before (10 min) comes before 80% (12 min).
        assert_eq!(refresh_at(at(0), at(900)), at(600));
        // 20 s: both rules say "now"; half the lifetime is the floor.
        assert_eq!(refresh_at(at(0), at(20)), at(10));
        assert_eq!(refresh_at(at(10), at(0)), at(10));
    }

    #[test]
    fn region_and_url_follow_the_trust_anchor_and_endpoint() {
        let mut cfg = RolesAnywhereConfig {
            certificate: String::new(),
            private_key: String::new(),
            certificate_chain: None,
            trust_anchor_arn: "arn:aws:rolesanywhere:eu-west-1:1:trust-anchor/t".into(),
            profile_arn: String::new(),
            role_arn: String::new(),
            session_duration: Duration::from_secs(3600),
            role_session_name: None,
            endpoint_url: None,
        };
        assert_eq!(region_of(&cfg, "us-east-2"), "eu-west-1");
        assert_eq!(
            sessions_url(&cfg, "eu-west-1").expect("url").as_str(),
            "https://rolesanywhere.eu-west-1.amazonaws.com/sessions"
        );
        cfg.endpoint_url = Some("http://127.0.0.1:9000/".into());
        assert_eq!(
            sessions_url(&cfg, "x").expect("url").as_str(),
            "http://127.0.0.1:9000/sessions"
        );
        cfg.endpoint_url = Some("https://vpce.example/ra".into());
        assert_eq!(
            sessions_url(&cfg, "x").expect("url").as_str(),
            "https://vpce.example/ra/sessions"
        );
        cfg.trust_anchor_arn = String::new();
        assert_eq!(region_of(&cfg, "us-east-2"), "us-east-2");
    }
}
