//! The unit files as written: the settings SPEC §7 names and systemd's security rating.

use super::*;

// ---------------------------------------------------------------------------------------
// Tests: the units
// ---------------------------------------------------------------------------------------

/// The hardening rating cannot regress: both services stay at or below 1.5, and none of
/// the settings the agent's design rules out creeps in.
#[test]
fn services_are_rated_at_most_1_5_by_systemd_analyze_security() {
    let analyze = tool("systemd-analyze");
    for service in ["lwa-agent.service", "lwa-agent-check.service"] {
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

/// SPEC §7's settings are where they belong.
#[test]
fn units_carry_the_settings_the_spec_names() {
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
            "rolesanywhere-chain"
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
