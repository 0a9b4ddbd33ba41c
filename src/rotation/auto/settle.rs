//! `lwa-agent rotate --settle`: a person decides a conflict, where a new-secret message
//! meets a secret someone else stored in SSM after Amazon sent it (`complete.rs`). The
//! decision is recorded for the whole fleet as the origin (`fleet::Origin`) of the secret
//! SSM holds now: newer than any waiting message (keep SSM), or older (take the message).
//! Whichever agent next looks at the message applies it by the usual rule
//! (`machine::completion`): deleted as stale, or proved and written.
//!
//! Invariant: the decision is about the secret SSM holds now (by its fingerprint); once
//! SSM holds another, it counts for nothing.

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
    /// Records the decision for `credential`'s app; returns the parameter and version it
    /// is about.
    pub async fn settle(&self, credential: &str, how: Settle) -> Result<(String, i64), String> {
        let subject = self.subject(Target::Credential(credential)).await?;
        let (published, source) = match how {
            Settle::Ssm => (SystemTime::now(), fleet::source::KEEP_SSM),
            Settle::Message => (SystemTime::UNIX_EPOCH, fleet::source::TAKE_MESSAGE),
        };
        self.set_origin(
            &self.scope(&subject.app),
            subject.fingerprint.clone(),
            Some(published),
            None,
            source,
        )
        .await?;
        tracing::info!(parameter = %subject.app.key_parameter(), version = subject.version, decision = ?how, "automatic rotation: a person settled a conflict");
        Ok((subject.app.key_parameter().to_string(), subject.version))
    }
}
