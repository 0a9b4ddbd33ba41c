//! SSM Parameter Store: one file per kind of call, so that what the token path needs
//! ([`read`]) stands apart from what rotation and the commands write.
//!
//! - [`read`]: SecureStrings (decrypted) and their metadata;
//! - [`write`]: SecureStrings created and replaced;
//! - [`markers`]: the fleet's plain String records;
//! - [`policies`]: recognising parameter policies in SSM's answers.

pub mod markers;
pub mod policies;
pub mod read;
pub mod write;
