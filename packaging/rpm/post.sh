# lwa-agent %post ($1 = 1 on a first install, 2 on an upgrade): reload unit files and enable
# (not start) the socket on a first install. `systemctl enable` works without a running
# systemd (image builds, containers); daemon-reload needs one, so it is guarded.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload enable lwa-agent.socket lwa-agent-pki.path >/dev/null 2>&1 || :
fi
# Watch the Roles Anywhere certificate from now on (renewals restart the agent).
if [ -d /run/systemd/system ] && systemctl -q is-enabled lwa-agent-pki.path 2>/dev/null; then
    systemctl start lwa-agent-pki.path >/dev/null 2>&1 || :
fi
exit 0
