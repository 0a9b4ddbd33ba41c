//! Request → response for the socket API (docs/clients.md): a short chain of
//! `validate_*` checks, then one handler per endpoint. Nothing here may panic or print a secret: the only
//! secret that leaves is the access token itself, in a token answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};

use super::error::ApiError;
use super::peer::Peer;
use crate::agent::Agent;
use crate::lwa::served::Served;
use crate::lwa::CredentialSlot;

pub type Answer = Response<Full<Bytes>>;

/// What a request gets from the synchronous checks: its answer, or the part that has to
/// wait (a token still being exchanged, a reload). A cached token is answered here, with
/// no task, timer or allocation beyond the answer itself.
pub enum Handled {
    Now(Answer),
    Later(Later),
}

pub enum Later {
    Token {
        slot: Arc<CredentialSlot>,
        text: bool,
    },
    Reload,
}

pub fn handle(agent: &Agent, peer: &Peer, req: &Request<Incoming>) -> Handled {
    route(agent, peer, req).unwrap_or_else(|e| Handled::Now(e.into_response()))
}

/// The waiting part of a request that [`handle`] could not answer at once.
pub async fn finish(agent: Arc<Agent>, later: Later) -> Answer {
    match later {
        Later::Token { slot, text } => {
            let result = slot
                .get(agent.request_wait())
                .await
                .map(|served| token_answer(&served, text, Instant::now()))
                .map_err(|u| ApiError::Unavailable {
                    message: format!(
                        "no valid access token for credential `{}`: {}",
                        slot.config.name, u.reason
                    ),
                    retry_after: u.retry_after,
                });
            let code = match &result {
                Ok(_) => 200,
                Err(e) => e.status().as_u16(),
            };
            agent.metrics().token_request(&slot.config.name, code);
            result.unwrap_or_else(ApiError::into_response)
        }
        Later::Reload => reload(&agent).await.unwrap_or_else(ApiError::into_response),
    }
}

fn route(agent: &Agent, peer: &Peer, req: &Request<Incoming>) -> Result<Handled, ApiError> {
    validate_head_size(req)?;
    validate_no_body(req)?;
    let path = req.uri().path();
    match path {
        "/v1/token" => {
            validate_method(req, &Method::GET)?;
            let slot = agent.default_slot().map_err(ApiError::NotFound)?;
            token(agent, peer, req, slot)
        }
        _ if path.starts_with("/v1/token/") => {
            validate_method(req, &Method::GET)?;
            let name = &path["/v1/token/".len()..];
            let slot = agent.slot(name).ok_or_else(|| {
                agent.metrics().token_request(name, 404);
                // Only root learns the other names: allow lists may hide credentials
                // from a peer, and so should this message.
                let known = if peer.uid == 0 {
                    format!(
                        ": configured credentials are {}",
                        agent.credential_names().join(", ")
                    )
                } else {
                    ": check the name in the agent's config".to_string()
                };
                ApiError::NotFound(format!("no credential named `{}`{known}", printable(name)))
            })?;
            token(agent, peer, req, slot)
        }
        "/v1/health" => {
            validate_method(req, &Method::GET)?;
            Ok(Handled::Now(health(agent)))
        }
        "/v1/status" => {
            validate_method(req, &Method::GET)?;
            Ok(Handled::Now(json(StatusCode::OK, &agent.status())))
        }
        "/metrics" => {
            validate_method(req, &Method::GET)?;
            Ok(Handled::Now(text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                agent.metrics_text(),
            )))
        }
        "/v1/reload" => {
            validate_method(req, &Method::POST)?;
            validate_may_reload(peer)?;
            Ok(Handled::Later(Later::Reload))
        }
        _ => Err(ApiError::NotFound(format!(
            "no such endpoint `{}`: use /v1/token, /v1/token/{{name}}, /v1/health, /v1/status, \
             /metrics or POST /v1/reload",
            printable(path)
        ))),
    }
}

/// The API (docs/clients.md): a request head over 8 KiB is refused with `too_large`.
/// hyper reads heads up to twice that (`MAX_READ`), so this check answers in JSON; a
/// longer head never parses and hyper closes with a bare 431.
fn validate_head_size(req: &Request<Incoming>) -> Result<(), ApiError> {
    let uri = req.uri();
    // The request target as sent: origin form, or absolute form with scheme and host.
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let size = line + headers + 2;
    if size > super::MAX_HEAD {
        return Err(ApiError::TooLarge(format!(
            "the request head is {size} bytes; the limit is {} bytes: send fewer or shorter headers",
            super::MAX_HEAD
        )));
    }
    Ok(())
}

