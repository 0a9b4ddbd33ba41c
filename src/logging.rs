//! Where log lines go: the journal when systemd connected stderr to it (`JOURNAL_STREAM`),
//! else text or JSON on stderr. Fields are structured (credential, parameter, status) so
//! `journalctl -o json` can filter on them, under plain upper-case names (docs/systemd.md).

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Where the lines go (`log.format`); `None` in the config picks the journal under
/// systemd, else text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Journald,
    Text,
    Json,
}

/// Whatever level is asked for, the HTTP and AWS crates stay at info: at debug and trace
/// they print whole requests, and requests carry the secrets (the LWA form, PutParameter).
const QUIET: [&str; 12] = [
    "aws_sigv4",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_config",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "rustls",
    "hickory_resolver",
    "hickory_proto",
];

/// Crates whose info lines mean nothing to a sysadmin ("Uninited", "Job creator
/// created" from the cron scheduler at every start): warnings only.
const NOISY: [&str; 1] = ["tokio_cron_scheduler"];

/// The level filter: `RUST_LOG` (for debugging) or the config's `log.level`, in the
/// `target=level,level` syntax, with QUIET and NOISY capped on top, for the crates and
/// every module in them. `Targets`, not `EnvFilter`: the agent needs no span-field
/// filters, and EnvFilter's regex engine was about 300 KiB of the static binary.
pub fn filter(level: &str, rust_log: Option<&str>) -> Targets {
    let asked = rust_log
        .and_then(parse)
        .or_else(|| parse(level))
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let mut filter = match asked.default_level() {
        Some(default) => Targets::new().with_default(default),
        None => Targets::new(),
    };
    for (target, level) in asked.iter() {
        filter = filter.with_target(target, level.min(cap(target)));
    }
    for target in QUIET.iter().chain(&NOISY) {
        filter = filter.with_target(*target, level_for(&asked, target).min(cap(target)));
    }
    filter
}

/// The most a target may log: QUIET crates info, NOISY ones warnings, anything else all.
fn cap(target: &str) -> LevelFilter {
    let within = |krate: &&str| {
        target == *krate
            || target
                .strip_prefix(*krate)
                .is_some_and(|rest| rest.starts_with("::"))
    };
    if QUIET.iter().any(within) {
        LevelFilter::INFO
    } else if NOISY.iter().any(within) {
        LevelFilter::WARN
    } else {
        LevelFilter::TRACE
    }
}

/// `target=level` pieces separated by commas, trimmed, empty ones skipped; a piece
/// without `=` must be a level (`info`), not a bare word that would silence the rest.
fn parse(spec: &str) -> Option<Targets> {
    let pieces: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if pieces.is_empty()
        || pieces
            .iter()
            .any(|p| !p.contains('=') && p.parse::<LevelFilter>().is_err())
    {
        return None;
    }
    pieces.join(",").parse().ok()
}

/// The most verbose level `filter` lets through for `target`.
fn level_for(filter: &Targets, target: &str) -> LevelFilter {
    use tracing::Level;
    [
        Level::TRACE,
        Level::DEBUG,
        Level::INFO,
        Level::WARN,
        Level::ERROR,
    ]
    .into_iter()
    .find(|l| filter.would_enable(target, l))
    .map_or(LevelFilter::OFF, LevelFilter::from_level)
}

