//! The automatic rotation's decisions, pure: whether a trigger starts a rotation, the
//! steps of asking Amazon for a new secret (marker → grantless token → rotate call, with
//! the 429 rule), how long a new secret is proved for, what an expiry notification means,
//! and what a recorded rotation that is still waiting has become.
//!
//! The I/O lives in `request.rs` (it runs [`Request`]'s steps), `complete.rs` and
//! `listener.rs`; everything that decides is here and unit-tested.

use std::time::{Duration, SystemTime};

use crate::lwa::app_management::{throttle_wait, RotateError};
use crate::lwa::exchange::ExchangeError;
use crate::rotation::state::AutoRotation;

/// What asked for a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The rotation check found the client secret older than `rotate_after`.
    Age,
    /// Amazon announced the secret's expiry on `expiry_queue_url`.
    ExpiryNotification,
    /// `lwa-agent rotate`: a person asked, whatever the age.
    Command,
}

impl Trigger {
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Age => "age",
            Trigger::ExpiryNotification => "expiry_notification",
            Trigger::Command => "command",
        }
    }
}

/// The outcomes a record can have, as written in the state file.
pub mod outcome {
    pub const REQUESTING: &str = "requesting";
    pub const WAITING: &str = "waiting_for_secret";
    pub const ROTATED: &str = "rotated";
    pub const FAILED: &str = "failed";
}

/// A process that died between taking the marker and recording Amazon's answer leaves a
/// `requesting` record; after this long it no longer counts as in flight (the marker, if
/// it was taken, still stops a second rotate call for the same version).
pub const REQUESTING_BOUND: Duration = Duration::from_secs(10 * 60);

/// Why a trigger does not start a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Younger than `rotate_after`, and no person asked.
    TooYoung,
    /// A rotation of this secret version is already under way (here or, per the state
    /// file, in another process of this host) until the given time.
    InFlight { until: SystemTime },
    /// An earlier rotation of this version may have made a secret SSM does not hold: only
    /// a person (`lwa-agent rotate`) may ask Amazon again.
    NeedsAttention,
}

impl Skip {
    pub fn label(&self) -> &'static str {
        match self {
            Skip::TooYoung => "not_due",
            Skip::InFlight { .. } => "in_flight",
            Skip::NeedsAttention => "needs_attention",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::TooYoung => {
                f.write_str("the client secret is younger than rotation.auto.rotate_after")
            }
            Skip::InFlight { until } => write!(
                f,
                "a rotation of this secret is already in flight (until {})",
                humantime::format_rfc3339_seconds(*until)
            ),
            Skip::NeedsAttention => f.write_str(
                "the last automatic rotation of this secret failed after Amazon made a new \
                 secret; a person must look (see the alert), then run lwa-agent rotate",
            ),
        }
    }
}

fn time(text: Option<&str>) -> Option<SystemTime> {
    text.and_then(|t| humantime::parse_rfc3339(t).ok())
}

/// Whether `trigger` starts a rotation of the secret at `version`, `age` old, given this
/// host's record of the last rotation.
pub fn decide_start(
    trigger: Trigger,
    version: i64,
    age: Duration,
    rotate_after: Duration,
    record: Option<&AutoRotation>,
    now: SystemTime,
) -> Result<(), Skip> {
    if let Some(r) = record.filter(|r| r.parameter_version == Some(version)) {
        let until = match r.outcome.as_str() {
            outcome::REQUESTING => time(Some(&r.at)).map(|t| t + REQUESTING_BOUND),
            outcome::WAITING => time(r.wait_until.as_deref()),
            _ => None,
        };
        if let Some(until) = until.filter(|u| *u > now) {
            return Err(Skip::InFlight { until });
        }
        if r.needs_attention && trigger != Trigger::Command {
            return Err(Skip::NeedsAttention);
        }
    }
    if trigger != Trigger::Command && age < rotate_after {
        return Err(Skip::TooYoung);
    }
    Ok(())
}

/// How often Amazon's rotate call is tried (429s and connections that never sent the
/// request) before giving up.
pub const MAX_CALLS: u32 = 3;

/// The pause after a connection that could not send the request, before the next call.
pub const UNSENT_WAIT: Duration = Duration::from_secs(5);

/// One step of asking Amazon for a new secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the fleet marker for this secret version (create-only).
    TakeMarker,
    /// Get (or reuse) the grantless token with the rotation scope.
    GetToken,
    /// Call rotateApplicationClientSecret after waiting `after`.
    Call {
        attempt: u32,
        after: Duration,
    },
    Finish(Ending),
}

