# lwa-agent %pre: create the system user before the files are unpacked, so that rpm can give
# /etc/lwa-agent/lwa-agent.toml to group lwa-agent. The same definition as
# /usr/lib/sysusers.d/lwa-agent.conf, which is not on disk yet, so it is passed on stdin;
# systemd-sysusers (every supported systemd has it, with --replace) leaves an existing
# user alone. Only POSIX sh, systemctl and systemd-sysusers: dnf and zypper run it alike.
echo 'u lwa-agent - "lwa-agent token broker" / /usr/sbin/nologin' |
    systemd-sysusers --replace=/usr/lib/sysusers.d/lwa-agent.conf - || :
exit 0