/// Whether `level` is a level (or `target=level` list) the agent understands.
pub fn valid_level(level: &str) -> bool {
    parse(level).is_some()
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` for debugging.
pub fn init(level: &str, format: Option<LogFormat>) {
    install(
        filter(level, std::env::var("RUST_LOG").ok().as_deref()),
        format,
    );
}

/// The subscriber of a one-shot command (`doctor`, `setup`, `rotate`…), which prints its
/// own findings: only the agent's warnings reach stderr beside them. The AWS and HTTP
/// crates' own warnings (a profile file the SDK could not read, a retry) say nothing the
/// command does not say better, so they are left out, unless `RUST_LOG` asks for them.
pub fn init_command() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let mut f = filter("warn", rust_log.as_deref());
    if rust_log.is_none() {
        for target in QUIET {
            f = f.with_target(target, LevelFilter::ERROR);
        }
    }
    install(f, Some(LogFormat::Text));
}

fn install(filter: Targets, format: Option<LogFormat>) {
    let format = format.unwrap_or(if std::env::var_os("JOURNAL_STREAM").is_some() {
        LogFormat::Journald
    } else {
        LogFormat::Text
    });
    let layer: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Journald => match tracing_journald::layer() {
            // Plain field names (docs/systemd.md): `journalctl -u lwa-agent CREDENTIAL=default`.
            // tracing-journald would prefix them (`F_CREDENTIAL`); none of the agent's
            // field names collide with the journal's own (MESSAGE, PRIORITY, CODE_*…).
            Ok(l) => Box::new(
                l.with_syslog_identifier("lwa-agent".into())
                    .with_field_prefix(None),
            ),
            Err(e) => {
                eprintln!("lwa-agent: cannot reach the journal ({e}); logging to stderr");
                Box::new(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(colour()),
                )
            }
        },
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour()),
        ),
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

/// Colour codes only for a person at a terminal: a file, a pipe or the journal gets plain
/// text (and `NO_COLOR` turns them off everywhere, https://no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_http_and_aws_crates_never_log_below_info() {
        let f = filter("info", Some("trace"));
        assert!(f.would_enable("lwa_agent::lwa", &Level::TRACE));
        assert!(!f.would_enable("hyper::proto::h1", &Level::DEBUG));
        assert!(!f.would_enable("aws_smithy_runtime::client", &Level::TRACE));
        assert!(f.would_enable("reqwest::connect", &Level::INFO));
        let f = filter("info", Some("hyper=trace,reqwest=debug"));
        assert!(!f.would_enable("hyper", &Level::DEBUG));
        assert!(!f.would_enable("reqwest", &Level::DEBUG));
    }

    #[test]
    fn quiet_crates_are_not_louder_than_the_level_asked_for() {
        let f = filter("warn", None);
        assert!(!f.would_enable("hyper", &Level::INFO));
        assert!(!f.would_enable("lwa_agent", &Level::INFO));
        assert!(f.would_enable("lwa_agent", &Level::WARN));
    }

    #[test]
    fn the_cron_scheduler_says_only_warnings() {
        let f = filter("debug", None);
        assert!(!f.would_enable("tokio_cron_scheduler::job", &Level::INFO));
        assert!(f.would_enable("tokio_cron_scheduler::job", &Level::WARN));
        assert!(f.would_enable("lwa_agent", &Level::DEBUG));
    }

    #[test]
    fn modules_of_quiet_crates_are_capped_too() {
        let f = filter(
            "info",
            Some("hyper::proto=trace,aws_smithy_runtime::client=trace"),
        );
        assert!(!f.would_enable("hyper::proto::h1::io", &Level::DEBUG));
        assert!(!f.would_enable("aws_smithy_runtime::client::orchestrator", &Level::TRACE));
        // A crate that only shares a prefix with a quiet one is not capped.
        let f = filter("info", Some("hyperactive=trace"));
        assert!(f.would_enable("hyperactive", &Level::TRACE));
    }

    #[test]
    fn spaces_and_empty_pieces_are_forgiven_and_bare_words_refused() {
        let f = filter("info, lwa_agent=debug", None);
        assert!(f.would_enable("lwa_agent::lwa", &Level::DEBUG));
        let f = filter("debug,", None);
        assert!(f.would_enable("lwa_agent", &Level::DEBUG));
        let f = filter("info ", None);
        assert!(f.would_enable("lwa_agent", &Level::INFO));
        assert!(!valid_level("verbose"));
        assert!(!valid_level(""));
        for level in ["error", "warn", "info", "debug", "trace", "INFO"] {
            assert!(valid_level(level), "{level}");
        }
    }

    #[test]
    fn rust_log_overrides_the_configured_level_and_bad_values_fall_back() {
        assert!(filter("warn", Some("debug")).would_enable("lwa_agent", &Level::DEBUG));
        assert!(filter("warn", Some("lwa_agent=loud")).would_enable("lwa_agent", &Level::WARN));
        assert!(!filter("warn", Some("lwa_agent=loud")).would_enable("lwa_agent", &Level::INFO));
        assert!(valid_level("debug"));
        assert!(valid_level("lwa_agent=debug,info"));
        assert!(!valid_level("lwa_agent=loud"));
    }
}