/// GET carries no body (docs/clients.md) and POST /v1/reload needs none: refusing any keeps a
/// client from making the agent buffer data it will never use.
fn validate_no_body(req: &Request<Incoming>) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared || chunked || !req.body().is_end_stream() && req.body().size_hint().lower() > 0 {
        return Err(ApiError::BadRequest(
            "requests to the agent carry no body: send the request without one".into(),
        ));
    }
    Ok(())
}

fn validate_method(req: &Request<Incoming>, allowed: &Method) -> Result<(), ApiError> {
    if req.method() == allowed || (allowed == Method::GET && req.method() == Method::HEAD) {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed {
        message: format!(
            "{} is not allowed on {}: use {allowed}",
            req.method(),
            req.uri().path()
        ),
        allow: if allowed == Method::GET {
            "GET, HEAD"
        } else {
            "POST"
        },
    })
}

fn validate_may_read(peer: &Peer, slot: &CredentialSlot) -> Result<(), ApiError> {
    if peer.may_read(&slot.config) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "uid {} (gid {}) may not read credential `{}`: add it to allow_uids or allow_gids of \
         that credential in the agent's config",
        peer.uid, peer.gid, slot.config.name
    )))
}

fn validate_may_reload(peer: &Peer) -> Result<(), ApiError> {
    if peer.may_reload() {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "uid {} may not reload the agent: run as root (sudo lwa-agent …) or use systemctl \
         reload lwa-agent",
        peer.uid
    )))
}

fn token(
    agent: &Agent,
    peer: &Peer,
    req: &Request<Incoming>,
    slot: &Arc<CredentialSlot>,
) -> Result<Handled, ApiError> {
    let name = slot.config.name.as_str();
    if let Err(e) = validate_may_read(peer, slot) {
        agent.metrics().token_request(name, e.status().as_u16());
        return Err(e);
    }
    let text = wants_text(req);
    let now = Instant::now();
    match slot.with_current(now, |served| token_answer(served, text, now)) {
        Some(answer) => {
            agent.metrics().token_request(name, 200);
            Ok(Handled::Now(answer))
        }
        None => Ok(Handled::Later(Later::Token {
            slot: slot.clone(),
            text,
        })),
    }
}

fn token_answer(served: &Served, text: bool, now: Instant) -> Answer {
    if text {
        return respond(StatusCode::OK, "text/plain; charset=utf-8", served.text());
    }
    respond(StatusCode::OK, "application/json", served.json(now))
}

/// JSON unless the client asks for text/plain and not for JSON.
fn wants_text(req: &Request<Incoming>) -> bool {
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut types = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim());
    let (mut plain, mut json) = (false, false);
    for t in &mut types {
        plain |= t == "text/plain";
        json |= t == "application/json";
    }
    plain && !json
}

fn health(agent: &Agent) -> Answer {
    let now = Instant::now();
    let mut degraded = serde_json::Map::new();
    for slot in agent.slots() {
        if slot.current(now).is_none() {
            let s = slot.refresh_state();
            degraded.insert(
                slot.config.name.clone(),
                serde_json::json!({
                    "ready": false,
                    "error": s.last_error.clone().unwrap_or_else(|| "no token yet".into()),
                }),
            );
        }
    }
    if degraded.is_empty() {
        return json(StatusCode::OK, &serde_json::json!({"status": "ready"}));
    }
    let mut resp = json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({"status": "degraded", "credentials": degraded}),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    resp
}

async fn reload(agent: &Agent) -> Result<Answer, ApiError> {
    tracing::info!("reload requested on the socket");
    agent
        .parameters()
        .reload_now(Duration::from_secs(30))
        .await
        .map_err(|e| ApiError::Unavailable {
            message: format!("reload failed: {e}"),
            retry_after: Duration::from_secs(5),
        })?;
    let snap = agent.parameters().snapshot();
    let versions: serde_json::Map<String, serde_json::Value> = snap
        .values
        .iter()
        .map(|(k, v)| (k.clone(), v.version.into()))
        .collect();
    let problems: serde_json::Map<String, serde_json::Value> = snap
        .problems
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"status": "reloaded", "versions": versions, "problems": problems}),
    ))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    respond(status, "application/json", Bytes::from(bytes))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    respond(status, content_type, Bytes::from(body))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// A request path echoed in an error, cut short and stripped of control characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}
