#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints, the tests (CPU devices; the CUDA feature
# compiled in and its no-GPU paths tested), the docs with warnings denied, and every feature of
# every crate compiling without lint warnings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "cargo clippy, every feature (warnings denied)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "all checks passed"
