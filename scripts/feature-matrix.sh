#!/usr/bin/env bash
# The library feature by feature: with no features, with its default (`train`), and with the
# optional backends (`cuda`, `remote`) without `train`.
#
# For each set, clippy on the library alone, warnings denied: Burn gets exactly the features
# this set asks for, as a user's build would, so code that leans on a feature it does not
# enable fails here. These are check builds (no code generation): a few minutes per set.
#
# The unit and integration tests run once, with every feature on (`cargo test --workspace`):
# running them per set would build Burn's code again for each set's features.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# All features together are what `cargo clippy --workspace --all-features` and `cargo test
# --workspace` (whose test crate turns every feature on) already build; not again here.
# The two backends share one set: each set checks Burn again with its features, and what this
# catches (code that needs `train` without asking for it) shows with both as with either.
sets=(
  "--no-default-features"
  ""
  "--no-default-features --features cuda,remote"
)
for features in "${sets[@]}"; do
  printf -- '-- burn-data-parallel %s\n' "${features:-(default features)}"
  # shellcheck disable=SC2086 # each set is several words on purpose
  cargo clippy -p burn-data-parallel --lib $features -- -D warnings
done