/// How asking ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Amazon accepted (204): the new secret is on its way to the queue.
    Requested,
    /// The request may have reached Amazon (a timeout after sending, or a server error,
    /// which does not prove that no secret was made): treated as requested, so the marker
    /// stays and the new secret is waited for.
    MaybeRequested(String),
    /// Another host holds this version's marker: it asked, or is asking.
    OtherHost(String),
    /// Nothing was asked of Amazon (or Amazon refused): no new secret exists. With
    /// `give_back`, the marker is deleted so that a later trigger may try again.
    Failed { error: String, give_back: bool },
}

/// What happened in a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    MarkerTaken,
    MarkerHeld(String),
    MarkerError(String),
    Token(Result<(), String>),
    Called(Result<(), RotateError>),
}

/// The request, step by step: [`Request::first`], then [`Request::next`] with what each
/// step gave, until [`Step::Finish`].
#[derive(Debug, Default)]
pub struct Request {
    calls: u32,
}

impl Request {
    pub fn first() -> (Request, Step) {
        (Request::default(), Step::TakeMarker)
    }

    pub fn next(&mut self, event: Event) -> Step {
        match event {
            Event::MarkerTaken => Step::GetToken,
            Event::MarkerHeld(holder) => Step::Finish(Ending::OtherHost(holder)),
            Event::MarkerError(error) => Step::Finish(Ending::Failed {
                error,
                give_back: false,
            }),
            Event::Token(Err(error)) => Step::Finish(Ending::Failed {
                error: format!("cannot get the grantless LWA token for the rotation: {error}"),
                give_back: true,
            }),
            Event::Token(Ok(())) => self.call(Duration::ZERO),
            Event::Called(Ok(())) => Step::Finish(Ending::Requested),
            Event::Called(Err(e)) => {
                // Invariant: only a call that certainly made no secret is repeated (a 429,
                // or a request that never left this host). A 5xx or a timeout after
                // sending may come after Amazon made a secret: calling again could make a
                // second one, and giving the marker back could let another host do so.
                let retry_after = match &e {
                    // One call a minute: wait at least 60 s, never call at once.
                    RotateError::Throttled { retry_after } => Some(throttle_wait(*retry_after)),
                    RotateError::Transport { sent: false, .. } => Some(UNSENT_WAIT),
                    RotateError::Transport { sent: true, .. } | RotateError::Server { .. } => {
                        return Step::Finish(Ending::MaybeRequested(e.to_string()))
                    }
                    RotateError::Refused { .. } => None,
                };
                match retry_after {
                    Some(after) if self.calls < MAX_CALLS => self.call(after),
                    _ => Step::Finish(Ending::Failed {
                        error: e.to_string(),
                        give_back: true,
                    }),
                }
            }
        }
    }

    fn call(&mut self, after: Duration) -> Step {
        self.calls += 1;
        Step::Call {
            attempt: self.calls,
            after,
        }
    }
}

/// How long a new secret is tried at LWA before it counts as rejected: a quarter of
/// `wait_for_secret`, at most 5 minutes (LWA may take a moment to know a new secret).
pub fn proof_window(wait_for_secret: Duration) -> Duration {
    (wait_for_secret / 4).min(Duration::from_secs(300))
}

/// At least this many proofs, however short the window.
pub const MIN_PROOFS: u32 = 3;

/// Whether to try the proof again after `attempts` failed ones, `elapsed` into the window.
pub fn prove_again(attempts: u32, elapsed: Duration, window: Duration) -> bool {
    attempts < MIN_PROOFS || elapsed < window
}

/// Whether LWA, proving a new secret with the app's refresh token (`with_refresh_token`),
/// refused the refresh token rather than the secret: `invalid_grant` comes only once the
/// client id and secret passed.
pub fn refresh_token_refused(error: &ExchangeError, with_refresh_token: bool) -> bool {
    with_refresh_token
        && matches!(error, ExchangeError::Auth { code, .. } if code == "invalid_grant")
}

/// A message is hidden from other hosts while this one works on it: the proof window plus
/// this margin for the writes.
pub const WORK_MARGIN: Duration = Duration::from_secs(120);

/// A new secret LWA rejected is tried again after this long (the message stays).
pub const REJECTED_RETRY: Duration = Duration::from_secs(15 * 60);

