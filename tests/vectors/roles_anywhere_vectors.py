#!/usr/bin/env python3
"""Fixed SigV4-X509 vectors for lwa-agent's IAM Roles Anywhere signer, computed with
`cryptography` and the standard library only, independently of the Rust code.

RSA PKCS#1 v1.5 signatures are deterministic, so for a fixed key, certificate, time,
body and host the Authorization header is fixed too. The Rust test
`roles_anywhere_signer_matches_the_python_vectors` asserts that the signer produces exactly
what this script wrote to roles_anywhere_vectors.json.

    .venv/bin/python tests/vectors/roles_anywhere_vectors.py generate   # new test PKI (once)
    .venv/bin/python tests/vectors/roles_anywhere_vectors.py > tests/vectors/roles_anywhere_vectors.json

The PEM files here are test-only keys and certificates; they protect nothing.
"""

import base64
import datetime
import hashlib
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
CERT = "rsa-cert.pem"
KEY = "rsa-key.pem"
CHAIN = "chain.pem"


def path(name):
    return os.path.join(HERE, name)


def name(cn):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lwa-agent test vectors"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def generate():
    """A root, an intermediate and an RSA 2048 end-entity certificate with a 19-byte
    serial whose top bit is set (so its DER INTEGER has a leading zero byte)."""
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    end = datetime.datetime(2044, 1, 1, tzinfo=datetime.timezone.utc)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder().subject_name(name("vectors root")).issuer_name(name("vectors root"))
            .public_key(root_key.public_key()).serial_number(1).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256()))
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = (x509.CertificateBuilder().subject_name(name("vectors intermediate")).issuer_name(root.subject)
             .public_key(inter_key.public_key()).serial_number(2).not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .sign(root_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    serial = int.from_bytes(bytes.fromhex("c0ffee0123456789abcdef0011223344556677"), "big")
    leaf = (x509.CertificateBuilder().subject_name(name("erp-host-vectors")).issuer_name(inter.subject)
            .public_key(key.public_key()).serial_number(serial).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .sign(inter_key, hashes.SHA256()))
    with open(path(KEY), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(path(CERT), "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(path(CHAIN), "wb") as f:
        f.write(inter.public_bytes(serialization.Encoding.PEM))
    with open(path("root-cert.pem"), "wb") as f:
        f.write(root.public_bytes(serialization.Encoding.PEM))


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def b64_der(cert):
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def vector(case, when, region, host, body, with_chain):
    with open(path(CERT), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(path(KEY), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    chain = []
    if with_chain:
        with open(path(CHAIN), "rb") as f:
            chain = x509.load_pem_x509_certificates(f.read())

    algorithm = "AWS4-X509-RSA-SHA256"
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{when.strftime('%Y%m%d')}/{region}/rolesanywhere/aws4_request"
    headers = {
        "content-type": "application/json",
        "host": host,
        "x-amz-date": amz_date,
        "x-amz-x509": b64_der(cert),
    }
    if chain:
        headers["x-amz-x509-chain"] = ",".join(b64_der(c) for c in chain)
    names = sorted(headers)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        ["POST", "/sessions", ""]
        + [f"{n}:{headers[n].strip()}" for n in names]
        + ["", signed_headers, sha256_hex(body.encode())]
    )
    string_to_sign = "\n".join([algorithm, amz_date, scope, sha256_hex(canonical_request.encode())])
    signature = key.sign(string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()).hex()
    authorization = (f"{algorithm} Credential={cert.serial_number}/{scope}, "
                     f"SignedHeaders={signed_headers}, Signature={signature}")
    return {
        "name": case,
        "time_unix": int(when.timestamp()),
        "region": region,
        "host": host,
        "body": body,
        "certificate": CERT,
        "private_key": KEY,
        "certificate_chain": CHAIN if with_chain else None,
        "expected": {
            "serial": str(cert.serial_number),
            "x_amz_date": amz_date,
            "x_amz_x509": headers["x-amz-x509"],
            "x_amz_x509_chain": headers.get("x-amz-x509-chain"),
            "canonical_request": canonical_request,
            "string_to_sign": string_to_sign,
            "authorization": authorization,
        },
    }


def body(duration, session_name=None):
    fields = {
        "durationSeconds": duration,
        "profileArn": "arn:aws:rolesanywhere:us-east-2:111122223333:profile/6f4a2b1c-0d3e-4f5a-8b9c-0123456789ab",
        "roleArn": "arn:aws:iam::111122223333:role/lwa-agent",
        "trustAnchorArn": "arn:aws:rolesanywhere:us-east-2:111122223333:trust-anchor/0a1b2c3d-4e5f-6789-abcd-ef0123456789",
    }
    if session_name:
        fields["roleSessionName"] = session_name
    # The agent's serde_json writes keys sorted and without spaces.
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def main():
    if sys.argv[1:] == ["generate"]:
        generate()
        return
    utc = datetime.timezone.utc
    out = {
        "generated_by": "tests/vectors/roles_anywhere_vectors.py (Python cryptography)",
        "cases": [
            vector("rsa-no-chain", datetime.datetime(2025, 1, 15, 12, 34, 56, tzinfo=utc), "us-east-2",
                   "rolesanywhere.us-east-2.amazonaws.com", body(3600), False),
            vector("rsa-chain-session-name", datetime.datetime(2026, 2, 28, 23, 59, 59, tzinfo=utc), "eu-west-1",
                   "127.0.0.1:8443", body(900, "erp-host-1"), True),
        ],
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
