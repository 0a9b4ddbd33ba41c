//! The LWA test endpoint as a process, for the demo: accepts one client id / secret /
//! refresh token given in the environment and issues tokens until killed.
//!
//! LWA_TEST_ADDR (default 127.0.0.1:8700), LWA_TEST_CLIENT_ID, LWA_TEST_CLIENT_SECRET,
//! LWA_TEST_REFRESH_TOKEN, LWA_TEST_EXPIRES_IN (default 3600). Secrets come from the
//! environment, not argv, as anywhere else in the project.

use std::time::Duration;

use lwa_agent_testservers::lwa::{FakeLwa, Mode, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).map_err(|_| anyhow::anyhow!("set {k}"));
    let settings = Settings {
        client_id: var("LWA_TEST_CLIENT_ID")?,
        client_secrets: vec![var("LWA_TEST_CLIENT_SECRET")?],
        refresh_tokens: vec![var("LWA_TEST_REFRESH_TOKEN")?],
        scopes: vec!["sellingpartnerapi::notifications".into()],
        expires_in: std::env::var("LWA_TEST_EXPIRES_IN")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3600),
        mode: Mode::Normal,
        delay: Duration::ZERO,
    };
    let addr = std::env::var("LWA_TEST_ADDR").unwrap_or_else(|_| "127.0.0.1:8700".into());
    let lwa = FakeLwa::start_on(&addr, settings).await?;
    println!("LWA test endpoint listening on {}", lwa.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