/// When a message that could not be completed now (SSM or LWA unreachable, a write SSM
/// refused) is tried again, after its `receive_count`th receive: 30 s, doubling, at most
/// 15 minutes. Soon enough that a fixed permission takes effect within minutes; the
/// message must be completed within the queue's retention (SQS's default: 4 days).
pub fn retry_after(receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(5);
    (Duration::from_secs(30) * 2u32.pow(doublings)).min(REJECTED_RETRY)
}

/// Where one of the app's secret parameters stands when a new-secret message arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// It already holds the message's secret.
    pub holds_new: bool,
    /// When Amazon published the secret it holds, from this agent's fleet-wide record of
    /// its own write of this very version; `None` when the version was written otherwise
    /// (`put-secret`, the console, a write whose record was lost).
    pub published: Option<SystemTime>,
    pub last_modified: Option<SystemTime>,
}

/// How much later than a publish time an SSM write must be to count as newer: Amazon's
/// and the test endpoint's times may be cut to whole seconds.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);

/// What a new-secret message means for the app's secret parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Every parameter holds it already (SQS delivers at least once; another host may
    /// have been first): nothing to write, the message is done.
    Current,
    /// SSM moved on: a parameter that does not hold the message's secret got a newer one
    /// after Amazon published the message. Writing this older secret (LWA accepts it for
    /// days) would replace a newer one: nothing is written, the message is done.
    Stale,
    /// Write these parameters (indices into the given list).
    Write(Vec<usize>),
}

/// What to do with a new secret published at `published`, given where each secret
/// parameter stands.
///
/// Invariant: an older secret never replaces a newer one. A parameter's secret is newer
/// when the agent's record of its write says it was published later, or, without such a
/// record, when SSM wrote the parameter after the message was published. The record
/// matters when an older message is completed late: its write is then later than the
/// newer message's publish time, and the newer message must still win.
pub fn completion(held: &[Held], published: Option<SystemTime>) -> Completion {
    let needed: Vec<usize> = (0..held.len()).filter(|i| !held[*i].holds_new).collect();
    if needed.is_empty() {
        return Completion::Current;
    }
    let Some(published) = published else {
        // No publish time to compare with: the message is the only word there is.
        return Completion::Write(needed);
    };
    let moved_on = needed.iter().any(|i| match held[*i].published {
        Some(theirs) => theirs > published,
        None => held[*i]
            .last_modified
            .is_some_and(|t| t > published + CLOCK_TOLERANCE),
    });
    if moved_on {
        Completion::Stale
    } else {
        Completion::Write(needed)
    }
}

/// What an expiry notification for a configured app asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryAction {
    /// The secret parameter changed after Amazon published the notification: it is about
    /// a secret already replaced.
    Stale,
    /// The secret is younger than `rotate_after`: the agent does not rotate on its own (a
    /// person decides), but says so.
    TooYoung,
    Rotate,
}

pub fn expiry_action(
    published: Option<SystemTime>,
    last_modified: SystemTime,
    age: Duration,
    rotate_after: Duration,
) -> ExpiryAction {
    if published.is_some_and(|p| last_modified > p) {
        ExpiryAction::Stale
    } else if age < rotate_after {
        ExpiryAction::TooYoung
    } else {
        ExpiryAction::Rotate
    }
}

/// What a `waiting_for_secret` record has become, given the secret parameter's version now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    Still,
    /// SSM holds a newer version: some host completed the rotation.
    Rotated {
        version: i64,
    },
    /// No new secret arrived in time.
    TimedOut,
}

pub fn reconcile(record: &AutoRotation, current_version: i64, now: SystemTime) -> Waiting {
    if record
        .parameter_version
        .is_some_and(|v| current_version > v)
    {
        return Waiting::Rotated {
            version: current_version,
        };
    }
    match time(record.wait_until.as_deref()) {
        Some(until) if until > now => Waiting::Still,
        _ => Waiting::TimedOut,
    }
}

/// The fleet marker's period for asking Amazon to rotate the secret at `version`.
pub fn request_period(version: i64) -> String {
    format!("auto-v{version}")
}

/// The period of the one "rotated automatically" report for the secret at `version`.
pub fn report_period(version: i64) -> String {
    format!("auto-rotated-v{version}")
}

