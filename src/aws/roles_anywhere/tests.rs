//! Tests across the Roles Anywhere modules: the signer against fixed vectors from an
//! independent implementation and against the test endpoint's independent verifier, the
//! PKI checks, and the provider against the real test endpoint over HTTP.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lwa_agent_testservers::pki::{self as testpki, Ca, KeyFormat, KeyKind, LeafOptions};
use lwa_agent_testservers::rolesanywhere::{self as fake, FakeRolesAnywhere, Mode, Settings};

use super::pki::{self, decimal, Files, Identity, KeyAlgorithm, Pems};
use super::provider::RolesAnywhereProvider;
use super::{session, signer};
use crate::config::RolesAnywhereConfig;

const TRUST_ANCHOR: &str =
    "arn:aws:rolesanywhere:us-east-2:111122223333:trust-anchor/0a1b2c3d-4e5f-6789-abcd-ef0123456789";
const PROFILE: &str =
    "arn:aws:rolesanywhere:us-east-2:111122223333:profile/6f4a2b1c-0d3e-4f5a-8b9c-0123456789ab";
const ROLE: &str = "arn:aws:iam::111122223333:role/lwa-agent";

fn config(files: &testpki::Files) -> RolesAnywhereConfig {
    RolesAnywhereConfig {
        certificate: files.cert.display().to_string(),
        private_key: files.key.display().to_string(),
        certificate_chain: files.chain.as_ref().map(|c| c.display().to_string()),
        trust_anchor_arn: TRUST_ANCHOR.into(),
        profile_arn: PROFILE.into(),
        role_arn: ROLE.into(),
        session_duration: Duration::from_secs(3600),
        role_session_name: None,
        endpoint_url: None,
    }
}

fn identity_from(cert: &str, key: &str, chain: Option<&str>, now: SystemTime) -> Identity {
    pki::from_pem(
        &Pems {
            certificate: Some(cert.as_bytes()),
            private_key: Some(key.as_bytes()),
            chain: chain.map(str::as_bytes),
        },
        &Files {
            certificate: "cert.pem".into(),
            private_key: "key.pem".into(),
            chain: chain.map(|_| PathBuf::from("chain.pem")),
        },
        now,
    )
    .unwrap_or_else(|p| panic!("identity loads: {p:?}"))
}

/// Signs like the provider does and runs the result through the endpoint's verifier.
fn sign_and_verify(
    id: &Identity,
    anchors: &[Vec<u8>],
    body: &[u8],
) -> Result<fake::Verified, String> {
    let host = "127.0.0.1:4443";
    let now = SystemTime::now();
    let signed = signer::sign(
        id,
        &signer::Request {
            host,
            path: "/sessions",
            body,
            region: "us-east-2",
            time: now,
        },
    )?;
    let headers: Vec<(String, String)> = signed
        .headers(host)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    fake::verify("POST", "/sessions", "", &headers, body, anchors, now).map_err(|r| r.to_string())
}

fn body() -> Vec<u8> {
    let files = testpki::Files {
        cert: "c".into(),
        key: "k".into(),
        chain: None,
    };
    session::body(&config(&files))
}

