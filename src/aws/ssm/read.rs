//! Reading SecureStrings and their metadata: the token path's one SSM call
//! (GetParameters with decryption, [`fetch`]), and the reads the rotation check and the
//! commands make.

use std::time::SystemTime;

use crate::aws::error;
use secrecy::SecretString;

/// How a problem of [`fetch`] begins when SSM has no parameter of that name.
pub const NOT_FOUND: &str = "not found in SSM Parameter Store";

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
                        format!(
                            "{NOT_FOUND}: create it (aws ssm put-parameter --type \
                             SecureString) or fix the name in the config"
                        ),
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
                                out.problems.push((name.clone(), NOT_FOUND.to_string()));
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
            let d = error::describe(
                &e,
                &error::Call {
                    what: "SSM GetParameters",
                    permission: "ssm:GetParameters on the parameters and kms:Decrypt on their key",
                },
            );
            // Throttling, server faults and an unreachable SSM say nothing about this
            // parameter: they fail the whole read, which then backs off and retries,
            // instead of being pinned on a parameter and left until the next
            // refresh_interval. So do credential problems: they concern every parameter.
            let reachable = matches!(d.class, error::Class::Service | error::Class::AccessDenied);
            CallError {
                reachable,
                message: d.line,
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

/// A parameter's metadata from DescribeParameters (no value).
#[derive(Debug, Clone)]
pub struct Metadata {
    pub name: String,
    pub version: i64,
    pub last_modified: Option<SystemTime>,
    pub key_id: Option<String>,
    pub tier: Option<String>,
    pub description: Option<String>,
    /// (type, text) as SSM returned them; see [`super::policies`] for the two shapes.
    pub policies: Vec<(Option<String>, Option<String>)>,
}

/// DescribeParameters for exactly these names, 10 per call, all pages. Names that do not
/// exist are simply absent from the answer.
pub async fn describe(
    client: &aws_sdk_ssm::Client,
    names: &[String],
) -> Result<(Vec<Metadata>, u64), String> {
    use aws_sdk_ssm::types::ParameterStringFilter;
    let mut out = Vec::new();
    let mut calls = 0;
    for chunk in names.chunks(MAX_NAMES_PER_CALL) {
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .set_values(Some(chunk.to_vec()))
            .build()
            .map_err(|e| format!("cannot build the DescribeParameters filter: {e}"))?;
        let mut pages = client
            .describe_parameters()
            .parameter_filters(filter)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            calls += 1;
            let page = page.map_err(|e| {
                error::describe(
                    &e,
                    &error::Call {
                        what: "SSM DescribeParameters",
                        permission: "ssm:DescribeParameters",
                    },
                )
                .line
            })?;
            out.extend(
                page.parameters
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| {
                        Some(Metadata {
                            name: p.name?,
                            version: p.version,
                            last_modified: p
                                .last_modified_date
                                .and_then(|d| SystemTime::try_from(d).ok()),
                            key_id: p.key_id,
                            tier: p.tier.map(|t| t.as_str().to_string()),
                            description: p.description,
                            policies: p
                                .policies
                                .unwrap_or_default()
                                .into_iter()
                                .map(|pol| (pol.policy_type, pol.policy_text))
                                .collect(),
                        })
                    }),
            );
        }
    }
    Ok((out, calls))
}

/// The current values of `names` (at most 10, one call) with decryption, and the names
/// that do not exist. Unlike [`fetch`], any failure is an error: `setup` must know what is
/// there before it writes anything.
pub async fn read_current(
    client: &aws_sdk_ssm::Client,
    names: &[String],
) -> Result<(Vec<Parameter>, Vec<String>), String> {
    debug_assert!(names.len() <= MAX_NAMES_PER_CALL);
    get_parameters(client, names).await.map_err(|e| e.message)
}
