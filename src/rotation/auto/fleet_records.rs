//! What this host reads and writes among the fleet's records in SSM (`rotation::fleet` has
//! their names and values): where a secret came from, the lease of the host writing an
//! app's parameters, the conflict waiting for a person, and each host's registered client
//! secret parameters.
//!
//! Invariants: a record holds no secret (fingerprints, names, times); a parameter another
//! host registered is written only while its client id parameter still names the app, and
//! never a name under the fleet prefix itself; a registration is dropped only when its
//! parameter is gone from SSM (not when it cannot be read).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;

use super::apps::App;
use super::Rotator;
use crate::aws::ssm::{markers, read};
use crate::rotation::fleet::{self, AppScope, Claim, Conflict, Origin, Registration};

/// A host registers its parameters again this often (a parameter created after the
/// agent started, or a registration another host removed, comes back).
const REGISTER_EVERY: Duration = Duration::from_secs(3600);

/// Which parameters a new secret goes to.
pub(super) struct Targets {
    /// This host's first, then those other hosts registered for the app.
    pub names: Vec<String>,
    /// Why the other hosts' could not be listed, when they could not.
    pub unlisted: Option<String>,
}

impl Rotator {
    /// Where the secret `fingerprint` came from, when the fleet has a record of it. A
    /// failed read is an error, never "no record": a secret from a notification would
    /// otherwise look stored by a person (a false conflict) or not yet replaced (a second
    /// rotation), so callers try again later.
    pub(super) async fn origin(
        &self,
        scope: &AppScope,
        fingerprint: &str,
    ) -> Result<Option<Origin>, String> {
        let record = markers::get(&self.ssm, &scope.origin(fingerprint)).await?;
        Ok(record.as_deref().and_then(Origin::parse))
    }

