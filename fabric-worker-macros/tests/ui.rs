//! Compile-time (UI) tests for `#[handler]`, driven by `trybuild`.
//!
//! * `tests/ui/pass/*.rs` must compile and run successfully.
//! * `tests/ui/fail/*.rs` must fail to compile with exactly the diagnostics
//!   recorded in the `.stderr` file beside each of them.
//!
//! The `.stderr` snapshots were produced with rustc 1.95.0. Compiler output
//! changes between releases, so a different toolchain may need them
//! regenerated: run
//! `TRYBUILD=overwrite cargo test -p fabric-worker-macros --test ui`
//! and review every changed `.stderr` (each error must still point at the
//! right span with the right message) before committing.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
