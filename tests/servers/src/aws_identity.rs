//! Where AWS credentials come from besides Roles Anywhere, on one loopback port: the EC2
//! instance metadata service (IMDSv2: a session token first, then the instance role's
//! credentials) and the IAM Identity Center portal behind an SSO profile
//! (`GetRoleCredentials`). Both answer as AWS documents them, check what they receive (the
//! IMDSv2 session token, the SSO bearer token, account and role), and keep a log.
//!
//! Point the SDK here with `AWS_EC2_METADATA_SERVICE_ENDPOINT` and `AWS_ENDPOINT_URL_SSO`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::serve;

/// The instance role's name, as IMDS lists it.
pub const ROLE: &str = "lwa-agent-instance-role";

/// What the endpoints accept.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The access token in the SSO profile's cached token file.
    pub sso_token: String,
    pub sso_account_id: String,
    pub sso_role_name: String,
}

/// One request as answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub status: u16,
}

serve::test_server!(AwsIdentity, Settings, Log);

/// What the server received (read through the harness's `log()`).
#[derive(Default)]
pub struct Log {
    calls: Vec<Call>,
    /// IMDSv2 session tokens handed out.
    sessions: Vec<String>,
}

impl AwsIdentity {
    pub async fn start(settings: Settings) -> std::io::Result<AwsIdentity> {
        Self::bind("127.0.0.1:0", settings).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.h.log().calls.clone()
    }

    /// Whether the instance role's credentials were handed out (with a valid session).
    pub fn instance_role_used(&self) -> bool {
        self.calls()
            .iter()
            .any(|c| c.path.ends_with(&format!("/security-credentials/{ROLE}")) && c.status == 200)
    }

    /// Whether an SSO profile's role credentials were handed out.
    pub fn sso_used(&self) -> bool {
        self.calls()
            .iter()
            .any(|c| c.path.starts_with("/federation/credentials") && c.status == 200)
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (status, body, ttl) = self.route(&req);
        self.h.log().calls.push(Call {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            status,
        });
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        if let Some(ttl) = ttl.and_then(|t| hyper::header::HeaderValue::from_str(&t).ok()) {
            // IMDSv2 says how long the session token lives, as the real one does.
            resp.headers_mut()
                .insert("x-aws-ec2-metadata-token-ttl-seconds", ttl);
        }
        resp
    }

    /// The status, the body and, for an IMDSv2 session token, its lifetime.
    fn route(&self, req: &Request<hyper::body::Incoming>) -> (u16, String, Option<String>) {
        let (status, body) = self.answer_for(req);
        let ttl = (req.uri().path() == "/latest/api/token" && status == 200).then(|| {
            req.headers()
                .get("x-aws-ec2-metadata-token-ttl-seconds")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("21600")
                .to_string()
        });
        (status, body, ttl)
    }

    fn answer_for(&self, req: &Request<hyper::body::Incoming>) -> (u16, String) {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let path = req.uri().path();
        if path == "/latest/api/token" {
            if req.method() != hyper::Method::PUT
                || header("x-aws-ec2-metadata-token-ttl-seconds").is_empty()
            {
                return (400, "IMDSv2 wants PUT with a TTL header".into());
            }
            let token = format!("imds-session-{:016x}", serve::random());
            self.h.log().sessions.push(token.clone());
            return (200, token);
        }
        if let Some(rest) = path.strip_prefix("/latest/meta-data/iam/security-credentials/") {
            let token = header("x-aws-ec2-metadata-token");
            if !self.h.log().sessions.contains(&token) {
                return (401, String::new());
            }
            return match rest {
                "" => (200, ROLE.to_string()),
                r if r == ROLE => (200, role_credentials()),
                _ => (404, String::new()),
            };
        }
        if path == "/federation/credentials" {
            let s = self.h.settings();
            let query: Vec<(String, String)> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let q = |k: &str| {
                query
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            if header("x-amz-sso_bearer_token") != s.sso_token {
                return (
                    401,
                    r#"{"message":"Session token not found or invalid"}"#.into(),
                );
            }
            if q("account_id") != s.sso_account_id || q("role_name") != s.sso_role_name {
                return (403, r#"{"message":"No access"}"#.into());
            }
            let expires = SystemTime::now() + Duration::from_secs(3600);
            let millis = expires
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            return (
                200,
                serde_json::json!({"roleCredentials": {
                    "accessKeyId": "ASIASSOTESTKEY",
                    "secretAccessKey": "sso-test-secret",
                    "sessionToken": "sso-test-session",
                    "expiration": millis,
                }})
                .to_string(),
            );
        }
        (404, String::new())
    }
}

/// The instance role's credentials, as IMDS writes them.
fn role_credentials() -> String {
    let expires = SystemTime::now() + Duration::from_secs(6 * 3600);
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": crate::app_management::rfc3339(SystemTime::now()),
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIAIMDSTESTKEY",
        "SecretAccessKey": "imds-test-secret",
        "Token": "imds-test-session",
        "Expiration": crate::app_management::rfc3339(expires),
    })
    .to_string()
}
