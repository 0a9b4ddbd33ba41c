//! The LWA test endpoint as a process, for the demo: accepts one client id / secret /
//! refresh token given in the environment and issues tokens until killed. With
//! LWA_TEST_APP_ADDR it also serves the SP-API Application Management test endpoint, which
//! rotates the client secret and sends the new one to LWA_TEST_NEW_SECRET_QUEUE (a moto
//! SQS queue URL), as Amazon does.
//!
//! LWA_TEST_ADDR (default 127.0.0.1:8700), LWA_TEST_CLIENT_ID, LWA_TEST_CLIENT_SECRET,
//! LWA_TEST_REFRESH_TOKEN, LWA_TEST_EXPIRES_IN (default 3600), LWA_TEST_APP_ADDR,
//! LWA_TEST_NEW_SECRET_QUEUE. Secrets come from the environment, not argv, as anywhere
//! else in the project. What it prints names secrets by number, never by value.

use std::time::Duration;

use lwa_agent_testservers::app_management::{AppManagement, AppSettings, ROTATION_SCOPE};
use lwa_agent_testservers::lwa::{FakeLwa, Mode, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).map_err(|_| anyhow::anyhow!("set {k}"));
    let first_secret = var("LWA_TEST_CLIENT_SECRET")?;
    let settings = Settings {
        client_id: var("LWA_TEST_CLIENT_ID")?,
        client_secrets: vec![first_secret.clone()],
        refresh_tokens: vec![var("LWA_TEST_REFRESH_TOKEN")?],
        scopes: vec![
            "sellingpartnerapi::notifications".into(),
            ROTATION_SCOPE.into(),
        ],
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
    let app = match std::env::var("LWA_TEST_APP_ADDR") {
        Ok(app_addr) => {
            let app = AppManagement::start_on(
                &app_addr,
                lwa.clone(),
                AppSettings {
                    queue_url: var("LWA_TEST_NEW_SECRET_QUEUE")?,
                    window: Duration::from_secs(60),
                    old_secret_valid_for: Duration::from_secs(7 * 86400),
                    new_secret_valid: true,
                    send_delay: Duration::from_millis(500),
                    expiry_queue_url: std::env::var("LWA_TEST_EXPIRY_QUEUE").ok(),
                },
            )
            .await?;
            println!(
                "Application Management test endpoint listening on {}",
                app.endpoint()
            );
            Some(app)
        }
        Err(_) => None,
    };
    // A line per call, secrets named by number: #1 is the initial one, #2 the first
    // rotated one, and so on.
    let reporter = {
        let (lwa, app) = (lwa.clone(), app.clone());
        tokio::spawn(async move {
            let (mut seen_lwa, mut seen_app) = (0, 0);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let secrets: Vec<String> = std::iter::once(first_secret.clone())
                    .chain(
                        app.iter()
                            .flat_map(|a| a.accepted())
                            .filter_map(|c| c.new_secret),
                    )
                    .collect();
                if let Some(app) = &app {
                    for c in app.calls().iter().skip(seen_app) {
                        println!("Application Management: rotate call answered {}", c.status);
                        seen_app += 1;
                    }
                }
                for r in lwa.received().iter().skip(seen_lwa) {
                    let n = r
                        .form
                        .get("client_secret")
                        .and_then(|s| secrets.iter().position(|x| x == s))
                        .map(|i| format!("#{}", i + 1))
                        .unwrap_or_else(|| "unknown".into());
                    println!(
                        "LWA: {} exchange with client secret {n} answered {}",
                        r.form.get("grant_type").map(String::as_str).unwrap_or("?"),
                        r.status
                    );
                    seen_lwa += 1;
                }
            }
        })
    };
    tokio::signal::ctrl_c().await?;
    reporter.abort();
    Ok(())
}
