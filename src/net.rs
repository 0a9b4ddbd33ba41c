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

/// The `Retry-After` header in seconds (the form AWS and LWA send), if any.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
}

/// LWA and Roles Anywhere answer a few hundred bytes; anything much bigger is not them.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Reads a response body of at most [`MAX_ANSWER`] bytes; a longer one is an error, not a
/// truncated body that would fail later as "invalid JSON".
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
