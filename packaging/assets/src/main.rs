//! Writes the man pages (`man8/lwa-agent.8` and one per subcommand) and the bash, zsh and
//! fish completions, generated from
//! the CLI definition itself so they never drift from it. packaging/build runs it:
//! `cargo run -p lwa-agent-assets -- DIR`.
//!
//! A workspace member of its own (the xtask pattern) rather than a subcommand of the
//! agent, so the generators stay out of the shipped binary, and rather than an example of
//! the main crate, so a package build does not compile the test servers and the other
//! dev-dependencies. `cargo test --workspace` and clippy still compile it, so a CLI change
//! that breaks it fails the build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cargo run -p lwa-agent-assets -- OUTPUT_DIR");
        return ExitCode::from(2);
    };
    match generate(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lwa-agent-assets: {e}");
            ExitCode::from(1)
        }
    }
}

fn generate(dir: &Path) -> Result<(), String> {
    let man_dir = dir.join("man8");
    std::fs::create_dir_all(&man_dir)
        .map_err(|e| format!("cannot create {}: {e}", man_dir.display()))?;
    // Built, so that subcommands carry their display names (lwa-agent-run, …), which are
    // also the names of their pages.
    let mut cmd = lwa_agent::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    write_pages(&cmd, &man_dir, true)?;
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

/// lwa-agent(8), and lwa-agent-run(8) etc. for every subcommand the main page lists.
fn write_pages(cmd: &clap::Command, dir: &Path, top: bool) -> Result<(), String> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, false)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(concat!("lwa-agent ", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .map_err(|e| format!("cannot render {}: {e}", path.display()))?;
    // The sections a sysadmin looks for in section 8 go on the main page; the others
    // point to it.
    page.extend_from_slice(if top { EXTRA_SECTIONS } else { SEE_MAIN }.as_bytes());
    std::fs::write(&path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

const SEE_MAIN: &str = r".SH SEE ALSO
\fBlwa-agent\fR(8)
";

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
