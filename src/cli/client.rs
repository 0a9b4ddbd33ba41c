//! A minimal HTTP/1.1 client over the agent's Unix socket, for `token`, `status` and
//! reloads after `put-secret`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use super::Outcome;

pub struct Answer {
    pub status: u16,
    pub body: String,
}

pub async fn request(socket: &Path, method: Method, path: &str) -> Result<Answer, String> {
    let io = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::UnixStream::connect(socket),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", socket.display()))?
    .map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "is the agent running? (systemctl status lwa-agent.socket lwa-agent)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "the socket is root-only: run as root, or ask for socket.group access"
            }
            _ => "check socket.path in the config, or pass --socket",
        };
        format!("cannot connect to {}: {e}: {hint}", socket.display())
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake with the agent failed: {e}"))?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let work = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("the agent did not answer: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the agent's answer failed: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .map_err(|_| "the agent did not answer within 60s".to_string())?
}

/// The agent's error message from a JSON error answer, or the raw body.
pub fn error_message(answer: &Answer) -> String {
    serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| answer.body.trim().to_string())
}

/// GET `path`, turning anything but a 200 into the agent's own error message.
pub async fn get_ok(socket: &Path, path: &str) -> Result<Answer, String> {
    let answer = request(socket, Method::GET, path).await?;
    if answer.status != 200 {
        return Err(format!(
            "the agent answered {}: {}",
            answer.status,
            error_message(&answer)
        ));
    }
    Ok(answer)
}

pub async fn token(socket: PathBuf, name: Option<String>, json: bool) -> Outcome {
    let path = match &name {
        Some(n) => format!("/v1/token/{n}"),
        None => "/v1/token".to_string(),
    };
    let answer = match get_ok(&socket, &path).await {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e),
    };
    if json {
        print!("{}", answer.body);
        return Outcome::Ok;
    }
    match serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("access_token")?.as_str().map(String::from))
    {
        Some(t) => {
            println!("{t}");
            Outcome::Ok
        }
        None => Outcome::Failed("the agent's answer had no access_token".into()),
    }
}