#[test]
fn roles_anywhere_signer_matches_the_python_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("vector file");
    let vectors: serde_json::Value =
        serde_json::from_str(&read("roles_anywhere_vectors.json")).expect("vectors JSON");
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() >= 2);
    let anchors = [
        testpki_der(&read("root-cert.pem")),
        testpki_der(&read("chain.pem")),
    ];
    for case in cases {
        let s = |k: &str| {
            case[k]
                .as_str()
                .unwrap_or_else(|| panic!("{k}"))
                .to_string()
        };
        let expected = &case["expected"];
        let e = |k: &str| expected[k].as_str().map(str::to_string);
        let time =
            SystemTime::UNIX_EPOCH + Duration::from_secs(case["time_unix"].as_u64().expect("time"));
        let chain = case["certificate_chain"].as_str().map(read);
        let id = identity_from(
            &read(&s("certificate")),
            &read(&s("private_key")),
            chain.as_deref(),
            time,
        );
        assert_eq!(id.key.algorithm(), KeyAlgorithm::Rsa);
        assert_eq!(Some(id.certificate.serial.clone()), e("serial"));

        let body = s("body");
        let signed = signer::sign(
            &id,
            &signer::Request {
                host: &s("host"),
                path: "/sessions",
                body: body.as_bytes(),
                region: &s("region"),
                time,
            },
        )
        .expect("signs");
        let name = s("name");
        assert_eq!(Some(signed.amz_date.clone()), e("x_amz_date"), "{name}");
        assert_eq!(Some(signed.x509.clone()), e("x_amz_x509"), "{name}");
        assert_eq!(signed.x509_chain, e("x_amz_x509_chain"), "{name}");
        assert_eq!(
            Some(signed.canonical_request.clone()),
            e("canonical_request"),
            "{name}"
        );
        assert_eq!(
            Some(signed.string_to_sign.clone()),
            e("string_to_sign"),
            "{name}"
        );
        assert_eq!(
            Some(signed.authorization.clone()),
            e("authorization"),
            "{name}"
        );

        // The body the agent would send for the same settings is byte-for-byte the vector's.
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("body JSON");
        let cfg = RolesAnywhereConfig {
            session_duration: Duration::from_secs(parsed["durationSeconds"].as_u64().expect("d")),
            role_session_name: parsed["roleSessionName"].as_str().map(str::to_string),
            ..config(&testpki::Files {
                cert: "c".into(),
                key: "k".into(),
                chain: None,
            })
        };
        assert_eq!(
            String::from_utf8(session::body(&cfg)).expect("utf8"),
            body,
            "{name}"
        );

        // And the endpoint's verifier accepts the vector at its time.
        let headers: Vec<(String, String)> = signed
            .headers(&s("host"))
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        fake::verify(
            "POST",
            "/sessions",
            "",
            &headers,
            body.as_bytes(),
            &anchors,
            time,
        )
        .unwrap_or_else(|r| panic!("{name}: verifier refused the vector: {r}"));
    }
}

fn testpki_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .as_ref()
        .to_vec()
}

#[test]
fn every_key_type_and_format_signs_what_the_independent_verifier_accepts() {
    let root = Ca::root("lwa-agent test root");
    let intermediate = root.intermediate("lwa-agent test intermediate");
    let anchors = [root.der()];
    let cases = [
        (KeyKind::Rsa2048, KeyFormat::Pkcs8, false),
        (KeyKind::Rsa2048, KeyFormat::Pkcs1, true),
        (KeyKind::P256, KeyFormat::Pkcs8, true),
        (KeyKind::P256, KeyFormat::Sec1, false),
        (KeyKind::P256, KeyFormat::Sec1WithParameters, false),
        (KeyKind::P384, KeyFormat::Pkcs8, false),
        (KeyKind::P384, KeyFormat::Sec1, true),
    ];
    let body = body();
    for (kind, format, via_intermediate) in cases {
        let issuer = if via_intermediate {
            &intermediate
        } else {
            &root
        };
        let leaf = issuer.issue(kind);
        let chain = via_intermediate.then(|| intermediate.pem());
        let id = identity_from(
            &leaf.cert_pem,
            &leaf.key_pem(format),
            chain.as_deref(),
            SystemTime::now(),
        );
        let what = format!("{kind:?} {format:?} intermediate={via_intermediate}");
        let v = sign_and_verify(&id, &anchors, &body).unwrap_or_else(|e| panic!("{what}: {e}"));
        let expected_alg = if kind == KeyKind::Rsa2048 {
            "AWS4-X509-RSA-SHA256"
        } else {
            "AWS4-X509-ECDSA-SHA256"
        };
        assert_eq!(v.algorithm, expected_alg, "{what}");
        assert_eq!(v.serial, id.certificate.serial, "{what}");
        assert_eq!(v.chain_len, usize::from(via_intermediate), "{what}");
        // Without its intermediate the same certificate does not chain to the anchor.
        if via_intermediate {
            let bare = identity_from(
                &leaf.cert_pem,
                &leaf.key_pem(format),
                None,
                SystemTime::now(),
            );
            let err = sign_and_verify(&bare, &anchors, &body).expect_err("no chain");
            assert!(err.contains("Untrusted"), "{what}: {err}");
        }
    }
}

