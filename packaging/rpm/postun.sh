# lwa-agent %postun ($1 = 0 after removal, 1 after an upgrade): reload unit files; after an
# upgrade restart the agent if it was running, so the new binary serves. rpm has no purge:
# the state directory (/var/lib/lwa-agent) and a changed config (.rpmsave) stay, and the
# system user stays (a uid must not be reused while files may carry it).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart lwa-agent.service >/dev/null 2>&1 || :
    fi
fi
# The package's directories, when empty: cargo-generate-rpm cannot list directories in the
# package (its `dir = true` assets fail to build), so rpm does not remove them itself.
if [ "$1" -eq 0 ]; then
    rmdir /usr/share/doc/lwa-agent/docs 2>/dev/null || :
    rmdir /etc/lwa-agent /usr/share/doc/lwa-agent /usr/share/lwa-agent 2>/dev/null || :
    # systemd's record of the timer's last run (Persistent=true).
    rm -f /var/lib/systemd/timers/stamp-lwa-agent-check.timer
fi
exit 0
