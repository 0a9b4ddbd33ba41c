//! An SP-API Application Management endpoint on 127.0.0.1 that behaves like Amazon's
//! `rotateApplicationClientSecret` (`POST /applications/2023-11-30/clientSecret`):
//!
//! - it accepts only an `x-amz-access-token` the LWA test endpoint issued for
//!   `client_credentials` with the rotation scope (403 otherwise, with Amazon's error shape);
//! - it allows one call per window (Amazon: a minute; tests set less where they do not test
//!   it) and answers 429 inside it;
//! - on success (204, no body) it makes a new secret, makes LWA accept it (unless told the
//!   new secret is bad), keeps the old one working for a window the test sets, and sends
//!   the `APPLICATION_OAUTH_CLIENT_NEW_SECRET` notification into the SQS queue (moto's),
//!   as Amazon does, after an optional delay;
//! - it records every call.
//!
//! New secrets contain `CANARYSECRET`, so the tests' canary checks catch them anywhere.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::lwa::FakeLwa;
use crate::serve;

pub const PATH: &str = "/applications/2023-11-30/clientSecret";
pub const ROTATION_SCOPE: &str = "sellingpartnerapi::client_credential:rotation";

#[derive(Debug, Clone)]
pub struct AppSettings {
    /// Where the new-secret notification goes (a moto queue URL).
    pub queue_url: String,
    /// One call per window; Amazon's is 60 s.
    pub window: Duration,
    /// How long the old secret keeps working after a rotation (Amazon: about 7 days).
    pub old_secret_valid_for: Duration,
    /// false: LWA never learns the new secret (a bad secret arrives in the queue).
    pub new_secret_valid: bool,
    /// How long after the 204 the notification is sent.
    pub send_delay: Duration,
    /// Where Amazon's expiry notice for the replaced secret goes, as it may send one after
    /// a rotation (the replaced secret's 7-day clock); `None`: not sent.
    pub expiry_queue_url: Option<String>,
}

/// One call as answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub status: u16,
    /// The new secret made by this call (204 only).
    pub new_secret: Option<String>,
    /// When the replaced secret stops working, as the notification says (204 only).
    pub old_secret_expires: Option<SystemTime>,
}

serve::test_server!(
    AppManagement,
    AppSettings,
    Log, lwa: FakeLwa
);

/// What the server received (read through the harness's `log()`).
#[derive(Default)]
pub struct Log {
    calls: Vec<Call>,
    /// When the current window began (the last accepted call).
    window_start: Option<Instant>,
}

fn errors(code: &str, message: &str) -> String {
    serde_json::json!({"errors": [{"code": code, "message": message, "details": ""}]}).to_string()
}

/// Whole seconds, like Amazon's timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The notification body Amazon sends for a new secret (docs/automatic-rotation.md).
pub fn new_secret_notification(
    client_id: &str,
    secret: &str,
    new_expiry: SystemTime,
    old_expiry: SystemTime,
) -> String {
    new_secret_notification_published(client_id, secret, new_expiry, old_expiry, SystemTime::now())
}

/// The same, as if Amazon had published it at `published` (an old message, say).
pub fn new_secret_notification_published(
    client_id: &str,
    secret: &str,
    new_expiry: SystemTime,
    old_expiry: SystemTime,
    published: SystemTime,
) -> String {
    let now = rfc3339(published);
    serde_json::json!({
        "notificationVersion": "1.0",
        "notificationType": "APPLICATION_OAUTH_CLIENT_NEW_SECRET",
        "payloadVersion": "2023-11-30",
        "eventTime": now,
        "payload": {"applicationOAuthClientNewSecret": {
            "clientId": client_id,
            "newClientSecret": secret,
            "newClientSecretExpiryTime": rfc3339(new_expiry),
            "oldClientSecretExpiryTime": rfc3339(old_expiry),
        }},
        "notificationMetadata": {
            "applicationId": "amzn1.sp.solution.test",
            "subscriptionId": "subscription-new-secret",
            "publishTime": now,
            "notificationId": format!("notification-{:016x}", serve::random()),
        },
    })
    .to_string()
}

/// The notification body Amazon sends ahead of a secret's expiry.
pub fn expiry_notification(client_id: &str, expiry: SystemTime) -> String {
    expiry_notification_published(client_id, expiry, SystemTime::now())
}

/// The same, as if Amazon had published it at `published`.
pub fn expiry_notification_published(
    client_id: &str,
    expiry: SystemTime,
    published: SystemTime,
) -> String {
    let now = rfc3339(published);
    serde_json::json!({
        "notificationVersion": "1.0",
        "notificationType": "APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY",
        "payloadVersion": "2023-11-30",
        "eventTime": now,
        "payload": {"applicationOAuthClientSecretExpiry": {
            "clientId": client_id,
            "clientSecretExpiryTime": rfc3339(expiry),
            "clientSecretExpiryReason": "PERIODIC_ROTATION",
        }},
        "notificationMetadata": {
            "applicationId": "amzn1.sp.solution.test",
            "subscriptionId": "subscription-expiry",
            "publishTime": now,
            "notificationId": format!("notification-{:016x}", serve::random()),
        },
    })
    .to_string()
}

