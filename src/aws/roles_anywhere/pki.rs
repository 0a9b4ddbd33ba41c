//! The host's Roles Anywhere identity: the end-entity certificate, its chain and its private
//! key, read from PEM files and checked up front. A wrong file fails `config check` and
//! start-up with a message that names it and the fix, instead of surfacing later as an
//! opaque 403 from AWS.
//!
//! Crates do the work: rustls-pki-types splits PEM, x509-cert parses certificates, aws-lc-rs
//! parses and uses the keys. The one thing written here is the decimal rendering of the
//! serial number (see [`decimal`]).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING, RSA_PKCS1_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_cert::der::Decode;
use zeroize::Zeroizing;

use crate::config::{resolve_credential_path, RolesAnywhereConfig};

/// How long before the certificate's notAfter the agent starts warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86400);

/// The key types IAM Roles Anywhere accepts, and so the signing algorithm of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa,
    EcP256,
    EcP384,
}

impl KeyAlgorithm {
    /// The SigV4-X509 algorithm name that goes into the string to sign and Authorization.
    pub fn signing_algorithm(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "AWS4-X509-RSA-SHA256",
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => "AWS4-X509-ECDSA-SHA256",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "RSA",
            KeyAlgorithm::EcP256 => "EC P-256",
            KeyAlgorithm::EcP384 => "EC P-384",
        }
    }
}

/// What the agent shows and sends of the end-entity certificate. Nothing here is secret.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    pub der: Vec<u8>,
    pub subject: String,
    pub issuer: String,
    /// The serial number in decimal, as the credential scope wants it.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The subjectPublicKey bits, compared with the private key's public half.
    public_key: Vec<u8>,
    algorithm: Result<KeyAlgorithm, String>,
}

impl CertificateInfo {
    /// Parses one DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertificateInfo, String> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("is not a valid X.509 certificate ({e})"))?;
        let tbs = cert.tbs_certificate();
        let spki = tbs.subject_public_key_info();
        let algorithm = key_algorithm_of(spki);
        Ok(CertificateInfo {
            der: der.to_vec(),
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            serial: decimal(tbs.serial_number().as_bytes()),
            not_before: tbs.validity().not_before.to_system_time(),
            not_after: tbs.validity().not_after.to_system_time(),
            public_key: spki.subject_public_key.raw_bytes().to_vec(),
            algorithm,
        })
    }

    /// Days until notAfter (negative once expired), rounded down.
    pub fn expires_in_days(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(left) => (left.as_secs() / 86400) as i64,
            Err(past) => -((past.duration().as_secs() / 86400) as i64) - 1,
        }
    }

    /// A warning when the certificate expires within [`EXPIRY_WARNING`], for log, status
    /// and doctor.
    pub fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        let left = self.not_after.duration_since(now).unwrap_or(Duration::ZERO);
        (left < EXPIRY_WARNING).then(|| {
            format!(
                "the IAM Roles Anywhere certificate expires in {} days ({}): issue a new one \
                 from your CA and restart lwa-agent before then, or AWS access stops",
                self.expires_in_days(now).max(0),
                humantime::format_rfc3339_seconds(self.not_after)
            )
        })
    }

    fn validity_problem(&self, now: SystemTime) -> Option<String> {
        let at = humantime::format_rfc3339_seconds;
        if now < self.not_before {
            Some(format!(
                "is not valid yet: its notBefore is {} and now is {}: check the host's clock \
                 (timedatectl), or wait",
                at(self.not_before),
                at(now)
            ))
        } else if now > self.not_after {
            Some(format!(
                "expired on {}: issue a new certificate from the CA of your trust anchor and \
                 restart lwa-agent",
                at(self.not_after)
            ))
        } else {
            None
        }
    }
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";
const OID_ED25519: &str = "1.3.101.112";

