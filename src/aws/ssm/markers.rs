//! The fleet's records in SSM (plain String parameters under
//! `rotation.fleet_lock_prefix`): created only if absent (a claim), set, read, listed and
//! deleted. What the names and values mean is `rotation::fleet`'s.

use crate::aws::error;
use aws_sdk_ssm::error::ProvideErrorMetadata;

/// Creates `name` only if it does not exist yet. `Ok(true)`: created (we hold the lock);
/// `Ok(false)`: it existed (another host took it).
pub async fn create(client: &aws_sdk_ssm::Client, name: &str, value: &str) -> Result<bool, String> {
    match client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(false)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ParameterAlreadyExists") => Ok(false),
        Err(e) => Err(error::describe(
            &e,
            &error::Call {
                what: &format!("SSM PutParameter of the fleet lock {name}"),
                permission: "ssm:PutParameter on rotation.fleet_lock_prefix",
            },
        )
        .line),
    }
}

/// Sets a String parameter under the fleet prefix, whether or not it exists (a record,
/// not a lock: see [`create`] for those).
pub async fn set(client: &aws_sdk_ssm::Client, name: &str, value: &str) -> Result<(), String> {
    client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            error::describe(
                &e,
                &error::Call {
                    what: &format!("SSM PutParameter of the fleet record {name}"),
                    permission: "ssm:PutParameter on rotation.fleet_lock_prefix",
                },
            )
            .line
        })
}

/// Whether a (create-only) marker parameter exists, and what it says: for dry runs, which
/// must not take it.
pub async fn get(client: &aws_sdk_ssm::Client, name: &str) -> Result<Option<String>, String> {
    match client.get_parameter().name(name).send().await {
        Ok(out) => Ok(out.parameter.and_then(|p| p.value)),
        Err(e) if e.code() == Some("ParameterNotFound") => Ok(None),
        Err(e) => Err(error::describe(
            &e,
            &error::Call {
                what: &format!("SSM GetParameter of the fleet lock {name}"),
                permission: "ssm:GetParameter on rotation.fleet_lock_prefix",
            },
        )
        .line),
    }
}

/// Every String parameter directly under `path`, as (name, value): the fleet's
/// registrations. Paged, so any number of hosts fits.
pub async fn list(
    client: &aws_sdk_ssm::Client,
    path: &str,
) -> Result<Vec<(String, String)>, String> {
    // The SDK's paginator follows NextToken (and stops on an empty one, as moto sends).
    let mut pages = client
        .get_parameters_by_path()
        .path(path)
        .recursive(false)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            error::describe(
                &e,
                &error::Call {
                    what: &format!("SSM GetParametersByPath under {path}"),
                    permission: "ssm:GetParametersByPath on rotation.fleet_lock_prefix",
                },
            )
            .line
        })?;
        out.extend(
            page.parameters
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| Some((p.name?, p.value?))),
        );
    }
    Ok(out)
}

/// Removes a marker again (a step that failed gives its turn back).
pub async fn delete(client: &aws_sdk_ssm::Client, name: &str) -> Result<(), String> {
    match client.delete_parameter().name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ParameterNotFound") => Ok(()),
        Err(e) => Err(error::describe(
            &e,
            &error::Call {
                what: &format!("SSM DeleteParameter of the fleet lock {name}"),
                permission: "ssm:DeleteParameter on rotation.fleet_lock_prefix",
            },
        )
        .line),
    }
}
