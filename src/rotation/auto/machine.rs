//! The automatic rotation's decisions, pure: whether a trigger starts a rotation, the
//! steps of asking Amazon for a new secret (marker → grantless token → rotate call, with
//! the 429 rule), how long a new secret is proved for, what an expiry notification means,
//! and what a recorded rotation that is still waiting has become.
//!
//! The I/O lives in `request.rs` (it runs [`Request`]'s steps), `complete.rs` and
//! `listener.rs`; everything that decides is here and unit-tested.

use std::time::{Duration, SystemTime};

use super::app_management::{throttle_wait, RotateError};
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
    /// A new-secret message meets a secret someone else stored after it: it waits for a
    /// person (`lwa-agent rotate --settle`).
    pub const CONFLICT: &str = "conflict";
    /// A person settled a conflict in favour of what SSM holds; the message is gone.
    pub const SETTLED: &str = "settled";
}

/// A process that died between taking the marker and recording Amazon's answer leaves a
/// `requesting` record; after this long it no longer counts as in flight (the marker, if
/// it was taken, still stops a second rotate call for the same version).
pub const REQUESTING_BOUND: Duration = Duration::from_secs(10 * 60);

/// Why a trigger does not start a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The age trigger, and the secret is younger than `rotate_after`.
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
/// host's record of the last rotation. `rotate_after` is the age trigger's rule only: an
/// expiry notice is Amazon's word (SSM's age says when a value was stored, not when
/// Amazon made it), and a person's command is theirs.
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
    if trigger == Trigger::Age && age < rotate_after {
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
    /// When Amazon published the notification the secret it holds came from, from the
    /// fleet's [`Origin`](crate::rotation::fleet::Origin) record when that names this very
    /// secret; `None` when the secret was stored otherwise (`setup`, `put-secret`, the
    /// console, a write whose record was lost).
    pub origin_published: Option<SystemTime>,
    pub last_modified: Option<SystemTime>,
}

/// How much later than a publish time an SSM write must be to count as later: Amazon's
/// and the test endpoint's times may be cut to whole seconds.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);

/// What a new-secret message means for the app's secret parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Every parameter holds it already (SQS delivers at least once; another host may
    /// have been first): nothing to write, the message is done.
    Current,
    /// A parameter holds a secret from a later notification: writing this older secret
    /// (LWA accepts it for days) would replace a newer one. Nothing is written, and the
    /// message is done.
    Stale,
    /// These parameters (indices) hold a secret stored by someone else after Amazon sent
    /// this one: which is newer cannot be told, and the message may be the only copy of
    /// its secret. Nothing is written, the message stays, and a person decides
    /// (`lwa-agent rotate --settle`); until then it is looked at again on the
    /// [`retry_after`] schedule.
    Conflict(Vec<usize>),
    /// Write these parameters (indices into the given list).
    Write(Vec<usize>),
}

/// What to do with a new secret published at `published`, given where each secret
/// parameter stands.
///
/// Invariants: an older secret never replaces a newer one, and a message is done without
/// a write only when SSM holds its secret, or one from a later notification. A
/// parameter's secret is from a later notification when its origin record says so; a
/// secret with no origin that SSM stored after the message was published (a `put-secret`
/// of an old value, a console write) is a conflict, never a reason to drop the message.
pub fn completion(held: &[Held], published: Option<SystemTime>) -> Completion {
    let needed: Vec<usize> = (0..held.len()).filter(|i| !held[*i].holds_new).collect();
    if needed.is_empty() {
        return Completion::Current;
    }
    let Some(published) = published else {
        // No publish time to compare with: the message is the only word there is.
        return Completion::Write(needed);
    };
    let later = needed
        .iter()
        .any(|i| held[*i].origin_published.is_some_and(|t| t > published));
    if later {
        return Completion::Stale;
    }
    let conflicts: Vec<usize> = needed
        .iter()
        .copied()
        .filter(|i| {
            held[*i].origin_published.is_none()
                && held[*i]
                    .last_modified
                    .is_some_and(|t| t > published + CLOCK_TOLERANCE)
        })
        .collect();
    if conflicts.is_empty() {
        Completion::Write(needed)
    } else {
        Completion::Conflict(conflicts)
    }
}

/// Why an expiry notification starts nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// Amazon published it before SSM got the secret it holds now.
    PublishedBeforeTheWrite,
    /// It announces the end of the secret the current one replaced (its 7-day clock).
    OldSecretsClock,
}

/// What an expiry notification for a configured app asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryAction {
    /// It is about a secret already replaced.
    Replaced(Replaced),
    /// Rotate, whatever the secret's age in SSM.
    Rotate,
}

