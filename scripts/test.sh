#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints, the tests (CPU devices; the CUDA feature
# compiled in and its no-GPU paths tested), the library linted with each
# feature set (scripts/feature-matrix.sh), the docs with warnings denied, every feature of
# every crate compiling without lint warnings, the README's main job exactly as written, and
# every other documented `cargo run` command resolving and printing its usage.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "the library feature by feature: none, default, the backends without train (clippy)"
bash scripts/feature-matrix.sh

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "cargo clippy, every feature (warnings denied)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "the main job, as README.md runs it"
cargo run --release -p digits

step "every other documented cargo run command"
bash scripts/documented-commands.sh

step "all checks passed"
