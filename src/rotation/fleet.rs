//! What the hosts of a fleet share in SSM, under `rotation.fleet_lock_prefix`: the names
//! of their markers and records, and what those hold. Pure: the reads and writes are
//! `aws::ssm::markers`.
//!
//! Everything about one SP-API app lives under `{prefix}/{hash of the client id}/`, so
//! hosts agree on it whatever their configs call, order or recreate the parameters
//! (docs/automatic-rotation.md, "What the fleet shares in SSM"):
//!
//! | name | what |
//! |---|---|
//! | `rotate-{fp}` | create-only: the one host that asks Amazon to replace the secret `fp` |
//! | `rotated-{fp}` | a claim: the one "rotated automatically" report for the new secret `fp` |
//! | `alert-{what}-{id}` | a claim: one alert |
//! | `secret-{fp}` | the [`Origin`] of the secret `fp`: which notification, or a person |
//! | `completing` | a lease: the one host writing the app's parameters now |
//! | `conflict` | the [`Conflict`] waiting for a person (`lwa-agent rotate --settle`) |
//! | `parameters/{hash}` | a host's [`Registration`]: every one is written |
//!
//! Reminders stay per parameter: `{prefix}/{hash of the parameter}/{period}`.
//!
//! Invariants: no name or value holds a secret (a secret appears only as its
//! [`fingerprint`], which cannot be turned back into it); a claim is taken create-only,
//! so one host holds it, and says whether its message went out, so a host that died
//! before sending leaves a claim that another may take over after [`CLAIM_LEASE`].

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A short, stable name for a parameter or an app inside the prefix (SSM names have a
/// depth and length limit, so a parameter's own path is not reused).
pub fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..8])
}

/// A one-way fingerprint of a secret: it names a secret in markers and records without
/// revealing it (an LWA client secret has far more entropy than a search could cover).
/// Domain-separated, so it equals no other hash of the same text.
pub fn fingerprint(secret: &SecretString) -> String {
    let mut h = Sha256::new();
    h.update(b"lwa-agent secret fingerprint v1\0");
    h.update(secret.expose_secret().as_bytes());
    hex::encode(&h.finalize()[..12])
}

/// The fleet's names for one app.
#[derive(Debug, Clone)]
pub struct AppScope {
    base: String,
}

impl AppScope {
    pub fn new(prefix: &str, client_id: &str) -> AppScope {
        AppScope {
            base: format!("{}/{}", prefix.trim_end_matches('/'), hash(client_id)),
        }
    }

    /// The create-only marker of the one request to replace the secret `fingerprint`.
    pub fn request(&self, fingerprint: &str) -> String {
        format!("{}/rotate-{fingerprint}", self.base)
    }

    /// The claim of the one report that the app now has the secret `fingerprint`.
    pub fn report(&self, fingerprint: &str) -> String {
        format!("{}/rotated-{fingerprint}", self.base)
    }

    /// The claim of one alert: `what` happened, about `about` (a fingerprint or a hash).
    pub fn alert(&self, what: &str, about: &str) -> String {
        format!("{}/alert-{what}-{about}", self.base)
    }

    /// Where the secret `fingerprint` came from ([`Origin`]). One record per secret, never
    /// overwritten by another secret's, so a write that fails leaves the current secret's
    /// record as it was.
    pub fn origin(&self, fingerprint: &str) -> String {
        format!("{}/secret-{fingerprint}", self.base)
    }

    /// The lease of the one host writing the app's parameters (second look, origin,
    /// writes), so that two hosts completing two messages cannot interleave their writes.
    pub fn completing(&self) -> String {
        format!("{}/completing", self.base)
    }

    /// The conflict waiting for a person ([`Conflict`]).
    pub fn conflict(&self) -> String {
        format!("{}/conflict", self.base)
    }

    /// Whether `name` is one of the fleet's own parameters (never a secret's).
    pub fn is_under(prefix: &str, name: &str) -> bool {
        name.starts_with(&format!("{}/", prefix.trim_end_matches('/')))
    }

    /// The path under which every host registers its client secret parameters.
    pub fn registrations(&self) -> String {
        format!("{}/parameters", self.base)
    }

    pub fn registration(&self, parameter: &str) -> String {
        format!("{}/parameters/{}", self.base, hash(parameter))
    }
}

/// The fleet marker of one reminder about `parameter` in `period`.
pub fn reminder(prefix: &str, parameter: &str, period: &str) -> String {
    format!(
        "{}/{}/{period}",
        prefix.trim_end_matches('/'),
        hash(parameter)
    )
}

