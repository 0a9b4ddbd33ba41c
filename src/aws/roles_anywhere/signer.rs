//! SigV4-X509: the request signature IAM Roles Anywhere's CreateSession requires. It is
//! SigV4's canonical request and string to sign, with the certificate's serial number in
//! place of an access key and an RSA or ECDSA signature in place of the HMAC chain.
//!
//! The canonical request is assembled here by hand: the aws-sigv4 crate builds one only for
//! its own HMAC (and SigV4a) signing and keeps the builder private. The request is always
//! the same shape (`POST /sessions`, no query, five or six headers), so the code is short
//! and it is checked against fixed vectors computed by an independent implementation
//! (`tests/vectors/`).

use std::time::SystemTime;

use aws_lc_rs::digest::{digest, SHA256};

use super::pki::{base64_der, Identity};

/// The service name in the credential scope.
pub const SERVICE: &str = "rolesanywhere";
pub const CONTENT_TYPE: &str = "application/json";

/// What to sign: everything but the identity.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The `Host` header as sent: host, plus `:port` when it is not the scheme's default.
    pub host: &'a str,
    /// The URL path, already percent-encoded (`/sessions`).
    pub path: &'a str,
    pub body: &'a [u8],
    pub region: &'a str,
    pub time: SystemTime,
}

/// The signed request's headers, plus the intermediate strings for tests and debugging.
/// Nothing here is secret: the private key only produced the signature.
#[derive(Debug, Clone)]
pub struct Signed {
    pub algorithm: &'static str,
    pub amz_date: String,
    pub x509: String,
    pub x509_chain: Option<String>,
    pub authorization: String,
    pub canonical_request: String,
    pub string_to_sign: String,
}

impl Signed {
    /// The headers to send, in canonical order, Authorization last.
    pub fn headers(&self, host: &str) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("content-type", CONTENT_TYPE.to_string()),
            ("host", host.to_string()),
            ("x-amz-date", self.amz_date.clone()),
            ("x-amz-x509", self.x509.clone()),
        ];
        if let Some(chain) = &self.x509_chain {
            h.push(("x-amz-x509-chain", chain.clone()));
        }
        h.push(("authorization", self.authorization.clone()));
        h
    }
}

/// `20240102T030405Z`: SigV4's basic ISO 8601 form, from humantime's RFC 3339 rendering.
pub fn amz_date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(digest(&SHA256, data))
}

/// Signs `req` with `identity`'s key and certificate.
pub fn sign(identity: &Identity, req: &Request) -> Result<Signed, String> {
    let algorithm = identity.key.algorithm().signing_algorithm();
    let amz_date = amz_date(req.time);
    let date = &amz_date[..8];
    let x509 = base64_der(&identity.certificate.der);
    let x509_chain = (!identity.chain.is_empty()).then(|| {
        identity
            .chain
            .iter()
            .map(|d| base64_der(d))
            .collect::<Vec<_>>()
            .join(",")
    });

    // Header names sorted, lower case; values have no leading/trailing or repeated spaces
    // (base64, dates and host names never do).
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", CONTENT_TYPE),
        ("host", req.host),
        ("x-amz-date", &amz_date),
        ("x-amz-x509", &x509),
    ];
    if let Some(chain) = &x509_chain {
        headers.push(("x-amz-x509-chain", chain));
    }
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "POST\n{path}\n\n{canonical_headers}\n{signed_headers}\n{payload}",
        path = req.path,
        payload = hex_sha256(req.body),
    );
    let scope = format!("{date}/{}/{SERVICE}/aws4_request", req.region);
    let string_to_sign = format!(
        "{algorithm}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    );
    let signature = hex::encode(identity.key.sign(string_to_sign.as_bytes())?);
    let authorization = format!(
        "{algorithm} Credential={serial}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        serial = identity.certificate.serial,
    );
    Ok(Signed {
        algorithm,
        amz_date,
        x509,
        x509_chain,
        authorization,
        canonical_request,
        string_to_sign,
    })
}
