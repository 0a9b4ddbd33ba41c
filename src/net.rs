//! Outbound HTTPS for LWA, Roles Anywhere and AWS: rustls (no OpenSSL) and hickory, a
//! pure-Rust resolver, so that the static binary never calls glibc's `getaddrinfo` and so
//! never reads `/etc/nsswitch.conf` or loads NSS modules built for another glibc (SSSD,
//! systemd-resolved or myhostname modules would crash or silently fail in it).

use std::net::IpAddr;
use std::sync::Arc;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::TokioResolver;

/// A reqwest builder with the agent's TLS, resolver and user agent; callers add timeouts.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .hickory_dns(true)
        .user_agent(concat!("lwa-agent/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
}

/// Every TLS client of the agent (AWS, LWA, Roles Anywhere, SP-API) trusts the system's CA
/// certificates. Without any, none can check a certificate, and the AWS SDK's client
/// panics when it is built; so every command that reaches AWS checks this first and says
/// what to install.
pub fn require_ca_store() -> Result<(), String> {
    let found = rustls_native_certs::load_native_certs();
    if !found.certs.is_empty() {
        return Ok(());
    }
    let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
    Err(format!(
        "no CA certificates found in the system store{}: TLS to AWS, LWA and Roles Anywhere \
         trusts them; install the ca-certificates package, or point SSL_CERT_FILE at a PEM \
         bundle",
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join("; "))
        }
    ))
}

/// Builds a client from [`client_builder`]. The usual failure is a missing CA store:
/// rustls checks certificates against the system's (as the AWS SDK's client does), so the
/// message names the cause and the fix, not only reqwest's "builder error".
pub fn build_client(
    builder: reqwest::ClientBuilder,
    what: &str,
) -> Result<reqwest::Client, String> {
    builder.build().map_err(|e| {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause.push_str(": ");
            cause.push_str(&s.to_string());
            source = s.source();
        }
        format!(
            "cannot set up the HTTPS client for {what} ({cause}); TLS trusts the system's CA \
             certificates: install the ca-certificates package, or point SSL_CERT_FILE at a \
             PEM bundle"
        )
    })
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

/// The AWS SDK's HTTP client: the SDK's own default (hyper with rustls on aws-lc, proxies
/// from `HTTPS_PROXY`/`NO_PROXY`) with one change, DNS through [`HickoryResolver`] instead
/// of `getaddrinfo`.
pub fn aws_http_client() -> SharedHttpClient {
    let resolver = HickoryResolver::default();
    aws_smithy_http_client::Builder::new().build_with_connector_fn(
        move |settings, runtime_components| {
            let mut conn = aws_smithy_http_client::Connector::builder()
                .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
            conn.set_connector_settings(settings.cloned());
            if let Some(components) = runtime_components {
                conn.set_sleep_impl(components.sleep_impl());
            }
            conn.set_proxy_config(Some(ProxyConfig::from_env()));
            conn.build_with_resolver(resolver.clone())
        },
    )
}

/// Host names resolved by hickory from `/etc/hosts` and `/etc/resolv.conf`, the way
/// reqwest's `hickory-dns` feature does it (both address families, for happy eyeballs).
/// The resolver is built on first use, inside the runtime, and shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct HickoryResolver {
    resolver: Arc<tokio::sync::OnceCell<TokioResolver>>,
}

impl HickoryResolver {
    async fn resolver(&self) -> Result<&TokioResolver, ResolveDnsError> {
        self.resolver
            .get_or_try_init(|| async {
                let mut builder = TokioResolver::builder_tokio().map_err(|e| {
                    ResolveDnsError::new(format!(
                        "cannot read the DNS configuration (/etc/resolv.conf): {e}; create it \
                         with a nameserver line"
                    ))
                })?;
                builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                builder.build().map_err(|e| {
                    ResolveDnsError::new(format!(
                        "cannot start the DNS resolver from /etc/resolv.conf: {e}; check its \
                         nameserver lines"
                    ))
                })
            })
            .await
    }
}

impl ResolveDns for HickoryResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            let resolver = self.resolver().await?;
            let lookup = resolver.lookup_ip(name).await.map_err(|e| {
                ResolveDnsError::new(format!("cannot resolve the host name {name}: {e}"))
            })?;
            let addrs: Vec<IpAddr> = lookup.iter().collect();
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_localhost_without_getaddrinfo() {
        let addrs = HickoryResolver::default()
            .resolve_dns("localhost")
            .await
            .expect("localhost resolves");
        assert!(
            addrs.iter().any(|a| a.is_loopback()),
            "localhost resolved to {addrs:?}"
        );
        assert!(addrs.iter().all(|a| a.is_loopback()), "{addrs:?}");
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_an_error_that_names_it() {
        // `.invalid` never resolves (RFC 6761); hickory answers it without a query.
        let err = HickoryResolver::default()
            .resolve_dns("no-such-host.invalid")
            .await
            .expect_err("must not resolve");
        let text = format!("{:?}", err);
        assert!(text.contains("no-such-host.invalid"), "{text}");
    }
}
