//! Who is on the other end of a connection (SO_PEERCRED) and what they may read.

use crate::config::CredentialConfig;

/// The peer's credentials as the kernel recorded them at connect(2): they cannot be forged
/// by the client and do not change for the life of the connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
}

impl Peer {
    /// Whether this peer may read `cred`'s token. Without lists, anyone who could open the
    /// socket may (the socket's own mode is the gate); with lists, the uid or the primary
    /// gid must be listed. Root may always.
    pub fn may_read(&self, cred: &CredentialConfig) -> bool {
        if self.uid == 0 {
            return true;
        }
        match (&cred.allow_uids, &cred.allow_gids) {
            (None, None) => true,
            (uids, gids) => {
                uids.as_ref().is_some_and(|l| l.contains(&self.uid))
                    || gids.as_ref().is_some_and(|l| l.contains(&self.gid))
            }
        }
    }

    /// Reloads re-read secrets from AWS: root only, or the agent's own user (which already
    /// holds the secrets).
    pub fn may_reload(&self) -> bool {
        self.uid == 0 || self.uid == nix::unistd::geteuid().as_raw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(uids: Option<Vec<u32>>, gids: Option<Vec<u32>>) -> CredentialConfig {
        CredentialConfig {
            name: "default".into(),
            client_id_parameter: "/a".into(),
            client_secret_parameter: "/b".into(),
            refresh_token_parameter: Some("/c".into()),
            scopes: vec![],
            allow_uids: uids,
            allow_gids: gids,
        }
    }

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer { uid, gid }
    }

    #[test]
    fn no_lists_means_the_socket_mode_decides() {
        assert!(peer(1234, 1234).may_read(&cred(None, None)));
    }

    #[test]
    fn listed_uids_and_gids_are_allowed_and_others_are_not() {
        let c = cred(Some(vec![1001]), Some(vec![2000]));
        assert!(peer(1001, 5).may_read(&c));
        assert!(peer(7, 2000).may_read(&c));
        assert!(!peer(7, 7).may_read(&c));
        assert!(peer(0, 0).may_read(&c), "root may always");
        let only_gids = cred(None, Some(vec![2000]));
        assert!(!peer(1001, 1001).may_read(&only_gids));
        let empty = cred(Some(vec![]), None);
        assert!(!peer(1001, 1001).may_read(&empty));
    }
}