/// Where a secret came from: which new-secret notification, or a person's decision
/// (`lwa-agent rotate --settle`). It orders secrets (an older message never replaces a
/// newer secret) and recognises Amazon's notice about the replaced secret's last days. It
/// counts only for the secret it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// [`fingerprint`] of the secret written.
    pub fingerprint: String,
    /// When Amazon published the notification it came from (RFC 3339): a secret from a
    /// later notification wins. `None` when the notification had no time.
    pub published: Option<String>,
    /// When the secret it replaced stops working, as Amazon's notification said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_secret_expires_at: Option<String>,
    /// `new_secret_message`, `settled_keep_ssm` or `settled_take_message`.
    pub source: String,
    pub host: String,
    /// RFC 3339: when it was recorded.
    pub at: String,
}

pub mod source {
    pub const MESSAGE: &str = "new_secret_message";
    /// A person said that what SSM holds is the newest secret.
    pub const KEEP_SSM: &str = "settled_keep_ssm";
    /// A person said that the waiting message's secret is the newest.
    pub const TAKE_MESSAGE: &str = "settled_take_message";
}

impl Origin {
    pub fn parse(text: &str) -> Option<Origin> {
        serde_json::from_str(text).ok()
    }

    pub fn value(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// When the notification the secret came from was published (a person's decision
    /// gives the time that orders it against the waiting message).
    pub fn published_at(&self) -> Option<SystemTime> {
        self.published.as_deref().and_then(parse_time)
    }

    /// Whether it came from a new-secret notification (not from a person).
    pub fn from_notification(&self) -> bool {
        self.source == source::MESSAGE
    }
}

/// A new-secret message that meets a secret someone else stored after it, waiting for a
/// person: the fleet's one record of it, so that `lwa-agent rotate --settle` on any host
/// decides about that very message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub message_id: String,
    /// When Amazon published the waiting message (RFC 3339).
    pub published: String,
    pub host: String,
    pub at: String,
}

impl Conflict {
    pub fn parse(text: &str) -> Option<Conflict> {
        serde_json::from_str(text).ok()
    }

    pub fn value(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One host's client secret parameter for an app, with the client id parameter that says
/// which app it is: the completing host writes it only while that still names the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub client_secret_parameter: String,
    pub client_id_parameter: String,
}

impl Registration {
    pub fn parse(text: &str) -> Option<Registration> {
        serde_json::from_str(text).ok()
    }

    pub fn value(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An RFC 3339 time with any offset (Amazon writes `Z`, but an offset is valid too).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(SystemTime::from)
}

pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A host that took a claim and then died may have sent nothing. After this long a
/// pending claim is taken over: three publish attempts (each at most the SDK's 30 s
/// operation timeout) with their pauses end well within it.
pub const CLAIM_LEASE: Duration = Duration::from_secs(5 * 60);

/// A completing lease older than this belongs to a host that died while writing (the
/// writes of a few parameters take seconds).
pub const COMPLETING_LEASE: Duration = Duration::from_secs(2 * 60);

/// How many takeovers of one claim are tried (each a create-only name of its own).
pub const MAX_GENERATIONS: u32 = 8;

/// The name of a claim's `generation`th take: the first is the claim's own name, later
/// ones are create-only names beside it, so that exactly one host wins each.
pub fn generation(name: &str, generation: u32) -> String {
    if generation <= 1 {
        name.to_string()
    } else {
        format!("{name}.{generation}")
    }
}

/// What a claim says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Taken, the message not sent yet.
    Pending { host: String, since: SystemTime },
    /// The message went out.
    Sent,
}

impl Claim {
    pub fn pending(host: &str, now: SystemTime) -> String {
        format!("pending {host} {}", humantime::format_rfc3339_seconds(now))
    }

    pub fn sent(host: &str, now: SystemTime) -> String {
        format!("sent {host} {}", humantime::format_rfc3339_seconds(now))
    }