fn key_algorithm_of(
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
) -> Result<KeyAlgorithm, String> {
    let oid = spki.algorithm.oid.to_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<x509_cert::der::asn1::ObjectIdentifier>().ok())
        .map(|o| o.to_string());
    match (oid.as_str(), curve.as_deref()) {
        (OID_RSA, _) => Ok(KeyAlgorithm::Rsa),
        (OID_EC, Some(OID_P256)) => Ok(KeyAlgorithm::EcP256),
        (OID_EC, Some(OID_P384)) => Ok(KeyAlgorithm::EcP384),
        (OID_EC, Some(OID_P521)) => Err("an EC P-521 key".into()),
        (OID_EC, Some(other)) => Err(format!("an EC key on curve {other}")),
        (OID_ED25519, _) => Err("an Ed25519 key".into()),
        (other, _) => Err(format!("a key of type {other}")),
    }
}

/// The serial number's big-endian magnitude in decimal. Written by hand because no crate in
/// the dependency tree renders a big unsigned integer in base 10 (serials are up to 20
/// bytes, beyond u128): schoolbook division by 10, most significant byte first.
pub fn decimal(big_endian: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new();
    let mut n: Vec<u8> = big_endian.iter().copied().skip_while(|b| *b == 0).collect();
    while !n.is_empty() {
        let mut rem: u16 = 0;
        let mut quotient = Vec::with_capacity(n.len());
        for byte in &n {
            let cur = (rem << 8) | u16::from(*byte);
            let q = (cur / 10) as u8;
            rem = cur % 10;
            if !(quotient.is_empty() && q == 0) {
                quotient.push(q);
            }
        }
        digits.push(b'0' + rem as u8);
        n = quotient;
    }
    if digits.is_empty() {
        return "0".into();
    }
    digits.iter().rev().map(|d| *d as char).collect()
}

/// The private key, ready to sign. Never printed: Debug shows the algorithm only.
pub enum SigningKey {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    /// RustCrypto, because Roles Anywhere signs SHA-256 digests with P-384 keys and
    /// aws-lc-rs only pairs P-384 with SHA-384.
    P384(p384::ecdsa::SigningKey),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.algorithm().label())
    }
}

impl SigningKey {
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            SigningKey::Rsa(_) => KeyAlgorithm::Rsa,
            SigningKey::P256(_) => KeyAlgorithm::EcP256,
            SigningKey::P384(_) => KeyAlgorithm::EcP384,
        }
    }

    /// Signs `message` with SHA-256: RSA PKCS#1 v1.5, or ECDSA with a DER signature.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let failed = |_| "the private key could not sign the request".to_string();
        match self {
            SigningKey::Rsa(key) => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            SigningKey::P256(key) => Ok(key
                .sign(&SystemRandom::new(), message)
                .map_err(failed)?
                .as_ref()
                .to_vec()),
            SigningKey::P384(key) => {
                use p384::ecdsa::signature::hazmat::PrehashSigner;
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
                let sig: p384::ecdsa::Signature = key
                    .sign_prehash(digest.as_ref())
                    .map_err(|_| "the private key could not sign the request".to_string())?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }
}

/// A parsed private key and its public half, for the match against the certificate.
struct ParsedKey {
    key: SigningKey,
    public_key: Vec<u8>,
}

