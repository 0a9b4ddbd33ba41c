//! Guards on what the build links (issue 10): one TLS and crypto provider, aws-lc-rs. ring
//! came in twice before (the SDK crates' legacy rustls connector and reqwest 0.12); a
//! dependency bump or a new feature must not bring it back unnoticed. The figures (size,
//! memory, speed) live in `cargo bench --bench socket`, not here.

use std::process::Command;

/// `cargo tree --workspace -e all -i <krate>`: who depends on `krate`, in every member,
/// with dev and build dependencies. Empty when nothing does.
fn dependents(krate: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["tree", "--workspace", "--locked", "-e", "all", "-i", krate])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cargo} tree` ({e}): install cargo (rustup)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Absent from the graph: "nothing to print" (exit 0), or, when it is not even in
    // Cargo.lock, "did not match any packages" (exit 101). Anything else is cargo failing.
    assert!(
        out.status.success() || stderr.contains("did not match any packages"),
        "`cargo tree -i {krate}` failed: {stderr}"
    );
    stdout
}

#[test]
fn ring_is_not_a_dependency_of_anything_in_the_workspace() {
    let tree = dependents("ring");
    assert!(
        tree.trim().is_empty(),
        "ring is linked again; the agent's one crypto provider is aws-lc-rs. Turn off the \
         feature that brings it (default features of SDK crates, reqwest's rustls-tls, \
         rcgen's or x509-parser's ring features):\n{tree}"
    );
}

#[test]
fn the_guard_sees_a_crate_that_is_linked() {
    // The check above must be able to fail: the same query for aws-lc-rs finds the agent.
    let tree = dependents("aws-lc-rs");
    assert!(tree.contains("lwa-agent v"), "{tree}");
}