    /// A claim's value. Markers written before claims had phases (`<host> <time>`) were
    /// taken after the publish succeeded or given back: they count as sent.
    pub fn parse(text: &str) -> Claim {
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("pending"), Some(host), Some(time)) => match parse_time(time) {
                Some(since) => Claim::Pending {
                    host: host.to_string(),
                    since,
                },
                // Unreadable time: as good as abandoned.
                None => Claim::Pending {
                    host: host.to_string(),
                    since: SystemTime::UNIX_EPOCH,
                },
            },
            _ => Claim::Sent,
        }
    }

    /// Whether a pending claim's holder has had `lease` and may have died.
    pub fn abandoned(&self, now: SystemTime, lease: Duration) -> bool {
        match self {
            Claim::Pending { since, .. } => now.duration_since(*since).unwrap_or_default() > lease,
            Claim::Sent => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_per_app_and_hide_the_client_id_and_the_secret() {
        let a = AppScope::new("/erp/locks/", "amzn1.application-oa2-client.aaa");
        let b = AppScope::new("/erp/locks", "amzn1.application-oa2-client.bbb");
        let secret = SecretString::from("amzn1.oa2-cs.v1.secret".to_string());
        let fp = fingerprint(&secret);
        let names = [
            a.request(&fp),
            a.report(&fp),
            a.alert("conflict", "x"),
            a.origin(&fp),
            a.completing(),
            a.conflict(),
            a.registration("/erp/lwa/clientsecret"),
        ];
        for n in &names {
            assert!(n.starts_with("/erp/locks/") && !n.contains("//"), "{n}");
            assert!(!n.contains("oa2"), "{n}");
        }
        assert_ne!(
            a.request(&fp),
            b.request(&fp),
            "another app, another marker"
        );
        assert!(a
            .registration("/p")
            .starts_with(&format!("{}/", a.registrations())));
    }

    #[test]
    fn a_fingerprint_is_stable_short_and_not_a_plain_hash() {
        let s = SecretString::from("secret-1".to_string());
        assert_eq!(fingerprint(&s), fingerprint(&s));
        assert_eq!(fingerprint(&s).len(), 24);
        assert_ne!(
            fingerprint(&s),
            fingerprint(&SecretString::from("secret-2".to_string()))
        );
        assert!(!hash("secret-1").starts_with(&fingerprint(&s)[..16]));
    }

    #[test]
    fn records_round_trip_and_garbage_is_none() {
        let o = Origin {
            fingerprint: "abc".into(),
            published: Some("2026-11-30T10:00:00.123Z".into()),
            old_secret_expires_at: Some("2026-12-07T10:00:00Z".into()),
            source: source::MESSAGE.into(),
            host: "host-a".into(),
            at: "2026-11-30T10:00:01Z".into(),
        };
        let back = Origin::parse(&o.value()).expect("parses");
        assert_eq!(back, o);
        assert!(back.published_at().is_some() && back.from_notification());
        assert_eq!(Origin::parse("garbage"), None);
        assert_eq!(Origin::parse("2026-11-30T10:00:00Z v3 host-a"), None);
        let r = Registration {
            client_secret_parameter: "/erp/test/lwa/clientsecret".into(),
            client_id_parameter: "/erp/test/lwa/clientidentifier".into(),
        };
        assert_eq!(Registration::parse(&r.value()), Some(r));
        assert_eq!(Registration::parse("/erp/test/lwa/clientsecret"), None);
        let c = Conflict {
            message_id: "m-1".into(),
            published: "2026-11-30T10:00:00Z".into(),
            host: "h".into(),
            at: "2026-11-30T10:00:01Z".into(),
        };
        assert_eq!(Conflict::parse(&c.value()), Some(c));
        assert!(AppScope::is_under("/erp/locks/", "/erp/locks/x"));
        assert!(!AppScope::is_under("/erp/locks", "/erp/lockstep/x"));
    }

    #[test]
    fn a_claim_is_pending_until_sent_and_abandoned_after_its_lease() {
        let now = SystemTime::now();
        let p = Claim::parse(&Claim::pending("host-a", now));
        assert!(matches!(&p, Claim::Pending { host, .. } if host == "host-a"));
        assert!(!p.abandoned(now, CLAIM_LEASE));
        assert!(p.abandoned(now + CLAIM_LEASE + Duration::from_secs(2), CLAIM_LEASE));
        assert_eq!(Claim::parse(&Claim::sent("host-a", now)), Claim::Sent);
        assert_eq!(
            Claim::parse("host-a 2026-01-01T00:00:00Z"),
            Claim::Sent,
            "a marker from before claims had phases"
        );
        assert!(Claim::parse("pending host-a garbage").abandoned(now, CLAIM_LEASE));
        assert_eq!(generation("/m", 1), "/m");
        assert_eq!(generation("/m", 2), "/m.2");
    }
}
