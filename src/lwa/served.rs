//! A token in the form the socket hands it out (docs/clients.md's token answer), rendered
//! once per exchange. Serving a cached token then formats nothing and takes no lock: it copies the
//! two rendered halves around the one number that changes, the seconds left.

use std::io::Write;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::exchange::{self, Token};

/// The rendered answer for one token. Holds the access token, so no `Debug` and the
/// buffers are wiped when a newer token replaces it.
pub struct Served {
    pub expires_at: Instant,
    /// For display (`expires_at` in status).
    pub expires_at_wall: SystemTime,
    /// `{"access_token":"…","token_type":"…","expires_in":`
    json_head: Zeroizing<Vec<u8>>,
    /// `,"expires_at":"…","credential":"…"}` and a newline.
    json_tail: Vec<u8>,
    /// The text/plain answer: the token and a newline.
    text: Zeroizing<Vec<u8>>,
}

impl Served {
    pub fn new(token: &Token, credential: &str) -> Served {
        let access_token = token.access_token.expose_secret();
        // Room for the worst-case escaping (`\u00XX`, six bytes per byte): a Vec that grew
        // would free a copy of the token without wiping it.
        let mut json_head = Zeroizing::new(Vec::with_capacity(
            6 * (access_token.len() + token.token_type.len()) + 64,
        ));
        json_head.extend_from_slice(b"{\"access_token\":");
        push_json_string(&mut json_head, access_token);
        json_head.extend_from_slice(b",\"token_type\":");
        push_json_string(&mut json_head, &token.token_type);
        json_head.extend_from_slice(b",\"expires_in\":");
        let mut json_tail = Vec::with_capacity(credential.len() + 48);
        json_tail.extend_from_slice(b",\"expires_at\":");
        let expires_at = humantime::format_rfc3339_seconds(token.expires_at_wall).to_string();
        push_json_string(&mut json_tail, &expires_at);
        json_tail.extend_from_slice(b",\"credential\":");
        push_json_string(&mut json_tail, credential);
        json_tail.extend_from_slice(b"}\n");
        let mut text = Zeroizing::new(Vec::with_capacity(access_token.len() + 1));
        text.extend_from_slice(access_token.as_bytes());
        text.push(b'\n');
        Served {
            expires_at: token.expires_at,
            expires_at_wall: token.expires_at_wall,
            json_head,
            json_tail,
            text,
        }
    }

    pub fn usable(&self, now: Instant) -> bool {
        exchange::usable(self.expires_at, now)
    }

    pub fn seconds_left(&self, now: Instant) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }

    /// The JSON answer at `now`: `expires_in` is the whole seconds left, as before.
    pub fn json(&self, now: Instant) -> Bytes {
        let seconds_left = self.seconds_left(now);
        let mut body = Vec::with_capacity(self.json_head.len() + 20 + self.json_tail.len());
        body.extend_from_slice(&self.json_head);
        // Writing a u64 into a Vec cannot fail.
        let _ = write!(body, "{seconds_left}");
        body.extend_from_slice(&self.json_tail);
        Bytes::from(body)
    }

    pub fn text(&self) -> Bytes {
        Bytes::copy_from_slice(&self.text)
    }
}

/// serde_json's escaping, so the answer is byte for byte what serializing a struct gave.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // A &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn token(secs: u64) -> Token {
        Token {
            access_token: "Atza|tok\"en\\1".to_string().into(),
            token_type: "bearer".into(),
            expires_at: Instant::now() + Duration::from_secs(secs),
            expires_at_wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    #[test]
    fn the_json_answer_is_what_serde_gives_for_the_same_fields() {
        let t = token(3600);
        let served = Served::new(&t, "de\"fault");
        let now = Instant::now();
        let body = served.json(now);
        let expected = serde_json::json!({
            "access_token": "Atza|tok\"en\\1",
            "token_type": "bearer",
            "expires_in": t.seconds_left(now),
            "expires_at": "2027-01-15T08:00:00Z",
            "credential": "de\"fault",
        });
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(parsed, expected);
        assert!(body.ends_with(b"}\n"), "{body:?}");
        // The field order is the API's (docs/clients.md): access_token first.
        assert!(body.starts_with(b"{\"access_token\":\"Atza|tok\\\"en\\\\1\",\"token_type\""));
    }

    #[test]
    fn expires_in_counts_down_and_the_text_answer_is_the_token() {
        let t = token(100);
        let served = Served::new(&t, "default");
        let later = Instant::now() + Duration::from_secs(40);
        let v: serde_json::Value = serde_json::from_slice(&served.json(later)).expect("JSON");
        let left = v["expires_in"].as_u64().expect("number");
        assert!((58..=60).contains(&left), "{left}");
        assert_eq!(&served.text()[..], b"Atza|tok\"en\\1\n");
    }

    #[test]
    fn a_token_close_to_expiry_is_not_usable() {
        let served = Served::new(&token(3600), "default");
        assert!(served.usable(Instant::now()));
        let near_end = served.expires_at - exchange::MIN_LIFETIME;
        assert!(!served.usable(near_end));
    }
}
