//! The command line (docs/design.md, "Commands"). Exit codes: 0 success, 1 runtime
//! failure, 2 usage or config error. Every failure message says what failed and what to do.

mod check;
mod client;
mod doctor;
pub mod load_credentials;
mod put_secret;
mod rotate;
mod setup;
mod stack_outputs;
mod status_table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "lwa-agent",
    version,
    about = "Serves Amazon SP-API (LWA) access tokens on a root-only Unix socket",
    long_about = "lwa-agent keeps Login with Amazon client credentials as KMS-encrypted SSM \
                  SecureStrings, exchanges them for access tokens, caches and refreshes the \
                  tokens, and serves them on a root-only Unix socket."
)]
pub struct Cli {
    /// The config file [default: $LWA_AGENT_CONFIG, else /etc/lwa-agent/lwa-agent.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (the systemd ExecStart)
    Run,
    /// Print an access token from the running agent
    Token {
        /// The credential [default: `default`, or the only one]
        name: Option<String>,
        /// Print the whole JSON object instead of the bare token
        #[arg(long)]
        json: bool,
        /// The agent's socket [default: socket.path from the config]
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Show the running agent's status
    Status {
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
        /// The agent's socket [default: socket.path from the config]
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Configuration commands
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Online checks: AWS identity, each parameter, each LWA exchange, the SNS topic, the
    /// rotation queues
    Doctor {
        /// Run the checks as the service would: in lwa-agent-doctor.service, with the
        /// service's user, credentials and sandbox (as root, through systemd)
        #[arg(long)]
        as_service: bool,
    },
    /// Run one rotation check now: parameter ages, SNS reminders and, with [rotation.auto],
    /// automatic rotations that are due (what the timer runs)
    Check {
        /// Report what would be sent or rotated; publish, ask and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Store a new LWA value read from stdin: proved at LWA first, then written to SSM
    PutSecret {
        /// The credential whose value changes
        #[arg(long, value_name = "NAME")]
        credential: String,
        /// Which value
        #[arg(long, value_enum)]
        field: put_secret::Field,
        /// The running agent's socket, reloaded afterwards [default: socket.path]
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// After the CloudFormation stack: prove and store the three LWA values, write the
    /// config, run doctor
    #[command(
        long_about = "After the CloudFormation stack (/usr/share/lwa-agent/lwa-agent.yaml): \
        read the stack's outputs (--outputs FILE, or the flags), ask for the LWA client id, \
        client secret and refresh token (on a terminal without echo; from a pipe, three \
        lines in that order; never from argv or the environment), prove them with a real \
        LWA exchange, store them as SecureStrings with the stack's KMS key, write the config \
        (--config, default /etc/lwa-agent/lwa-agent.toml; an existing one is kept unless \
        --force-config), run doctor, and print the one command left to run. A set LWA \
        rejects writes nothing. Every step is idempotent: a parameter that already holds the \
        value and a config that already says the same are left untouched, so a second run \
        changes nothing and a failed run can be run again. The parameters are written with \
        the standard AWS credential chain (an administrator's credentials), not the agent's \
        role. Exit 0 when everything is in place and doctor passed, 1 when a step failed, 2 \
        for a usage error."
    )]
    Setup(Box<setup::SetupArgs>),
    /// Copy credential files for the service on systemd before 247 (run by the units as
    /// root)
    #[command(
        long_about = "Copy credential files into $LWA_CREDENTIALS_DIRECTORY for the service, on \
        systemd before 247, which has no LoadCredential= (RHEL 8). The packaged units run it \
        as root (ExecStartPre=+) with the same ID:PATH pairs as their LoadCredential= lines; \
        the directory is the unit's RuntimeDirectory=, made for the service user alone and \
        removed when the service stops. Each copy is mode 0400 and belongs to the service \
        user; a missing file is skipped. When systemd sets $CREDENTIALS_DIRECTORY (247 and \
        later) it does nothing."
    )]
    LoadCredentials {
        /// ID:PATH, as in LoadCredential=
        #[arg(value_name = "ID:PATH", required = true)]
        pairs: Vec<load_credentials::Pair>,
    },
    /// Rotate a credential's LWA client secret automatically now, whatever its age
    #[command(
        long_about = "Rotate a credential's LWA client secret now, the way [rotation.auto] \
        does it on its own: take the fleet marker (so no other host asks too), ask Amazon's \
        Application Management API for a new client secret, receive it from the \
        new-secret SQS queue, prove it with a real LWA exchange, write it to every client \
        secret parameter of the app (same KMS key, tier and lasting policies), and reload the \
        running agent. The old secret keeps working for about 7 days. Runs whatever the \
        secret's age, but not while a rotation of it is in flight. Exit 0 when the new \
        secret is in SSM, 1 when it is not (the error says why and what to do), 2 for a \
        usage or config error."
    )]
    Rotate {
        /// The credential whose app's client secret is rotated (every credential with the
        /// same client id gets the new secret)
        #[arg(long, value_name = "NAME")]
        credential: String,
        /// Say what would be done; ask nothing of Amazon, write nothing
        #[arg(long, conflicts_with = "settle")]
        dry_run: bool,
        /// Settle a conflict the alert named (a new secret from Amazon waits in the queue,
        /// but SSM holds a secret stored after it): `ssm` keeps what SSM holds and deletes
        /// the message; `message` proves the message's secret and writes it. Asks nothing
        /// of Amazon
        #[arg(long, value_name = "WHICH")]
        settle: Option<crate::rotation::auto::settle::Settle>,
        /// The running agent's socket, reloaded afterwards [default: socket.path]
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the config offline and name every problem
    Check,
}