#[test]
fn the_verifier_catches_a_tampered_request() {
    let root = Ca::root("root");
    let leaf = root.issue(KeyKind::P256);
    let id = identity_from(
        &leaf.cert_pem,
        &leaf.key_pem(KeyFormat::Pkcs8),
        None,
        SystemTime::now(),
    );
    let other = Ca::root("other root");
    let err = sign_and_verify(&id, &[other.der()], &body()).expect_err("untrusted");
    assert!(err.contains("Untrusted signing certificate"), "{err}");

    let now = SystemTime::now();
    let signed = signer::sign(
        &id,
        &signer::Request {
            host: "h",
            path: "/sessions",
            body: b"{}",
            region: "us-east-2",
            time: now,
        },
    )
    .expect("signs");
    let headers: Vec<(String, String)> = signed
        .headers("h")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let err = fake::verify(
        "POST",
        "/sessions",
        "",
        &headers,
        b"{ }",
        &[root.der()],
        now,
    )
    .expect_err("body changed");
    assert!(err.to_string().contains("does not verify"), "{err}");
    let stale = now + Duration::from_secs(600);
    let err = fake::verify(
        "POST",
        "/sessions",
        "",
        &headers,
        b"{}",
        &[root.der()],
        stale,
    )
    .expect_err("stale date");
    assert!(err.to_string().contains("X-Amz-Date"), "{err}");
}

#[test]
fn serial_numbers_render_in_decimal() {
    assert_eq!(decimal(&[]), "0");
    assert_eq!(decimal(&[0]), "0");
    assert_eq!(decimal(&[0, 0, 7]), "7");
    assert_eq!(decimal(&[0xff, 0xff]), "65535");
    let big = [
        0xfeu8, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10, 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69,
        0x78,
    ];
    assert_eq!(decimal(&big), u128::from_be_bytes(big).to_string());
    // 20 bytes, beyond u128: 2^160 - 1.
    assert_eq!(
        decimal(&[0xff; 20]),
        "1461501637330902918203684832716283019655932542975"
    );
}

/// The check's problems for these PEM strings.
fn problems(cert: &str, key: &str) -> Vec<String> {
    pki::from_pem(
        &Pems {
            certificate: Some(cert.as_bytes()),
            private_key: Some(key.as_bytes()),
            chain: None,
        },
        &Files {
            certificate: "/pki/cert.pem".into(),
            private_key: "/pki/key.pem".into(),
            chain: None,
        },
        SystemTime::now(),
    )
    .err()
    .unwrap_or_default()
    .into_iter()
    .map(|p| format!("{} [{}]", p, p.key))
    .collect()
}

