//! Loopback servers for lwa-agent's tests and demo: an LWA-compatible token endpoint and a
//! `moto_server` process. Nothing here reaches beyond 127.0.0.1.

pub mod lwa;
pub mod moto;