/// An expiry notice published at `published`, announcing the end at `announced`, about
/// the app whose key parameter SSM last wrote at `written`; `old_secret_expiry` is the
/// `oldClientSecretExpiryTime` of the new-secret notification the current value came
/// from, when it came from one.
///
/// Invariant: only a notice about a replaced secret starts nothing; `rotate_after` has
/// no say. A notice published about when SSM was written counts as after the write: an
/// extra rotation is harmless, a missed one is the outage.
pub fn expiry_action(
    published: Option<SystemTime>,
    written: SystemTime,
    announced: Option<SystemTime>,
    old_secret_expiry: Option<SystemTime>,
) -> ExpiryAction {
    if published.is_some_and(|p| p + CLOCK_TOLERANCE < written) {
        return ExpiryAction::Replaced(Replaced::PublishedBeforeTheWrite);
    }
    let same_clock = match (announced, old_secret_expiry) {
        (Some(a), Some(o)) => {
            let gap = a.duration_since(o).or_else(|e| Ok::<_, ()>(e.duration()));
            gap.is_ok_and(|g| g <= CLOCK_TOLERANCE)
        }
        _ => false,
    };
    if same_clock {
        ExpiryAction::Replaced(Replaced::OldSecretsClock)
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

/// `from_notification`: the secret SSM holds now came from a new-secret notification (its
/// origin record names it). A newer version written otherwise (a `put-secret` while the
/// rotation waits) is not the rotation's secret: it still waits, and the message, when
/// it comes, is a conflict for a person.
pub fn reconcile(
    record: &AutoRotation,
    current_version: i64,
    from_notification: bool,
    now: SystemTime,
) -> Waiting {
    if from_notification
        && record
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

/// While a host works on a message, it renews the message's invisibility this often…
pub const KEEP_EVERY: Duration = Duration::from_secs(10);

/// …for this long each time (SQS's default visibility): a host that dies lets the
/// message reappear for the others within this.
pub const KEEP_FOR: Duration = Duration::from_secs(30);

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
        // Amazon's expiry notice is not an age: a secret stored yesterday (by `setup`)
        // may be months old.
        assert_eq!(
            decide_start(
                Trigger::ExpiryNotification,
                1,
                Duration::ZERO,
                after,
                None,
                now
            ),
            Ok(())
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
    fn an_expiry_notice_rotates_whatever_the_age_unless_it_is_about_a_replaced_secret() {
        let now = SystemTime::now();
        let announced = Some(now + 7 * DAY);
        // Stored a minute ago (setup), announced now: rotate.
        assert_eq!(
            expiry_action(Some(now), now - Duration::from_secs(60), announced, None),
            ExpiryAction::Rotate
        );
        assert_eq!(expiry_action(None, now, None, None), ExpiryAction::Rotate);
        // Published before SSM got the value it holds: about the value before.
        assert_eq!(
            expiry_action(Some(now - DAY), now, announced, None),
            ExpiryAction::Replaced(Replaced::PublishedBeforeTheWrite)
        );
        // Published in the same second as the write: counts as after it.
        assert_eq!(
            expiry_action(Some(now), now + Duration::from_millis(900), announced, None),
            ExpiryAction::Rotate
        );
        // After a rotation Amazon announces the replaced secret's 7-day clock: the time it
        // names is the new-secret notification's oldClientSecretExpiryTime.
        assert_eq!(
            expiry_action(Some(now), now - DAY, announced, announced),
            ExpiryAction::Replaced(Replaced::OldSecretsClock)
        );
        assert_eq!(
            expiry_action(
                Some(now),
                now - DAY,
                announced,
                announced.map(|t| t + Duration::from_millis(500))
            ),
            ExpiryAction::Replaced(Replaced::OldSecretsClock),
            "the same time written with other precision"
        );
        // Another clock (this secret's own 180 days): rotate.
        assert_eq!(
            expiry_action(Some(now), now - DAY, announced, Some(now - DAY)),
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

    fn held(holds_new: bool, origin: Option<SystemTime>, modified: SystemTime) -> Held {
        Held {
            holds_new,
            origin_published: origin,
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
        // A secret from an earlier notification is replaced, whenever it was written.
        assert_eq!(
            completion(&[held(false, Some(t - min), t + min)], Some(t)),
            Completion::Write(vec![0])
        );
    }

    #[test]
    fn an_older_message_never_replaces_a_newer_secret() {
        let published = SystemTime::now();
        let min = Duration::from_secs(60);
        // The origin record says the secret SSM holds came from a later notification.
        assert_eq!(
            completion(
                &[held(false, Some(published + min), published + 2 * min)],
                Some(published)
            ),
            Completion::Stale
        );
        // One such parameter is enough: nothing is written anywhere.
        assert_eq!(
            completion(
                &[
                    held(false, None, published - min),
                    held(false, Some(published + min), published + min)
                ],
                Some(published)
            ),
            Completion::Stale
        );
    }

    #[test]
    fn a_secret_stored_by_someone_else_after_the_message_is_a_conflict_not_a_drop() {
        let published = SystemTime::now();
        let min = Duration::from_secs(60);
        // SSM got a value with no origin after Amazon sent this one (a put-secret of the
        // old value, a console write): which is newer is unknown, the message stays.
        assert_eq!(
            completion(&[held(false, None, published + min)], Some(published)),
            Completion::Conflict(vec![0])
        );
        assert_eq!(
            completion(
                &[
                    held(true, None, published + min),
                    held(false, None, published - min),
                    held(false, None, published + min)
                ],
                Some(published)
            ),
            Completion::Conflict(vec![2])
        );
        // A write in the same second as a publish cut to whole seconds is not later.
        assert_eq!(
            completion(
                &[held(false, None, published + Duration::from_millis(900))],
                Some(published)
            ),
            Completion::Write(vec![0])
        );
    }

    #[test]
    fn a_newer_message_wins_over_an_older_one_completed_late() {
        // The older message's secret was written after the newer one was published: by
        // write time alone the newer message would look stale; the origin says otherwise.
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
        assert_eq!(reconcile(&waiting, 3, true, now), Waiting::Still);
        assert_eq!(
            reconcile(&waiting, 4, true, now),
            Waiting::Rotated { version: 4 }
        );
        assert_eq!(reconcile(&waiting, 3, true, now + DAY), Waiting::TimedOut);
        // A version someone else wrote while the rotation waits is not its secret.
        assert_eq!(reconcile(&waiting, 4, false, now), Waiting::Still);
    }
}
