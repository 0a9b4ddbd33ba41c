# lwa-agent %preun ($1 = 0 on removal, 1 on an upgrade): on removal stop and disable the
# socket, the agent and the timer. An upgrade leaves them alone (%postun restarts).
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl stop lwa-agent-pki.path lwa-agent-check.timer lwa-agent-check.service lwa-agent-doctor.service \
            lwa-agent.socket lwa-agent.service >/dev/null 2>&1 || :
    fi
    systemctl --no-reload disable lwa-agent-pki.path lwa-agent-check.timer lwa-agent.socket \
        lwa-agent.service >/dev/null 2>&1 || :
fi
exit 0
