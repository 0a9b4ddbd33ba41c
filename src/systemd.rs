//! The systemd side of the daemon: readiness and status notifications, the watchdog, and
//! socket activation. Outside systemd (no `NOTIFY_SOCKET`, no `LISTEN_FDS`) all of this is
//! a no-op, so the same binary runs by hand.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use sd_notify::NotifyState;

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn reloading() {
    // RELOADING=1 wants MONOTONIC_USEC next to it (systemd ≥ 253 checks it for Type=notify-reload).
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// How often to pet the watchdog: half of `WatchdogSec=`, as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Pets the watchdog forever. It runs on the same runtime as the request path, so a
/// runtime that stops making progress stops the pings and systemd restarts the agent.
pub async fn watchdog(interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

/// The listening socket systemd passed (`LISTEN_FDS`), if any.
pub fn activated_listener() -> Result<Option<UnixListener>, String> {
    let mut fds = sd_notify::listen_fds()
        .map_err(|e| format!("invalid LISTEN_FDS/LISTEN_PID from systemd: {e}"))?;
    let fd: RawFd = match fds.next() {
        None => return Ok(None),
        Some(fd) => fd,
    };
    if fds.next().is_some() {
        return Err(
            "systemd passed more than one socket: lwa-agent.socket must have exactly one \
             ListenStream="
                .into(),
        );
    }
    // SAFETY: systemd hands this fd to us alone (LISTEN_PID matched our pid and sd-notify
    // set CLOEXEC); nothing else in the process owns it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    // A stream socket bound to a path is what lwa-agent.socket declares; anything else is
    // a unit file mistake that accept() would only reveal later.
    match listener.local_addr() {
        Ok(addr) if addr.as_pathname().is_some() => {}
        _ => {
            return Err(
                "the socket systemd passed is not a Unix stream socket bound to a path: \
                 check ListenStream= in lwa-agent.socket"
                    .into(),
            )
        }
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot use the socket systemd passed: {e}"))?;
    Ok(Some(listener))
}
