//! Where log lines go: the journal when systemd connected stderr to it (`JOURNAL_STREAM`),
//! else text or JSON on stderr. Fields are structured (credential, parameter, status) so
//! `journalctl -o json` can filter on them, under plain upper-case names (SPEC §7).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

const QUIET: [&str; 12] = [
    "aws_sigv4=info",
    "aws_smithy_runtime=info",
    "aws_smithy_runtime_api=info",
    "aws_smithy_http_client=info",
    "aws_config=info",
    "hyper=info",
    "hyper_util=info",
    "reqwest=info",
    "h2=info",
    "rustls=info",
    "hickory_resolver=info",
    "hickory_proto=info",
];

/// Crates whose info lines mean nothing to a sysadmin ("Uninited", "Job creator
/// created" from the cron scheduler at every start).
const NOISY: [&str; 1] = ["tokio_cron_scheduler=warn"];

/// Installs the global subscriber. `RUST_LOG` overrides `level` for debugging.
pub fn init(level: &str, format: Option<LogFormat>) {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Whatever level is asked for, the HTTP and AWS crates stay at info: at debug and trace
    // they print whole requests, and requests carry the secrets (the LWA form, PutParameter).
    for quiet in QUIET.iter().chain(&NOISY) {
        if let Ok(directive) = quiet.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let format = format.unwrap_or(if std::env::var_os("JOURNAL_STREAM").is_some() {
        LogFormat::Journald
    } else {
        LogFormat::Text
    });
    let layer: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Journald => match tracing_journald::layer() {
            // Plain field names (SPEC §7): `journalctl -u lwa-agent CREDENTIAL=default`.
            // tracing-journald would prefix them (`F_CREDENTIAL`); none of the agent's
            // field names collide with the journal's own (MESSAGE, PRIORITY, CODE_*…).
            Ok(l) => Box::new(
                l.with_syslog_identifier("lwa-agent".into())
                    .with_field_prefix(None),
            ),
            Err(e) => {
                eprintln!("lwa-agent: cannot reach the journal ({e}); logging to stderr");
                Box::new(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            }
        },
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}
