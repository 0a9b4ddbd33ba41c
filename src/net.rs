//! Outbound HTTPS for LWA and Roles Anywhere: rustls (no OpenSSL) and hickory, a pure-Rust
//! resolver, so that the static binary never calls glibc's `getaddrinfo` and so never loads
//! NSS modules built for another glibc.

/// A reqwest builder with the agent's TLS, resolver and user agent; callers add timeouts.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .hickory_dns(true)
        .user_agent(concat!("lwa-agent/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
}