#[test]
fn wrong_files_are_named_with_the_reason_and_the_fix() {
    let root = Ca::root("root");
    let p256 = root.issue(KeyKind::P256);
    let p384 = root.issue(KeyKind::P384);

    let p = problems(&p256.cert_pem, &p384.key_pem(KeyFormat::Pkcs8));
    assert!(
        p.len() == 1
            && p[0].starts_with("/pki/key.pem: does not belong to the certificate /pki/cert.pem"),
        "{p:?}"
    );
    let other_p256 = root.issue(KeyKind::P256);
    let p = problems(&p256.cert_pem, &other_p256.key_pem(KeyFormat::Sec1));
    assert!(
        p.len() == 1 && p[0].contains("their public keys differ)"),
        "{p:?}"
    );

    let expired = root.issue_with(KeyKind::P256, &LeafOptions::expired(3));
    let p = problems(&expired.cert_pem, &expired.key_pem(KeyFormat::Pkcs8));
    assert!(
        p.len() == 1
            && p[0].starts_with("/pki/cert.pem: expired on")
            && p[0].contains("issue a new certificate"),
        "{p:?}"
    );
    let early = root.issue_with(
        KeyKind::P256,
        &LeafOptions::not_yet_valid(Duration::from_secs(7200)),
    );
    let p = problems(&early.cert_pem, &early.key_pem(KeyFormat::Pkcs8));
    assert!(
        p.len() == 1 && p[0].contains("is not valid yet") && p[0].contains("clock"),
        "{p:?}"
    );

    for kind in [KeyKind::Ed25519, KeyKind::P521] {
        let leaf = root.issue(kind);
        let p = problems(&leaf.cert_pem, &leaf.key_pem(KeyFormat::Pkcs8));
        let label = if kind == KeyKind::Ed25519 {
            "an Ed25519 key"
        } else {
            "an EC P-521 key"
        };
        assert!(
            p.iter().any(|x| x.starts_with("/pki/key.pem: is ")
                && x.contains(label)
                && x.contains("RSA (2048 bits or more) or EC P-256/P-384")),
            "{kind:?}: {p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with("/pki/cert.pem: is a certificate for") && x.contains(label)),
            "{kind:?}: {p:?}"
        );
    }

    let p = problems(
        "not a certificate",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    assert!(
        p.iter()
            .any(|x| x.contains("cert.pem: contains no PEM certificate")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| x.contains("key.pem: is an encrypted private key")),
        "{p:?}"
    );
    let p = problems(&p256.cert_pem, &p256.cert_pem);
    assert!(
        p.iter()
            .any(|x| x.contains("key.pem: contains no PEM private key")),
        "{p:?}"
    );
    assert!(
        p.iter().all(|x| x.contains("[aws.roles_anywhere.")),
        "{p:?}"
    );
}

#[test]
fn key_files_are_read_with_their_permissions_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("root");
    let leaf = root.issue(KeyKind::P256);
    let files = testpki::write(dir.path(), "host", &leaf, &[], KeyFormat::Sec1);
    let cfg = config(&files);
    let id = pki::load(&cfg, SystemTime::now()).expect("loads");
    assert_eq!(id.key.algorithm(), KeyAlgorithm::EcP256);
    assert!(!format!("{id:?}").contains("PRIVATE"), "{id:?}");

    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let p = pki::load(&cfg, SystemTime::now()).expect_err("world-readable");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].file, files.key.display().to_string());
    assert!(
        p[0].reason.contains("mode 0644") && p[0].reason.contains("chmod 600"),
        "{p:?}"
    );

    let missing = RolesAnywhereConfig {
        private_key: dir.path().join("nope.pem").display().to_string(),
        ..cfg.clone()
    };
    let p = pki::load(&missing, SystemTime::now()).expect_err("missing");
    assert!(
        p[0].file.ends_with("nope.pem") && p[0].reason.contains("cannot read the private key"),
        "{p:?}"
    );

    // %d/ without $CREDENTIALS_DIRECTORY (never set in unit tests) names the variable
    // (a name the units do not hand over: root would read a handed-over one in place).
    let systemd = RolesAnywhereConfig {
        private_key: "%d/some-other-key".into(),
        ..cfg
    };
    let p = pki::load(&systemd, SystemTime::now()).expect_err("unresolved");
    assert!(p[0].reason.contains("CREDENTIALS_DIRECTORY"), "{p:?}");
}

#[tokio::test]
async fn a_certificate_close_to_expiry_warns_in_status_and_feeds_the_rotation_reminder() {
    let root = Ca::root("root");
    let soon = root.issue_with(KeyKind::P256, &LeafOptions::expiring_in(10));
    let now = SystemTime::now();
    let id = identity_from(&soon.cert_pem, &soon.key_pem(KeyFormat::Pkcs8), None, now);
    assert_eq!(id.certificate.expires_in_days(now), 10);
    let w = id.certificate.expiry_warning(now).expect("warns");
    assert!(w.contains("expires in 10 days"), "{w}");
    let not_after = id.certificate.not_after;

    let files = testpki::Files {
        cert: "c".into(),
        key: "k".into(),
        chain: None,
    };
    let provider =
        RolesAnywhereProvider::with_identity(&config(&files), "us-east-2", id).expect("provider");
    let source = crate::aws::CredentialSource::RolesAnywhere(provider);
    assert_eq!(source.label(), "IAM Roles Anywhere");
    assert_eq!(source.certificate_expiry(), Some(not_after));
    let status = source.status();
    assert_eq!(status["certificate_expires_in_days"], 10);
    assert!(
        status["warning"]
            .as_str()
            .expect("warning")
            .contains("expires in 10 days"),
        "{status}"
    );
    assert!(status["session_expires_at"].is_null(), "{status}");

    let later = root.issue(KeyKind::P256);
    let id = identity_from(&later.cert_pem, &later.key_pem(KeyFormat::Pkcs8), None, now);
    assert!(id.certificate.expiry_warning(now).is_none());
}

