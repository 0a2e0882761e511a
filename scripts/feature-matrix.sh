#!/usr/bin/env bash
# The library feature by feature: with no features, with its default (`train`), and with each
# other feature alone.
#
# For each set, two checks:
# - clippy on the library alone, warnings denied: Burn gets exactly the features this set
#   asks for, as a user's build would, so code that leans on a feature it does not enable
#   fails here;
# - the library's unit tests. Its dev-dependencies give Burn the workspace's features, so
#   every set reuses the workspace's test build of Burn and only the library is rebuilt.
#
# The integration tests run with every feature on (`cargo test --workspace`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# All features together are what `cargo clippy --workspace --all-features` and `cargo test
# --workspace` (whose test crate turns every feature on) already build; not again here.
sets=(
  "--no-default-features"
  ""
  "--no-default-features --features cuda"
  "--no-default-features --features remote"
)
for features in "${sets[@]}"; do
  printf -- '-- burn-data-parallel %s\n' "${features:-(default features)}"
  # shellcheck disable=SC2086 # each set is several words on purpose
  cargo clippy -p burn-data-parallel --lib $features -- -D warnings
  # shellcheck disable=SC2086
  cargo test -p burn-data-parallel --lib $features
done
