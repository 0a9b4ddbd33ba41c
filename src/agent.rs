//! The running agent's shared state: what the socket handlers, the status page and the
//! background tasks all look at.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::aws::CredentialSource;
use crate::config::Config;
use crate::lwa::CredentialSlot;
use crate::metrics::Metrics;
use crate::parameters::ParameterStore;

pub struct Agent {
    pub config: Config,
    pub started: Instant,
    pub started_at: SystemTime,
    pub parameters: Arc<ParameterStore>,
    slots: Vec<Arc<CredentialSlot>>,
    pub metrics: Arc<Metrics>,
    pub aws_source: CredentialSource,
    pub rotation: crate::rotation::SharedStatus,
    /// How long a request waits for an exchange in flight before it gets a 503.
    pub request_wait: Duration,
    /// The automatic rotation, when `[rotation.auto]` is configured (set once at start).
    pub auto_rotation: std::sync::OnceLock<Arc<crate::rotation::auto::Rotator>>,
}

impl Agent {
    pub fn new(
        config: Config,
        parameters: Arc<ParameterStore>,
        slots: Vec<Arc<CredentialSlot>>,
        metrics: Arc<Metrics>,
        aws_source: CredentialSource,
    ) -> Self {
        let request_wait = config.lwa.timeout + Duration::from_secs(2);
        Agent {
            config,
            started: Instant::now(),
            started_at: SystemTime::now(),
            parameters,
            slots,
            metrics,
            aws_source,
            rotation: Default::default(),
            request_wait,
            auto_rotation: std::sync::OnceLock::new(),
        }
    }

    pub fn slots(&self) -> &[Arc<CredentialSlot>] {
        &self.slots
    }

    pub fn slot(&self, name: &str) -> Option<&Arc<CredentialSlot>> {
        self.slots.iter().find(|s| s.config.name == name)
    }

    /// `GET /v1/token` serves `default`, or the only credential there is.
    pub fn default_slot(&self) -> Result<&Arc<CredentialSlot>, String> {
        if let Some(s) = self.slot("default") {
            return Ok(s);
        }
        match self.slots.as_slice() {
            [only] => Ok(only),
            _ => Err(format!(
                "there are several credentials and none is named `default`: ask for \
                 /v1/token/<name>, one of {}",
                self.credential_names().join(", ")
            )),
        }
    }

    pub fn credential_names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.config.name.as_str()).collect()
    }

    /// One line for systemd's STATUS=.
    pub fn summary(&self) -> String {
        let now = Instant::now();
        let ready = self
            .slots
            .iter()
            .filter(|s| s.cached(now).is_some())
            .count();
        let total = self.slots.len();
        let params = self.parameters.snapshot();
        let ssm = match &params.last_error {
            Some(_) => "SSM unreachable, retrying",
            None if params.last_success.is_some() => "parameters read",
            None => "reading parameters",
        };
        format!("{ready}/{total} tokens ready; {ssm}")
    }
}
