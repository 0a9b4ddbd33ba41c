//! An IAM Roles Anywhere CreateSession endpoint on 127.0.0.1 that **verifies** every request
//! the way the service does, through code independent of the agent's signer:
//!
//! - it rebuilds the SigV4 canonical request and string to sign from what it received;
//! - it checks the signature against the certificate's public key with RustCrypto `rsa`
//!   (RSA) and `p256` (P-256), and `ring` (P-384) — the agent signs with aws-lc-rs (RSA,
//!   P-256) and RustCrypto `p384` (P-384);
//! - it parses certificates with x509-parser (the agent uses x509-cert), checks that the
//!   scope's serial is the certificate's and that the certificate chains, through the
//!   `X-Amz-X509-Chain` intermediates, to one of its trust anchors, all valid now;
//! - it checks that `X-Amz-Date` is within 5 minutes of now and the JSON body's fields.
//!
//! It then issues session credentials (moto accepts any key), with a lifetime a test can
//! shorten, or answers 403 / 400 / 429 / 500 when switched to. It counts and records calls.

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::serve;

/// Parts of every issued secret key and session token: a test that finds these in a log or
/// an answer has found a leak.
pub const SECRET_CANARY: &str = "RACANARYSECRET";
pub const TOKEN_CANARY: &str = "RACANARYTOKEN";

/// What the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Verify, then issue credentials (or refuse what fails verification).
    Normal,
    /// 403 AccessDeniedException, as when the role's trust policy does not allow the service.
    AccessDenied,
    /// 400 ValidationException, as when durationSeconds exceeds the profile's limit.
    Validation,
    /// 429 ThrottlingException with `Retry-After: 1`.
    Throttle,
    /// 500.
    ServerError,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// DER certificates of the trust anchors' CAs.
    pub trust_anchors: Vec<Vec<u8>>,
    /// Issue credentials that expire after this long, whatever `durationSeconds` asked.
    pub session_lifetime: Option<Duration>,
    pub mode: Mode,
}

impl Settings {
    pub fn trusting(anchor_der: Vec<u8>) -> Settings {
        Settings {
            trust_anchors: vec![anchor_der],
            session_lifetime: None,
            mode: Mode::Normal,
        }
    }
}

/// One request as received and judged.
#[derive(Debug, Clone)]
pub struct Received {
    pub status: u16,
    /// Why verification refused the request; `None` when it passed.
    pub rejection: Option<String>,
    pub verified: Option<Verified>,
}

/// What a request that passed verification carried.
#[derive(Debug, Clone)]
pub struct Verified {
    pub algorithm: String,
    pub serial: String,
    pub region: String,
    pub chain_len: usize,
    pub body: serde_json::Value,
}

/// Credentials handed out, so that tests can look for them where they must not be.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: String,
}

/// What the server received (read through the harness's `log()`).
#[derive(Default)]
pub struct Log {
    received: Vec<Received>,
    issued: Vec<Issued>,
}

serve::test_server!(FakeRolesAnywhere, Settings, Log);

impl FakeRolesAnywhere {
    /// Starts on an ephemeral loopback port, on the current tokio runtime.
    pub async fn start(settings: Settings) -> std::io::Result<FakeRolesAnywhere> {
        Self::bind("127.0.0.1:0", settings).await
    }