/// The period of one alert (`what`: rejected, timed out, …) about the secret at `version`.
pub fn alert_period(what: &str, version: i64) -> String {
    format!("auto-{what}-v{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn record(outcome: &str, version: i64, at: SystemTime) -> AutoRotation {
        AutoRotation {
            outcome: outcome.into(),
            at: humantime::format_rfc3339_seconds(at).to_string(),
            wait_until: Some(
                humantime::format_rfc3339_seconds(at + 900 * Duration::from_secs(1)).to_string(),
            ),
            parameter_version: Some(version),
            ..AutoRotation::default()
        }
    }

    #[test]
    fn age_starts_a_rotation_only_when_due() {
        let now = SystemTime::now();
        let after = 150 * DAY;
        assert_eq!(
            decide_start(Trigger::Age, 1, 149 * DAY, after, None, now),
            Err(Skip::TooYoung)
        );
        assert_eq!(
            decide_start(Trigger::ExpiryNotification, 1, 149 * DAY, after, None, now),
            Err(Skip::TooYoung)
        );
        assert_eq!(
            decide_start(Trigger::Age, 1, 151 * DAY, after, None, now),
            Ok(())
        );
        // A person may rotate whatever the age.
        assert_eq!(
            decide_start(Trigger::Command, 1, DAY, after, None, now),
            Ok(())
        );
    }

    #[test]
    fn a_rotation_in_flight_is_not_started_again_even_by_the_command() {
        let now = SystemTime::now();
        let waiting = record(outcome::WAITING, 3, now - Duration::from_secs(60));
        let got = decide_start(Trigger::Command, 3, 200 * DAY, DAY, Some(&waiting), now);
        assert!(matches!(got, Err(Skip::InFlight { .. })), "{got:?}");
        // After its wait ended it is no longer in flight.
        assert_eq!(
            decide_start(
                Trigger::Age,
                3,
                200 * DAY,
                DAY,
                Some(&waiting),
                now + 3600 * Duration::from_secs(1)
            ),
            Ok(())
        );
        // A record about another version says nothing about this one.
        assert_eq!(
            decide_start(Trigger::Age, 4, 200 * DAY, DAY, Some(&waiting), now),
            Ok(())
        );
        let requesting = record(outcome::REQUESTING, 3, now - Duration::from_secs(30));
        assert!(decide_start(Trigger::Age, 3, 200 * DAY, DAY, Some(&requesting), now).is_err());
        let stale = record(outcome::REQUESTING, 3, now - 2 * REQUESTING_BOUND);
        assert_eq!(
            decide_start(Trigger::Age, 3, 200 * DAY, DAY, Some(&stale), now),
            Ok(())
        );
    }

    #[test]
    fn after_a_failure_that_may_have_made_a_secret_only_a_person_asks_again() {
        let now = SystemTime::now();
        let mut failed = record(outcome::FAILED, 2, now - DAY);
        failed.needs_attention = true;
        for t in [Trigger::Age, Trigger::ExpiryNotification] {
            assert_eq!(
                decide_start(t, 2, 200 * DAY, DAY, Some(&failed), now),
                Err(Skip::NeedsAttention)
            );
        }
        assert_eq!(
            decide_start(Trigger::Command, 2, DAY, DAY, Some(&failed), now),
            Ok(())
        );
        failed.needs_attention = false;
        assert_eq!(
            decide_start(Trigger::Age, 2, 200 * DAY, DAY, Some(&failed), now),
            Ok(())
        );
    }

    #[test]
    fn the_request_runs_marker_token_call() {
        let (mut r, step) = Request::first();
        assert_eq!(step, Step::TakeMarker);
        assert_eq!(r.next(Event::MarkerTaken), Step::GetToken);
        assert_eq!(
            r.next(Event::Token(Ok(()))),
            Step::Call {
                attempt: 1,
                after: Duration::ZERO
            }
        );
        assert_eq!(
            r.next(Event::Called(Ok(()))),
            Step::Finish(Ending::Requested)
        );
    }

    #[test]
    fn another_hosts_marker_ends_it_without_a_call() {
        let (mut r, _) = Request::first();
        assert_eq!(
            r.next(Event::MarkerHeld("host-b".into())),
            Step::Finish(Ending::OtherHost("host-b".into()))
        );
        let (mut r, _) = Request::first();
        assert!(matches!(
            r.next(Event::MarkerError("denied".into())),
            Step::Finish(Ending::Failed {
                give_back: false,
                ..
            })
        ));
    }

    #[test]
    fn a_429_waits_at_least_a_minute_and_gives_up_after_three_calls() {
        let (mut r, _) = Request::first();
        r.next(Event::MarkerTaken);
        r.next(Event::Token(Ok(())));
        let throttled = || {
            Event::Called(Err(RotateError::Throttled {
                retry_after: Some(Duration::from_secs(1)),
            }))
        };
        assert_eq!(
            r.next(throttled()),
            Step::Call {
                attempt: 2,
                after: Duration::from_secs(60)
            }
        );
        assert_eq!(
            r.next(throttled()),
            Step::Call {
                attempt: 3,
                after: Duration::from_secs(60)
            }
        );
        assert!(matches!(
            r.next(throttled()),
            Step::Finish(Ending::Failed {
                give_back: true,
                ..
            })
        ));
    }

    #[test]
    fn refusals_give_the_marker_back_and_a_maybe_sent_call_is_waited_for() {
        let (mut r, _) = Request::first();
        r.next(Event::MarkerTaken);
        assert!(matches!(
            r.next(Event::Token(Err("invalid_scope".into()))),
            Step::Finish(Ending::Failed {
                give_back: true,
                ..
            })
        ));
        let (mut r, _) = Request::first();
        r.next(Event::MarkerTaken);
        r.next(Event::Token(Ok(())));
        let refused = RotateError::Refused {
            status: 403,
            message: "Unauthorized".into(),
            hint: "",
        };
        assert!(matches!(
            r.next(Event::Called(Err(refused))),
            Step::Finish(Ending::Failed {
                give_back: true,
                ..
            })
        ));
        let (mut r, _) = Request::first();
        r.next(Event::MarkerTaken);
        r.next(Event::Token(Ok(())));
        let timeout = RotateError::Transport {
            url: "u".into(),
            reason: "timed out".into(),
            sent: true,
        };
        assert!(matches!(
            r.next(Event::Called(Err(timeout))),
            Step::Finish(Ending::MaybeRequested(_))
        ));
    }

    #[test]
    fn a_server_error_keeps_the_marker_and_waits_for_the_secret() {
        // A 5xx does not prove that Amazon made no secret: no second call, no give-back.
        let (mut r, _) = Request::first();
        r.next(Event::MarkerTaken);
        r.next(Event::Token(Ok(())));
        let server = RotateError::Server {
            status: 503,
            message: "Service Unavailable".into(),
        };
        assert!(matches!(
            r.next(Event::Called(Err(server))),
            Step::Finish(Ending::MaybeRequested(_))
        ));
        // A connection that never sent the request is safe to repeat.
        let (mut r, _) = Request::first();
        r.next(Event::MarkerTaken);
        r.next(Event::Token(Ok(())));
        let unsent = RotateError::Transport {
            url: "u".into(),
            reason: "connection failed".into(),
            sent: false,
        };
        assert_eq!(
            r.next(Event::Called(Err(unsent))),
            Step::Call {
                attempt: 2,
                after: UNSENT_WAIT
            }
        );
    }

    #[test]
    fn proofs_are_retried_over_a_window_but_at_least_three_times() {
        assert_eq!(
            proof_window(Duration::from_secs(900)),
            Duration::from_secs(225)
        );
        assert_eq!(
            proof_window(Duration::from_secs(7200)),
            Duration::from_secs(300)
        );
        let w = proof_window(Duration::from_secs(20));
        assert!(prove_again(1, Duration::from_secs(60), w));
        assert!(prove_again(2, Duration::from_secs(60), w));
        assert!(!prove_again(3, Duration::from_secs(60), w));
        assert!(prove_again(
            5,
            Duration::from_secs(1),
            Duration::from_secs(225)
        ));
    }

    #[test]
    fn expiry_notifications_about_replaced_or_young_secrets_do_not_rotate() {
        let now = SystemTime::now();
        assert_eq!(
            expiry_action(Some(now - DAY), now, Duration::ZERO, DAY),
            ExpiryAction::Stale
        );
        assert_eq!(
            expiry_action(Some(now), now - DAY, 2 * Duration::from_secs(3600), DAY),
            ExpiryAction::TooYoung
        );
        assert_eq!(
            expiry_action(Some(now), now - 200 * DAY, 200 * DAY, DAY),
            ExpiryAction::Rotate
        );
        assert_eq!(
            expiry_action(None, now - 200 * DAY, 200 * DAY, DAY),
            ExpiryAction::Rotate
        );
    }

    #[test]
    fn invalid_grant_blames_the_refresh_token_not_the_secret() {
        let auth = |code: &str| ExchangeError::Auth {
            code: code.into(),
            description: "d".into(),
        };
        assert!(refresh_token_refused(&auth("invalid_grant"), true));
        assert!(!refresh_token_refused(&auth("invalid_grant"), false));
        assert!(!refresh_token_refused(&auth("invalid_client"), true));
        assert!(!refresh_token_refused(
            &ExchangeError::Server { status: 500 },
            true
        ));
    }

    #[test]
    fn a_message_not_completed_now_is_tried_again_sooner_first() {
        assert_eq!(retry_after(0), Duration::from_secs(30));
        assert_eq!(retry_after(1), Duration::from_secs(30));
        assert_eq!(retry_after(2), Duration::from_secs(60));
        assert_eq!(retry_after(4), Duration::from_secs(240));
        assert_eq!(retry_after(6), REJECTED_RETRY);
        assert_eq!(retry_after(u32::MAX), REJECTED_RETRY);
    }

    fn held(holds_new: bool, published: Option<SystemTime>, modified: SystemTime) -> Held {
        Held {
            holds_new,
            published,
            last_modified: Some(modified),
        }
    }

    #[test]
    fn a_new_secret_is_written_where_missing_and_never_twice() {
        let t = SystemTime::now();
        let min = Duration::from_secs(60);
        assert_eq!(
            completion(&[held(true, None, t), held(true, None, t - min)], Some(t)),
            Completion::Current
        );
        // Parameters written before the publish that lack it get it; those that hold it
        // are not written again.
        assert_eq!(
            completion(
                &[held(true, None, t + min), held(false, None, t - min)],
                Some(t)
            ),
            Completion::Write(vec![1])
        );
        // Without a publish time the message is all there is to go by.
        assert_eq!(
            completion(&[held(false, None, t + min)], None),
            Completion::Write(vec![0])
        );
    }

    #[test]
    fn an_older_message_never_replaces_a_newer_secret() {
        let published = SystemTime::now();
        let min = Duration::from_secs(60);
        // SSM moved on after the message was published (a newer rotation, a put-secret).
        assert_eq!(
            completion(&[held(false, None, published + min)], Some(published)),
            Completion::Stale
        );
        // One parameter that moved on is enough: nothing is written anywhere.
        assert_eq!(
            completion(
                &[
                    held(false, None, published - min),
                    held(false, None, published + min)
                ],
                Some(published)
            ),
            Completion::Stale
        );
        // A write in the same second as a publish cut to whole seconds is not newer.
        assert_eq!(
            completion(
                &[held(false, None, published + Duration::from_millis(900))],
                Some(published)
            ),
            Completion::Write(vec![0])
        );
        // The agent's record says the secret SSM holds was published later: stale.
        assert_eq!(
            completion(
                &[held(false, Some(published + min), published + 2 * min)],
                Some(published)
            ),
            Completion::Stale
        );
    }

    #[test]
    fn a_newer_message_wins_over_an_older_one_completed_late() {
        // The older message's secret was written after the newer one was published: by
        // write time alone the newer message would look stale; the record says otherwise.
        let newer = SystemTime::now();
        let older = newer - Duration::from_secs(120);
        let written_late = newer + Duration::from_secs(30);
        assert_eq!(
            completion(&[held(false, Some(older), written_late)], Some(newer)),
            Completion::Write(vec![0])
        );
        // And the older message, seen again afterwards, is stale.
        assert_eq!(
            completion(
                &[held(
                    false,
                    Some(newer),
                    written_late + Duration::from_secs(5)
                )],
                Some(older)
            ),
            Completion::Stale
        );
    }

    #[test]
    fn a_waiting_record_becomes_rotated_or_timed_out() {
        let now = SystemTime::now();
        let waiting = record(outcome::WAITING, 3, now);
        assert_eq!(reconcile(&waiting, 3, now), Waiting::Still);
        assert_eq!(reconcile(&waiting, 4, now), Waiting::Rotated { version: 4 });
        assert_eq!(reconcile(&waiting, 3, now + DAY), Waiting::TimedOut);
    }

    #[test]
    fn marker_periods_differ_per_purpose_and_version() {
        let all = [
            request_period(1),
            request_period(2),
            report_period(1),
            alert_period("rejected", 1),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
