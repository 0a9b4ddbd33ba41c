//! Counters for `GET /metrics`, rendered in the Prometheus text exposition format 0.0.4.
//!
//! Written by hand on purpose: `prometheus-client` emits OpenMetrics (`# EOF`, different
//! content type), not the classic text format `/metrics` promises (docs/clients.md), and
//! the agent has a handful of fixed series. Gauges (seconds left, parameter age) are computed at scrape time from
//! the agent's state, so nothing is updated on a timer.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Status codes of `/v1/token` answers that get a lock-free counter per credential.
const HOT_CODES: [u16; 3] = [200, 403, 503];

/// Shards per hot counter. Each thread adds to its own shard, so two workers serving
/// tokens at once never write the same cache line; a scrape sums the shards.
const SHARDS: usize = 8;

/// One shard of a credential's hot counters, alone on its cache line (written by hand:
/// one attribute, not worth a crate).
#[derive(Default)]
#[repr(align(128))]
struct Shard([AtomicU64; HOT_CODES.len()]);

/// This thread's shard: threads are numbered in the order they first count a request.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    MINE.with(|i| *i)
}

pub struct Metrics {
    /// credential name → sharded counters for HOT_CODES, fixed at start so the hot path
    /// is one uncontended atomic add.
    token_requests_hot: BTreeMap<String, [Shard; SHARDS]>,
    /// Everything else (unknown credentials, rare codes).
    token_requests_other: Mutex<BTreeMap<(String, u16), u64>>,
    exchanges: Mutex<BTreeMap<(String, String), u64>>,
    ssm_calls: Mutex<BTreeMap<String, u64>>,
    reminders: Mutex<BTreeMap<String, u64>>,
    auto_rotation: Mutex<BTreeMap<String, u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K, by: u64) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key).or_insert(0) += by;
    }
}

