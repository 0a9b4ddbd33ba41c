//! What the process does to itself before it holds a secret (docs/systemd.md,
//! "Memory that holds secrets"): no core dump, and its memory and `/proc` files closed to
//! other processes of the same user.

/// Makes the process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): the kernel writes no core
/// file for it, whatever `LimitCORE=` or `core_pattern` say, and its `/proc/<pid>` files
/// (`mem`, `environ`, `maps`…) belong to root, so another process of the `lwa-agent` user
/// cannot read its memory or attach to it. Called first thing by every command; the
/// setting holds for every thread and is not undone until the process execs.
pub fn keep_memory_private() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        // Only a kernel without prctl could refuse; the units' LimitCORE=0 still holds.
        eprintln!("lwa-agent: cannot make the process non-dumpable ({e}); continuing");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_is_not_dumpable_afterwards() {
        super::keep_memory_private();
        assert_eq!(nix::sys::prctl::get_dumpable(), Ok(false));
    }
}