/// A provider for a fresh P-256 identity pointed at `server`.
async fn provider_for(
    server: &FakeRolesAnywhere,
    root: &Ca,
) -> (RolesAnywhereProvider, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = root.issue(KeyKind::P256);
    let files = testpki::write(dir.path(), "host", &leaf, &[], KeyFormat::Pkcs8);
    let cfg = RolesAnywhereConfig {
        endpoint_url: Some(server.url()),
        ..config(&files)
    };
    (
        RolesAnywhereProvider::new(&cfg, "us-east-2").expect("provider"),
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_create_session() {
    let root = Ca::root("root");
    let server = FakeRolesAnywhere::start(Settings::trusting(root.der()))
        .await
        .expect("server");
    let (provider, _dir) = provider_for(&server, &root).await;
    let provider = Arc::new(provider);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let p = provider.clone();
            tokio::spawn(async move { p.credentials().await })
        })
        .collect();
    let mut keys = Vec::new();
    for c in calls {
        keys.push(
            c.await
                .expect("task")
                .expect("credentials")
                .access_key_id()
                .to_string(),
        );
    }
    assert_eq!(server.calls(), 1);
    assert!(keys.iter().all(|k| k == &keys[0]));
    server.assert_all_verified();
    let issued = &server.issued()[0];
    let status = provider.status().to_string();
    assert!(!status.contains(&issued.secret_access_key) && !status.contains(&issued.session_token));
    assert!(!format!("{provider:?}").contains(fake::SECRET_CANARY));
    let v = provider.status();
    assert_eq!(v["credential_source"], "IAM Roles Anywhere");
    assert!(
        v["session_expires_at"].is_string() && v["last_error"].is_null(),
        "{v}"
    );
    assert_eq!(
        v["certificate_serial"],
        provider.certificate().serial.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_surface_with_the_reason_and_are_retried_with_backoff() {
    let root = Ca::root("root");
    let server = FakeRolesAnywhere::start(Settings::trusting(root.der()))
        .await
        .expect("server");
    let (provider, _dir) = provider_for(&server, &root).await;
    provider.set_backoff(crate::backoff::Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(400),
    ));

    for (mode, expect) in [
        (Mode::Throttle, "429 ThrottlingException"),
        (Mode::Validation, "400 ValidationException"),
        (Mode::AccessDenied, "403 AccessDeniedException"),
        (Mode::ServerError, "500"),
    ] {
        server.update(|s| s.mode = mode);
        // Wait out the backoff from the previous failure, then fail again.
        let before = server.calls();
        let err = loop {
            let r = provider.credentials().await;
            if server.calls() > before {
                break r.expect_err("fails");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            err.contains(expect) && err.contains("IAM Roles Anywhere"),
            "{mode:?}: {err}"
        );
        // Inside the backoff window callers get the error without another call.
        let again = provider.credentials().await.expect_err("still failing");
        assert_eq!(again, err);
        assert_eq!(server.calls(), before + 1, "{mode:?}");
        let v = provider.status();
        assert_eq!(v["last_error"], err.as_str());
        assert!(v["retry_in_seconds"].is_u64(), "{v}");
    }

    server.update(|s| s.mode = Mode::Normal);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if provider.credentials().await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(provider.status()["last_error"].is_null());
    server.assert_all_verified();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_refresher_replaces_a_session_before_it_expires() {
    let root = Ca::root("root");
    let mut settings = Settings::trusting(root.der());
    settings.session_lifetime = Some(Duration::from_secs(3));
    let server = FakeRolesAnywhere::start(settings).await.expect("server");
    let (provider, _dir) = provider_for(&server, &root).await;
    provider.start();
    let first = provider.credentials().await.expect("first session");
    let first_expiry = first.expiry().expect("expiry");
    // Refresh at half of the 3 s lifetime: a second session well before the first expires.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.calls() < 2 {
        assert!(std::time::Instant::now() < deadline, "no refresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        SystemTime::now() < first_expiry,
        "refreshed only after expiry"
    );
    let second = provider.credentials().await.expect("second session");
    assert_ne!(second.access_key_id(), first.access_key_id());
    server.assert_all_verified();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_with_a_clear_reason() {
    let root = Ca::root("root");
    let stranger = Ca::root("someone else's CA");
    let server = FakeRolesAnywhere::start(Settings::trusting(root.der()))
        .await
        .expect("server");
    let (provider, _dir) = provider_for(&server, &stranger).await;
    let err = provider.credentials().await.expect_err("untrusted");
    assert!(
        err.contains("403 AccessDeniedException: Untrusted signing certificate"),
        "{err}"
    );
    assert!(err.contains("trust anchor holds the CA"), "{err}");
}
