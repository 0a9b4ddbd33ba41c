//! Reading the credentials' SecureStrings from SSM Parameter Store.

use std::time::SystemTime;

use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata};
use secrecy::SecretString;

/// GetParameters takes at most 10 names per call.
pub const MAX_NAMES_PER_CALL: usize = 10;

/// A decrypted parameter. `value` is zeroized on drop and never printed.
pub struct Parameter {
    pub name: String,
    pub value: SecretString,
    pub version: i64,
    pub last_modified: Option<SystemTime>,
    pub kind: String,
}

impl std::fmt::Debug for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parameter")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// What one read of all parameters gave: values, and per-parameter problems.
#[derive(Debug, Default)]
pub struct Fetched {
    pub parameters: Vec<Parameter>,
    pub problems: Vec<(String, String)>,
    pub calls: u64,
}

/// Reads `names` with decryption, 10 per call. A call that fails as a whole because of one
/// parameter (a KMS key the role may not use, say) is retried name by name so that the
/// problem is pinned on that parameter and the others still load. A failure to reach SSM
/// at all is returned as `Err`.
pub async fn fetch(client: &aws_sdk_ssm::Client, names: &[String]) -> Result<Fetched, String> {
    let mut out = Fetched::default();
    for chunk in names.chunks(MAX_NAMES_PER_CALL) {
        out.calls += 1;
        match get_parameters(client, chunk).await {
            Ok((params, invalid)) => {
                out.parameters.extend(params);
                out.problems.extend(invalid.into_iter().map(|n| {
                    (
                        n,
                        "not found in SSM Parameter Store: create it (aws ssm put-parameter \
                         --type SecureString) or fix the name in the config"
                            .to_string(),
                    )
                }));
            }
            Err(e) if e.reachable && chunk.len() > 1 => {
                for name in chunk {
                    out.calls += 1;
                    match get_parameters(client, std::slice::from_ref(name)).await {
                        Ok((params, invalid)) => {
                            out.parameters.extend(params);
                            if !invalid.is_empty() {
                                out.problems.push((
                                    name.clone(),
                                    "not found in SSM Parameter Store".to_string(),
                                ));
                            }
                        }
                        Err(e) if e.reachable => out.problems.push((name.clone(), e.message)),
                        Err(e) => return Err(e.message),
                    }
                }
            }
            Err(e) if e.reachable => {
                out.problems
                    .extend(chunk.iter().map(|n| (n.clone(), e.message.clone())));
            }
            Err(e) => return Err(e.message),
        }
    }
    Ok(out)
}

struct CallError {
    /// SSM answered (with an error about the request); false when it could not be reached.
    reachable: bool,
    message: String,
}

async fn get_parameters(
    client: &aws_sdk_ssm::Client,
    names: &[String],
) -> Result<(Vec<Parameter>, Vec<String>), CallError> {
    let out = client
        .get_parameters()
        .set_names(Some(names.to_vec()))
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            let reachable = e.as_service_error().is_some();
            let code = e.code().unwrap_or("").to_string();
            let hint = match code.as_str() {
                "AccessDeniedException" => {
                    ": allow ssm:GetParameters on the parameters and kms:Decrypt on their key"
                }
                c if c.contains("KeyId") || c.contains("Kms") || c.contains("KMS") => {
                    ": check the parameter's KMS key and the role's kms:Decrypt permission"
                }
                _ if !reachable => ": check network access to SSM and the AWS credentials",
                _ => "",
            };
            CallError {
                reachable,
                message: format!(
                    "SSM GetParameters failed: {}{hint}",
                    DisplayErrorContext(&e)
                ),
            }
        })?;
    let params = out
        .parameters
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(Parameter {
                name: p.name?,
                value: SecretString::from(p.value.unwrap_or_default()),
                version: p.version,
                last_modified: p
                    .last_modified_date
                    .and_then(|d| SystemTime::try_from(d).ok()),
                kind: p.r#type.map(|t| t.as_str().to_string()).unwrap_or_default(),
            })
        })
        .collect();
    Ok((params, out.invalid_parameters.unwrap_or_default()))
}
