//! The token core's shared state, as the socket handlers and the status page see it: the
//! credentials' slots, the parameters read, the counters, and the views of whatever runs
//! beside the core. Built complete by `daemon::run`; nothing is set on it afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::aws::CredentialSource;
use crate::lwa::parameters::ParameterStore;
use crate::lwa::CredentialSlot;
use serde_json::{json, Map, Value};

use crate::metrics::{Gauges, Metrics};
use crate::status::{Document, View};

/// What the status page says about the agent itself.
pub struct About {
    pub started: Instant,
    pub started_at: SystemTime,
    pub config_file: PathBuf,
    pub region: String,
    pub aws_source: CredentialSource,
}

impl About {
    pub fn now(config_file: PathBuf, region: String, aws_source: CredentialSource) -> About {
        About {
            started: Instant::now(),
            started_at: SystemTime::now(),
            config_file,
            region,
            aws_source,
        }
    }
}

pub struct Agent {
    about: About,
    parameters: Arc<ParameterStore>,
    slots: Vec<Arc<CredentialSlot>>,
    metrics: Arc<Metrics>,
    /// How long a request waits for an exchange in flight (`lwa::Timing`).
    request_wait: Duration,
    /// The subsystems beside the core, for status and metrics.
    views: Vec<Arc<dyn View>>,
}

impl Agent {
    pub fn new(
        about: About,
        parameters: Arc<ParameterStore>,
        slots: Vec<Arc<CredentialSlot>>,
        metrics: Arc<Metrics>,
        request_wait: Duration,
        views: Vec<Arc<dyn View>>,
    ) -> Self {
        Agent {
            about,
            parameters,
            slots,
            metrics,
            request_wait,
            views,
        }
    }

    pub fn parameters(&self) -> &Arc<ParameterStore> {
        &self.parameters
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn request_wait(&self) -> Duration {
        self.request_wait
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

    /// `GET /v1/status`: the core's parts, then each view's.
    pub fn status(&self) -> Value {
        let now = Instant::now();
        let about = &self.about;
        let mut aws = about.aws_source.status();
        if let Some(obj) = aws.as_object_mut() {
            obj.insert("region".into(), about.region.clone().into());
        }
        let mut top = Map::new();
        for (key, value) in [
            ("version", json!(env!("CARGO_PKG_VERSION"))),
            ("uptime_seconds", json!(about.started.elapsed().as_secs())),
            (
                "started_at",
                json!(humantime::format_rfc3339_seconds(about.started_at).to_string()),
            ),
            ("config", json!(about.config_file.display().to_string())),
            ("aws", aws),
            (
                "ssm",
                self.parameters.ssm_status(self.metrics.ssm_call_count()),
            ),
        ] {
            top.insert(key.into(), value);
        }
        let credentials = self
            .slots
            .iter()
            .map(|s| (s.config.name.clone(), s.status(now)))
            .collect();
        let parameters = self.parameters.parameter_status(SystemTime::now());
        let mut doc = Document::new(top, credentials, parameters);
        for view in &self.views {
            view.status(&mut doc);
        }
        doc.finish()
    }

    /// `GET /metrics`: the core's gauges, then each view's.
    pub fn metrics_text(&self) -> String {
        let now = Instant::now();
        let mut gauges = Gauges {
            token_seconds_left: self
                .slots
                .iter()
                .map(|s| {
                    let left = s.current(now).map_or(0, |t| t.seconds_left(now));
                    (s.config.name.clone(), left)
                })
                .collect(),
            parameter_age_seconds: self.parameters.ages(SystemTime::now()),
            uptime_seconds: self.about.started.elapsed().as_secs(),
            ..Gauges::default()
        };
        for view in &self.views {
            view.gauges(&mut gauges);
        }
        gauges.parameter_age_seconds.sort();
        self.metrics.render(&gauges)
    }

    /// One line for systemd's STATUS=.
    pub fn summary(&self) -> String {
        let now = Instant::now();
        let ready = self
            .slots
            .iter()
            .filter(|s| s.current(now).is_some())
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
