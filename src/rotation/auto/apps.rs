//! Rotation is per app (client id), configuration is per credential: which credentials
//! share an app, which parameters hold its secret, and which refresh token proves a new
//! secret. Pure: it works on the parameter values read from SSM.

use secrecy::{ExposeSecret, SecretString};

use super::app_management::ROTATION_SCOPE;
use crate::config::{Config, CredentialConfig};
use crate::lwa::grant::{Grant, GrantKind};

/// One SP-API app as the configuration uses it.
pub struct App {
    pub client_id: SecretString,
    /// Every credential with this client id, in config order.
    pub credentials: Vec<String>,
    /// Every distinct client secret parameter of those credentials, in config order: a
    /// new secret is written to each one.
    pub secret_parameters: Vec<String>,
    /// A credential with a refresh token, to prove a new secret with.
    pub prover: Option<CredentialConfig>,
}

impl Clone for App {
    fn clone(&self) -> App {
        App {
            client_id: SecretString::from(self.client_id.expose_secret().to_string()),
            credentials: self.credentials.clone(),
            secret_parameters: self.secret_parameters.clone(),
            prover: self.prover.clone(),
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("credentials", &self.credentials)
            .field("secret_parameters", &self.secret_parameters)
            .finish()
    }
}

impl App {
    /// The parameter whose name and version key this app's fleet markers: the first
    /// secret parameter, so every host of a fleet with the same config picks the same.
    pub fn key_parameter(&self) -> &str {
        self.secret_parameters
            .first()
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn is(&self, client_id: &str) -> bool {
        self.client_id.expose_secret() == client_id
    }

    /// An LWA grant of this app with `secret` (the current one, or a new one to prove).
    pub fn grant(&self, secret: &SecretString, kind: GrantKind) -> Grant {
        Grant {
            client_id: SecretString::from(self.client_id.expose_secret().to_string()),
            client_secret: SecretString::from(secret.expose_secret().to_string()),
            kind,
        }
    }
}

/// The grantless grant kind of the rotation: `client_credentials` with its scope.
pub fn rotation_scope() -> GrantKind {
    GrantKind::Scopes(vec![ROTATION_SCOPE.to_string()])
}

/// Groups the credentials by the client id their `client_id_parameter` holds.
/// `value_of(parameter)` is the parameter's current value, `None` when it could not be
/// read; such credentials are left out (and named in the second list).
pub fn group<'a>(
    config: &Config,
    value_of: impl Fn(&str) -> Option<&'a str>,
) -> (Vec<App>, Vec<String>) {
    let mut apps: Vec<App> = Vec::new();
    let mut unread = Vec::new();
    for cred in &config.credentials {
        let Some(id) = value_of(&cred.client_id_parameter) else {
            unread.push(cred.name.clone());
            continue;
        };
        let at = match apps.iter().position(|a| a.is(id)) {
            Some(i) => i,
            None => {
                apps.push(App {
                    client_id: SecretString::from(id.to_string()),
                    credentials: Vec::new(),
                    secret_parameters: Vec::new(),
                    prover: None,
                });
                apps.len() - 1
            }
        };
        let app = &mut apps[at];
        app.credentials.push(cred.name.clone());
        if !app
            .secret_parameters
            .contains(&cred.client_secret_parameter)
        {
            app.secret_parameters
                .push(cred.client_secret_parameter.clone());
        }
        if app.prover.is_none() && cred.refresh_token_parameter.is_some() {
            app.prover = Some(cred.clone());
        }
    }
    (apps, unread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config() -> Config {
        let toml = r#"
            [aws]
            region = "us-east-2"
            [[credentials]]
            name = "notifications"
            client_id_parameter = "/a/id"
            client_secret_parameter = "/a/secret"
            scopes = ["sellingpartnerapi::notifications"]
            [[credentials]]
            name = "default"
            client_id_parameter = "/a/id"
            client_secret_parameter = "/a/secret"
            refresh_token_parameter = "/a/refresh"
            [[credentials]]
            name = "eu"
            client_id_parameter = "/eu/id"
            client_secret_parameter = "/eu/secret"
            refresh_token_parameter = "/eu/refresh"
            [[credentials]]
            name = "copy"
            client_id_parameter = "/copy/id"
            client_secret_parameter = "/copy/secret"
            refresh_token_parameter = "/copy/refresh"
            [[credentials]]
            name = "unread"
            client_id_parameter = "/x/id"
            client_secret_parameter = "/x/secret"
            refresh_token_parameter = "/x/refresh"
        "#;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).expect("write");
        crate::config::load(&path).expect("valid")
    }

    #[test]
    fn credentials_sharing_a_client_id_are_one_app_with_every_secret_parameter() {
        let values: HashMap<&str, &str> = [
            ("/a/id", "app-1"),
            ("/eu/id", "app-2"),
            // Another copy of app-1's credentials, in other parameters.
            ("/copy/id", "app-1"),
        ]
        .into_iter()
        .collect();
        let (apps, unread) = group(&config(), |p| values.get(p).copied());
        assert_eq!(apps.len(), 2);
        assert!(apps[0].is("app-1"));
        assert_eq!(
            apps[0].credentials,
            vec!["notifications", "default", "copy"]
        );
        assert_eq!(apps[0].secret_parameters, vec!["/a/secret", "/copy/secret"]);
        assert_eq!(apps[0].key_parameter(), "/a/secret");
        assert_eq!(
            apps[0].prover.as_ref().map(|c| c.name.as_str()),
            Some("default"),
            "the grantless credential cannot prove a secret; the first with a refresh token does"
        );
        assert_eq!(apps[1].credentials, vec!["eu"]);
        assert_eq!(unread, vec!["unread"]);
        assert!(!format!("{:?}", apps[0]).contains("app-1"));
    }
}
