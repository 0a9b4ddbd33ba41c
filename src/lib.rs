//! lwa-agent: serves Amazon SP-API (Login with Amazon) access tokens on a root-only Unix
//! socket, from client credentials kept as SecureStrings in AWS SSM Parameter Store.
//!
//! The binary is a thin wrapper around [`cli::main`]; everything else lives here so that
//! pure logic is unit-tested and the integration tests drive the real binary.

pub mod accounts;
pub mod agent;
pub mod aws;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod lwa;
pub mod metrics;
pub mod net;
pub mod process;
pub mod rotation;
pub mod socket;
pub mod status;
pub mod systemd;