/// What a command ended with.
pub enum Outcome {
    Ok,
    /// Exit 1: something at run time failed.
    Failed(String),
    /// Exit 2: the command line or the config is wrong.
    Usage(String),
}

pub fn main() -> ExitCode {
    // Before anything reads a config, a key or a secret: every command may hold one.
    crate::process::keep_memory_private();
    let cli = Cli::parse();
    let outcome = dispatch(cli);
    match outcome {
        Outcome::Ok => ExitCode::SUCCESS,
        Outcome::Failed(msg) => {
            eprintln!("lwa-agent: {msg}");
            ExitCode::from(1)
        }
        Outcome::Usage(msg) => {
            eprintln!("lwa-agent: {msg}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> Outcome {
    let config_path = config::path_from(cli.config.as_deref());
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&config_path),
        Command::Run => {
            let cfg = match config::load(&config_path) {
                Ok(c) => c,
                Err(e) => return Outcome::Usage(format!("invalid configuration:\n{e}")),
            };
            // The Roles Anywhere files are part of the configuration: a wrong one is exit 2.
            if let Err(e) = crate::aws::roles_anywhere::check_files(&cfg.aws, true) {
                return Outcome::Usage(format!("invalid configuration:\n{e}"));
            }
            // So is the credentials file.
            if let Some(file) = &cfg.aws.credentials_file {
                if let Err(e) = crate::aws::credentials_file(file) {
                    return Outcome::Usage(format!("invalid configuration:\n{e}"));
                }
            }
            crate::logging::init(&cfg.log.level, cfg.log.format);
            daemon_runtime(|| async move {
                match crate::daemon::run(cfg).await {
                    Ok(()) => Outcome::Ok,
                    Err(e) => {
                        tracing::error!(error = %e, "lwa-agent cannot run");
                        Outcome::Failed(e)
                    }
                }
            })
        }
        Command::Token { name, json, socket } => {
            let socket = socket_path(socket, &config_path);
            runtime(|| client::token(socket, name, json))
        }
        Command::Status { json, socket } => {
            let socket = socket_path(socket, &config_path);
            runtime(|| status_table::status(socket, json))
        }
        Command::Doctor { as_service: true } => doctor::as_service(),
        Command::Doctor { as_service: false } => with_config(&config_path, doctor::run),
        Command::Check { dry_run, json } => {
            with_config(&config_path, move |cfg| check::run(cfg, dry_run, json))
        }
        Command::PutSecret {
            credential,
            field,
            socket,
        } => with_config(&config_path, move |cfg| {
            put_secret::run(cfg, credential, field, socket)
        }),
        Command::Setup(args) => setup::run(*args, &config_path),
        Command::LoadCredentials { pairs } => load_credentials::run(pairs),
        Command::Rotate {
            credential,
            dry_run,
            settle,
            socket,
        } => with_config(&config_path, move |cfg| {
            rotate::run(cfg, credential, dry_run, settle, socket)
        }),
    }
}

/// One-shot commands that need the config: load it (exit 2 when invalid), log warnings to
/// stderr, and run `f` on a runtime.
fn with_config<F, Fut>(path: &std::path::Path, f: F) -> Outcome
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => return Outcome::Usage(format!("invalid configuration:\n{e}")),
    };
    crate::logging::init_command();
    runtime(|| f(cfg))
}

