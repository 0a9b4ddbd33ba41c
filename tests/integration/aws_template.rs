//! The AWS side as code (packaging/aws/lwa-agent.yaml): the pinned cfn-lint finds nothing;
//! the stack deploys into moto_server's CloudFormation (Roles Anywhere off: moto has none;
//! automatic rotation and the EventBridge rule on); the agent role's policies, as IAM holds
//! them, grant exactly the actions the agent calls on exactly the stack's resources; with
//! moto's IAM enforcement on, the role is refused what the policy leaves out; and the
//! agent's rotation check, configured from the stack's outputs, gets its reminders through
//! the stack's topic. What moto cannot deploy (Roles Anywhere, queue, topic and key
//! policies, subscriptions) is checked in the template itself.
//!
//! The deployment, the decoded template and the IAM probes come from tests/aws_template.py
//! with the venv's boto3 and cfn-lint (tests/requirements.txt); every assertion is here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const STACK: &str = "lwa-agent-test";
const PREFIX: &str = "/erp/lwa";
const SP_API: &str = "https://sellingpartnerapi-eu.amazon.com";
/// SP-API's notification sender, as Amazon's "Set up credential rotation notifications"
/// documents it for SQS destinations.
const SP_API_SENDER: &str = "arn:aws:iam::437568002678:root";

/// Every IAM action the agent calls, and why. The role may grant these and nothing else.
const AGENT_ACTIONS: &[(&str, &str)] = &[
    (
        "ssm:GetParameters",
        "the credentials' SecureStrings, with decryption",
    ),
    (
        "ssm:DescribeParameters",
        "rotation check ages and policies; put-secret's key and tier",
    ),
    (
        "ssm:PutParameter",
        "fleet-lock markers; the client secret (put-secret, automatic rotation)",
    ),
    (
        "ssm:GetParameter",
        "a fleet-lock marker, read by `rotate --dry-run` (docs/automatic-rotation.md)",
    ),
    (
        "ssm:DeleteParameter",
        "a fleet-lock marker given back when its step failed",
    ),
    (
        "ssm:GetParametersByPath",
        "automatic rotation: the client secret parameters other hosts registered",
    ),
    (
        "kms:Decrypt",
        "GetParameters with decryption; receiving from the SSE-KMS queues",
    ),
    (
        "kms:Encrypt",
        "PutParameter of a Standard-tier SecureString",
    ),
    (
        "kms:GenerateDataKey",
        "PutParameter of an Advanced-tier SecureString",
    ),
    ("sns:Publish", "reminders and automatic-rotation reports"),
    ("sns:GetTopicAttributes", "doctor"),
    (
        "sqs:ReceiveMessage",
        "automatic rotation: the notifications (docs/automatic-rotation.md)",
    ),
    (
        "sqs:DeleteMessage",
        "automatic rotation: once the new secret is in SSM",
    ),
    (
        "sqs:ChangeMessageVisibility",
        "automatic rotation: hide a message while working on it",
    ),
    ("sqs:GetQueueAttributes", "doctor: the queues"),
];