    /// Records where the secret with `fingerprint` comes from. Set before the secret is
    /// written: a record about a secret no parameter holds counts for nothing.
    pub(super) async fn set_origin(
        &self,
        scope: &AppScope,
        fingerprint: String,
        published: Option<SystemTime>,
        old_secret_expires_at: Option<String>,
        source: &str,
    ) -> Result<(), String> {
        let name = scope.origin(&fingerprint);
        let origin = Origin {
            fingerprint,
            published: published.map(fleet::format_time),
            old_secret_expires_at,
            source: source.to_string(),
            host: self.host.clone(),
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        markers::set(&self.ssm, &name, &origin.value()).await
    }

    /// Takes the app's completing lease: `Ok(None)` when another host holds it now (the
    /// message is tried again shortly). A lease left by a host that died while writing is
    /// taken over after `fleet::COMPLETING_LEASE`.
    pub(super) async fn take_completing(
        &self,
        scope: &AppScope,
    ) -> Result<Option<CompletingLease>, String> {
        let name = scope.completing();
        for _ in 0..2 {
            let now = SystemTime::now();
            if markers::create(&self.ssm, &name, &Claim::pending(&self.host, now)).await? {
                return Ok(Some(CompletingLease { name }));
            }
            match markers::get(&self.ssm, &name).await? {
                Some(v) if Claim::parse(&v).abandoned(now, fleet::COMPLETING_LEASE) => {
                    tracing::warn!(marker = %name, "a host died while writing this app's secret; taking its lease over");
                    markers::delete(&self.ssm, &name).await?;
                }
                Some(_) => return Ok(None),
                // Released just now: try again.
                None => {}
            }
        }
        Ok(None)
    }

    pub(super) async fn release(&self, lease: CompletingLease) {
        if let Err(e) = markers::delete(&self.ssm, &lease.name).await {
            tracing::warn!(marker = %lease.name, error = %e, "cannot release the completing lease; it is taken over after it runs out");
        }
    }

    /// The conflict recorded for the app, if any.
    pub(super) async fn conflict_record(
        &self,
        scope: &AppScope,
    ) -> Result<Option<Conflict>, String> {
        Ok(markers::get(&self.ssm, &scope.conflict())
            .await?
            .as_deref()
            .and_then(Conflict::parse))
    }

    pub(super) async fn set_conflict(&self, scope: &AppScope, conflict: &Conflict) {
        if let Err(e) = markers::set(&self.ssm, &scope.conflict(), &conflict.value()).await {
            tracing::warn!(error = %e, "cannot record the conflict for the fleet; `lwa-agent rotate --settle` then refuses until it is recorded");
        }
    }

    /// The conflict about `message_id` is over (its message was deleted or written).
    pub(super) async fn clear_conflict(&self, scope: &AppScope, message_id: &str) {
        match self.conflict_record(scope).await {
            Ok(Some(c)) if c.message_id == message_id => {
                if let Err(e) = markers::delete(&self.ssm, &scope.conflict()).await {
                    tracing::warn!(error = %e, "cannot remove the settled conflict's record");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the conflict record"),
        }
    }

    /// Registers this host's client secret parameters for their apps with the fleet, so
    /// that whichever host completes a new secret writes them too. Again every hour; until
    /// it worked, every housekeeping round tries.
    pub async fn register(&self) {
        let due = self
            .memory
            .registered_at
            .lock()
            .map(|at| at.is_none_or(|t| t.elapsed() >= REGISTER_EVERY))
            .unwrap_or(true);
        if !due {
            return;
        }
        let values = match self.read_named(&self.client_id_parameters()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "cannot register the client secret parameters yet; tried again");
                return;
            }
        };
        let mut all = true;
        for app in self.apps(&values) {
            let scope = self.scope(&app);
            for cred in app
                .credentials
                .iter()
                .filter_map(|n| self.config.credential(n))
            {
                let registration = Registration {
                    client_secret_parameter: cred.client_secret_parameter.clone(),
                    client_id_parameter: cred.client_id_parameter.clone(),
                };
                if let Err(e) = self.register_one(&scope, &registration).await {
                    all = false;
                    tracing::warn!(parameter = %registration.client_secret_parameter, error = %e, "cannot register the client secret parameter with the fleet (another host that completes a rotation would not write it); tried again");
                }
            }
        }
        if all {
            if let Ok(mut at) = self.memory.registered_at.lock() {
                *at = Some(Instant::now());
            }
        }
    }

    async fn register_one(&self, scope: &AppScope, r: &Registration) -> Result<(), String> {
        let name = scope.registration(&r.client_secret_parameter);
        let value = r.value();
        // Create-only first: a registration that is there already costs no new version.
        if markers::create(&self.ssm, &name, &value).await? {
            tracing::info!(parameter = %r.client_secret_parameter, "client secret parameter registered with the fleet");
            return Ok(());
        }
        match markers::get(&self.ssm, &name).await? {
            Some(v) if v == value => Ok(()),
            _ => markers::set(&self.ssm, &name, &value).await,
        }
    }

    /// Every client secret parameter of the app: this host's, then those other hosts
    /// registered whose client id parameter still holds the app's client id.
    pub(super) async fn targets(&self, app: &App) -> Targets {
        let mut names = app.secret_parameters.clone();
        let listed = match markers::list(&self.ssm, &self.scope(app).registrations()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the client secret parameters other hosts registered; only this host's are written");
                return Targets {
                    names,
                    unlisted: Some(e),
                };
            }
        };
        let others: Vec<Registration> = listed
            .iter()
            .filter_map(|(_, v)| Registration::parse(v))
            .filter(|r| !names.contains(&r.client_secret_parameter))
            .filter(|r| {
                !AppScope::is_under(&self.prefix, &r.client_secret_parameter)
                    && !AppScope::is_under(&self.prefix, &r.client_id_parameter)
            })
            .collect();
        if others.is_empty() {
            return Targets {
                names,
                unlisted: None,
            };
        }
        // Which app each registration is for now, from its client id parameter.
        let mut ids: Vec<String> = others
            .iter()
            .map(|r| r.client_id_parameter.clone())
            .collect();
        ids.sort();
        ids.dedup();
        let values: HashMap<String, read::Parameter> = match read::fetch(&self.ssm, &ids).await {
            Ok(f) => f
                .parameters
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the client ids of the parameters other hosts registered; only this host's are written");
                return Targets {
                    names,
                    unlisted: Some(e),
                };
            }
        };
        let mut seen: BTreeMap<&str, ()> = BTreeMap::new();
        for r in &others {
            let same_app = values
                .get(&r.client_id_parameter)
                .is_some_and(|v| app.is(v.value.expose_secret()));
            if !same_app {
                tracing::warn!(parameter = %r.client_secret_parameter, client_id_parameter = %r.client_id_parameter, "a registered client secret parameter is not written: its client id parameter no longer names this app");
                continue;
            }
            if seen.insert(&r.client_secret_parameter, ()).is_none() {
                names.push(r.client_secret_parameter.clone());
            }
        }
        Targets {
            names,
            unlisted: None,
        }
    }

    /// Removes a registration whose parameter is no longer in SSM.
    pub(super) async fn deregister(&self, app: &App, parameter: &str) {
        let name = self.scope(app).registration(parameter);
        match markers::delete(&self.ssm, &name).await {
            Ok(()) => {
                tracing::info!(parameter = %parameter, "a registered client secret parameter is no longer in SSM; its registration is removed")
            }
            Err(e) => {
                tracing::debug!(parameter = %parameter, error = %e, "cannot remove a stale registration")
            }
        }
    }

    pub(super) fn client_id_parameters(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for cred in &self.config.credentials {
            if !names.contains(&cred.client_id_parameter) {
                names.push(cred.client_id_parameter.clone());
            }
        }
        names
    }
}

/// The app's completing lease, held while this host writes its parameters.
pub(super) struct CompletingLease {
    name: String,
}
