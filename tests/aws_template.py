"""The CloudFormation template's test helper, run with the project venv's Python by
tests/integration/aws_template.rs (boto3 and cfn-lint are pinned in tests/requirements.txt).
It only talks to the moto_server the Rust test started on 127.0.0.1, and prints JSON on
stdout; the Rust test makes every assertion.

  aws_template.py decode TEMPLATE
      the template as JSON, intrinsic functions as {"Ref": ...}/{"Fn::...": ...}
      (cfn-lint's own CloudFormation YAML reader)
  aws_template.py deploy ENDPOINT TEMPLATE STACK [Key=Value ...]
      create the stack, wait for CREATE_COMPLETE; print its status, outputs and
      resources, and the agent role's trust policy and inline policies as IAM stores them
  aws_template.py describe ENDPOINT STACK
      what `aws cloudformation describe-stacks --stack-name STACK --output json` prints
      (the answer without boto3's ResponseMetadata; dates as strings), for lwa-agent setup
  aws_template.py probe ENDPOINT ROLE_ARN < calls.json
      assume ROLE_ARN, switch on moto's IAM enforcement (/moto-api/reset-auth), make each
      call [{"service","operation","args"}] with the role's credentials, switch it off;
      print [{"code": "ok" | the error code, "message"}, ...]
"""

import json
import sys
import time
import urllib.request

REGION = "us-east-2"


def client(service, endpoint, **credentials):
    import boto3

    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=credentials.get("key", "testing"),
        aws_secret_access_key=credentials.get("secret", "testing"),
        aws_session_token=credentials.get("token"),
    )


def decode(path):
    from cfnlint.decode import decode as cfn_decode

    template, problems = cfn_decode(path)
    if problems:
        sys.exit(f"{path} does not parse: {[str(p) for p in problems]}")
    return template


def deploy(endpoint, path, stack, overrides):
    cfn = client("cloudformation", endpoint)
    with open(path, encoding="utf-8") as f:
        body = f.read()
    parameters = []
    for pair in overrides:
        key, _, value = pair.partition("=")
        parameters.append({"ParameterKey": key, "ParameterValue": value})
    cfn.create_stack(
        StackName=stack,
        TemplateBody=body,
        Parameters=parameters,
        Capabilities=["CAPABILITY_IAM"],
    )
    deadline = time.monotonic() + 30
    while True:
        described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        status = described["StackStatus"]
        if not status.endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    events = [
        f'{e["LogicalResourceId"]} {e["ResourceStatus"]} {e.get("ResourceStatusReason", "")}'
        for e in cfn.describe_stack_events(StackName=stack)["StackEvents"]
    ]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    resources = {
        r["LogicalResourceId"]: {
            "type": r["ResourceType"],
            "physical_id": r.get("PhysicalResourceId", ""),
            "status": r["ResourceStatus"],
        }
        for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
    }
    role = {}
    if "RoleArn" in outputs:
        iam = client("iam", endpoint)
        name = outputs["RoleArn"].rsplit("/", 1)[-1]
        got = iam.get_role(RoleName=name)["Role"]
        trust = got["AssumeRolePolicyDocument"]
        role = {
            "name": name,
            "max_session_duration": got.get("MaxSessionDuration"),
            "trust": json.loads(trust) if isinstance(trust, str) else trust,
            "inline": {
                p: iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
                for p in iam.list_role_policies(RoleName=name)["PolicyNames"]
            },
            "attached": [
                p["PolicyArn"]
                for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
            ],
        }
        for p, doc in role["inline"].items():
            if isinstance(doc, str):
                role["inline"][p] = json.loads(doc)
    return {
        "status": status,
        "events": events,
        "outputs": outputs,
        "resources": resources,
        "role": role,
    }


def describe(endpoint, stack):
    answer = client("cloudformation", endpoint).describe_stacks(StackName=stack)
    answer.pop("ResponseMetadata", None)
    return answer


def reset_auth(endpoint, count):
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=str(count).encode(),
        method="POST",
        # Not a form: moto reads the count from the raw body.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def probe(endpoint, role_arn, calls):
    from botocore.exceptions import ClientError

    sts = client("sts", endpoint)
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="aws-template-test")[
        "Credentials"
    ]
    as_role = {
        "key": creds["AccessKeyId"],
        "secret": creds["SecretAccessKey"],
        "token": creds["SessionToken"],
    }
    clients = {}
    results = []
    reset_auth(endpoint, 0)
    try:
        for call in calls:
            service = call["service"]
            if service not in clients:
                clients[service] = client(service, endpoint, **as_role)
            try:
                getattr(clients[service], call["operation"])(**call.get("args", {}))
                results.append({"code": "ok", "message": ""})
            except ClientError as e:
                error = e.response.get("Error", {})
                results.append(
                    {"code": str(error.get("Code", "")), "message": str(error.get("Message", ""))}
                )
    finally:
        reset_auth(endpoint, "inf")
    return results


def main(argv):
    if len(argv) >= 3 and argv[1] == "decode":
        result = decode(argv[2])
    elif len(argv) >= 5 and argv[1] == "deploy":
        result = deploy(argv[2], argv[3], argv[4], argv[5:])
    elif len(argv) == 4 and argv[1] == "describe":
        result = describe(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "probe":
        result = probe(argv[2], argv[3], json.load(sys.stdin))
    else:
        sys.exit(__doc__)
    json.dump(result, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv)
