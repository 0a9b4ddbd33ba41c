//! The unit files as written: the settings docs/systemd.md names and systemd's security rating.

use super::*;

// ---------------------------------------------------------------------------------------
// Tests: the units
// ---------------------------------------------------------------------------------------

/// The hardening rating cannot regress: both services stay at or below 1.5, and none of
/// the settings the agent's design rules out creeps in.
#[test]
fn services_are_rated_at_most_1_5_by_systemd_analyze_security() {
    let analyze = tool("systemd-analyze");
    for service in [
        "lwa-agent.service",
        "lwa-agent-check.service",
        "lwa-agent-doctor.service",
    ] {
        let path = repo().join("systemd").join(service);
        let out = run(Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path));
        let line = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
        let figure: f64 = line
            .split(':')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
        assert!(
            figure <= MAX_EXPOSURE,
            "{service}: exposure {figure} > {MAX_EXPOSURE}:\n{out}"
        );

        let unit = parse_unit(&path);
        // SO_PEERCRED allow lists need the peers' real uids: no user namespace.
        assert!(
            values(&unit, "Service", "PrivateUsers").is_empty(),
            "{service}: PrivateUsers= would map every peer to nobody"
        );
        assert_eq!(one(&unit, "Service", "User"), "lwa-agent");
        assert_eq!(one(&unit, "Service", "CapabilityBoundingSet"), "");
        assert_eq!(one(&unit, "Service", "ProtectSystem"), "strict");
        assert_eq!(one(&unit, "Service", "StateDirectory"), "lwa-agent");
    }
}

/// The settings docs/systemd.md names are where they belong.
#[test]
fn units_carry_the_settings_docs_systemd_md_names() {
    let dir = repo().join("systemd");
    let socket = parse_unit(&dir.join("lwa-agent.socket"));
    assert_eq!(
        one(&socket, "Socket", "ListenStream"),
        "/run/lwa-agent/lwa-agent.sock"
    );
    assert_eq!(one(&socket, "Socket", "SocketMode"), "0600");
    assert_eq!(one(&socket, "Socket", "SocketUser"), "root");
    assert_eq!(one(&socket, "Socket", "SocketGroup"), "root");
    assert_eq!(one(&socket, "Install", "WantedBy"), "sockets.target");

    let service = parse_unit(&dir.join("lwa-agent.service"));
    assert_eq!(one(&service, "Service", "Type"), "notify");
    assert_eq!(
        one(&service, "Service", "ExecStart"),
        "/usr/bin/lwa-agent run"
    );
    assert_eq!(one(&service, "Service", "ExecReload"), "kill -HUP $MAINPID");
    assert_eq!(one(&service, "Service", "Restart"), "on-failure");
    assert!(!one(&service, "Service", "WatchdogSec").is_empty());
    let loaded: BTreeSet<&str> = values(&service, "Service", "LoadCredential")
        .iter()
        .filter_map(|v| v.split_once(':').map(|(id, _)| id))
        .collect();
    let defaults: BTreeSet<&str> = values(&service, "Service", "SetCredential")
        .iter()
        .filter_map(|v| v.split_once(':').map(|(id, _)| id))
        .collect();
    assert_eq!(
        loaded,
        BTreeSet::from([
            "rolesanywhere-cert",
            "rolesanywhere-key",
            "rolesanywhere-chain",
            "aws-credentials"
        ])
    );
    // A fallback for each, so a host without Roles Anywhere still starts.
    assert_eq!(loaded, defaults);

    let timer = parse_unit(&dir.join("lwa-agent-check.timer"));
    assert_eq!(one(&timer, "Timer", "OnCalendar"), "daily");
    assert_eq!(one(&timer, "Timer", "Persistent"), "true");
    assert!(!one(&timer, "Timer", "RandomizedDelaySec").is_empty());
    let check = parse_unit(&dir.join("lwa-agent-check.service"));
    assert_eq!(
        one(&check, "Service", "ExecStart"),
        "/usr/bin/lwa-agent check"
    );
}

