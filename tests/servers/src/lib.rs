//! Loopback servers for lwa-agent's tests and demo: an LWA-compatible token endpoint, an
//! SP-API Application Management endpoint, an IAM Roles Anywhere endpoint that verifies
//! signatures, EC2 instance metadata and the SSO portal (`aws_identity`), a `moto_server` process, a switchable TCP proxy, and the test PKI. Nothing
//! here reaches beyond 127.0.0.1.

pub mod app_management;
pub mod aws_identity;
pub mod lwa;
pub mod moto;
pub mod pki;
pub mod proxy;
pub mod rolesanywhere;
pub mod serve;