/// AWS SDK operations in src/ and the IAM action each needs (None: needs no permission).
const SDK_OPERATIONS: &[(&str, Option<&str>)] = &[
    ("get_parameters", Some("ssm:GetParameters")),
    ("get_parameter", Some("ssm:GetParameter")),
    ("get_parameters_by_path", Some("ssm:GetParametersByPath")),
    ("describe_parameters", Some("ssm:DescribeParameters")),
    ("put_parameter", Some("ssm:PutParameter")),
    ("delete_parameter", Some("ssm:DeleteParameter")),
    ("publish", Some("sns:Publish")),
    ("get_topic_attributes", Some("sns:GetTopicAttributes")),
    ("receive_message", Some("sqs:ReceiveMessage")),
    ("delete_message", Some("sqs:DeleteMessage")),
    (
        "change_message_visibility",
        Some("sqs:ChangeMessageVisibility"),
    ),
    ("get_queue_attributes", Some("sqs:GetQueueAttributes")),
    ("get_caller_identity", None),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn template() -> PathBuf {
    root().join("packaging/aws/lwa-agent.yaml")
}

/// A tool from the project venv; missing fails the test with how to install it.
fn venv(tool: &str) -> PathBuf {
    let path = root().join(".venv/bin").join(tool);
    assert!(
        path.exists(),
        "{tool} not found at {}: run tests/setup (it creates .venv with the pins of \
         tests/requirements.txt)",
        path.display()
    );
    path
}

/// Runs tests/aws_template.py and returns the JSON it prints.
pub(crate) fn helper(args: &[&str], stdin: Option<&Value>) -> Value {
    let mut cmd = Command::new(venv("python"));
    cmd.arg(root().join("tests/aws_template.py"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the venv's python runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.to_string().as_bytes())
            .expect("write the helper's stdin");
    }
    let out = child.wait_with_output().expect("aws_template.py ends");
    assert!(
        out.status.success(),
        "aws_template.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "aws_template.py {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

fn output<'a>(stack: &'a Value, key: &str) -> &'a str {
    stack["outputs"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no output {key}: {}", stack["outputs"]))
}

#[test]
fn cfn_lint_finds_nothing_in_the_template() {
    let cfn_lint = venv("cfn-lint");
    // Informational checks too: the template has nothing to excuse.
    let out = Command::new(cfn_lint)
        .args(["--include-checks", "I", "--"])
        .arg(template())
        .output()
        .expect("cfn-lint runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "cfn-lint found problems in packaging/aws/lwa-agent.yaml (exit {:?}):\n{report}",
        out.status.code()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_deploys_grants_exactly_what_the_agent_calls_and_carries_reminders() {
    let w = World::new().await;
    let template = template();
    let stack = helper(
        &[
            "deploy",
            &w.endpoint(),
            template.to_str().expect("UTF-8 path"),
            STACK,
            &format!("ParameterPrefix={PREFIX}"),
            &format!("SpApiEndpoint={SP_API}"),
            "AutomaticRotation=true",
            "AdvancedTierEventRule=true",
            "NotificationEmail=ops@example.com",
            "NotificationSms=+15555550100",
        ],
        None,
    );
    assert_eq!(
        stack["status"], "CREATE_COMPLETE",
        "events: {:#}",
        stack["events"]
    );

    // --- The outputs: everything the agent's config needs. ---
    assert_eq!(output(&stack, "Region"), REGION);
    assert_eq!(output(&stack, "ParameterPrefix"), PREFIX);
    assert_eq!(output(&stack, "ClientIdParameter"), ID_PARAM);
    assert_eq!(output(&stack, "ClientSecretParameter"), SECRET_PARAM);
    assert_eq!(output(&stack, "RefreshTokenParameter"), REFRESH_PARAM);
    assert_eq!(
        output(&stack, "FleetLockPrefix"),
        format!("{PREFIX}/fleet-lock")
    );
    assert_eq!(output(&stack, "SpApiEndpoint"), SP_API);
    assert_eq!(output(&stack, "SessionDurationSeconds"), "3600");
    assert_eq!(
        output(&stack, "ParameterKeyAlias"),
        format!("alias/{STACK}-parameters")
    );
    let role_arn = output(&stack, "RoleArn");
    let account = role_arn.split(':').nth(4).expect("account in the role ARN");
    let arn_prefix = |service: &str| format!("arn:aws:{service}:{REGION}:{account}:");
    for key in ["ParameterKeyArn", "QueueKeyArn"] {
        assert!(output(&stack, key).starts_with(&format!("{}key/", arn_prefix("kms"))));
    }
    assert!(output(&stack, "TopicArn").starts_with(&arn_prefix("sns")));
    for (url, arn) in [
        ("NewSecretQueueUrl", "NewSecretQueueArn"),
        ("ExpiryQueueUrl", "ExpiryQueueArn"),
    ] {
        let name = output(&stack, url).rsplit('/').next().expect("queue name");
        assert_eq!(
            output(&stack, arn),
            format!("{}{name}", arn_prefix("sqs")),
            "{url} and {arn} name the same queue"
        );
    }
    for key in ["TrustAnchorArn", "ProfileArn"] {
        assert!(
            stack["outputs"].get(key).is_none(),
            "{key} without Roles Anywhere: {}",
            stack["outputs"]
        );
    }

    // --- The queues: SSE-KMS with the queues' own key, 14 days; a dead-letter queue for
    // the expiry queue only. ---
    let sdk = w.sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_key_id = output(&stack, "QueueKeyArn").rsplit('/').next().unwrap();
    let dlq_name = output(&stack, "DeadLetterQueueUrl")
        .rsplit('/')
        .next()
        .unwrap();
    for url in ["NewSecretQueueUrl", "ExpiryQueueUrl", "DeadLetterQueueUrl"] {
        let attributes = queue_attributes(&sqs, output(&stack, url)).await;
        assert_eq!(
            attributes.get("KmsMasterKeyId").map(String::as_str),
            Some(queue_key_id),
            "{url}: {attributes:?}"
        );
        assert_eq!(attributes["MessageRetentionPeriod"], "1209600", "{url}");
        match url {
            // The only copy of a new secret: never moved to a queue nothing reads.
            "NewSecretQueueUrl" => assert!(
                !attributes.contains_key("RedrivePolicy"),
                "the new-secret queue must have no redrive policy: {attributes:?}"
            ),
            "ExpiryQueueUrl" => {
                let redrive: Value =
                    serde_json::from_str(&attributes["RedrivePolicy"]).expect("redrive JSON");
                assert_eq!(
                    redrive["deadLetterTargetArn"],
                    format!("{}{dlq_name}", arn_prefix("sqs")),
                    "{url}"
                );
            }
            _ => {}
        }
    }
    assert_ne!(
        output(&stack, "QueueKeyArn"),
        output(&stack, "ParameterKeyArn"),
        "SP-API's sender must get no right on the SecureStrings' key"
    );

    // --- The role: who may assume it, and exactly what it may do on what. ---
    let role = &stack["role"];
    assert_eq!(
        role["trust"]["Statement"],
        json!([{
            "Sid": "PrincipalsOfThisAccountThatMayAssumeIt",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "sts:AssumeRole",
        }]),
        "without Roles Anywhere the role trusts its own account only"
    );
    assert_eq!(role["attached"], json!([]), "no managed policy");
    assert_eq!(role["max_session_duration"], 3600);
    let statements: Vec<&Value> = role["inline"]
        .as_object()
        .expect("inline policies")
        .values()
        .flat_map(|doc| doc["Statement"].as_array().expect("statements"))
        .collect();
    assert_eq!(
        role["inline"].as_object().unwrap().len(),
        2,
        "the agent's policy and the automatic-rotation policy: {}",
        role["inline"]
    );

    let parameter = |name: &str| format!("{}parameter{name}", arn_prefix("ssm"));
    let parameter_key = output(&stack, "ParameterKeyArn").to_string();
    let queue_key = output(&stack, "QueueKeyArn").to_string();
    let topic = output(&stack, "TopicArn").to_string();
    let queues = [
        output(&stack, "NewSecretQueueArn").to_string(),
        output(&stack, "ExpiryQueueArn").to_string(),
    ];
    let lock = parameter(&format!("{}/*", output(&stack, "FleetLockPrefix")));
    let expected: BTreeMap<&str, BTreeSet<String>> = [
        ("ssm:GetParameters", vec![parameter(&format!("{PREFIX}/*"))]),
        ("ssm:DescribeParameters", vec!["*".to_string()]),
        (
            "ssm:PutParameter",
            vec![parameter(SECRET_PARAM), lock.clone()],
        ),
        ("ssm:GetParameter", vec![lock.clone()]),
        ("ssm:DeleteParameter", vec![lock.clone()]),
        ("ssm:GetParametersByPath", vec![lock.clone()]),
        (
            "kms:Decrypt",
            vec![parameter_key.clone(), queue_key.clone()],
        ),
        ("kms:Encrypt", vec![parameter_key.clone()]),
        ("kms:GenerateDataKey", vec![parameter_key.clone()]),
        ("sns:Publish", vec![topic.clone()]),
        ("sns:GetTopicAttributes", vec![topic.clone()]),
        ("sqs:ReceiveMessage", queues.to_vec()),
        ("sqs:DeleteMessage", queues.to_vec()),
        ("sqs:ChangeMessageVisibility", queues.to_vec()),
        ("sqs:GetQueueAttributes", queues.to_vec()),
    ]
    .into_iter()
    .map(|(a, r)| (a, r.into_iter().collect()))
    .collect();
    assert_eq!(
        expected.keys().copied().collect::<BTreeSet<_>>(),
        AGENT_ACTIONS.iter().map(|(a, _)| *a).collect(),
        "the expectations cover exactly the agent's actions"
    );

    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &statements {
        assert_eq!(s["Effect"], "Allow", "{s}");
        for forbidden in ["NotAction", "NotResource", "Principal"] {
            assert!(s.get(forbidden).is_none(), "{forbidden} in {s}");
        }
        let actions = strings(&s["Action"]);
        let resources = strings(&s["Resource"]);
        for a in &actions {
            assert!(
                AGENT_ACTIONS.iter().any(|(known, _)| known == a),
                "{a} is granted but the agent never calls it: {s}"
            );
        }
        if resources
            .iter()
            .any(|r| r.contains('*') && !r.ends_with("/*"))
        {
            assert_eq!(
                (actions.as_slice(), resources.as_slice()),
                (
                    &["ssm:DescribeParameters".to_string()][..],
                    &["*".to_string()][..]
                ),
                "a wildcard resource only for an action that allows nothing else: {s}"
            );
        }
        for a in actions {
            granted
                .entry(a)
                .or_default()
                .extend(resources.iter().cloned());
        }
        // KMS only through the service that holds the data.
        let kms = strings(&s["Action"]).iter().any(|a| a.starts_with("kms:"));
        if kms {
            let via = s["Condition"]["StringEquals"]["kms:ViaService"]
                .as_str()
                .unwrap_or_else(|| panic!("kms without kms:ViaService: {s}"));
            let service = if resources == [queue_key.as_str()] {
                "sqs"
            } else {
                assert_eq!(resources, [parameter_key.as_str()], "{s}");
                "ssm"
            };
            assert_eq!(via, format!("{service}.{REGION}.amazonaws.com"), "{s}");
            if service == "ssm" {
                let context = s["Condition"]["StringEquals"]["kms:EncryptionContext:PARAMETER_ARN"]
                    .as_str()
                    .or_else(|| {
                        s["Condition"]["StringLike"]["kms:EncryptionContext:PARAMETER_ARN"].as_str()
                    })
                    .unwrap_or_else(|| panic!("no PARAMETER_ARN encryption context: {s}"));
                let writes = strings(&s["Action"]) != ["kms:Decrypt"];
                let want = if writes {
                    parameter(SECRET_PARAM)
                } else {
                    parameter(&format!("{PREFIX}/*"))
                };
                assert_eq!(context, want, "{s}");
            }
        }
    }
    let granted: BTreeMap<&str, BTreeSet<String>> = granted
        .iter()
        .map(|(a, r)| (a.as_str(), r.clone()))
        .collect();
    assert_eq!(granted, expected, "actions and their resources");

    // Every AWS call in src/ is granted (a new call without a grant fails here).
    for (operation, action) in sdk_calls(&root().join("src")) {
        if let Some(action) = action {
            assert!(
                granted.contains_key(action),
                "src/ calls {operation} ({action}), which the role does not grant"
            );
        }
    }

    // --- The topic carries the agent's reminders, configured from the outputs. ---
    let (queue, _) = subscribe_queue(&w, output(&stack, "TopicArn")).await;
    let config = w.config(
        "",
        &format!(
            "[rotation]\nwarn_after = \"1s\"\nexpire_after = \"1h\"\nrepeat_every = \"1h\"\n\
             topic_arn = \"{}\"\nfleet_lock_prefix = \"{}\"\n",
            output(&stack, "TopicArn"),
            output(&stack, "FleetLockPrefix")
        ),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let config_path = w.write_config(&config);
    let state = w.dir.path().join("state");
    let out = agent_command()
        .env("STATE_DIRECTORY", &state)
        .arg("--config")
        .arg(&config_path)
        .args(["check", "--json"])
        .output()
        .expect("check runs");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success() && report["sent"] == 3,
        "check: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = w.messages(&queue, 3, 10).await;
    assert_eq!(messages.len(), 3, "{messages:#?}");
    for m in &messages {
        assert_eq!(m["TopicArn"], output(&stack, "TopicArn"));
        w.canaries.assert_absent("an SNS message", &m.to_string());
    }
    let markers = w
        .ssm()
        .await
        .get_parameters_by_path()
        .path(output(&stack, "FleetLockPrefix"))
        .recursive(true)
        .send()
        .await
        .expect("fleet-lock markers")
        .parameters
        .unwrap_or_default();
    assert_eq!(
        markers.len(),
        3,
        "one marker per reminder under the stack's prefix"
    );

    // --- moto's IAM enforcement: the role is refused what its policy leaves out. ---
    // moto evaluates resources for SQS only (other services are checked against "*", which
    // a resource-scoped statement never matches), so the allowed calls are SQS's and
    // DescribeParameters'; the refusals hold on AWS as well. No long polls: the queues'
    // default wait is 20 s.
    let new_secret = output(&stack, "NewSecretQueueUrl");
    let expiry = output(&stack, "ExpiryQueueUrl");
    let dlq = output(&stack, "DeadLetterQueueUrl");
    let calls = [
        (
            "allowed",
            "sqs",
            "receive_message",
            json!({"QueueUrl": new_secret, "WaitTimeSeconds": 0}),
        ),
        (
            "allowed",
            "sqs",
            "receive_message",
            json!({"QueueUrl": expiry, "WaitTimeSeconds": 0}),
        ),
        (
            "allowed",
            "sqs",
            "get_queue_attributes",
            json!({"QueueUrl": new_secret, "AttributeNames": ["All"]}),
        ),
        (
            "allowed",
            "sqs",
            "delete_message",
            json!({"QueueUrl": new_secret, "ReceiptHandle": "not-a-receipt"}),
        ),
        (
            "allowed",
            "sqs",
            "change_message_visibility",
            json!({"QueueUrl": expiry, "ReceiptHandle": "not-a-receipt", "VisibilityTimeout": 0}),
        ),
        ("allowed", "ssm", "describe_parameters", json!({})),
        (
            "refused",
            "sqs",
            "send_message",
            json!({"QueueUrl": new_secret, "MessageBody": "{}"}),
        ),
        (
            "refused",
            "sqs",
            "purge_queue",
            json!({"QueueUrl": new_secret}),
        ),
        (
            "refused",
            "sqs",
            "set_queue_attributes",
            json!({"QueueUrl": new_secret, "Attributes": {"Policy": ""}}),
        ),
        (
            "refused",
            "sqs",
            "receive_message",
            json!({"QueueUrl": dlq, "WaitTimeSeconds": 0}),
        ),
        (
            "refused",
            "ssm",
            "delete_parameter",
            json!({"Name": SECRET_PARAM}),
        ),
        (
            "refused",
            "ssm",
            "put_parameter",
            json!({"Name": "/elsewhere/x", "Value": "x", "Type": "String"}),
        ),
        (
            "refused",
            "kms",
            "decrypt",
            json!({"CiphertextBlob": "AAAA"}),
        ),
        (
            "refused",
            "sns",
            "create_topic",
            json!({"Name": "not-the-agents"}),
        ),
        (
            "refused",
            "iam",
            "put_role_policy",
            json!({"RoleName": role["name"], "PolicyName": "more", "PolicyDocument": "{}"}),
        ),
    ];
    let input: Vec<Value> = calls
        .iter()
        .map(|(_, service, operation, args)| {
            json!({"service": service, "operation": operation, "args": args})
        })
        .collect();
    let results = helper(
        &["probe", &w.endpoint(), role_arn],
        Some(&Value::Array(input)),
    );
    let results = results.as_array().expect("probe results");
    assert_eq!(results.len(), calls.len());
    for ((want, service, operation, _), got) in calls.iter().zip(results) {
        let message = got["message"].as_str().unwrap_or("");
        let refused = got["code"].as_str().unwrap_or("").contains("AccessDenied")
            || message.contains("is not authorized to perform");
        match *want {
            "allowed" => assert!(
                !refused,
                "{service} {operation} should be allowed for the role: {got}"
            ),
            _ => assert!(
                refused,
                "{service} {operation} should be refused to the role: {got}"
            ),
        }
    }
}

/// The parts moto's CloudFormation cannot create, checked where they are written.
#[test]
fn roles_anywhere_and_the_resource_policies_are_as_amazon_documents_them() {
    let template = template();
    let text = std::fs::read_to_string(&template).expect("template");
    assert!(
        text.contains("CloudFormation cannot create SecureString parameters")
            && text.contains("lwa-agent setup"),
        "the header says who writes the SecureStrings"
    );
    let t = helper(&["decode", template.to_str().expect("UTF-8 path")], None);
    let resources = t["Resources"].as_object().expect("resources");
    let of_type = |ty: &str| -> Vec<(&String, &Value)> {
        resources.iter().filter(|(_, r)| r["Type"] == ty).collect()
    };
    assert!(
        of_type("AWS::SSM::Parameter").is_empty(),
        "no secret (and no placeholder for one) in the template"
    );

    // Roles Anywhere: a trust anchor from the CA parameter, a profile for the agent's role,
    // both conditional (moto has no Roles Anywhere).
    let anchor = &t["Resources"]["TrustAnchor"];
    assert_eq!(anchor["Type"], "AWS::RolesAnywhere::TrustAnchor");
    assert_eq!(anchor["Condition"], "HasCaCertificate");
    assert_eq!(
        anchor["Properties"]["Source"],
        json!({"SourceType": "CERTIFICATE_BUNDLE",
               "SourceData": {"X509CertificateData": {"Ref": "CaCertificate"}}})
    );
    assert_eq!(anchor["Properties"]["Enabled"], true);
    assert_eq!(
        t["Conditions"]["HasCaCertificate"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "CaCertificate"}, ""]}]})
    );
    let profile = &t["Resources"]["Profile"];
    assert_eq!(profile["Type"], "AWS::RolesAnywhere::Profile");
    assert_eq!(profile["Condition"], "RolesAnywhere");
    assert_eq!(
        profile["Properties"]["RoleArns"],
        json!([{"Fn::GetAtt": ["AgentRole", "Arn"]}])
    );
    assert_eq!(
        profile["Properties"]["DurationSeconds"],
        json!({"Ref": "SessionDuration"})
    );
    let trust = &t["Resources"]["AgentRole"]["Properties"]["AssumeRolePolicyDocument"];
    let branches = &trust["Statement"][0]["Fn::If"];
    assert_eq!(branches[0], "RolesAnywhere", "{trust}");
    assert_eq!(
        branches[1],
        json!({
            "Sid": "RolesAnywhereForHostsOfTheTrustAnchor",
            "Effect": "Allow",
            "Principal": {"Service": "rolesanywhere.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::If": [
                "HasCaCertificate",
                {"Fn::GetAtt": ["TrustAnchor", "TrustAnchorArn"]},
                {"Ref": "TrustAnchorArn"}
            ]}}}
        }),
        "Roles Anywhere may assume the role for certificates of this trust anchor only"
    );
    for output in ["TrustAnchorArn", "ProfileArn"] {
        assert_eq!(t["Outputs"][output]["Condition"], "RolesAnywhere");
    }

    // The queues: SP-API's sender may send (and read the attributes), nothing else.
    let queue_policies = of_type("AWS::SQS::QueuePolicy");
    assert_eq!(queue_policies.len(), 2);
    for (name, policy) in queue_policies {
        let queue = policy["Properties"]["Queues"][0]["Ref"]
            .as_str()
            .expect("one queue per policy");
        assert_eq!(policy["Condition"], "AutoRotation", "{name}");
        assert_eq!(
            policy["Properties"]["PolicyDocument"]["Statement"],
            json!([{
                "Sid": "SellingPartnerApiSendsNotifications",
                "Effect": "Allow",
                "Principal": {"AWS": SP_API_SENDER},
                "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes"],
                "Resource": {"Fn::GetAtt": [queue, "Arn"]}
            }]),
            "{name}"
        );
    }
    // ... and encrypt and decrypt with the queues' key, through SQS only.
    let key_statements = &t["Resources"]["QueueKey"]["Properties"]["KeyPolicy"]["Statement"];
    let sender: Vec<&Value> = key_statements
        .as_array()
        .expect("key statements")
        .iter()
        .filter(|s| s["Principal"]["AWS"] == SP_API_SENDER)
        .collect();
    assert_eq!(sender.len(), 1, "{key_statements}");
    assert_eq!(
        sender[0]["Action"],
        json!(["kms:GenerateDataKey", "kms:Decrypt"])
    );
    assert_eq!(
        sender[0]["Condition"],
        json!({"StringEquals": {"kms:ViaService": {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}}})
    );
    for s in t["Resources"]["ParameterKey"]["Properties"]["KeyPolicy"]["Statement"]
        .as_array()
        .expect("key statements")
    {
        assert!(
            !s.to_string().contains("437568002678"),
            "SP-API gets nothing on the SecureStrings' key: {s}"
        );
    }
    for queue in ["NewSecretQueue", "ExpiryQueue", "DeadLetterQueue"] {
        assert_eq!(
            t["Resources"][queue]["Properties"]["KmsMasterKeyId"],
            json!({"Ref": "QueueKey"}),
            "{queue}"
        );
    }

    // EventBridge may publish to the topic for its own rule only.
    let topic_policy = &t["Resources"]["TopicPolicy"];
    assert_eq!(topic_policy["Condition"], "EventRule");
    assert_eq!(
        topic_policy["Properties"]["PolicyDocument"]["Statement"],
        json!([{
            "Sid": "EventBridgeRuleMayPublish",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": {"Ref": "Topic"},
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ParameterPolicyRule", "Arn"]}}}
        }])
    );
    let rule = &t["Resources"]["ParameterPolicyRule"]["Properties"];
    assert_eq!(rule["EventPattern"]["source"], json!(["aws.ssm"]));
    assert_eq!(
        rule["EventPattern"]["detail-type"],
        json!(["Parameter Store Policy Action"])
    );
    assert_eq!(
        rule["EventPattern"]["detail"]["parameter-name"],
        json!([{"prefix": {"Fn::Sub": "${ParameterPrefix}/"}}])
    );

    // The optional subscriptions.
    for (name, protocol, condition) in [
        ("EmailSubscription", "email", "HasEmail"),
        ("SmsSubscription", "sms", "HasSms"),
    ] {
        let s = &t["Resources"][name];
        assert_eq!(s["Condition"], condition, "{name}");
        assert_eq!(s["Properties"]["Protocol"], protocol, "{name}");
        assert_eq!(
            s["Properties"]["TopicArn"],
            json!({"Ref": "Topic"}),
            "{name}"
        );
    }
}

async fn queue_attributes(sqs: &aws_sdk_sqs::Client, url: &str) -> BTreeMap<String, String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "attributes of {url}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect()
}

/// A new queue subscribed to `topic` (the stack's), to read what is published there.
async fn subscribe_queue(w: &World, topic: &str) -> (String, String) {
    let sdk = w.sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name("stack-topic-reader")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let arn = queue_attributes(&sqs, &queue)
        .await
        .remove("QueueArn")
        .expect("queue arn");
    aws_sdk_sns::Client::new(&sdk)
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(&arn)
        .send()
        .await
        .expect("subscribe to the stack's topic");
    (queue, arn)
}

/// The AWS SDK operations called anywhere under `dir`, with the IAM action each needs.
fn sdk_calls(dir: &Path) -> BTreeSet<(&'static str, Option<&'static str>)> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read src/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read a source file");
                for (operation, action) in SDK_OPERATIONS {
                    if text.contains(&format!(".{operation}()")) {
                        found.insert((*operation, *action));
                    }
                }
            }
        }
    }
    assert!(
        found.contains(&("get_parameters", Some("ssm:GetParameters"))),
        "the scan of src/ finds the agent's calls"
    );
    found
}
