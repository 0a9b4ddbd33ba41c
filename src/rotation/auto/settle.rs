//! `lwa-agent rotate --settle`: a person decides a conflict, where a new-secret message
//! meets a secret someone else stored in SSM after Amazon sent it (`complete.rs`). The
//! decision is recorded for the whole fleet as the origin (`fleet::Origin`) of the secret
//! SSM holds now: newer than any waiting message (keep SSM), or older (take the message).
//! Whichever agent next looks at the message applies it by the usual rule
//! (`machine::completion`): deleted as stale, or proved and written.
//!
//! Invariants: there is a decision only about a conflict the fleet recorded
//! (`fleet::Conflict`); it is about the secret SSM holds now (by its fingerprint), and once
//! SSM holds another it counts for nothing; keeping SSM's secret makes only that message
//! and messages Amazon sent before it older, never one sent later.

use std::time::SystemTime;

use super::request::Target;
use super::Rotator;
use crate::rotation::fleet;

/// Which secret a person says is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Settle {
    /// What SSM holds: the waiting message is deleted.
    Ssm,
    /// The waiting message's secret: it is proved and written.
    Message,
}

impl Rotator {
    /// Records the decision about the conflict the fleet has for `credential`'s app;
    /// returns the parameter and version it is about. Refused when there is no conflict.
    pub async fn settle(&self, credential: &str, how: Settle) -> Result<(String, i64), String> {
        let subject = self.subject(Target::Credential(credential)).await?;
        let scope = self.scope(&subject.app);
        let conflict = self.conflict_record(&scope).await?.ok_or_else(|| {
            format!(
                "no conflict is recorded for the app of credential `{credential}` (under \
                 rotation.fleet_lock_prefix): nothing to settle. `lwa-agent status` shows the \
                 automatic rotation's state"
            )
        })?;
        let waiting = fleet::parse_time(&conflict.published).ok_or_else(|| {
            format!(
                "the conflict record {} is unreadable; delete it and let the agent record \
                 the conflict again",
                scope.conflict()
            )
        })?;
        // SSM's secret is dated just after the waiting message (so that message, and only
        // messages Amazon sent before it, count as older), or at the epoch (so the message
        // counts as newer).
        let (published, source) = match how {
            Settle::Ssm => (
                waiting + std::time::Duration::from_millis(1),
                fleet::source::KEEP_SSM,
            ),
            Settle::Message => (SystemTime::UNIX_EPOCH, fleet::source::TAKE_MESSAGE),
        };
        self.set_origin(
            &scope,
            subject.fingerprint.clone(),
            Some(published),
            None,
            source,
        )
        .await?;
        tracing::info!(parameter = %subject.app.key_parameter(), version = subject.version, message_id = %conflict.message_id, decision = ?how, "automatic rotation: a person settled a conflict");
        Ok((subject.app.key_parameter().to_string(), subject.version))
    }
}
