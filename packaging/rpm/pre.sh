# lwa-agent %pre: create the system user before the files are unpacked, so that rpm can give
# /etc/lwa-agent/lwa-agent.toml to group lwa-agent. The same definition as
# /usr/lib/sysusers.d/lwa-agent.conf, which is not on disk yet, so it is passed on stdin.
if ! getent passwd lwa-agent >/dev/null 2>&1; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        echo 'u lwa-agent - "lwa-agent token broker" / /usr/sbin/nologin' |
            systemd-sysusers --replace=/usr/lib/sysusers.d/lwa-agent.conf -
    else
        useradd --system --user-group --no-create-home --home-dir / \
            --shell /usr/sbin/nologin --comment "lwa-agent token broker" lwa-agent
    fi
fi
exit 0
