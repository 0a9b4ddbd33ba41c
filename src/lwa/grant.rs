//! What one exchange sends to LWA: a credential's secrets and the kind of grant. The
//! parameter store builds one per exchange from what it read (`ParameterStore::grant`);
//! the commands and the automatic rotation build theirs from values they hold.

use secrecy::SecretString;

/// The secrets of one credential, as read from SSM. Zeroized on drop by `SecretString`.
pub struct Grant {
    pub client_id: SecretString,
    pub client_secret: SecretString,
    pub kind: GrantKind,
}

pub enum GrantKind {
    RefreshToken(SecretString),
    /// Grantless (`client_credentials`) with these scopes.
    Scopes(Vec<String>),
}