// ---------------------------------------------------------------------------------------
// Tests: every systemd from 239
// ---------------------------------------------------------------------------------------

/// Every directive a unit uses is in systemd/directives.md with the version that reads it,
/// and one newer than the oldest supported systemd says what an older host does instead.
#[test]
fn every_directive_is_in_the_version_table_with_a_plan_for_older_hosts() {
    let table = directives();
    let mut used = BTreeSet::new();
    for name in unit_files() {
        let unit = parse_unit(&repo().join("systemd").join(&name));
        for settings in unit.values() {
            for key in settings.keys() {
                used.insert((key.clone(), name.clone()));
            }
        }
    }
    assert!(used.len() > 40, "the units were read: {used:?}");
    for (key, unit) in &used {
        let row = table
            .iter()
            .find(|d| &d.name == key)
            .unwrap_or_else(|| panic!("{unit} uses {key}=, which systemd/directives.md lacks"));
        if row.since > OLDEST_SYSTEMD {
            assert!(
                row.plan.len() > 10 && row.plan != "—",
                "{key}= needs systemd {} (> {OLDEST_SYSTEMD}) and has no plan for older hosts",
                row.since
            );
        }
    }
}

/// Before systemd 247 the credentials reach the service through `lwa-agent
/// load-credentials`: its ID:PATH pairs are the LoadCredential= lines, in every unit.
#[test]
fn the_credential_hand_off_for_old_systemd_copies_what_load_credential_loads() {
    let mut units_with_credentials = 0;
    for name in unit_files() {
        let unit = parse_unit(&repo().join("systemd").join(&name));
        let loaded: BTreeSet<&str> = values(&unit, "Service", "LoadCredential")
            .iter()
            .map(String::as_str)
            .collect();
        if loaded.is_empty() {
            continue;
        }
        units_with_credentials += 1;
        let copied: BTreeSet<&str> = values(&unit, "Service", "ExecStartPre")
            .iter()
            .filter_map(|c| c.strip_prefix("+/usr/bin/lwa-agent load-credentials "))
            .flat_map(|args| args.split_whitespace())
            .collect();
        assert_eq!(copied, loaded, "{name}");
        let dir = one(&unit, "Service", "RuntimeDirectory");
        assert_eq!(
            one(&unit, "Service", "RuntimeDirectoryMode"),
            "0700",
            "{name}"
        );
        assert!(
            values(&unit, "Service", "Environment")
                .iter()
                .any(|e| e == &format!("LWA_CREDENTIALS_DIRECTORY=/run/{dir}")),
            "{name}: the agent must find the copies in /run/{dir}"
        );
    }
    assert_eq!(
        units_with_credentials, 4,
        "the agent, the check, the doctor and the pki check"
    );
}

/// What each supported systemd leaves of the hardening, as `systemd-analyze security`
/// rates the service once the directives that version does not know are gone; the table in
/// docs/systemd.md says the same.
#[test]
fn the_exposure_per_systemd_version_is_what_docs_systemd_md_says() {
    let docs = std::fs::read_to_string(repo().join("docs/systemd.md")).expect("docs/systemd.md");
    let text = std::fs::read_to_string(repo().join("systemd/lwa-agent.service")).expect("unit");
    let dir = tempfile::tempdir().expect("tmp");
    let mut wrong = Vec::new();
    for version in [239, 247, 249, 252] {
        let path = dir.path().join("lwa-agent.service");
        std::fs::write(&path, unit_as(&text, version)).expect("write");
        let out = run(Command::new(tool("systemd-analyze"))
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path));
        let figure = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no exposure level in:\n{out}"))
            .to_string();
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| {version} ")))
            .unwrap_or("(no row)");
        if !row.contains(&format!("| {figure} |")) {
            wrong.push(format!(
                "systemd {version}: exposure {figure}, docs/systemd.md: {row}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
