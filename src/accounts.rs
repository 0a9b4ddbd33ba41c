//! Group lookups from `/etc/group`, read directly instead of through glibc's `getgrnam`:
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
}
