//! A throwaway PKI for tests, made with rcgen: a root CA (the Roles Anywhere trust anchor),
//! optional intermediates, and end-entity certificates for RSA 2048, EC P-256 and P-384
//! keys (plus key types Roles Anywhere refuses), written as PEM files in each format the
//! agent reads. Nothing here is a real key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber, SignatureAlgorithm,
};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    P256,
    P384,
    /// Refused by Roles Anywhere.
    P521,
    /// Refused by Roles Anywhere.
    Ed25519,
}

impl KeyKind {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            KeyKind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::P521 => &rcgen::PKCS_ECDSA_P521_SHA512,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    fn generate(self) -> KeyPair {
        KeyPair::generate_for(self.algorithm()).expect("rcgen generates the key")
    }
}

/// How the private key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `PRIVATE KEY`
    Pkcs8,
    /// `EC PRIVATE KEY` (EC keys only)
    Sec1,
    /// `EC PARAMETERS` then `EC PRIVATE KEY`, as `openssl ecparam -genkey` writes it.
    Sec1WithParameters,
    /// `RSA PRIVATE KEY` (RSA keys only)
    Pkcs1,
}

/// A certificate authority: the root (trust anchor) or an intermediate.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "lwa-agent tests");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    p
}

impl Ca {
    /// A self-signed root with an EC P-256 key.
    pub fn root(cn: &str) -> Ca {
        Ca {
            issuer: CertifiedIssuer::self_signed(ca_params(cn), KeyKind::P256.generate())
                .expect("root CA"),
        }
    }

    /// An intermediate with an EC P-384 key, signed by this CA.
    pub fn intermediate(&self, cn: &str) -> Ca {
        Ca {
            issuer: CertifiedIssuer::signed_by(
                ca_params(cn),
                KeyKind::P384.generate(),
                &self.issuer,
            )
            .expect("intermediate CA"),
        }
    }

    pub fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// An end-entity certificate valid from an hour ago for a year.
    pub fn issue(&self, kind: KeyKind) -> Leaf {
        self.issue_with(kind, &LeafOptions::default())
    }

    pub fn issue_with(&self, kind: KeyKind, opts: &LeafOptions) -> Leaf {
        let key = kind.generate();
        self.issue_for(kind, key, opts)
    }

    /// A certificate for an existing key (for example the key of another leaf).
    fn issue_for(&self, kind: KeyKind, key: KeyPair, opts: &LeafOptions) -> Leaf {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(
            DnType::CommonName,
            opts.cn.as_deref().unwrap_or("erp-host-1"),
        );
        p.distinguished_name
            .push(DnType::OrganizationName, "lwa-agent tests");
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        p.not_before = now + opts.not_before_offset;
        p.not_after = now + opts.not_after_offset;
        if let Some(serial) = &opts.serial {
            p.serial_number = Some(SerialNumber::from_slice(serial));
        }
        let cert = p.signed_by(&key, &self.issuer).expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
            kind,
        }
    }

    /// A second certificate for `leaf`'s key (same key, new serial).
    pub fn reissue(&self, leaf: &Leaf, opts: &LeafOptions) -> Leaf {
        let key = KeyPair::try_from(leaf.key.serialized_der()).expect("key round-trips");
        self.issue_for(leaf.kind, key, opts)
    }
}

/// Validity and names of an end-entity certificate, relative to now.
#[derive(Debug, Clone)]
pub struct LeafOptions {
    pub not_before_offset: time::Duration,
    pub not_after_offset: time::Duration,
    pub serial: Option<Vec<u8>>,
    pub cn: Option<String>,
}

impl Default for LeafOptions {
    fn default() -> Self {
        LeafOptions {
            not_before_offset: -time::Duration::hours(1),
            not_after_offset: time::Duration::days(365),
            serial: None,
            cn: None,
        }
    }
}

impl LeafOptions {
    /// Expired `days` ago.
    pub fn expired(days: i64) -> Self {
        LeafOptions {
            not_before_offset: -time::Duration::days(days + 30),
            not_after_offset: -time::Duration::days(days),
            ..Self::default()
        }
    }

    /// Valid only from `after` on.
    pub fn not_yet_valid(after: Duration) -> Self {
        LeafOptions {
            not_before_offset: time::Duration::seconds(after.as_secs() as i64),
            not_after_offset: time::Duration::days(365),
            ..Self::default()
        }
    }

    /// Expires in `days`.
    pub fn expiring_in(days: i64) -> Self {
        LeafOptions {
            not_after_offset: time::Duration::days(days) + time::Duration::hours(1),
            ..Self::default()
        }
    }
}

/// An end-entity certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    key: KeyPair,
    pub kind: KeyKind,
}

impl Leaf {
    /// The private key as PEM in `format`.
    pub fn key_pem(&self, format: KeyFormat) -> String {
        let der = self.key.serialized_der();
        match (format, self.kind) {
            (KeyFormat::Pkcs8, _) => self.key.serialize_pem(),
            (KeyFormat::Pkcs1, KeyKind::Rsa2048) => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                use rsa::pkcs8::DecodePrivateKey;
                rsa::PrivateKey::from_pkcs8_der(der)
                    .expect("RSA PKCS#8")
                    .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                    .expect("PKCS#1 PEM")
                    .to_string()
            }
            (KeyFormat::Sec1, KeyKind::P256) => {
                use p256::pkcs8::DecodePrivateKey;
                p256::SecretKey::from_pkcs8_der(der)
                    .expect("P-256 PKCS#8")
                    .to_sec1_pem(p256::pkcs8::LineEnding::LF)
                    .expect("SEC1 PEM")
                    .to_string()
            }
            (KeyFormat::Sec1, KeyKind::P384) => {
                use p384::pkcs8::DecodePrivateKey;
                p384::SecretKey::from_pkcs8_der(der)
                    .expect("P-384 PKCS#8")
                    .to_sec1_pem(p384::pkcs8::LineEnding::LF)
                    .expect("SEC1 PEM")
                    .to_string()
            }
            (KeyFormat::Sec1WithParameters, KeyKind::P256) => format!(
                "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
                self.key_pem(KeyFormat::Sec1)
            ),
            (f, k) => panic!("no {f:?} encoding for a {k:?} key"),
        }
    }
}

/// Where [`write`] put the files.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub chain: Option<PathBuf>,
}

/// Writes `leaf` as `<name>-cert.pem` and `<name>-key.pem` (mode 0600), and the chain
/// (intermediates, nearest first) as `<name>-chain.pem` when not empty.
pub fn write(dir: &Path, name: &str, leaf: &Leaf, chain: &[&Ca], format: KeyFormat) -> Files {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, &leaf.cert_pem).expect("write certificate");
    std::fs::write(&key, leaf.key_pem(format)).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    let chain = (!chain.is_empty()).then(|| {
        let path = dir.join(format!("{name}-chain.pem"));
        let pem: String = chain.iter().map(|c| c.pem()).collect();
        std::fs::write(&path, pem).expect("write chain");
        path
    });
    Files { cert, key, chain }
}