    /// The endpoint URL for `aws.roles_anywhere.endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.h.log().received.len()
    }

    pub fn received(&self) -> Vec<Received> {
        self.h.log().received.clone()
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.h.log().issued.clone()
    }

    /// Panics unless every request so far passed verification.
    pub fn assert_all_verified(&self) {
        for r in self.received() {
            assert!(
                r.rejection.is_none(),
                "the Roles Anywhere endpoint refused a request: {:?}",
                r.rejection
            );
        }
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let settings = self.h.settings();
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for (name, value) in req.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers.push((name.as_str().to_string(), value));
        }
        let body = serve::body(req).await;

        let verdict = verify(
            &method,
            &path,
            &query,
            &headers,
            &body,
            &settings.trust_anchors,
            SystemTime::now(),
        );
        let (status, error_type, json) = match (&verdict, settings.mode) {
            (Err(Rejection::Untrusted(m)), _) | (Err(Rejection::Signature(m)), _) => (
                403,
                Some("AccessDeniedException"),
                serde_json::json!({ "message": m }),
            ),
            (Err(Rejection::Invalid(m)), _) => (
                400,
                Some("ValidationException"),
                serde_json::json!({ "message": m }),
            ),
            (Ok(_), Mode::AccessDenied) => (
                403,
                Some("AccessDeniedException"),
                serde_json::json!({ "message": "Unable to assume role for arn: the trust policy does not allow it" }),
            ),
            (Ok(_), Mode::Validation) => (
                400,
                Some("ValidationException"),
                serde_json::json!({ "message": "Requested DurationSeconds exceeds the profile's maximum" }),
            ),
            (Ok(_), Mode::Throttle) => (
                429,
                Some("ThrottlingException"),
                serde_json::json!({ "message": "Rate exceeded" }),
            ),
            (Ok(_), Mode::ServerError) => (
                500,
                Some("InternalServerException"),
                serde_json::json!({ "message": "internal error" }),
            ),
            (Ok(v), Mode::Normal) => (201, None, self.issue(v, &settings)),
        };
        self.h.log().received.push(Received {
            status,
            rejection: verdict.as_ref().err().map(|r| r.to_string()),
            verified: verdict.ok(),
        });
        let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let h = resp.headers_mut();
        h.insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        if let Some(t) = error_type {
            h.insert(
                "x-amzn-errortype",
                hyper::header::HeaderValue::from_static(t),
            );
        }
        if status == 429 {
            h.insert("retry-after", hyper::header::HeaderValue::from_static("1"));
        }
        resp
    }

    fn issue(&self, v: &Verified, settings: &Settings) -> serde_json::Value {
        let asked = v.body["durationSeconds"].as_u64().unwrap_or(3600);
        let lifetime = settings
            .session_lifetime
            .unwrap_or(Duration::from_secs(asked));
        let expires = time::OffsetDateTime::now_utc() + lifetime;
        let expiration = expires
            .replace_nanosecond(0)
            .expect("zero nanoseconds")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
        let n: u64 = serve::random();
        let issued = Issued {
            access_key_id: format!("ASIA{:016X}", n),
            secret_access_key: format!("{SECRET_CANARY}{n:016x}"),
            session_token: format!("{TOKEN_CANARY}{n:016x}{}", "x".repeat(64)),
            expiration: expiration.clone(),
        };
        self.h.log().issued.push(issued.clone());
        let role = v.body["roleArn"].as_str().unwrap_or("");
        serde_json::json!({
            "credentialSet": [{
                "assumedRoleUser": {
                    "arn": format!("{role}/{}", v.serial),
                    "assumedRoleId": format!("AROA{:016X}:{}", n, v.serial),
                },
                "credentials": {
                    "accessKeyId": issued.access_key_id,
                    "expiration": expiration,
                    "secretAccessKey": issued.secret_access_key,
                    "sessionToken": issued.session_token,
                },
                "packedPolicySize": 0,
                "roleArn": role,
                "sourceIdentity": format!("CN=erp-host-1"),
            }],
            "subjectArn": format!("arn:aws:rolesanywhere:{}:123456789012:subject/{}", v.region, v.serial),
        })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone)]
