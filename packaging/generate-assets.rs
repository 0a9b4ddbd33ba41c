//! Writes the man page `lwa-agent.8` and the bash, zsh and fish completions, generated from
//! the CLI definition itself so they never drift from it. packaging/build runs it:
//! `cargo run --example generate-assets -- DIR`.
//!
//! A cargo example rather than a subcommand of the agent: the generators stay out of the
//! shipped binary, and `cargo test` still compiles this file, so a CLI change that breaks
//! it fails the build.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cargo run --example generate-assets -- OUTPUT_DIR");
        return ExitCode::from(2);
    };
    match generate(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate-assets: {e}");
            ExitCode::from(1)
        }
    }
}

fn generate(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let man_path = dir.join("lwa-agent.8");
    let mut man = Vec::new();
    render_man(&mut man).map_err(|e| format!("cannot render the man page: {e}"))?;
    std::fs::write(&man_path, man)
        .map_err(|e| format!("cannot write {}: {e}", man_path.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = lwa_agent::cli::Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "lwa-agent", dir).map_err(|e| {
            format!(
                "cannot write the {shell} completion into {}: {e}",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// clap's sections (name, synopsis, description, options, commands, version) followed by
/// the ones a sysadmin looks for in section 8: files, environment, exit status, see also.
fn render_man(out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = lwa_agent::cli::Cli::command();
    let man = clap_mangen::Man::new(cmd)
        .section("8")
        .manual("System Administration")
        .source(concat!("lwa-agent ", env!("CARGO_PKG_VERSION")));
    man.render(out)?;
    out.write_all(EXTRA_SECTIONS.as_bytes())
}

const EXTRA_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/lwa-agent/lwa-agent.toml\fR
The configuration (mode 0640, owner root, group lwa-agent). Check it with
\fBlwa-agent config check\fR. An annotated example is in
\fI/usr/share/doc/lwa-agent/lwa-agent.toml\fR.
.TP
\fI/run/lwa-agent/lwa-agent.sock\fR
The token socket (mode 0600, owner root), created by \fBlwa-agent.socket\fR.
.TP
\fI/etc/lwa-agent/pki/cert.pem\fR, \fI/etc/lwa-agent/pki/key.pem\fR
The IAM Roles Anywhere certificate and key, passed to the service with
\fBLoadCredential=\fR and referred to as \fI%d/rolesanywhere-cert\fR and
\fI%d/rolesanywhere-key\fR in the configuration.
.TP
\fI/var/lib/lwa-agent\fR
State: which rotation reminders were sent.
.SH ENVIRONMENT
.TP
\fBLWA_AGENT_CONFIG\fR
The configuration file, instead of \fI/etc/lwa-agent/lwa-agent.toml\fR.
.TP
\fBLWA_AGENT_\fR\fIKEY\fR
Overrides a configuration key: the key path upper-cased, with \fB__\fR between levels,
for example \fBLWA_AGENT_AWS__REGION=eu-west-1\fR.
.TP
\fBSTATE_DIRECTORY\fR, \fBCREDENTIALS_DIRECTORY\fR
Set by systemd (\fBStateDirectory=\fR, \fBLoadCredential=\fR).
.SH EXIT STATUS
0 on success, 1 when something failed at run time, 2 for a usage or configuration error.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.exec\fR(5),
\fI/usr/share/doc/lwa-agent/README.md\fR
"#;