fn parse_key(der: &PrivateKeyDer<'_>) -> Result<ParsedKey, String> {
    let ec = |alg| match der {
        PrivateKeyDer::Pkcs1(_) => None,
        other => EcdsaKeyPair::from_private_key_der(alg, other.secret_der()).ok(),
    };
    let rsa = match der {
        PrivateKeyDer::Pkcs1(k) => Some(
            RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map_err(|e| format!("is not a usable RSA private key ({e})"))?,
        ),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).ok(),
        _ => None,
    };
    if let Some(key) = rsa {
        let public_key = key.public_key().as_ref().to_vec();
        return Ok(ParsedKey {
            key: SigningKey::Rsa(key),
            public_key,
        });
    }
    if let Some(key) = ec(&ECDSA_P256_SHA256_ASN1_SIGNING) {
        let public_key = key.public_key().as_ref().to_vec();
        return Ok(ParsedKey {
            key: SigningKey::P256(key),
            public_key,
        });
    }
    if let Some(key) = ec(&ECDSA_P384_SHA384_ASN1_SIGNING) {
        let public_key = key.public_key().as_ref().to_vec();
        let scalar = key
            .private_key()
            .as_be_bytes()
            .map_err(|_| "is an EC P-384 key that cannot be exported for signing".to_string())?;
        let signer = p384::ecdsa::SigningKey::from_slice(scalar.as_ref())
            .map_err(|_| "is not a valid EC P-384 private key".to_string())?;
        return Ok(ParsedKey {
            key: SigningKey::P384(signer),
            public_key,
        });
    }
    let unsupported = if ec(&ECDSA_P521_SHA512_ASN1_SIGNING).is_some() {
        Some("an EC P-521 key")
    } else if matches!(der, PrivateKeyDer::Pkcs8(k) if Ed25519KeyPair::from_pkcs8(k.secret_pkcs8_der()).is_ok())
    {
        Some("an Ed25519 key")
    } else {
        None
    };
    Err(match unsupported {
        Some(kind) => format!(
            "is {kind}, which IAM Roles Anywhere does not accept: use an RSA (2048 bits or \
             more) or EC P-256/P-384 key and a certificate issued for it"
        ),
        None => "is not an RSA or EC P-256/P-384 private key that lwa-agent can read: give \
                 an unencrypted PEM key (PKCS#8 \"PRIVATE KEY\", SEC1 \"EC PRIVATE KEY\" or \
                 PKCS#1 \"RSA PRIVATE KEY\")"
            .into(),
    })
}

/// Everything needed to sign CreateSession: certificate, chain and key.
pub struct Identity {
    pub certificate: CertificateInfo,
    /// DER certificates for `X-Amz-X509-Chain`, in file order.
    pub chain: Vec<Vec<u8>>,
    pub key: SigningKey,
    pub certificate_file: PathBuf,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.certificate.subject)
            .field("serial", &self.certificate.serial)
            .field("chain", &self.chain.len())
            .field("key", &self.key)
            .finish()
    }
}

/// One thing wrong with the Roles Anywhere files: the file, the config key that names it,
/// and why (with the fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub file: String,
    pub key: &'static str,
    pub reason: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.reason)
    }
}

const KEY_CERT: &str = "aws.roles_anywhere.certificate";
const KEY_KEY: &str = "aws.roles_anywhere.private_key";
const KEY_CHAIN: &str = "aws.roles_anywhere.certificate_chain";

/// Reads and checks the files named by `cfg`, reporting every problem at once.
pub fn load(cfg: &RolesAnywhereConfig, now: SystemTime) -> Result<Identity, Vec<FileProblem>> {
    let mut problems = Vec::new();
    let mut resolve = |written: &str, key: &'static str| match resolve_credential_path(written) {
        Ok(p) => Some(p),
        Err(reason) => {
            problems.push(FileProblem {
                file: written.to_string(),
                key,
                reason,
            });
            None
        }
    };
    let cert_path = resolve(&cfg.certificate, KEY_CERT);
    let key_path = resolve(&cfg.private_key, KEY_KEY);
    let chain_path = cfg
        .certificate_chain
        .as_deref()
        .and_then(|c| resolve(c, KEY_CHAIN));

    let read = |path: &Path, key: &'static str, what: &str| {
        std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|e| FileProblem {
                file: path.display().to_string(),
                key,
                reason: format!(
                    "cannot read the {what} ({e}): check the path in the config and that the \
                 agent's user may read the file"
                ),
            })
    };

    let cert_pem = cert_path
        .as_deref()
        .map(|p| read(p, KEY_CERT, "certificate"));
    let chain_pem = chain_path
        .as_deref()
        .map(|p| read(p, KEY_CHAIN, "certificate chain"));
    let key_pem = key_path.as_deref().map(|p| {
        world_readable(p)?;
        read(p, KEY_KEY, "private key")
    });

    let mut collect = |r: Option<Result<Zeroizing<Vec<u8>>, FileProblem>>| match r {
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(p)) => {
            problems.push(p);
            None
        }
        None => None,
    };
    let cert_pem = collect(cert_pem);
    let chain_pem = collect(chain_pem);
    let key_pem = collect(key_pem);

    let files = Files {
        certificate: cert_path.unwrap_or_default(),
        private_key: key_path.unwrap_or_default(),
        chain: chain_path,
    };
    let pems = Pems {
        certificate: cert_pem.as_deref().map(Vec::as_slice),
        private_key: key_pem.as_deref().map(Vec::as_slice),
        chain: chain_pem.as_deref().map(Vec::as_slice),
    };
    match from_pem(&pems, &files, now) {
        Ok(identity) if problems.is_empty() => Ok(identity),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            if problems.is_empty() {
                problems.push(FileProblem {
                    file: cfg.certificate.clone(),
                    key: KEY_CERT,
                    reason: "could not be loaded".into(),
                });
            }
            Err(problems)
        }
    }
}

