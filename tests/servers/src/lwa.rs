//! An LWA-compatible token endpoint on 127.0.0.1 that behaves like
//! `https://api.amazon.com/auth/o2/token`: form-encoded POST, `refresh_token` and
//! `client_credentials` grants, `invalid_client` / `invalid_grant` / `invalid_request`
//! errors with LWA's status codes, and switches a test can flip: rotate the accepted client
//! secret (with an overlap, as LWA keeps the old secret working for 7 days), shorten token
//! lifetimes, throttle, fail with 5xx, hang, or delay. It counts and records every call.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::serve;

/// What the endpoint does with the next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Answer every request with this status (429 carries `Retry-After: 1`).
    Fail(u16),
    /// Never answer.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub client_id: String,
    /// Every secret LWA currently accepts (old and new during a rotation overlap).
    pub client_secrets: Vec<String>,
    pub refresh_tokens: Vec<String>,
    /// Scopes a grantless request may ask for.
    pub scopes: Vec<String>,
    pub expires_in: u64,
    pub mode: Mode,
    /// Added before every answer, to widen races in single-flight tests.
    pub delay: Duration,
}

/// One request as received, for tests that verify what the agent sent.
#[derive(Debug, Clone)]
pub struct Received {
    pub content_type: String,
    pub form: HashMap<String, String>,
    pub status: u16,
}

/// What an access token was issued for, so that the Application Management test endpoint
/// accepts only tokens LWA issued for `client_credentials` with the rotation scope, and
/// tests can tell which client secret made the token an agent serves.
#[derive(Debug, Clone)]
pub struct Issued {
    pub grant_type: String,
    pub scope: String,
    pub client_id: String,
    pub client_secret: String,
}

/// What the server received (read through the harness's `log()`).
#[derive(Default)]
pub struct Log {
    received: Vec<Received>,
    issued: u64,
    tokens: HashMap<String, Issued>,
}

serve::test_server!(FakeLwa, Settings, Log);

impl FakeLwa {
    /// Starts the endpoint on an ephemeral loopback port, on the current tokio runtime.
    pub async fn start(settings: Settings) -> std::io::Result<FakeLwa> {
        Self::start_on("127.0.0.1:0", settings).await
    }

    pub async fn start_on(addr: &str, settings: Settings) -> std::io::Result<FakeLwa> {
        Self::bind(addr, settings).await
    }

    pub fn url(&self) -> String {
        format!("http://{}/auth/o2/token", self.addr)
    }

    /// Requests received so far (including refused ones).
    pub fn calls(&self) -> usize {
        self.h.log().received.len()
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> u64 {
        self.h.log().issued
    }

    pub fn received(&self) -> Vec<Received> {
        self.h.log().received.clone()
    }

    /// What `access_token` was issued for, if this endpoint issued it.
    pub fn issued_for(&self, access_token: &str) -> Option<Issued> {
        self.h.log().tokens.get(access_token).cloned()
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let settings = self.h.settings();
        if settings.mode == Mode::Hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if !settings.delay.is_zero() {
            tokio::time::sleep(settings.delay).await;
        }
        let path_ok = req.uri().path() == "/auth/o2/token";
        let method_ok = req.method() == hyper::Method::POST;
        let content_type = serve::header(&req, "content-type");
        let body = serve::body(req).await;
        let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let (status, json) = if !path_ok {
            (404, serde_json::json!({"error": "not_found"}))
        } else if !method_ok {
            (405, serde_json::json!({"error": "invalid_request"}))
        } else if let Mode::Fail(code) = settings.mode {
            (code, serde_json::json!({"error": "server_error"}))
        } else {
            self.decide(&settings, &content_type, &form)
        };
        self.h.log().received.push(Received {
            content_type,
            form,
            status,
        });
        let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        resp.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"),
        );
        if status == 429 {
            resp.headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
        }
        resp
    }

    fn decide(
        &self,
        s: &Settings,
        content_type: &str,
        form: &HashMap<String, String>,
    ) -> (u16, serde_json::Value) {
        let err = |status: u16, code: &str, text: &str| {
            (
                status,
                serde_json::json!({"error": code, "error_description": text}),
            )
        };
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return err(
                400,
                "invalid_request",
                "The request has an invalid parameter : content-type",
            );
        }
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != s.client_id
            || !s.client_secrets.iter().any(|c| c == get("client_secret"))
        {
            return err(401, "invalid_client", "Client authentication failed");
        }
        match get("grant_type") {
            "refresh_token" => {
                if !s.refresh_tokens.iter().any(|r| r == get("refresh_token")) {
                    return err(
                        400,
                        "invalid_grant",
                        "The request has an invalid grant parameter : refresh_token",
                    );
                }
            }
            "client_credentials" => {
                let asked: Vec<&str> = get("scope").split(' ').filter(|x| !x.is_empty()).collect();
                if asked.is_empty() || !asked.iter().all(|a| s.scopes.iter().any(|x| x == a)) {
                    return err(400, "invalid_scope", "An unknown scope was requested");
                }
            }
            _ => {
                return err(
                    400,
                    "unsupported_grant_type",
                    "The authorization grant type is not supported",
                )
            }
        }
        let token = {
            let mut log = self.h.log();
            log.issued += 1;
            let token = format!("Atza|test-token-{}", log.issued);
            log.tokens.insert(
                token.clone(),
                Issued {
                    grant_type: get("grant_type").to_string(),
                    scope: get("scope").to_string(),
                    client_id: get("client_id").to_string(),
                    client_secret: get("client_secret").to_string(),
                },
            );
            token
        };
        let mut body = serde_json::json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": s.expires_in,
        });
        if get("grant_type") == "refresh_token" {
            body["refresh_token"] = get("refresh_token").into();
        }
        (200, body)
    }
}
