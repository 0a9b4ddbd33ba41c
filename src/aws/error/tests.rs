//! Each class from a real SDK call: an SSM client against a closed port, a server that
//! never answers, and a loopback server that answers the way SSM does (awsJson1.1 errors).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const CALL: Call = Call {
    what: "SSM DescribeParameters",
    permission: "ssm:DescribeParameters",
};

/// A chain that finds nothing, as the default chain does on a host without credentials.
#[derive(Debug)]
struct Nothing;

impl ProvideCredentials for Nothing {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no providers in chain provided credentials",
        )))
    }
}

/// A source that is configured but fails, as Roles Anywhere does with a bad certificate.
#[derive(Debug)]
struct Failing;

impl ProvideCredentials for Failing {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
            "Roles Anywhere CreateSession failed: the certificate is not trusted",
        )))
    }
}

async fn client(
    endpoint: &str,
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
) -> aws_sdk_ssm::Client {
    let credentials = credentials.unwrap_or_else(|| {
        aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST",
            "testsecret",
            None,
            None,
            "test",
        ))
    });
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::net::aws_http_client())
        .region(Region::new("us-east-2"))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(500))
                .build(),
        )
        .load()
        .await;
    aws_sdk_ssm::Client::new(&sdk)
}

async fn describe_call(c: &aws_sdk_ssm::Client) -> Described {
    let err = c
        .describe_parameters()
        .send()
        .await
        .expect_err("the call must fail");
    let d = describe(&err, &CALL);
    assert!(!d.line.contains('\n'), "one line: {}", d.line);
    assert!(
        !d.line.contains("DispatchFailure") && !d.line.contains("ConnectorError"),
        "no Debug text: {}",
        d.line
    );
    assert!(
        d.line.starts_with("SSM DescribeParameters failed: "),
        "{}",
        d.line
    );
    d
}

/// Answers every request on a loopback port with `status` and an awsJson1.1 error body.
async fn answering(status: u16, error_type: &str, message: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = serde_json::json!({ "__type": error_type, "message": message }).to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn no_credentials_says_so_and_how_to_configure_them() {
    let c = client(
        "http://127.0.0.1:9",
        Some(aws_credential_types::provider::SharedCredentialsProvider::new(Nothing)),
    )
    .await;
    let d = describe_call(&c).await;
    assert_eq!(d.class, Class::NoCredentials, "{}", d.line);
    assert!(d.line.contains("no AWS credentials found"), "{}", d.line);
    assert!(d.line.contains("[aws.roles_anywhere]"), "{}", d.line);
    assert!(
        !d.line.contains("ssm:DescribeParameters"),
        "no permission advice for a credential problem: {}",
        d.line
    );
}

#[tokio::test]
async fn a_failing_credential_source_names_its_own_cause() {
    let c = client(
        "http://127.0.0.1:9",
        Some(aws_credential_types::provider::SharedCredentialsProvider::new(Failing)),
    )
    .await;
    let d = describe_call(&c).await;
    assert_eq!(d.class, Class::CredentialSource, "{}", d.line);
    assert!(
        d.line.contains("the certificate is not trusted"),
        "{}",
        d.line
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable_with_the_os_cause() {
    // Bind and drop: the port is free and nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let c = client(&format!("http://127.0.0.1:{port}"), None).await;
    let d = describe_call(&c).await;
    assert_eq!(d.class, Class::Unreachable, "{}", d.line);
    assert!(d.line.contains("cannot reach AWS"), "{}", d.line);
    assert!(d.line.to_lowercase().contains("refused"), "{}", d.line);
    assert!(d.class.is_transient());
}

#[tokio::test]
async fn a_silent_endpoint_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let c = client(&format!("http://{addr}"), None).await;
    let d = describe_call(&c).await;
    assert_eq!(d.class, Class::Timeout, "{}", d.line);
    assert!(d.line.contains("did not answer in time"), "{}", d.line);
    keep.abort();
}

#[tokio::test]
async fn access_denied_names_the_permission_to_add() {
    let url = answering(
        400,
        "AccessDeniedException",
        "User: arn:aws:sts::1:assumed-role/lwa-agent/h is not authorized to perform: \
         ssm:DescribeParameters",
    )
    .await;
    let d = describe_call(&client(&url, None).await).await;
    assert_eq!(d.class, Class::AccessDenied, "{}", d.line);
    assert_eq!(d.code.as_deref(), Some("AccessDeniedException"));
    assert!(
        d.line.contains("is not authorized")
            && d.line
                .ends_with("allow ssm:DescribeParameters for the agent's role"),
        "{}",
        d.line
    );
}

#[tokio::test]
async fn rejected_credentials_point_at_the_clock_and_the_role() {
    let url = answering(
        400,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
    .await;
    let d = describe_call(&client(&url, None).await).await;
    assert_eq!(d.class, Class::RejectedCredentials, "{}", d.line);
    assert!(d.line.contains("host clock"), "{}", d.line);
}

#[tokio::test]
async fn throttling_and_server_faults_are_transient() {
    let url = answering(400, "ThrottlingException", "Rate exceeded").await;
    let d = describe_call(&client(&url, None).await).await;
    assert_eq!(d.class, Class::Throttled, "{}", d.line);
    assert!(d.class.is_transient());
    let url = answering(500, "InternalServerError", "oops").await;
    let d = describe_call(&client(&url, None).await).await;
    assert_eq!(d.class, Class::Throttled, "{}", d.line);
}

#[tokio::test]
async fn other_service_errors_keep_aws_code_and_message() {
    let url = answering(400, "InvalidFilterValue", "The filter value is not valid").await;
    let d = describe_call(&client(&url, None).await).await;
    assert_eq!(d.class, Class::Service, "{}", d.line);
    assert_eq!(
        d.line,
        "SSM DescribeParameters failed: InvalidFilterValue: The filter value is not valid"
    );
    assert!(!d.class.is_transient());
}