impl Metrics {
    pub fn new<'a>(credentials: impl IntoIterator<Item = &'a str>) -> Self {
        Metrics {
            token_requests_hot: credentials
                .into_iter()
                .map(|c| (c.to_string(), Default::default()))
                .collect(),
            token_requests_other: Mutex::default(),
            exchanges: Mutex::default(),
            ssm_calls: Mutex::default(),
            reminders: Mutex::default(),
            auto_rotation: Mutex::default(),
        }
    }

    pub fn token_request(&self, credential: &str, code: u16) {
        if let (Some(counters), Some(i)) = (
            self.token_requests_hot.get(credential),
            HOT_CODES.iter().position(|c| *c == code),
        ) {
            counters[shard()].0[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        // An unknown name is not echoed into a label: a client could otherwise grow the
        // metrics without bound.
        let label = if self.token_requests_hot.contains_key(credential) {
            credential.to_string()
        } else {
            "(unknown)".to_string()
        };
        bump(&self.token_requests_other, (label, code), 1);
    }

    pub fn exchange(&self, credential: &str, result: &str) {
        bump(
            &self.exchanges,
            (credential.to_string(), result.to_string()),
            1,
        );
    }

    pub fn ssm_calls(&self, n: u64, result: &str) {
        bump(&self.ssm_calls, result.to_string(), n);
    }

    pub fn reminder(&self, result: &str) {
        bump(&self.reminders, result.to_string(), 1);
    }

    /// One event of the automatic rotation (a fixed set of labels: rotated, message_malformed,
    /// rotate_call_throttled, receive_error, …; never a value from a message).
    pub fn auto_rotation_event(&self, event: &str) {
        bump(&self.auto_rotation, event.to_string(), 1);
    }

    pub fn ssm_call_count(&self) -> u64 {
        self.ssm_calls.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    /// Renders all counters plus the gauges the caller computed from the agent's state.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut requests: BTreeMap<(String, u16), u64> = self
            .token_requests_other
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        for (cred, counters) in &self.token_requests_hot {
            for (i, code) in HOT_CODES.iter().enumerate() {
                let n: u64 = counters
                    .iter()
                    .map(|shard| shard.0[i].load(Ordering::Relaxed))
                    .sum();
                if n > 0 {
                    requests.insert((cred.clone(), *code), n);
                }
            }
        }
        header(
            &mut out,
            "lwa_agent_token_requests_total",
            "counter",
            "Token requests served on the socket, by credential and HTTP status.",
        );
        for ((cred, code), n) in &requests {
            let _ = writeln!(
                out,
                "lwa_agent_token_requests_total{{credential=\"{}\",code=\"{code}\"}} {n}",
                escape(cred)
            );
        }
        header(
            &mut out,
            "lwa_agent_lwa_exchanges_total",
            "counter",
            "Exchanges with the LWA token endpoint, by credential and result.",
        );
        if let Ok(m) = self.exchanges.lock() {
            for ((cred, result), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "lwa_agent_lwa_exchanges_total{{credential=\"{}\",result=\"{result}\"}} {n}",
                    escape(cred)
                );
            }
        }
        header(
            &mut out,
            "lwa_agent_token_seconds_left",
            "gauge",
            "Seconds until the cached access token expires (0 when there is none).",
        );
        for (cred, secs) in &gauges.token_seconds_left {
            let _ = writeln!(
                out,
                "lwa_agent_token_seconds_left{{credential=\"{}\"}} {secs}",
                escape(cred)
            );
        }
        header(
            &mut out,
            "lwa_agent_parameter_age_seconds",
            "gauge",
            "Seconds since the SSM parameter was last changed.",
        );
        for (param, secs) in &gauges.parameter_age_seconds {
            let _ = writeln!(
                out,
                "lwa_agent_parameter_age_seconds{{parameter=\"{}\"}} {secs}",
                escape(param)
            );
        }
        for (name, help, map) in [
            (
                "lwa_agent_ssm_calls_total",
                "Calls to AWS SSM, by result.",
                &self.ssm_calls,
            ),
            (
                "lwa_agent_reminders_total",
                "Rotation reminders, by result (sent, failed, skipped_by_fleet_lock).",
                &self.reminders,
            ),
        ] {
            header(&mut out, name, "counter", help);
            if let Ok(m) = map.lock() {
                for (result, n) in m.iter() {
                    let _ = writeln!(out, "{name}{{result=\"{result}\"}} {n}");
                }
            }
        }
        header(
            &mut out,
            "lwa_agent_auto_rotation_events_total",
            "counter",
            "Automatic rotation events (rotate calls, messages, proofs, writes, reports), by event.",
        );
        if let Ok(m) = self.auto_rotation.lock() {
            for (event, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "lwa_agent_auto_rotation_events_total{{event=\"{}\"}} {n}",
                    escape(event)
                );
            }
        }
        if !gauges.auto_rotations.is_empty() {
            header(
                &mut out,
                "lwa_agent_auto_rotation_outcome",
                "gauge",
                "1 for each credential's last automatic rotation outcome (requesting, waiting_for_secret, rotated, failed).",
            );
            for a in &gauges.auto_rotations {
                let _ = writeln!(
                    out,
                    "lwa_agent_auto_rotation_outcome{{credential=\"{}\",outcome=\"{}\"}} 1",
                    escape(&a.credential),
                    escape(&a.outcome)
                );
            }
            header(
                &mut out,
                "lwa_agent_auto_rotation_timestamp_seconds",
                "gauge",
                "When each credential's last automatic rotation outcome was recorded (Unix time).",
            );
            for a in &gauges.auto_rotations {
                if let Some(at) = a.at {
                    let _ = writeln!(
                        out,
                        "lwa_agent_auto_rotation_timestamp_seconds{{credential=\"{}\"}} {at}",
                        escape(&a.credential)
                    );
                }
            }
            header(
                &mut out,
                "lwa_agent_auto_rotation_needs_attention",
                "gauge",
                "1 when a credential's automatic rotation failed in a way only a person can fix.",
            );
            for a in &gauges.auto_rotations {
                let _ = writeln!(
                    out,
                    "lwa_agent_auto_rotation_needs_attention{{credential=\"{}\"}} {}",
                    escape(&a.credential),
                    u8::from(a.needs_attention)
                );
            }
        }
        header(
            &mut out,
            "lwa_agent_parameter_state",
            "gauge",
            "1 for each watched parameter's rotation state (ok, warn, expired, missing) as of the last check.",
        );
        for (param, state) in &gauges.parameter_state {
            let _ = writeln!(
                out,
                "lwa_agent_parameter_state{{parameter=\"{}\",state=\"{}\"}} 1",
                escape(param),
                escape(state)
            );
        }
        for (name, help, value) in [
            (
                "lwa_agent_rotation_last_check_timestamp_seconds",
                "When the rotation check last ran (Unix time).",
                gauges.last_check,
            ),
            (
                "lwa_agent_rotation_next_check_timestamp_seconds",
                "When the rotation check runs next (Unix time).",
                gauges.next_check,
            ),
        ] {
            if let Some(v) = value {
                header(&mut out, name, "gauge", help);
                let _ = writeln!(out, "{name} {v}");
            }
        }
        header(
            &mut out,
            "lwa_agent_uptime_seconds",
            "gauge",
            "Seconds since the agent started.",
        );
        let _ = writeln!(out, "lwa_agent_uptime_seconds {}", gauges.uptime_seconds);
        out
    }
}

