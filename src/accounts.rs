//! User and group lookups from `/etc/passwd` and `/etc/group`, read directly instead of through glibc's `getgrnam`:
//! in a static binary `getgrnam` would load NSS modules built for another glibc (SSSD
//! hosts break that way). Written by hand because no maintained crate reads the file
//! without going through NSS.

use std::path::Path;

/// The gid of `name` in a group(5) file's text.
pub fn find_gid(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        let group = fields.next()?;
        let _password = fields.next()?;
        let gid = fields.next()?;
        (group == name).then(|| gid.trim().parse().ok()).flatten()
    })
}

/// Where users are, read without NSS.
pub const PASSWD: &str = "/etc/passwd";

/// The uid and primary gid of `name` in a passwd(5) file, or `None` when it is not there
/// (or the file cannot be read).
pub fn user_ids(name: &str, path: &Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(path).ok()?;
    find_user(&text, name)
}

fn find_user(passwd_file: &str, name: &str) -> Option<(u32, u32)> {
    passwd_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        let user = fields.next()?;
        let _password = fields.next()?;
        let uid = fields.next()?.trim().parse().ok()?;
        let gid = fields.next()?.trim().parse().ok()?;
        (user == name).then_some((uid, gid))
    })
}

/// Looks `name` up in `/etc/group` (or `path`), with an error that says what to do.
pub fn gid_of(name: &str, path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {} to look up group `{name}`: {e}",
            path.display()
        )
    })?;
    find_gid(&text, name).ok_or_else(|| {
        format!(
            "group `{name}` is not in {}: create it (groupadd {name}) or give socket.group as a \
             number",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_gid_of_a_group_and_nothing_else() {
        let text = "root:x:0:\n# comment\nerp:x:1001:alice,bob\nerp2:x:1002:\nbroken\n";
        assert_eq!(find_gid(text, "erp"), Some(1001));
        assert_eq!(find_gid(text, "root"), Some(0));
        assert_eq!(find_gid(text, "er"), None);
        assert_eq!(find_gid(text, "broken"), None);
        assert_eq!(find_gid(text, "missing"), None);
    }

    #[test]
    fn finds_the_ids_of_a_user_and_nothing_else() {
        let text = "root:x:0:0:root:/root:/bin/bash\nlwa-agent:x:998:997::/:/usr/sbin/nologin\n\
                    lwa:x:5:5::/:/bin/sh\nbad:x:notanumber:1::/:\n";
        assert_eq!(find_user(text, "lwa-agent"), Some((998, 997)));
        assert_eq!(find_user(text, "root"), Some((0, 0)));
        assert_eq!(find_user(text, "lwa-agen"), None);
        assert_eq!(find_user(text, "bad"), None);
    }
}