/// The file names, for messages.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub chain: Option<PathBuf>,
}

/// PEM contents; `None` for a file that could not be read (already reported).
#[derive(Default)]
pub struct Pems<'a> {
    pub certificate: Option<&'a [u8]>,
    pub private_key: Option<&'a [u8]>,
    pub chain: Option<&'a [u8]>,
}

/// Builds the identity from PEM contents and checks it at `now`. Separate from [`load`] so
/// that tests and fixed vectors need no files. A missing input gives an error without a
/// problem of its own: whoever could not read it says why.
pub fn from_pem(pems: &Pems, files: &Files, now: SystemTime) -> Result<Identity, Vec<FileProblem>> {
    let mut problems = Vec::new();
    let cert_file = files.certificate.display().to_string();
    let key_file = files.private_key.display().to_string();

    let mut certificate = None;
    let mut bundled_chain = Vec::new();
    if let Some(pem) = pems.certificate {
        match certificates(pem) {
            Err(reason) => problems.push(FileProblem {
                file: cert_file.clone(),
                key: KEY_CERT,
                reason,
            }),
            Ok(ders) => {
                let mut ders = ders.into_iter();
                if let Some(first) = ders.next() {
                    match CertificateInfo::parse(&first) {
                        Err(reason) => problems.push(FileProblem {
                            file: cert_file.clone(),
                            key: KEY_CERT,
                            reason,
                        }),
                        Ok(info) => {
                            if let Some(reason) = info.validity_problem(now) {
                                problems.push(FileProblem {
                                    file: cert_file.clone(),
                                    key: KEY_CERT,
                                    reason,
                                });
                            }
                            if let Err(kind) = &info.algorithm {
                                problems.push(FileProblem {
                                    file: cert_file.clone(),
                                    key: KEY_CERT,
                                    reason: format!(
                                        "is a certificate for {kind}, which IAM Roles Anywhere \
                                         does not accept: issue one for an RSA (2048 bits or \
                                         more) or EC P-256/P-384 key"
                                    ),
                                });
                            }
                            certificate = Some(info);
                        }
                    }
                }
                // A "full chain" file: the certificates after the first are the chain.
                bundled_chain.extend(ders);
            }
        }
    }

    let mut chain = Vec::new();
    match (pems.chain, &files.chain) {
        (Some(pem), Some(path)) => {
            let file = path.display().to_string();
            match certificates(pem) {
                Err(reason) => problems.push(FileProblem {
                    file,
                    key: KEY_CHAIN,
                    reason,
                }),
                Ok(ders) => {
                    for (i, der) in ders.into_iter().enumerate() {
                        match CertificateInfo::parse(&der) {
                            Ok(info) => {
                                if let Some(reason) = info.validity_problem(now) {
                                    problems.push(FileProblem {
                                        file: file.clone(),
                                        key: KEY_CHAIN,
                                        reason: format!(
                                            "certificate {} ({}) {reason}",
                                            i + 1,
                                            info.subject
                                        ),
                                    });
                                }
                                chain.push(der);
                            }
                            Err(reason) => problems.push(FileProblem {
                                file: file.clone(),
                                key: KEY_CHAIN,
                                reason: format!("certificate {} {reason}", i + 1),
                            }),
                        }
                    }
                }
            }
        }
        _ => chain = bundled_chain,
    }

    let mut key = None;
    if let Some(pem) = pems.private_key {
        let parsed = private_key(pem).and_then(|mut der| {
            let parsed = parse_key(&der);
            zeroize::Zeroize::zeroize(&mut der);
            parsed
        });
        match parsed {
            Ok(parsed) => key = Some(parsed),
            Err(reason) => problems.push(FileProblem {
                file: key_file.clone(),
                key: KEY_KEY,
                reason,
            }),
        }
    }

    if let (Some(cert), Some(parsed)) = (&certificate, &key) {
        let same_type = cert.algorithm.as_ref().ok() == Some(&parsed.key.algorithm());
        if !same_type || cert.public_key != parsed.public_key {
            problems.push(FileProblem {
                file: key_file.clone(),
                key: KEY_KEY,
                reason: format!(
                    "does not belong to the certificate {cert_file} (their public keys differ{}): \
                     configure the key the certificate was issued for",
                    if same_type {
                        String::new()
                    } else {
                        format!(
                            "; the key is {}, the certificate is for {}",
                            parsed.key.algorithm().label(),
                            cert.algorithm
                                .as_ref()
                                .map(|a| a.label().to_string())
                                .unwrap_or_else(|e| e.clone())
                        )
                    }
                ),
            });
        }
    }

    match (certificate, key) {
        (Some(certificate), Some(parsed)) if problems.is_empty() => Ok(Identity {
            certificate,
            chain,
            key: parsed.key,
            certificate_file: files.certificate.clone(),
        }),
        // Empty when an input is missing: the caller already reported why.
        _ => Err(problems),
    }
}

fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let ders: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_slice_iter(pem).collect();
    let ders = ders.map_err(|e| {
        format!("is not valid PEM ({e}): give PEM certificates (-----BEGIN CERTIFICATE-----)")
    })?;
    if ders.is_empty() {
        return Err(
            "contains no PEM certificate (-----BEGIN CERTIFICATE-----): give the PEM file, \
             not DER or a key"
                .into(),
        );
    }
    Ok(ders.into_iter().map(|d| d.as_ref().to_vec()).collect())
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(der) => Ok(der),
        Err(_) if contains(pem, b"ENCRYPTED PRIVATE KEY") || contains(pem, b"Proc-Type: 4,ENCRYPTED") => Err(
            "is an encrypted private key: lwa-agent needs it unencrypted and protected by file \
             permissions (decrypt it once with `openssl pkey -in KEY -out KEY.new`)"
                .into(),
        ),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(
            "contains no PEM private key: give a PEM file with -----BEGIN PRIVATE KEY----- \
             (PKCS#8), EC PRIVATE KEY (SEC1) or RSA PRIVATE KEY (PKCS#1)"
                .into(),
        ),
        Err(e) => Err(format!("is not valid PEM ({e})")),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Refuses a key file that every local user can read: the key is the host's AWS identity.
fn world_readable(path: &Path) -> Result<(), FileProblem> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o004 != 0 => Err(FileProblem {
            file: path.display().to_string(),
            key: KEY_KEY,
            reason: format!(
                "is readable by every user (mode {:04o}): run `chmod 600 {}` and keep it owned \
                 by root, or pass it with systemd LoadCredential=",
                meta.permissions().mode() & 0o7777,
                path.display()
            ),
        }),
        // A missing or unreadable file is reported by the read that follows.
        _ => Ok(()),
    }
}

/// Encodes DER for headers; here so that signer and tests share one definition.
pub fn base64_der(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(der)
}