/// Sends `body` to an SQS queue of moto over its JSON protocol (moto checks no signature,
/// but routes on the Authorization header's service name).
pub async fn send_to_queue(queue_url: &str, body: &str) -> anyhow::Result<String> {
    let uri: hyper::Uri = queue_url.parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("no host in {queue_url}"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let payload = serde_json::json!({"QueueUrl": queue_url, "MessageBody": body}).to_string();
    let req = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", authority.as_str())
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", "AmazonSQS.SendMessage")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-2/sqs/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(Full::new(Bytes::from(payload)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("SQS SendMessage answered {status}: {answer}");
    }
    Ok(answer["MessageId"].as_str().unwrap_or_default().to_string())
}

impl AppManagement {
    pub async fn start(lwa: FakeLwa, settings: AppSettings) -> std::io::Result<AppManagement> {
        Self::start_on("127.0.0.1:0", lwa, settings).await
    }

    pub async fn start_on(
        addr: &str,
        lwa: FakeLwa,
        settings: AppSettings,
    ) -> std::io::Result<AppManagement> {
        Self::bind(addr, settings, lwa).await
    }

    /// The `sp_api_endpoint` to configure.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.h.log().calls.clone()
    }

    /// Calls Amazon accepted (204).
    pub fn accepted(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.status == 204)
            .collect()
    }

    /// Starts a rate window now, as if someone else had just rotated.
    pub fn mark_called_now(&self) {
        self.h.log().window_start = Some(Instant::now());
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let settings = self.h.settings();
        let token = serve::header(&req, "x-amz-access-token");
        let (status, body) = if req.uri().path() != PATH {
            (404, errors("NotFound", "Resource not found."))
        } else if req.method() != hyper::Method::POST {
            (405, errors("MethodNotAllowed", "Method not allowed."))
        } else {
            let issued = self.lwa.issued_for(&token).filter(|i| {
                i.grant_type == "client_credentials"
                    && i.scope.split(' ').any(|s| s == ROTATION_SCOPE)
            });
            match issued {
                None => (
                    403,
                    errors("Unauthorized", "Access to requested resource is denied."),
                ),
                Some(issued) => {
                    let now = Instant::now();
                    let mut log = self.h.log();
                    if log
                        .window_start
                        .is_some_and(|t| now.duration_since(t) < settings.window)
                    {
                        (
                            429,
                            errors(
                                "QuotaExceeded",
                                "You exceeded your quota for the requested resource.",
                            ),
                        )
                    } else {
                        log.window_start = Some(now);
                        drop(log);
                        let secret =
                            format!("amzn1.oa2-cs.v1.CANARYSECRETNEW{:016x}", serve::random());
                        let old_expires = self.rotate(&settings, &issued, &secret);
                        self.h.log().calls.push(Call {
                            at: now,
                            status: 204,
                            new_secret: Some(secret),
                            old_secret_expires: Some(old_expires),
                        });
                        return empty(204);
                    }
                }
            }
        };
        self.h.log().calls.push(Call {
            at: Instant::now(),
            status,
            new_secret: None,
            old_secret_expires: None,
        });
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        resp.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        resp
    }

    /// What Amazon does behind a 204: the new secret works, the old one for a while, and
    /// the notification goes to the queue (then, when set up, the replaced secret's expiry
    /// notice to the expiry queue). Returns when the old secret stops working.
    fn rotate(
        &self,
        settings: &AppSettings,
        issued: &crate::lwa::Issued,
        secret: &str,
    ) -> SystemTime {
        if settings.new_secret_valid {
            let s = secret.to_string();
            self.lwa.update(|l| l.client_secrets.push(s));
        }
        let old = issued.client_secret.clone();
        let lwa = self.lwa.clone();
        let valid_for = settings.old_secret_valid_for;
        tokio::spawn(async move {
            tokio::time::sleep(valid_for).await;
            lwa.update(|l| l.client_secrets.retain(|c| *c != old));
        });
        // Whole seconds, as the notification writes it.
        let old_expires = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                (SystemTime::now() + valid_for)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
        let body = new_secret_notification(
            &issued.client_id,
            secret,
            SystemTime::now() + Duration::from_secs(180 * 86400),
            old_expires,
        );
        let expiry = settings
            .expiry_queue_url
            .clone()
            .map(|q| (q, expiry_notification(&issued.client_id, old_expires)));
        let queue = settings.queue_url.clone();
        let delay = settings.send_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = send_to_queue(&queue, &body).await {
                eprintln!("app-management test endpoint: cannot send the notification: {e}");
            }
            if let Some((queue, body)) = expiry {
                // After the new secret, as Amazon's own notice of the old one's last days.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = send_to_queue(&queue, &body).await {
                    eprintln!("app-management test endpoint: cannot send the expiry notice: {e}");
                }
            }
        });
        old_expires
    }
}

fn empty(status: u16) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
    resp
}