pub enum Rejection {
    /// The certificate does not chain to a trust anchor, or is not valid now.
    Untrusted(String),
    /// Missing or malformed signing headers, a bad scope, a stale date, a wrong signature.
    Signature(String),
    /// The body.
    Invalid(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Untrusted(m) | Rejection::Signature(m) | Rejection::Invalid(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Verifies one CreateSession request as received. Public so unit tests can check a
/// signer's output without HTTP.
pub fn verify(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    trust_anchors: &[Vec<u8>],
    now: SystemTime,
) -> Result<Verified, Rejection> {
    let sig_err = |m: String| Rejection::Signature(m);
    if method != "POST" || path != "/sessions" {
        return Err(sig_err(format!("unexpected request {method} {path}")));
    }
    let header = |name: &str| -> Option<String> {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let auth = header("authorization").ok_or_else(|| sig_err("no Authorization header".into()))?;
    let (algorithm, rest) = auth
        .split_once(' ')
        .ok_or_else(|| sig_err(format!("malformed Authorization `{auth}`")))?;
    if algorithm != "AWS4-X509-RSA-SHA256" && algorithm != "AWS4-X509-ECDSA-SHA256" {
        return Err(sig_err(format!("unknown algorithm {algorithm}")));
    }
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v.to_string());
        } else {
            return Err(sig_err(format!("unexpected Authorization part `{part}`")));
        }
    }
    let (credential, signed_headers, signature) = match (credential, signed_headers, signature) {
        (Some(c), Some(s), Some(g)) => (c, s, g),
        _ => {
            return Err(sig_err(
                "Authorization lacks Credential, SignedHeaders or Signature".into(),
            ))
        }
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [serial, date, region, service, terminator] = scope.as_slice() else {
        return Err(sig_err(format!("malformed credential `{credential}`")));
    };
    if *service != "rolesanywhere" || *terminator != "aws4_request" {
        return Err(sig_err(format!("wrong scope `{credential}`")));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted != names
        || names
            .iter()
            .any(|n| n.chars().any(|c| c.is_ascii_uppercase()))
    {
        return Err(sig_err(format!(
            "SignedHeaders `{signed_headers}` not sorted lower case"
        )));
    }
    for required in ["content-type", "host", "x-amz-date", "x-amz-x509"] {
        if !names.contains(&required) {
            return Err(sig_err(format!("{required} is not signed")));
        }
    }
    if header("x-amz-x509-chain").is_some() && !names.contains(&"x-amz-x509-chain") {
        return Err(sig_err("x-amz-x509-chain is sent but not signed".into()));
    }

    let amz_date = header("x-amz-date").ok_or_else(|| sig_err("no X-Amz-Date".into()))?;
    let signed_at =
        parse_amz_date(&amz_date).ok_or_else(|| sig_err(format!("bad X-Amz-Date `{amz_date}`")))?;
    if !amz_date.starts_with(date) {
        return Err(sig_err(format!(
            "scope date {date} is not the X-Amz-Date {amz_date}"
        )));
    }
    let skew = match now.duration_since(signed_at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > Duration::from_secs(300) {
        return Err(sig_err(format!(
            "X-Amz-Date {amz_date} is {}s away from now",
            skew.as_secs()
        )));
    }

    // The canonical request, rebuilt from the request as received.
    let mut canonical = format!("{method}\n{path}\n{}\n", canonical_query(query));
    for name in &names {
        let value =
            header(name).ok_or_else(|| sig_err(format!("signed header {name} is missing")))?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        canonical.push_str(&format!("{name}:{value}\n"));
    }
    canonical.push_str(&format!(
        "\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(body))
    ));
    let string_to_sign = format!(
        "{algorithm}\n{amz_date}\n{date}/{region}/{service}/{terminator}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let signature = hex::decode(&signature).map_err(|_| sig_err("Signature is not hex".into()))?;

    let b64 = base64::engine::general_purpose::STANDARD;
    let ee_der = b64
        .decode(header("x-amz-x509").unwrap_or_default())
        .map_err(|_| sig_err("X-Amz-X509 is not base64".into()))?;
    let (_, ee) = X509Certificate::from_der(&ee_der)
        .map_err(|e| sig_err(format!("X-Amz-X509 is not a certificate ({e})")))?;
    if ee.tbs_certificate.serial.to_string() != *serial {
        return Err(sig_err(format!(
            "scope serial {serial} is not the certificate's {}",
            ee.tbs_certificate.serial
        )));
    }
    verify_signature(algorithm, &ee, string_to_sign.as_bytes(), &signature)?;

    let chain_ders: Vec<Vec<u8>> = match header("x-amz-x509-chain") {
        None => Vec::new(),
        Some(chain) => chain
            .split(',')
            .map(|c| b64.decode(c.trim()))
            .collect::<Result<_, _>>()
            .map_err(|_| sig_err("X-Amz-X509-Chain is not comma-separated base64".into()))?,
    };
    verify_chain(&ee, &chain_ders, trust_anchors, now)?;

    let body: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::Invalid(format!("body is not JSON ({e})")))?;
    check_body(&body)?;
    Ok(Verified {
        algorithm: algorithm.to_string(),
        serial: serial.to_string(),
        region: region.to_string(),
        chain_len: chain_ders.len(),
        body,
    })
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        num(0..4)? as i32,
        time::Month::try_from(num(4..6)? as u8).ok()?,
        num(6..8)? as u8,
    )
    .ok()?;
    let t = time::Time::from_hms(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8).ok()?;
    let dt = time::PrimitiveDateTime::new(date, t).assume_utc();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(dt.unix_timestamp()).ok()?))
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

fn verify_signature(
    algorithm: &str,
    cert: &X509Certificate,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Rejection> {
    let bad = |m: &str| Rejection::Signature(format!("signature check failed: {m}"));
    let spki = cert.public_key();
    let key_bits: &[u8] = spki.subject_public_key.data.as_ref();
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match (algorithm, alg_oid.as_str(), curve.as_deref()) {
        ("AWS4-X509-RSA-SHA256", "1.2.840.113549.1.1.1", _) => {
            use rsa::pkcs1::DecodeRsaPublicKey;
            use rsa::signature::Verifier;
            let key = rsa::PublicKey::from_pkcs1_der(key_bits).map_err(|_| bad("RSA key"))?;
            let sig = rsa::pkcs1v15::Signature::try_from(signature)
                .map_err(|_| bad("RSA signature encoding"))?;
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)
                .verify(message, &sig)
                .map_err(|_| bad("RSA PKCS#1 v1.5 SHA-256 signature does not verify"))
        }
        ("AWS4-X509-ECDSA-SHA256", "1.2.840.10045.2.1", Some(OID_P256)) => {
            use p256::ecdsa::signature::Verifier;
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
                .map_err(|_| bad("P-256 key"))?;
            let sig = p256::ecdsa::Signature::from_der(signature)
                .map_err(|_| bad("ECDSA DER signature"))?;
            key.verify(message, &sig)
                .map_err(|_| bad("ECDSA P-256 SHA-256 signature does not verify"))
        }
        ("AWS4-X509-ECDSA-SHA256", "1.2.840.10045.2.1", Some(OID_P384)) => {
            aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P384_SHA256_ASN1,
                key_bits,
            )
            .verify(message, signature)
            .map_err(|_| bad("ECDSA P-384 SHA-256 signature does not verify"))
        }
        (alg, oid, curve) => Err(bad(&format!(
            "algorithm {alg} does not fit the certificate's key ({oid}, curve {curve:?})"
        ))),
    }
}

fn verify_chain(
    ee: &X509Certificate,
    chain_ders: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now: SystemTime,
) -> Result<(), Rejection> {
    let untrusted = |m: String| Rejection::Untrusted(format!("Untrusted signing certificate: {m}"));
    fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Rejection> {
        X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| {
            Rejection::Untrusted(format!(
                "Untrusted signing certificate: unparsable certificate ({e})"
            ))
        })
    }
    let chain: Vec<X509Certificate> = chain_ders
        .iter()
        .map(|d| parse(d))
        .collect::<Result<_, _>>()?;
    let anchors: Vec<X509Certificate> =
        anchors.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let at = ASN1Time::from_timestamp(secs).map_err(|_| untrusted("clock".into()))?;
    let valid = |c: &X509Certificate| -> Result<(), Rejection> {
        if c.validity().is_valid_at(at) {
            Ok(())
        } else {
            Err(untrusted(format!("{} is not valid now", c.subject())))
        }
    };
    valid(ee)?;
    let mut current = ee;
    for _ in 0..=chain.len() {
        for anchor in &anchors {
            if anchor.subject().as_raw() == current.issuer().as_raw()
                && current.verify_signature(Some(anchor.public_key())).is_ok()
            {
                return valid(anchor);
            }
        }
        let next = chain.iter().find(|c| {
            c.subject().as_raw() == current.issuer().as_raw()
                && current.verify_signature(Some(c.public_key())).is_ok()
        });
        match next {
            Some(c) => {
                valid(c)?;
                current = c;
            }
            None => break,
        }
    }
    Err(untrusted(format!(
        "{} (issuer {}) does not chain to a trust anchor",
        ee.subject(),
        ee.issuer()
    )))
}

fn check_body(body: &serde_json::Value) -> Result<(), Rejection> {
    let invalid = |m: String| Rejection::Invalid(m);
    let d = body["durationSeconds"]
        .as_u64()
        .ok_or_else(|| invalid("durationSeconds is missing".into()))?;
    if !(900..=43200).contains(&d) {
        return Err(invalid(format!(
            "durationSeconds {d} is outside 900..43200"
        )));
    }
    for field in ["profileArn", "roleArn", "trustAnchorArn"] {
        match body[field].as_str() {
            Some(s) if s.starts_with("arn:") => {}
            _ => return Err(invalid(format!("{field} is missing or not an ARN"))),
        }
    }
    if let Some(name) = body.get("roleSessionName") {
        if !name.is_string() {
            return Err(invalid("roleSessionName is not a string".into()));
        }
    }
    Ok(())
}