/// The daemon runs on one thread. Its work is a few hundred microseconds per token
/// refresh and a memcpy per request; a second worker only adds wake-ups between threads
/// (futex calls were the largest user-space cost in the benchmark's profile) and its own
/// malloc arena, and on a busy ERP host it competes with the ERP for cores. File work that
/// may wait (the rotation state's flock and fsync) goes to tokio's blocking pool
/// (`rotation::state::update_off_runtime`).
fn daemon_runtime<F, Fut>(f: F) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    block_on(tokio::runtime::Builder::new_current_thread(), f)
}

fn runtime<F, Fut>(f: F) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    block_on(tokio::runtime::Builder::new_multi_thread(), f)
}

fn block_on<F, Fut>(mut builder: tokio::runtime::Builder, f: F) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(f()),
        Err(e) => Outcome::Failed(format!("cannot start the async runtime: {e}")),
    }
}

fn config_check(path: &std::path::Path) -> Outcome {
    match config::load(path).and_then(|cfg| {
        // The Roles Anywhere certificate and key are checked with the rest.
        let notes = crate::aws::roles_anywhere::check_files(&cfg.aws, false)?;
        Ok((cfg, notes))
    }) {
        Ok((cfg, ra_notes)) => {
            let mut notes = offline_notes(&cfg);
            notes.extend(ra_notes);
            // The credentials file as `run` checks it, where this shell can see it.
            if let Some(file) = &cfg.aws.credentials_file {
                match crate::config::resolve_credential_path(file) {
                    Err(why) => notes.push(format!(
                        "aws.credentials_file cannot be checked here ({why});                          `lwa-agent doctor --as-service` checks it as the service"
                    )),
                    Ok(_) => {
                        if let Err(e) = crate::aws::credentials_file(file) {
                            return Outcome::Usage(format!(
                                "{} has 1 problem:\n{e}",
                                path.display()
                            ));
                        }
                    }
                }
            }
            for n in &notes {
                println!("note: {n}");
            }
            println!(
                "{}: OK ({} credential{}, socket {})",
                path.display(),
                cfg.credentials.len(),
                if cfg.credentials.len() == 1 { "" } else { "s" },
                cfg.socket.path.display()
            );
            Outcome::Ok
        }
        Err(e) => Outcome::Usage(format!(
            "{} has {} problem{}:\n{e}",
            path.display(),
            e.problems.len(),
            if e.problems.len() == 1 { "" } else { "s" }
        )),
    }
}

/// Things worth knowing that are not errors.
fn offline_notes(cfg: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    if cfg.rotation.enabled && cfg.rotation.topic_arn.is_none() {
        notes.push(
            "rotation.topic_arn is not set: rotation reminders go to the log only".to_string(),
        );
    }
    if let Some(auto) = cfg.rotation.auto_enabled() {
        if auto.rotate_after < std::time::Duration::from_secs(86400) {
            notes.push(format!(
                "rotation.auto.rotate_after is {}, under a day: the client secret is rotated \
                 that often (fine for a test, not for production, e.g. \"150d\")",
                humantime::format_duration(auto.rotate_after)
            ));
        }
        if cfg.rotation.topic_arn.is_none() {
            notes.push(
                "rotation.topic_arn is not set: automatic rotation reports and alerts go to \
                 the log only"
                    .to_string(),
            );
        }
        if auto.expiry_queue_url.is_none() {
            notes.push(
                "rotation.auto.expiry_queue_url is not set: only the rotation check's age test \
                 (and lwa-agent rotate) starts a rotation"
                    .to_string(),
            );
        }
    }
    notes
}

/// `--socket`, else the config's socket.path, else the default path (the config may be
/// root-only while the socket is opened to a group).
fn socket_path(arg: Option<PathBuf>, config_path: &std::path::Path) -> PathBuf {
    if let Some(p) = arg {
        return p;
    }
    match config::load(config_path) {
        Ok(cfg) => cfg.socket.path,
        Err(_) => PathBuf::from(config::DEFAULT_SOCKET),
    }
}