/// Values computed from the agent's state at scrape time.
#[derive(Default)]
pub struct Gauges {
    pub token_seconds_left: Vec<(String, u64)>,
    pub parameter_age_seconds: Vec<(String, u64)>,
    pub parameter_state: Vec<(String, String)>,
    pub last_check: Option<u64>,
    pub next_check: Option<u64>,
    pub uptime_seconds: u64,
    pub auto_rotations: Vec<AutoRotationGauge>,
}

/// One credential's last automatic rotation, from the state file.
#[derive(Default)]
pub struct AutoRotationGauge {
    pub credential: String,
    pub outcome: String,
    pub at: Option<u64>,
    pub needs_attention: bool,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_labels() {
        let m = Metrics::new(["default", "eu"]);
        m.token_request("default", 200);
        m.token_request("default", 200);
        m.token_request("eu", 404);
        m.token_request("no-such", 404);
        m.exchange("default", "ok");
        m.ssm_calls(3, "ok");
        m.auto_rotation_event("rotated");
        let text = m.render(&Gauges {
            token_seconds_left: vec![("default".into(), 3300)],
            parameter_age_seconds: vec![("/erp/secret".into(), 86400)],
            parameter_state: vec![("/erp/secret".into(), "warn".into())],
            last_check: Some(1_700_000_000),
            next_check: None,
            uptime_seconds: 5,
            auto_rotations: vec![AutoRotationGauge {
                credential: "default".into(),
                outcome: "rotated".into(),
                at: Some(1_700_000_100),
                needs_attention: false,
            }],
        });
        for line in [
            "lwa_agent_token_requests_total{credential=\"default\",code=\"200\"} 2",
            "lwa_agent_token_requests_total{credential=\"eu\",code=\"404\"} 1",
            "lwa_agent_token_requests_total{credential=\"(unknown)\",code=\"404\"} 1",
            "lwa_agent_lwa_exchanges_total{credential=\"default\",result=\"ok\"} 1",
            "lwa_agent_token_seconds_left{credential=\"default\"} 3300",
            "lwa_agent_parameter_age_seconds{parameter=\"/erp/secret\"} 86400",
            "lwa_agent_ssm_calls_total{result=\"ok\"} 3",
            "# TYPE lwa_agent_reminders_total counter",
            "lwa_agent_parameter_state{parameter=\"/erp/secret\",state=\"warn\"} 1",
            "lwa_agent_rotation_last_check_timestamp_seconds 1700000000",
            "lwa_agent_auto_rotation_outcome{credential=\"default\",outcome=\"rotated\"} 1",
            "lwa_agent_auto_rotation_timestamp_seconds{credential=\"default\"} 1700000100",
            "lwa_agent_auto_rotation_needs_attention{credential=\"default\"} 0",
            "lwa_agent_auto_rotation_events_total{event=\"rotated\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert_eq!(m.ssm_call_count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
